"""Representation similarity between teacher and student: CKA, cosine, Euclidean, prediction agreement.

Paper 1 (sec. 4) claims distillation makes the student's features resemble the CNN teacher's, measured by
"cosine similarity and Euclidean distance", without a protocol. These functions make the measurement explicit:

  * CKA (linear, and its debiased variant) compares two representations of the same N inputs even when their
    widths differ, and is invariant to rotations and isotropic scaling of either one (Kornblith et al., ICML-19);
  * cosine / Euclidean compare rows pairwise and therefore need features living in the same D-dim space.

All maths runs in float64. Features are `(N, D)` with one row per input; stage maps `(N, C, H, W)` or
`(N, C, T, H, W)` (the model contract) are reduced by `pool_features` or `flatten_aligned` first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from actdistill.errors import suggest

__all__ = [
    "METRICS",
    "debiased_linear_cka",
    "flatten_aligned",
    "linear_cka",
    "mean_cosine_similarity",
    "mean_euclidean_distance",
    "pool_features",
    "prediction_agreement",
    "similarity_matrix",
]

_EPS = 1e-8


def _as_f64(x: Tensor | np.ndarray, name: str) -> Tensor:
    t = torch.as_tensor(x).detach()
    if t.ndim != 2:
        raise ValueError(f"{name} must be (N, D) features, got shape {tuple(t.shape)}; pool or flatten maps first")
    return t.to(torch.float64)


def _pair(x: Tensor | np.ndarray, y: Tensor | np.ndarray, same_dim: bool = False) -> tuple[Tensor, Tensor]:
    a, b = _as_f64(x, "x"), _as_f64(y, "y")
    b = b.to(a.device)
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"x and y must describe the same N inputs, got x {tuple(a.shape)} and y {tuple(b.shape)} "
            f"({a.shape[0]} vs {b.shape[0]} rows)"
        )
    if same_dim and a.shape[1] != b.shape[1]:
        raise ValueError(
            f"x and y must have the same feature dimension for a row-wise comparison, got x {tuple(a.shape)} and "
            f"y {tuple(b.shape)}; use linear_cka for features of different widths"
        )
    return a, b


def _center(x: Tensor) -> Tensor:
    return x - x.mean(dim=0, keepdim=True)


def _ratio(num: float, den_sq: float) -> float:
    # A constant representation (zero variance) makes CKA 0/0: report NaN rather than an arbitrary number.
    if not den_sq > 0.0:
        return math.nan
    return num / math.sqrt(den_sq)


def _linear_cka_feature(x: Tensor, y: Tensor) -> float:
    """Feature-space linear CKA on centred `(N, D1)`, `(N, D2)`: ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F); O(N·D²)."""
    xy = (y.T @ x).square().sum().item()
    xx = (x.T @ x).square().sum().item()
    yy = (y.T @ y).square().sum().item()
    return _ratio(xy, xx * yy)


def _linear_cka_gram(x: Tensor, y: Tensor) -> float:
    """Gram-form linear CKA on centred `(N, D1)`, `(N, D2)`: ⟨K, L⟩ / (‖K‖_F ‖L‖_F), K = XXᵀ, L = YYᵀ; O(N²·D)."""
    k, l = x @ x.T, y @ y.T
    return _ratio((k * l).sum().item(), k.square().sum().item() * l.square().sum().item())


def linear_cka(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Linear CKA of `x (N, D1)` and `y (N, D2)` (Kornblith et al., ICML-19, eq. 5 with centred features).

    CKA = ‖YcᵀXc‖²_F / (‖XcᵀXc‖_F ‖YcᵀYc‖_F), in [0, 1]; NaN when either representation is constant.
    Uses the feature-space form when the widths are small compared with N and the (equal-valued) N×N Gram
    form otherwise, whichever needs fewer multiply-adds.
    """
    a, b = _pair(x, y)
    a, b = _center(a), _center(b)
    n, d1, d2 = a.shape[0], a.shape[1], b.shape[1]
    if d1 * d2 + d1 * d1 + d2 * d2 <= n * (d1 + d2):
        return _linear_cka_feature(a, b)
    return _linear_cka_gram(a, b)


def _hsic_unbiased_terms(x: Tensor, y: Tensor) -> float:
    """HSIC_u(XXᵀ, YYᵀ) (Song et al. 2012, eq. 5) evaluated without forming the N×N Gram matrices."""
    n = x.shape[0]
    diag_k = x.square().sum(dim=1)  # K_ii
    diag_l = y.square().sum(dim=1)
    # tr(K̃L̃) = Σ_{i≠j} K_ij L_ij = ‖YᵀX‖²_F − Σ_i K_ii L_ii
    trace_kl = (y.T @ x).square().sum() - (diag_k * diag_l).sum()
    # K̃1 = X(Xᵀ1) − diag(K); 1ᵀK̃1 = ‖Xᵀ1‖² − Σ_i K_ii
    k1 = x @ x.sum(dim=0) - diag_k
    l1 = y @ y.sum(dim=0) - diag_l
    sum_k, sum_l = k1.sum(), l1.sum()
    hsic = trace_kl + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (k1 @ l1)
    return (hsic / (n * (n - 3))).item()


def debiased_linear_cka(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Debiased linear CKA of `x (N, D1)`, `y (N, D2)`: HSIC_u(K,L)/sqrt(HSIC_u(K,K)·HSIC_u(L,L)), K=XXᵀ, L=YYᵀ.

    HSIC_u is the unbiased estimator of Song et al. 2012 (eq. 5), as used for CKA by Nguyen et al. ICLR-21:
    [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1/((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3)) with K̃, L̃ the Gram matrices with zeroed
    diagonals. Unlike `linear_cka` it is ≈ 0 for independent features even when D is not small compared with N.
    Can be slightly negative; NaN if an HSIC_u(K,K) estimate is not positive. Needs N ≥ 4. Computed in
    feature space, O(N·D²), so large N is cheap.
    """
    a, b = _pair(x, y)
    n = a.shape[0]
    if n < 4:
        raise ValueError(f"debiased_linear_cka needs at least 4 samples (the estimator divides by n(n-3)), got {n}")
    # Centring leaves HSIC_u unchanged in exact arithmetic but avoids cancellation with large feature means.
    a, b = _center(a), _center(b)
    xy = _hsic_unbiased_terms(a, b)
    xx = _hsic_unbiased_terms(a, a)
    yy = _hsic_unbiased_terms(b, b)
    if not (xx > 0.0 and yy > 0.0):
        return math.nan
    return xy / math.sqrt(xx * yy)


def _standardize(x: Tensor) -> Tensor:
    return (x - x.mean(dim=0, keepdim=True)) / (x.std(dim=0, unbiased=False, keepdim=True) + _EPS)


def mean_cosine_similarity(x: Tensor | np.ndarray, y: Tensor | np.ndarray, standardize: bool = False) -> float:
    """Mean over rows of cos(x_i, y_i) for `x, y (N, D)` (the cosine score of paper 1, sec. 4), in [−1, 1].

    With `standardize=True` each column of x and of y is first z-scored over N (own statistics, eps 1e-8).
    Without it, non-negative features (post-ReLU CNN maps) give high cosine for unrelated inputs, so prefer
    the standardised score when comparing representations. Rows of zeros count as cosine 0.
    """
    a, b = _pair(x, y, same_dim=True)
    if standardize:
        a, b = _standardize(a), _standardize(b)
    return F.cosine_similarity(a, b, dim=1, eps=_EPS).mean().item()


def mean_euclidean_distance(
    x: Tensor | np.ndarray, y: Tensor | np.ndarray, standardize: bool = True, normalized: bool = False
) -> float:
    """Mean over rows of ‖x_i − y_i‖₂ for `x, y (N, D)` (the Euclidean score of paper 1, sec. 4); lower = closer.

    `standardize=True` z-scores each column of x and of y over N with its own statistics (eps 1e-8), so the
    score ignores per-feature offsets and scales. `normalized=True` divides by sqrt(D), giving a per-feature RMS
    distance comparable across widths: for standardised features its square averages to 2·(1 − mean column
    Pearson r), i.e. 0 for identical, ≈ sqrt(2) ≈ 1.41 for unrelated and ≈ 2 for anti-correlated features.
    """
    a, b = _pair(x, y, same_dim=True)
    if standardize:
        a, b = _standardize(a), _standardize(b)
    dist = (a - b).norm(dim=1).mean().item()
    return dist / math.sqrt(a.shape[1]) if normalized else dist


def pool_features(feature: Tensor) -> Tensor:
    """Global average pool: `(N, C, H, W)` or `(N, C, T, H, W)` -> `(N, C)`; `(N, C)` passes through."""
    if feature.ndim == 2:
        return feature
    if feature.ndim in (4, 5):
        return feature.mean(dim=tuple(range(2, feature.ndim)))
    raise ValueError(
        f"expected a stage map (N, C, H, W) or (N, C, T, H, W) or pooled (N, C) features, got shape "
        f"{tuple(feature.shape)}; reshape transformer tokens (N, L, C) to a map first"
    )


def flatten_aligned(feat_a: Tensor, feat_b: Tensor, size: int | Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """Pool two maps to one grid and flatten: `(N, C_a, *grid_a)`, `(N, C_b, *grid_b)` -> `(N, C_a·S)`, `(N, C_b·S)`.

    Maps are both `(N, C, H, W)` or both `(N, C, T, H, W)`. `size` is the target `(H, W)` / `(T, H, W)` (an int
    applies to every axis); by default the per-axis minimum of the two grids, so the finer map is averaged down
    to the coarser one. Keeps spatial layout for map-aligned CKA between stages of different resolution.
    """
    if feat_a.ndim != feat_b.ndim or feat_a.ndim not in (4, 5):
        raise ValueError(
            f"flatten_aligned needs two (N, C, H, W) or two (N, C, T, H, W) maps, got {tuple(feat_a.shape)} "
            f"and {tuple(feat_b.shape)}"
        )
    if feat_a.shape[0] != feat_b.shape[0]:
        raise ValueError(f"maps must have the same N, got {tuple(feat_a.shape)} and {tuple(feat_b.shape)}")
    grid_a, grid_b = feat_a.shape[2:], feat_b.shape[2:]
    if size is None:
        target = tuple(min(p, q) for p, q in zip(grid_a, grid_b))
    elif isinstance(size, int):
        target = (size,) * len(grid_a)
    else:
        target = tuple(int(s) for s in size)
    if len(target) != len(grid_a):
        raise ValueError(f"size {size!r} has {len(target)} axes, the maps have {len(grid_a)} ({tuple(grid_a)})")
    pool = F.adaptive_avg_pool2d if feat_a.ndim == 4 else F.adaptive_avg_pool3d
    out_a = pool(feat_a.float() if not feat_a.is_floating_point() else feat_a, target)
    out_b = pool(feat_b.float() if not feat_b.is_floating_point() else feat_b, target)
    return out_a.flatten(1), out_b.flatten(1)


def _cosine(x: Tensor, y: Tensor, **kwargs: Any) -> float:
    return mean_cosine_similarity(x, y, **kwargs)


def _euclidean(x: Tensor, y: Tensor, **kwargs: Any) -> float:
    kwargs.setdefault("normalized", True)
    return mean_euclidean_distance(x, y, **kwargs)


METRICS = {
    "linear_cka": linear_cka,
    "debiased_cka": debiased_linear_cka,
    "cosine": _cosine,
    "euclidean": _euclidean,
}
_SAME_DIM = {"cosine", "euclidean"}


def similarity_matrix(
    teacher_feats: Sequence[Tensor],
    student_feats: Sequence[Tensor],
    metric: str = "linear_cka",
    aligned: bool = False,
    size: int | Sequence[int] | None = None,
    **metric_kwargs: Any,
) -> np.ndarray:
    """Similarity of every teacher stage with every student stage -> `(S_t, S_s)` float64 array (row = teacher).

    Stage features are maps or `(N, C)`. `aligned=False` global-average-pools each stage (`pool_features`);
    `aligned=True` pools each pair to a common grid and flattens (`flatten_aligned`, `size` as there).
    `metric`: "linear_cka", "debiased_cka" (any widths), "cosine" or "euclidean" (NaN where the two widths
    differ; "euclidean" is the standardised, sqrt(D)-normalised distance unless `metric_kwargs` say otherwise).
    `metric_kwargs` go to the metric function, e.g. `standardize=True` for "cosine".
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {sorted(METRICS)}.{suggest(metric, METRICS)}")
    if not teacher_feats or not student_feats:
        raise ValueError(f"need at least one stage on each side, got {len(teacher_feats)} and {len(student_feats)}")
    fn = METRICS[metric]
    out = np.full((len(teacher_feats), len(student_feats)), np.nan, dtype=np.float64)
    if not aligned:
        pooled_t = [pool_features(f) for f in teacher_feats]
        pooled_s = [pool_features(f) for f in student_feats]
    for i, ft in enumerate(teacher_feats):
        for j, fs in enumerate(student_feats):
            if aligned:
                a, b = flatten_aligned(ft, fs, size)
            else:
                a, b = pooled_t[i], pooled_s[j]
            if metric in _SAME_DIM and a.shape[1] != b.shape[1]:
                continue
            out[i, j] = fn(a, b, **metric_kwargs)
    return out


def prediction_agreement(logits_a: Tensor, logits_b: Tensor, temperature: float = 1.0) -> dict[str, float]:
    """Compare two models' `(N, K)` logits: top-1 agreement fraction and mean KL(p_a ‖ p_b) (batchmean, nats).

    Returns `{"top1_agreement": float in [0, 1], "kl": float ≥ 0}`; softmax at `temperature` (1 = plain).
    """
    if logits_a.ndim != 2 or logits_a.shape != logits_b.shape:
        raise ValueError(
            f"logits must both be (N, K) with the same shape, got {tuple(logits_a.shape)} and {tuple(logits_b.shape)}"
        )
    a = logits_a.detach().to(torch.float64)
    b = logits_b.detach().to(device=a.device, dtype=torch.float64)
    agree = (a.argmax(dim=1) == b.argmax(dim=1)).double().mean().item()
    log_pa = F.log_softmax(a / temperature, dim=1)
    log_pb = F.log_softmax(b / temperature, dim=1)
    kl = F.kl_div(log_pb, log_pa, reduction="batchmean", log_target=True).item()
    return {"top1_agreement": agree, "kl": kl}
