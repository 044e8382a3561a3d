"""Tests for actdistill.analysis.similarity: CKA properties, reference implementations, row-wise metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from actdistill.analysis.similarity import (
    _linear_cka_feature,
    _linear_cka_gram,
    debiased_linear_cka,
    flatten_aligned,
    linear_cka,
    mean_cosine_similarity,
    mean_euclidean_distance,
    pool_features,
    prediction_agreement,
    similarity_matrix,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _related(n: int, d1: int, d2: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    x = torch.randn(n, d1, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d1, d2, generator=g, dtype=torch.float64) + 0.5 * torch.randn(
        n, d2, generator=g, dtype=torch.float64
    )
    return x, y


def _reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Independent Gram-form CKA with the centring matrix H = I − 11ᵀ/n: HSIC(K, L) ∝ tr(KHLH)."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T

    def hsic(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.trace(a @ h @ b @ h))

    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


def _reference_hsic_u(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. 2012 unbiased HSIC, written directly from the formula with N×N Gram matrices."""
    n = k.shape[0]
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    one = np.ones(n)
    term = (
        np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (one @ k @ l @ one)
    )
    return term / (n * (n - 3))


def _reference_debiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    k, l = x @ x.T, y @ y.T
    return _reference_hsic_u(k, l) / math.sqrt(_reference_hsic_u(k, k) * _reference_hsic_u(l, l))


# ---------------------------------------------------------------- linear CKA


@pytest.mark.parametrize(("n", "d1", "d2"), [(200, 10, 30), (40, 100, 60), (50, 5, 300)])
def test_linear_cka_self_is_one_and_symmetric(n: int, d1: int, d2: int) -> None:
    x, y = _related(n, d1, d2)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), abs=1e-12)
    assert 0.0 < linear_cka(x, y) < 1.0


def test_linear_cka_invariant_to_rotation_and_isotropic_scaling() -> None:
    x, y = _related(120, 16, 24)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=_gen(1), dtype=torch.float64))
    base = linear_cka(x, y)
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(7.5 * x, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x, 0.01 * y) == pytest.approx(base, abs=1e-10)
    # Translation is removed by centring.
    assert linear_cka(x + 3.0, y - 1.0) == pytest.approx(base, abs=1e-10)


def test_linear_cka_not_invariant_to_non_isotropic_scaling() -> None:
    x, y = _related(120, 16, 24)
    scale = torch.ones(16, dtype=torch.float64)
    scale[0] = 30.0
    assert abs(linear_cka(x * scale, y) - linear_cka(x, y)) > 0.05


@pytest.mark.parametrize(("n", "d1", "d2"), [(150, 8, 12), (30, 80, 50)], ids=["D<N", "D>N"])
def test_feature_and_gram_forms_match_reference(n: int, d1: int, d2: int) -> None:
    x, y = _related(n, d1, d2, seed=3)
    x = x + 2.0  # uncentred input: the function must centre
    ref = _reference_cka(x.numpy(), y.numpy())
    xc, yc = x - x.mean(0), y - y.mean(0)
    assert _linear_cka_feature(xc, yc) == pytest.approx(ref, abs=1e-10)
    assert _linear_cka_gram(xc, yc) == pytest.approx(ref, abs=1e-10)
    assert linear_cka(x, y) == pytest.approx(ref, abs=1e-10)


def test_linear_cka_accepts_float32_and_numpy() -> None:
    x, y = _related(60, 6, 9)
    ref = linear_cka(x, y)
    assert linear_cka(x.float(), y.float()) == pytest.approx(ref, abs=1e-5)
    assert linear_cka(x.numpy(), y.numpy()) == pytest.approx(ref, abs=1e-12)


def test_linear_cka_errors_and_degenerate() -> None:
    x, y = _related(20, 4, 4)
    with pytest.raises(ValueError, match=r"\(20, 4\).*\(19, 4\)"):
        linear_cka(x, y[:19])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        linear_cka(x[:, :, None], y)
    assert math.isnan(linear_cka(torch.ones(20, 4), y))


# ---------------------------------------------------------------- debiased CKA


def test_debiased_cka_removes_bias_for_independent_features() -> None:
    g = _gen(5)
    x = torch.randn(500, 50, generator=g)
    y = torch.randn(500, 50, generator=g)
    plain, debiased = linear_cka(x, y), debiased_linear_cka(x, y)
    # E[plain CKA] ≈ D/(N + D) ≈ 0.09 here although x and y are independent; the unbiased HSIC removes this.
    assert plain > 0.05
    assert abs(debiased) < 0.02 < plain / 3


def test_debiased_cka_self_is_one_and_matches_reference() -> None:
    x, y = _related(40, 12, 70, seed=7)
    x = x + 4.0
    assert debiased_linear_cka(x, x) == pytest.approx(1.0, abs=1e-6)
    ref = _reference_debiased_cka(x.numpy(), y.numpy())
    assert debiased_linear_cka(x, y) == pytest.approx(ref, abs=1e-9)
    assert debiased_linear_cka(x, y) == pytest.approx(debiased_linear_cka(y, x), abs=1e-12)


def test_debiased_cka_needs_four_samples() -> None:
    x = torch.randn(3, 5, generator=_gen())
    with pytest.raises(ValueError, match="at least 4"):
        debiased_linear_cka(x, x)
    assert math.isfinite(debiased_linear_cka(torch.randn(4, 5, generator=_gen()), torch.randn(4, 2, generator=_gen())))


# ---------------------------------------------------------------- cosine / Euclidean


def test_cosine_matches_row_loop() -> None:
    x, y = _related(25, 7, 7, seed=2)
    expected = np.mean([float(x[i] @ y[i] / (x[i].norm() * y[i].norm())) for i in range(25)])
    assert mean_cosine_similarity(x, y) == pytest.approx(expected, abs=1e-12)
    assert mean_cosine_similarity(x, x) == pytest.approx(1.0, abs=1e-12)
    assert mean_cosine_similarity(x, -2 * x) == pytest.approx(-1.0, abs=1e-12)


def test_cosine_standardize_z_scores_columns_first() -> None:
    x, y = _related(25, 7, 7, seed=2)
    x, y = x.abs() + 5.0, y.abs() + 5.0  # positive features: raw cosine is inflated
    zx = (x - x.mean(0)) / (x.std(0, unbiased=False) + 1e-8)
    zy = (y - y.mean(0)) / (y.std(0, unbiased=False) + 1e-8)
    expected = np.mean([float(zx[i] @ zy[i] / (zx[i].norm() * zy[i].norm())) for i in range(25)])
    assert mean_cosine_similarity(x, y, standardize=True) == pytest.approx(expected, abs=1e-10)
    assert mean_cosine_similarity(x, y) > 0.95 > mean_cosine_similarity(x, y, standardize=True)


def test_euclidean_matches_row_loop() -> None:
    x, y = _related(30, 5, 5, seed=4)
    raw = np.mean([float(torch.sqrt(((x[i] - y[i]) ** 2).sum())) for i in range(30)])
    assert mean_euclidean_distance(x, y, standardize=False) == pytest.approx(raw, abs=1e-12)
    assert mean_euclidean_distance(x, y, standardize=False, normalized=True) == pytest.approx(
        raw / math.sqrt(5), abs=1e-12
    )
    zx = (x - x.mean(0)) / (x.std(0, unbiased=False) + 1e-8)
    zy = (y - y.mean(0)) / (y.std(0, unbiased=False) + 1e-8)
    std = np.mean([float((zx[i] - zy[i]).norm()) for i in range(30)])
    assert mean_euclidean_distance(x, y) == pytest.approx(std, abs=1e-10)
    # Standardisation removes per-column offset and scale.
    assert mean_euclidean_distance(x, 3.0 * x + 1.0) == pytest.approx(0.0, abs=1e-6)


def test_euclidean_normalized_unrelated_is_about_sqrt2() -> None:
    g = _gen(8)
    x, y = torch.randn(4000, 64, generator=g), torch.randn(4000, 64, generator=g)
    assert mean_euclidean_distance(x, y, normalized=True) == pytest.approx(math.sqrt(2), abs=0.03)


@pytest.mark.parametrize("fn", [mean_cosine_similarity, mean_euclidean_distance])
def test_rowwise_shape_mismatch_names_both_shapes(fn) -> None:
    x, y = torch.randn(10, 4), torch.randn(10, 6)
    with pytest.raises(ValueError) as info:
        fn(x, y)
    assert "(10, 4)" in str(info.value) and "(10, 6)" in str(info.value)
    with pytest.raises(ValueError) as info:
        fn(x, torch.randn(9, 4))
    assert "(10, 4)" in str(info.value) and "(9, 4)" in str(info.value)


# ---------------------------------------------------------------- pooling and matrices


def test_pool_features_shapes() -> None:
    assert pool_features(torch.randn(3, 8, 5, 5)).shape == (3, 8)
    assert pool_features(torch.randn(3, 8, 2, 5, 5)).shape == (3, 8)
    feat = torch.randn(3, 8)
    assert pool_features(feat) is feat
    m = torch.randn(2, 4, 3, 3)
    assert torch.allclose(pool_features(m), m.mean(dim=(2, 3)))
    with pytest.raises(ValueError, match=r"\(2, 49, 8\)"):
        pool_features(torch.randn(2, 49, 8))


def test_flatten_aligned_sizes() -> None:
    a, b = torch.randn(4, 8, 8, 8), torch.randn(4, 16, 4, 4)
    fa, fb = flatten_aligned(a, b)
    assert fa.shape == (4, 8 * 16) and fb.shape == (4, 16 * 16)
    assert torch.allclose(fa.view(4, 8, 4, 4), F.avg_pool2d(a, 2))  # 8x8 -> 4x4 is 2x2 block averaging
    assert torch.equal(fb, b.flatten(1))
    fa, fb = flatten_aligned(a, b, size=2)
    assert fa.shape == (4, 8 * 4) and fb.shape == (4, 16 * 4)
    fa, fb = flatten_aligned(torch.randn(2, 3, 8, 14, 14), torch.randn(2, 5, 4, 7, 7))
    assert fa.shape == (2, 3 * 4 * 7 * 7) and fb.shape == (2, 5 * 4 * 7 * 7)
    fa, fb = flatten_aligned(torch.randn(2, 3, 8, 14, 14), torch.randn(2, 5, 16, 7, 28), size=(2, 3, 3))
    assert fa.shape == (2, 3 * 18) and fb.shape == (2, 5 * 18)
    with pytest.raises(ValueError, match="two"):
        flatten_aligned(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 2, 4, 4))
    with pytest.raises(ValueError, match="axes"):
        flatten_aligned(a, b, size=(2, 2, 2))


def _stages(n: int, channels: list[int], sizes: list[int], seed: int) -> list[torch.Tensor]:
    g = _gen(seed)
    return [torch.randn(n, c, s, s, generator=g) for c, s in zip(channels, sizes)]


def test_similarity_matrix_shape_and_nan_placement() -> None:
    teacher = _stages(20, [8, 16], [8, 4], seed=0)
    student = _stages(20, [16, 8, 32], [8, 4, 2], seed=1)
    for metric in ("linear_cka", "debiased_cka"):
        m = similarity_matrix(teacher, student, metric=metric)
        assert m.shape == (2, 3) and m.dtype == np.float64 and np.isfinite(m).all()
    for metric in ("cosine", "euclidean"):
        m = similarity_matrix(teacher, student, metric=metric)
        expected_nan = np.array([[True, False, True], [False, True, True]])
        assert np.array_equal(np.isnan(m), expected_nan)
    cos = similarity_matrix(teacher, student, metric="cosine", standardize=True)
    pt, ps = pool_features(teacher[0]), pool_features(student[1])
    assert cos[0, 1] == pytest.approx(mean_cosine_similarity(pt, ps, standardize=True))


def test_similarity_matrix_values_and_aligned_mode() -> None:
    teacher = _stages(12, [4, 6], [8, 4], seed=2)
    student = [teacher[0][:, :3] * 2.0, _stages(12, [5], [2], seed=3)[0]]
    pooled = similarity_matrix(teacher, student)
    assert pooled[0, 1] == pytest.approx(linear_cka(pool_features(teacher[0]), pool_features(student[1])))
    aligned = similarity_matrix(teacher, student, aligned=True)
    fa, fb = flatten_aligned(teacher[1], student[1])
    assert fa.shape == (12, 6 * 4) and fb.shape == (12, 5 * 4)
    assert aligned[1, 1] == pytest.approx(linear_cka(fa, fb))
    # Aligned mode with equal channels and grids: comparing a stage with itself gives CKA 1.
    assert similarity_matrix([teacher[0]], [teacher[0]], aligned=True)[0, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="linear_cka"):
        similarity_matrix(teacher, student, metric="linear_kca")


# ---------------------------------------------------------------- predictions


def test_prediction_agreement() -> None:
    a = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, 2.0], [0.0, 2.0, 0.0]])
    out = prediction_agreement(a, b)
    assert out["top1_agreement"] == pytest.approx(0.5)
    pa, pb = a.double().softmax(1), b.double().softmax(1)
    kl = float((pa * (pa.log() - pb.log())).sum(1).mean())
    assert out["kl"] == pytest.approx(kl, abs=1e-12)
    same = prediction_agreement(a, a)
    assert same["top1_agreement"] == 1.0 and same["kl"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 2\)"):
        prediction_agreement(a, b[:, :2])
