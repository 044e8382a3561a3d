"""Confidence calibration: expected calibration error and reliability-diagram bins (Guo et al., ICML-17).

Distillation with soft targets changes how confident the student is; ECE and the reliability diagram show
whether its top-1 confidence matches its accuracy. Confidence is the maximum softmax probability.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["expected_calibration_error", "reliability_bins"]


def _confidence_correct(
    probs: Tensor | np.ndarray, labels: Tensor | np.ndarray, from_logits: bool
) -> tuple[Tensor, Tensor]:
    p = torch.as_tensor(probs).detach().to(device="cpu", dtype=torch.float64)
    y = torch.as_tensor(labels).detach().to(device="cpu")
    if p.ndim != 2:
        raise ValueError(f"probs must be (N, K), got shape {tuple(p.shape)}")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise ValueError(f"labels must be (N,) matching probs {tuple(p.shape)}, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex():
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    if p.shape[0] == 0:
        raise ValueError("need at least one sample, got N = 0")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels must lie in [0, {p.shape[1] - 1}], got range [{y.min().item()}, {y.max().item()}]")
    if from_logits:
        p = torch.softmax(p, dim=1)
    else:
        row_sums = p.sum(dim=1)
        if (p < -1e-6).any() or not torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-3):
            raise ValueError(
                "probs rows must be probabilities (non-negative, summing to 1; "
                f"row sums span [{row_sums.min().item():.4g}, {row_sums.max().item():.4g}]); "
                "pass from_logits=True for raw logits"
            )
    conf, pred = p.max(dim=1)
    return conf, (pred == y.long()).to(torch.float64)


def reliability_bins(
    probs: Tensor | np.ndarray, labels: Tensor | np.ndarray, n_bins: int = 15, from_logits: bool = False
) -> dict[str, np.ndarray | float | int]:
    """Bin `(N, K)` probabilities (or logits with `from_logits=True`) by top-1 confidence; Guo et al. ICML-17 sec. 2.

    Equal-width bins (b/B, (b+1)/B] over (0, 1]. Returns numpy arrays `edges (B+1,)`, `counts (B,)`,
    `accuracy (B,)` and `confidence (B,)` (mean per bin, NaN for empty bins), plus `ece` (float) and `n` (int).
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    conf, correct = _confidence_correct(probs, labels, from_logits)
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    # right=False gives edges[b-1] < conf <= edges[b], i.e. bins closed on the right as in Guo et al.
    idx = torch.bucketize(conf, edges[1:-1], right=False)
    counts = torch.bincount(idx, minlength=n_bins).to(torch.float64)
    sum_acc = torch.bincount(idx, weights=correct, minlength=n_bins)
    sum_conf = torch.bincount(idx, weights=conf, minlength=n_bins)
    nonempty = counts > 0
    nan = torch.full_like(counts, float("nan"))
    accuracy = torch.where(nonempty, sum_acc / counts.clamp_min(1), nan)
    confidence = torch.where(nonempty, sum_conf / counts.clamp_min(1), nan)
    n = conf.shape[0]
    # Σ_b |B_b|/N · |acc_b − conf_b| = Σ_b |Σacc_b − Σconf_b| / N, which needs no NaN handling.
    ece = (sum_acc - sum_conf).abs().sum().item() / n
    return {
        "edges": edges.numpy(),
        "counts": counts.long().numpy(),
        "accuracy": accuracy.numpy(),
        "confidence": confidence.numpy(),
        "ece": ece,
        "n": n,
    }


def expected_calibration_error(
    probs: Tensor | np.ndarray, labels: Tensor | np.ndarray, n_bins: int = 15, from_logits: bool = False
) -> float:
    """ECE of `(N, K)` probabilities (or logits with `from_logits=True`) and `(N,)` labels; Guo et al. ICML-17 eq. 3.

    ECE = Σ_b |B_b|/N · |acc(B_b) − conf(B_b)| over `n_bins` equal-width confidence bins on (0, 1]; in [0, 1].
    Probabilities whose rows do not sum to 1 raise ValueError (pass `from_logits=True` for logits).
    """
    return float(reliability_bins(probs, labels, n_bins=n_bins, from_logits=from_logits)["ece"])
