"""Pure distillation losses against independent computations (numpy re-derivations, identities, hand values)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from actdistill.distill.functional import (
    at_loss,
    attention_map,
    crd_loss,
    crd_nce_loss,
    ctkd_lambda,
    ctkd_temperature,
    dist_loss,
    dist_parts,
    dkd_loss,
    dkd_parts,
    fn_loss,
    gradient_reverse,
    hint_loss,
    kd_loss,
    mgd_loss,
    mgd_mask,
    rkd_loss,
    rkd_parts,
    simkd_loss,
    soft_cross_entropy,
)


def _rand(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


def _np_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _close(actual: torch.Tensor | float, expected: float | np.ndarray, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    actual = actual.detach().double().numpy() if isinstance(actual, torch.Tensor) else actual
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------------------------------ KD


def test_kd_equals_t2_times_soft_ce_minus_teacher_entropy() -> None:
    zs, zt, t = _rand(4, 6, seed=1, scale=3), _rand(4, 6, seed=2, scale=3), 3.0
    ps, pt = _np_softmax(_np(zs) / t), _np_softmax(_np(zt) / t)
    soft_ce = -(pt * np.log(ps)).sum(1).mean()
    entropy = -(pt * np.log(pt)).sum(1).mean()
    _close(kd_loss(zs, zt, t), t**2 * (soft_ce - entropy))
    _close(soft_cross_entropy(zs, zt, t), soft_ce)


def test_kd_zero_at_identical_logits_and_batch_duplication() -> None:
    zs, zt = _rand(3, 5, seed=3), _rand(3, 5, seed=4)
    _close(kd_loss(zs, zs.clone(), 4.0), 0.0)
    _close(kd_loss(torch.cat([zs, zs]), torch.cat([zt, zt]), 4.0), float(kd_loss(zs, zt, 4.0)))


def test_kd_gradient_is_t_times_prob_difference_over_b() -> None:
    zs, zt, t = _rand(5, 7, seed=5).requires_grad_(), _rand(5, 7, seed=6), 2.5
    kd_loss(zs, zt, t).backward()
    expected = t * (_np_softmax(_np(zs) / t) - _np_softmax(_np(zt) / t)) / 5
    _close(zs.grad, expected, atol=1e-6)


def test_kd_t2_scaling() -> None:
    zs, zt, t = _rand(4, 5, seed=7), _rand(4, 5, seed=8), 4.0
    _close(kd_loss(zs, zt, t), t**2 * float(kd_loss(zs / t, zt / t, 1.0)))


def test_kd_hand_value_2x3() -> None:
    # Row 1: p_t = (1/4, 1/2, 1/4) vs uniform p_s: KL = ln 3 − 1.5 ln 2. Row 2: identical → 0. batchmean → /2.
    zs = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    zt = torch.tensor([[0.0, math.log(2), 0.0], [1.0, 2.0, 3.0]])
    kl = math.log(3) - 1.5 * math.log(2)
    _close(kd_loss(zs, zt, 1.0), kl / 2)
    _close(kd_loss(2 * zs, 2 * zt, 2.0), 4 * kl / 2)


# ----------------------------------------------------------------------------------------------------- DKD


def _np_dkd(zs: np.ndarray, zt: np.ndarray, y: np.ndarray, t: float) -> tuple[float, float]:
    """Direct definition: binary KL on [p_g, 1 − p_g]; KL of p renormalised over the non-target classes."""
    tckd, nckd = [], []
    for b in range(zs.shape[0]):
        ps, pt = _np_softmax(zs[b] / t), _np_softmax(zt[b] / t)
        g = y[b]
        bs, bt = np.array([ps[g], 1 - ps[g]]), np.array([pt[g], 1 - pt[g]])
        tckd.append((bt * np.log(bt / bs)).sum())
        rest = np.arange(len(ps)) != g
        hs, ht = ps[rest] / ps[rest].sum(), pt[rest] / pt[rest].sum()
        nckd.append((ht * np.log(ht / hs)).sum())
    return t**2 * float(np.mean(tckd)), t**2 * float(np.mean(nckd))


def test_dkd_parts_match_direct_numpy() -> None:
    zs, zt, y, t = _rand(6, 5, seed=9, scale=2), _rand(6, 5, seed=10, scale=2), torch.tensor([0, 1, 2, 3, 4, 1]), 4.0
    tckd, nckd = dkd_parts(zs, zt, y, t)
    exp_tckd, exp_nckd = _np_dkd(_np(zs), _np(zt), y.numpy(), t)
    _close(tckd, exp_tckd, rtol=1e-4)
    _close(nckd, exp_nckd, rtol=1e-4)
    _close(dkd_loss(zs, zt, y, alpha=0.5, beta=3.0, temperature=t), 0.5 * exp_tckd + 3.0 * exp_nckd, rtol=1e-4)


def test_dkd_paper_identity_kd_equals_tckd_plus_weighted_nckd() -> None:
    # Per sample, at the same T and before T²: KL(p_t ‖ p_s) = TCKD + (1 − p_t^gt)·NCKD.
    zs, zt, y, t = _rand(5, 7, seed=11, scale=2), _rand(5, 7, seed=12, scale=2), torch.tensor([6, 0, 3, 3, 1]), 2.0
    for b in range(5):
        tckd, nckd = (x / t**2 for x in dkd_parts(zs[b : b + 1], zt[b : b + 1], y[b : b + 1], t))
        p_gt = F.softmax(zt[b] / t, dim=-1)[y[b]]
        _close(tckd + (1 - p_gt) * nckd, float(kd_loss(zs[b : b + 1], zt[b : b + 1], t)) / t**2, rtol=1e-4)


def test_dkd_zero_at_identical_and_batch_duplication() -> None:
    zs, zt, y = _rand(4, 6, seed=13), _rand(4, 6, seed=14), torch.tensor([0, 5, 2, 2])
    _close(dkd_loss(zs, zs.clone(), y), 0.0, atol=1e-6)
    dup = dkd_loss(torch.cat([zs, zs]), torch.cat([zt, zt]), torch.cat([y, y]))
    _close(dup, float(dkd_loss(zs, zt, y)), rtol=1e-5)


def test_dkd_finite_for_extreme_logits_fp32() -> None:
    # Both nets put all mass on the target (p_gt = 1 exactly in fp32); the non-target logits still carry a
    # distribution that NCKD must see: offsets (0, 1, 2) vs (2, 1, 0) on top of −1e4.
    zs = torch.tensor([[1e4, -1e4, -1e4 + 1, -1e4 + 2]], requires_grad=True)
    zt = torch.tensor([[1e4, -1e4 + 2, -1e4 + 1, -1e4]])
    y = torch.tensor([0])
    t = 4.0
    tckd, nckd = dkd_parts(zs, zt, y, t)
    hs, ht = _np_softmax(np.array([0.0, 1.0, 2.0]) / t), _np_softmax(np.array([2.0, 1.0, 0.0]) / t)
    _close(tckd, 0.0, atol=1e-6)
    _close(nckd, t**2 * (ht * np.log(ht / hs)).sum(), rtol=1e-4)
    # Opposite beliefs about the target: huge but finite, with finite gradients.
    zs2 = torch.tensor([[-1e4, 1e4, -1e4], [1e4, -1e4, 1e4]], requires_grad=True)
    zt2 = torch.tensor([[1e4, -1e4, -1e4], [-1e4, 1e4, -1e4]])
    loss = dkd_loss(zs2, zt2, torch.tensor([0, 1])) + dkd_loss(zs, zt, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zs2.grad).all() and torch.isfinite(zs.grad).all()


# ------------------------------------------------------------------------------------------------------ NKD


def test_dist_parts_match_np_corrcoef() -> None:
    zs, zt, tau = _rand(6, 5, seed=17, scale=2), _rand(6, 5, seed=18, scale=2), 2.0
    ys, yt = _np_softmax(_np(zs) / tau), _np_softmax(_np(zt) / tau)
    inter = 1 - np.mean([np.corrcoef(ys[b], yt[b])[0, 1] for b in range(6)])
    intra = 1 - np.mean([np.corrcoef(ys[:, c], yt[:, c])[0, 1] for c in range(5)])
    got_inter, got_intra = dist_parts(zs, zt, tau)
    _close(got_inter, tau**2 * inter, rtol=1e-5)
    _close(got_intra, tau**2 * intra, rtol=1e-5)
    _close(dist_loss(zs, zt, beta=2.0, gamma=0.5, temperature=tau), tau**2 * (2 * inter + 0.5 * intra), rtol=1e-5)


def test_dist_zero_when_student_equals_teacher() -> None:
    z = _rand(4, 7, seed=19)
    _close(dist_loss(z, z.clone()), 0.0, atol=1e-5)


def test_dist_invariant_to_smoothing_teacher_towards_uniform() -> None:
    # Pearson is affine-invariant, so y_t → a·y_t + (1 − a)/K (still a distribution) changes neither the
    # per-sample correlation over classes nor the per-class correlation over the batch. KL does change.
    zs, zt, a = _rand(5, 6, seed=20, scale=2), _rand(5, 6, seed=21, scale=2), 0.3
    zt_smooth = torch.log(a * F.softmax(zt, dim=-1) + (1 - a) / 6)
    for got, ref in zip(dist_parts(zs, zt_smooth), dist_parts(zs, zt)):
        _close(got, float(ref), rtol=1e-4, atol=1e-6)
    assert abs(float(kd_loss(zs, zt_smooth, 1.0)) - float(kd_loss(zs, zt, 1.0))) > 1e-2


def test_dist_invariant_to_per_sample_logit_shift_and_tau_squared() -> None:
    zs, zt, tau = _rand(4, 5, seed=22), _rand(4, 5, seed=23), 4.0
    shift = _rand(4, 1, seed=24, scale=10)
    _close(dist_loss(zs + shift, zt), float(dist_loss(zs, zt)), rtol=1e-4)
    _close(dist_loss(zs, zt, temperature=tau), tau**2 * float(dist_loss(zs / tau, zt / tau)), rtol=1e-5)


# ------------------------------------------------------------------------------------------------------- AT


def _np_q(f: np.ndarray) -> np.ndarray:
    a = (f**2).mean(axis=1).reshape(f.shape[0], -1)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_at_hand_value_one_hot_maps() -> None:
    fs, ft = torch.zeros(2, 3, 2, 2), torch.zeros(2, 5, 2, 2)
    fs[:, :, 0, 0] = 1.0
    ft[:, :, 0, 1] = 2.0
    # q_s = e_0, q_t = e_1 for both samples: code = (2 + 2) squared units over 2·4 entries; paper = √2 per sample.
    _close(at_loss(fs, ft), 0.5)
    _close(at_loss(fs, ft, mode="paper"), math.sqrt(2))


def test_at_both_modes_match_numpy_with_channel_mismatch() -> None:
    fs, ft = _rand(2, 3, 2, 2, seed=25), _rand(2, 7, 2, 2, seed=26)
    qs, qt = _np_q(_np(fs)), _np_q(_np(ft))
    _close(attention_map(fs), qs)
    _close(at_loss(fs, ft), ((qs - qt) ** 2).mean())
    _close(at_loss(fs, ft, mode="paper"), np.linalg.norm(qs - qt, axis=1).mean())
    with pytest.raises(ValueError, match="mode"):
        at_loss(fs, ft, mode="squared")


def test_at_video_and_pooled_size_mismatch() -> None:
    fs, ft = _rand(2, 3, 2, 3, 3, seed=27), _rand(2, 4, 2, 3, 3, seed=28)
    qs, qt = _np_q(_np(fs)), _np_q(_np(ft))
    assert attention_map(fs).shape == (2, 18)
    _close(at_loss(fs, ft), ((qs - qt) ** 2).mean())
    # 2-D: the student map is twice as large.
    s2, t2 = _rand(2, 3, 4, 4, seed=29), _rand(2, 5, 2, 2, seed=30)
    _close(at_loss(s2, t2), float(at_loss(F.avg_pool2d(s2, 2), t2)))
    # 3-D, each dim pooled on its own: the student is longer in time, the teacher larger in space.
    s3, t3 = _rand(1, 2, 4, 2, 2, seed=31), _rand(1, 3, 2, 4, 4, seed=32)
    expected = at_loss(F.avg_pool3d(s3, (2, 1, 1)), F.avg_pool3d(t3, (1, 2, 2)))
    _close(at_loss(s3, t3), float(expected))


def test_at_zero_for_identical_and_invariant_to_positive_scaling() -> None:
    fs, ft = _rand(2, 3, 4, 4, seed=33), _rand(2, 6, 4, 4, seed=34)
    _close(at_loss(fs, fs.clone()), 0.0)
    _close(at_loss(fs, fs.clone(), mode="paper"), 0.0)
    _close(at_loss(3.7 * fs, 0.2 * ft), float(at_loss(fs, ft)), rtol=1e-5)


# --------------------------------------------------------------------------------------------- hint / SimKD


def test_hint_is_mse_and_names_both_shapes() -> None:
    fs, ft = _rand(2, 4, 3, 3, seed=35), _rand(2, 4, 3, 3, seed=36)
    _close(hint_loss(fs, ft), float(F.mse_loss(fs, ft)))
    _close(hint_loss(fs, ft), float(((fs - ft) ** 2).mean()))
    with pytest.raises(ValueError) as err:
        hint_loss(_rand(2, 3, 4, 4), _rand(2, 5, 4, 4))
    assert "(2, 3, 4, 4)" in str(err.value) and "(2, 5, 4, 4)" in str(err.value)


def test_simkd_is_mse_after_pooling() -> None:
    fs, ft = _rand(2, 4, 2, 6, 6, seed=37), _rand(2, 4, 2, 3, 3, seed=38)
    _close(simkd_loss(fs, ft), float(F.mse_loss(F.avg_pool3d(fs, (1, 2, 2)), ft)))
    a, b = _rand(2, 4, 5, 5, seed=39), _rand(2, 4, 5, 5, seed=139)
    _close(simkd_loss(a, b), float(((a - b) ** 2).mean()))
    with pytest.raises(ValueError) as err:
        simkd_loss(_rand(2, 3, 4, 4), _rand(2, 5, 4, 4))
    assert "(2, 3, 4, 4)" in str(err.value) and "(2, 5, 4, 4)" in str(err.value)


# ----------------------------------------------------------------------------------------------------- RKD


def _np_smooth_l1(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return np.where(ax < 1, 0.5 * x**2, ax - 0.5)


def _np_rkd(es: np.ndarray, et: np.ndarray) -> tuple[float, float]:
    """Triple loops over the definitions in Park et al. (no vectorised tricks)."""
    b = es.shape[0]

    def geometry(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(b)] for i in range(b)])
        d = d / d[d > 0].mean()
        a = np.zeros((b, b, b))
        for i in range(b):
            for j in range(b):
                for k in range(b):
                    u, v = e[j] - e[i], e[k] - e[i]
                    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
                    if nu > 0 and nv > 0:
                        a[i, j, k] = u @ v / (nu * nv)
        return d, a

    ds, as_ = geometry(es)
    dt, at = geometry(et)
    return float(_np_smooth_l1(ds - dt).mean()), float(_np_smooth_l1(as_ - at).mean())


def test_rkd_matches_triple_loop_numpy() -> None:
    es, et = _rand(5, 3, seed=40), _rand(5, 4, seed=41, scale=3)
    dist, angle = _np_rkd(_np(es), _np(et))
    got_d, got_a = rkd_parts(es, et)
    _close(got_d, dist, rtol=1e-5)
    _close(got_a, angle, rtol=1e-5)
    _close(rkd_loss(es, et), 25 * dist + 50 * angle, rtol=1e-5)


def test_rkd_zero_when_identical_and_invariant_to_scale_and_rotation() -> None:
    es, et = _rand(6, 4, seed=42), _rand(6, 4, seed=43)
    _close(rkd_loss(es, es.clone()), 0.0)
    ref = float(rkd_loss(es, et))
    _close(rkd_loss(3.0 * es, 3.0 * et), ref, rtol=1e-5)
    _close(rkd_loss(0.1 * es, 7.0 * et), ref, rtol=1e-5)
    q, _ = torch.linalg.qr(_rand(4, 4, seed=44))
    _close(rkd_loss(es @ q, et @ q), ref, rtol=1e-4)


def test_rkd_teacher_gets_no_grad_and_duplicates_are_finite() -> None:
    es = _rand(4, 2, 2, seed=45).requires_grad_()
    et = _rand(4, 3, seed=46).requires_grad_()
    dup = torch.cat([es, es[:1]])
    loss = rkd_loss(dup, torch.cat([et, et[:1]]))
    loss.backward()
    assert et.grad is None
    assert torch.isfinite(es.grad).all() and es.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------- MGD


def test_mgd_no_mask_identity_generator_is_scaled_sum_of_squares() -> None:
    fs, ft = _rand(3, 4, 2, 2, seed=47), _rand(3, 4, 2, 2, seed=48)
    expected = 7e-5 * ((_np(fs) - _np(ft)) ** 2).sum() / 3
    _close(mgd_loss(fs, ft, nn.Identity(), mask_ratio=0.0), expected, rtol=1e-5, atol=0)


def test_mgd_applies_the_mask_drawn_from_the_rng() -> None:
    fs, ft = _rand(4, 6, 3, 3, seed=49), _rand(4, 6, 3, 3, seed=50)
    keep = mgd_mask(fs.shape, 0.5, "channel", "cpu", torch.Generator().manual_seed(7))
    loss = mgd_loss(fs, ft, nn.Identity(), 0.5, alpha=1.0, generator_rng=torch.Generator().manual_seed(7))
    _close(loss, ((_np(fs) * _np(keep) - _np(ft)) ** 2).sum() / 4, rtol=1e-5)


def test_mgd_mask_shapes_and_keep_fraction() -> None:
    g = torch.Generator().manual_seed(0)
    channel = mgd_mask((64, 256, 7, 7), 0.15, "channel", "cpu", g)
    assert channel.shape == (64, 256, 1, 1) and set(channel.unique().tolist()) <= {0.0, 1.0}
    assert abs(channel.mean().item() - 0.85) < 0.02
    spatial = mgd_mask((8, 32, 4, 16, 16), 0.65, "spatial", "cpu", g)
    assert spatial.shape == (8, 1, 4, 16, 16)
    assert abs(spatial.mean().item() - 0.35) < 0.03
    assert mgd_mask((2, 3, 4, 4), 0.0, "channel", "cpu").min() == 1.0
    with pytest.raises(ValueError):
        mgd_mask((2, 3, 4, 4), 0.1, "tube", "cpu")


def test_mgd_video_generator_gets_gradients() -> None:
    torch.manual_seed(0)
    gen = nn.Sequential(nn.Conv3d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 4, 3, padding=1))
    fs, ft = _rand(2, 4, 2, 3, 3, seed=51).requires_grad_(), _rand(2, 4, 2, 3, 3, seed=52)
    for kind in ("channel", "spatial"):
        loss = mgd_loss(fs, ft, gen, mask=kind, generator_rng=torch.Generator().manual_seed(1))
        loss.backward()
        assert torch.isfinite(loss) and loss > 0
    assert gen[0].weight.grad.abs().sum() > 0 and fs.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------------- FN


def test_fn_below_cap_is_soft_ce_of_plain_logits() -> None:
    f, w, b, zt = _rand(4, 6, seed=53, scale=0.1), _rand(5, 6, seed=54), _rand(5, seed=55), _rand(4, 5, seed=56)
    assert f.norm(dim=1).max() < 2.0
    logits = _np(f) @ _np(w).T + _np(b)
    expected = -(_np_softmax(_np(zt)) * np.log(_np_softmax(logits))).sum(1).mean()
    _close(fn_loss(f, w, b, zt), expected, rtol=1e-5)


def test_fn_large_norm_is_kd_at_sample_temperature() -> None:
    f, w, zt, cap = _rand(4, 6, seed=57, scale=5), _rand(5, 6, seed=58), _rand(4, 5, seed=59), 2.0
    norms = np.linalg.norm(_np(f), axis=1)
    assert norms.min() > cap
    temps = norms / cap
    log_ps = np.log(_np_softmax((_np(f) @ _np(w).T) / temps[:, None]))
    expected = -(_np_softmax(_np(zt)) * log_ps).sum(1).mean()
    _close(fn_loss(f, w, None, zt, norm_cap=cap), expected, rtol=1e-5)
    # With a bias, only the W·f part is rescaled.
    b = _rand(5, seed=60)
    logits = (_np(f) @ _np(w).T) / temps[:, None] + _np(b)
    _close(fn_loss(f, w, b, zt), -(_np_softmax(_np(zt)) * np.log(_np_softmax(logits))).sum(1).mean(), rtol=1e-5)
    zero = torch.zeros(2, 6, requires_grad=True)
    fn_loss(zero, w, b, zt[:2]).backward()
    assert torch.isfinite(zero.grad).all()


# ----------------------------------------------------------------------------------------------------- CRD


def test_crd_hand_value_2x3() -> None:
    # K = 2 negatives, N = 4 → m·P_n = 0.5.
    scores = torch.tensor([[2.0, 0.5, 1.0], [1.0, 1.0, 0.25]])
    row1 = math.log(2 / 2.5) + math.log(0.5 / 1.0) + math.log(0.5 / 1.5)
    row2 = math.log(1 / 1.5) + math.log(0.5 / 1.5) + math.log(0.5 / 0.75)
    expected = -(row1 + row2) / 2
    _close(crd_nce_loss(scores, num_data=4, eps=0.0), expected)
    _close(crd_nce_loss(scores, num_data=4), expected, rtol=1e-5)
    other = torch.tensor([[0.5, 0.5, 0.5], [3.0, 0.1, 0.2]])
    _close(crd_loss(scores, other, 4), expected + float(crd_nce_loss(other, 4)), rtol=1e-6)


# ------------------------------------------------------------------------------------------------ GRL / CTKD


def test_gradient_reverse_identity_forward_scaled_backward() -> None:
    x, g = _rand(3, 4, seed=61).requires_grad_(), _rand(3, 4, seed=62)
    y = gradient_reverse(x, -0.5)
    assert torch.equal(y, x)
    (y * g).sum().backward()
    _close(x.grad, -0.5 * _np(g))


def test_ctkd_temperature_range_and_initial_value() -> None:
    theta = torch.linspace(-10, 10, 41)
    temp = ctkd_temperature(theta, -1.0)
    assert (temp > 1).all() and (temp < 21).all()
    _close(ctkd_temperature(torch.tensor(1.0), -1.0), 1 + 20 / (1 + math.exp(-1)))
    assert abs(float(ctkd_temperature(torch.tensor(1.0), 0.0)) - 15.62) < 0.01


def test_ctkd_temperature_gets_reversed_gradient_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    student = nn.Linear(8, 5)
    x, zt = _rand(4, 8, seed=63), _rand(4, 5, seed=64, scale=3)
    theta = nn.Parameter(torch.tensor(1.0))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        zs = student(x)
        assert zs.dtype == torch.bfloat16
        temp = ctkd_temperature(theta, -0.5)
        assert temp.dtype == torch.float32
        loss = kd_loss(zs, zt, temp)
    loss.backward()
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0
    # Same loss without the GRL: θ's gradient must be −0.5 times it, non-zero.
    theta_plain = torch.tensor(1.0, requires_grad=True)
    kd_loss(zs.detach(), zt, 1 + 20 * torch.sigmoid(theta_plain)).backward()
    assert theta.grad is not None and abs(float(theta_plain.grad)) > 1e-6
    _close(theta.grad, -0.5 * float(theta_plain.grad), rtol=1e-4)


def test_ctkd_lambda_schedule() -> None:
    _close(ctkd_lambda(1), -0.0245, atol=1e-4)
    _close(ctkd_lambda(5), -0.5, atol=1e-12)
    _close(ctkd_lambda(10), -1.0, atol=1e-12)
    _close(ctkd_lambda(20), -1.0, atol=1e-12)
    _close(ctkd_lambda(0), 0.0, atol=1e-12)


# ------------------------------------------------------------------------------------------- fp32 under AMP


@pytest.mark.parametrize(
    "fn",
    [
        lambda: dkd_loss(_rand(4, 6, seed=70), _rand(4, 6, seed=71), torch.tensor([0, 1, 2, 3])),
        lambda: dist_loss(_rand(4, 6, seed=70), _rand(4, 6, seed=71)),
        lambda: at_loss(_rand(2, 3, 4, 4, seed=72), _rand(2, 5, 2, 2, seed=73)),
        lambda: rkd_loss(_rand(6, 16, seed=74), _rand(6, 8, seed=75)),
        lambda: fn_loss(_rand(4, 16, seed=76, scale=3), _rand(5, 16, seed=77), _rand(5, seed=78), _rand(4, 5)),
        lambda: crd_loss(_rand(3, 5, seed=79).exp(), _rand(3, 5, seed=80).exp(), 100),
    ],
    ids=["dkd", "dist", "at", "rkd", "fn", "crd"],
)
def test_losses_compute_in_fp32_under_autocast(fn: Callable[[], torch.Tensor]) -> None:
    ref = fn()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        amp = fn()
    assert amp.dtype == torch.float32
    _close(amp, float(ref), rtol=1e-6, atol=1e-7)
