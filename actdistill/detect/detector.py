"""Training targets, losses and decoding of the temporal detector (`actdistill.models.temporal_detector`).

Training targets come from centre sampling per level with regression ranges (ActionFormer `label_points`), the losses
are a sigmoid focal loss and a 1-D DIoU loss normalised by the number of positives (averaged over processes under
torchrun, so a multi-process run equals one process), and decoding keeps the top candidates and runs (soft-)NMS per
class. Positions are "points" `p = j·2^l` on the level-0 grid, where grid coordinate x stands for time
`(x + 0.5)·feature_stride / fps` (see `features.py`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from actdistill.errors import ActdistillError
from actdistill.models.temporal_detector import TemporalDetector
from actdistill.utils.runtime import mean_over_ranks

__all__ = [
    "assign_targets",
    "decode_segments",
    "detection_losses",
    "diou_loss_1d",
    "gap_segments",
    "nms_1d",
    "sigmoid_focal_loss",
]

# ------------------------------------------------------------------------------------------------ targets & losses


def gap_segments(segments: Tensor, length: int) -> Tensor:
    """Background segments `(M, 2)`: the gaps between the union of `segments` `(N, 2)` inside `[0, length − 1]`."""
    lo, hi = 0.0, float(length - 1)
    gaps, cursor = [], lo
    for s, e in sorted(segments.tolist()):
        if s > cursor:
            gaps.append((cursor, min(s, hi)))
        cursor = max(cursor, e)
    if cursor < hi:
        gaps.append((cursor, hi))
    return torch.tensor([g for g in gaps if g[1] > g[0]], dtype=torch.float32).reshape(-1, 2)


def assign_targets(
    points: list[Tensor],
    strides: list[int],
    regression_ranges: list[tuple[float, float]],
    segments: Tensor,
    labels: Tensor,
    num_classes: int,
    radius: float = 1.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """ActionFormer centre sampling: `(cls (P, K), reg (P, 2) in stride units, positive (P,))` over all levels' points.

    A point p of stride s is positive for segment [a, b] when it lies inside [a, b] ∩ [c − radius·s, c + radius·s]
    (c the centre) and max(p − a, b − p) is in the level's regression range; among several, the shortest wins.
    """
    pts = torch.cat(points)
    stride = torch.cat([torch.full_like(p, float(s)) for p, s in zip(points, strides)])
    lo = torch.cat([torch.full_like(p, r[0]) for p, r in zip(points, regression_ranges)])
    hi = torch.cat([torch.full_like(p, r[1]) for p, r in zip(points, regression_ranges)])
    n_pts = pts.numel()
    if segments.numel() == 0:
        return torch.zeros(n_pts, num_classes), torch.zeros(n_pts, 2), torch.zeros(n_pts, dtype=torch.bool)
    seg = segments.to(pts).reshape(-1, 2)
    left = pts[:, None] - seg[None, :, 0]
    right = seg[None, :, 1] - pts[:, None]
    centre = seg.mean(-1)[None]
    r = radius * stride[:, None]
    inside = (pts[:, None] >= torch.maximum(seg[None, :, 0], centre - r)) & (
        pts[:, None] <= torch.minimum(seg[None, :, 1], centre + r)
    )
    reach = torch.maximum(left, right)
    in_range = (reach >= lo[:, None]) & (reach <= hi[:, None])
    lengths = (seg[:, 1] - seg[:, 0])[None].expand(n_pts, -1)
    lengths = torch.where(inside & in_range, lengths, torch.full_like(lengths, math.inf))
    best_len, best = lengths.min(dim=1)
    positive = torch.isfinite(best_len)
    cls = torch.zeros(n_pts, num_classes)
    cls[positive, labels.to(torch.long)[best[positive]]] = 1.0
    reg = torch.stack([left.gather(1, best[:, None])[:, 0], right.gather(1, best[:, None])[:, 0]], -1) / stride[:, None]
    return cls, reg * positive[:, None], positive


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise focal loss (Lin et al. 2017 eq. 5) of logits and {0,1} targets of the same shape."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * ce * (1 - p_t) ** gamma


def diou_loss_1d(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """1-D DIoU loss (Zheng et al. 2020) of (left, right) distances `(N, 2)` from the same points → `(N,)`."""
    inter = torch.minimum(pred[:, 0], target[:, 0]) + torch.minimum(pred[:, 1], target[:, 1])
    union = pred.sum(-1) + target.sum(-1) - inter
    iou = inter / union.clamp_min(eps)
    enclosing = torch.maximum(pred[:, 0], target[:, 0]) + torch.maximum(pred[:, 1], target[:, 1])
    centre_gap = ((pred[:, 1] - pred[:, 0]) - (target[:, 1] - target[:, 0])) / 2
    return 1 - iou + (centre_gap / enclosing.clamp_min(eps)) ** 2


def _flat(levels: list[Tensor]) -> Tensor:
    """Per-level `(B, X, T_l)` → `(B, ΣT_l, X)`."""
    return torch.cat([t.transpose(1, 2) for t in levels], dim=1)


def detection_losses(
    model: TemporalDetector,
    heads: dict[str, Any],
    segments: list[Tensor],
    labels: list[Tensor],
    background: bool = False,
) -> dict[str, Tensor]:
    """`{"cls", "reg"}`: focal loss and DIoU loss summed over valid positions / number of positives (≥ 1).

    `segments[b]` `(N_b, 2)` on the level-0 grid, `labels[b]` `(N_b,)`. `background=True`: the targets are the gaps
    between the segments, with no action class (all-zero class targets), as in paper 2's official detection code.
    """
    cfg = model.config
    cls_logits, offsets, masks = _flat(heads["cls"]), _flat(heads["reg"]), torch.cat(heads["masks"], dim=1)
    length = heads["masks"][0].shape[1]
    points = model.points(length, cls_logits.device)
    cls_t, reg_t, pos = [], [], []
    for seg, lab in zip(segments, labels):
        if background:
            seg = gap_segments(seg, length)
            lab = torch.zeros(len(seg), dtype=torch.long)
        c, r, p = assign_targets(
            points, model.strides, cfg.regression_ranges, seg, lab, cfg.num_classes, cfg.center_sample_radius
        )
        cls_t.append(c * (0.0 if background else 1.0))
        reg_t.append(r)
        pos.append(p)
    cls_t = torch.stack(cls_t).to(cls_logits)
    reg_t = torch.stack(reg_t).to(offsets)
    pos = torch.stack(pos).to(masks.device) & masks
    norm = mean_over_ranks(pos.sum().to(cls_logits.dtype)).clamp_min(1)
    focal = sigmoid_focal_loss(cls_logits, cls_t)[masks].sum() / norm
    reg = diou_loss_1d(offsets[pos], reg_t[pos]).sum() / norm if pos.any() else offsets.sum() * 0.0
    return {"cls": focal, "reg": reg}


# ------------------------------------------------------------------------------------------------ decoding & NMS


def nms_1d(
    segments: Tensor,
    scores: Tensor,
    labels: Tensor,
    iou_threshold: float = 0.5,
    soft: bool = False,
    sigma: float = 0.5,
    min_score: float = 0.001,
    max_segments: int = 200,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class (soft-)NMS of `(N, 2)` segments; returns kept `(segments, scores, labels)` by descending score.

    Hard NMS drops a segment whose tIoU with a kept one of its class exceeds `iou_threshold`; Gaussian soft-NMS
    (Bodla et al. 2017) multiplies its score by exp(−tIoU²/σ) instead and drops it below `min_score`.
    """
    segs, sc, lab = segments.clone(), scores.clone(), labels.clone()
    keep_s, keep_c, keep_l = [], [], []
    alive = torch.ones(len(sc), dtype=torch.bool)
    while alive.any() and len(keep_s) < max_segments:
        i = int(torch.where(alive, sc, torch.full_like(sc, -math.inf)).argmax())
        alive[i] = False
        keep_s.append(segs[i])
        keep_c.append(sc[i])
        keep_l.append(lab[i])
        same = alive & (lab == lab[i])
        if not same.any():
            continue
        inter = (torch.minimum(segs[same, 1], segs[i, 1]) - torch.maximum(segs[same, 0], segs[i, 0])).clamp_min(0)
        union = (segs[same, 1] - segs[same, 0]) + (segs[i, 1] - segs[i, 0]) - inter
        iou = inter / union.clamp_min(1e-6)
        idx = torch.nonzero(same)[:, 0]
        if soft:
            sc[idx] = sc[idx] * torch.exp(-(iou**2) / sigma)
            alive[idx[sc[idx] < min_score]] = False
        else:
            alive[idx[iou > iou_threshold]] = False
    if not keep_s:
        return torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.stack(keep_s), torch.stack(keep_c), torch.stack(keep_l)


@torch.no_grad()
def decode_segments(
    model: TemporalDetector,
    heads: dict[str, Any],
    index: int,
    *,
    pre_nms_threshold: float = 0.001,
    pre_nms_topk: int = 2000,
    nms: str = "soft",
    iou_threshold: float = 0.5,
    sigma: float = 0.5,
    max_segments: int = 200,
    min_length: float = 0.05,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sample `index` of a batch → `(segments (M, 2) on the level-0 grid, scores (M,), labels (M,))` after NMS."""
    if nms not in ("soft", "hard", "none"):
        raise ActdistillError(f"nms must be 'soft', 'hard' or 'none', got {nms!r}")
    length = heads["masks"][0].shape[1]
    all_segs, all_scores, all_labels = [], [], []
    for pts, s, cls, reg, mask in zip(model.points(length), model.strides, heads["cls"], heads["reg"], heads["masks"]):
        valid = mask[index].cpu()
        prob = torch.sigmoid(cls[index].float().cpu()).T[valid]  # (T_l', K)
        off = reg[index].float().cpu().T[valid] * s  # (T_l', 2)
        p = pts[valid]
        flat = prob.flatten()
        keep = torch.nonzero(flat > pre_nms_threshold)[:, 0]
        if keep.numel() > pre_nms_topk:
            keep = keep[flat[keep].topk(pre_nms_topk).indices]
        where, label = keep // prob.shape[1], keep % prob.shape[1]
        seg = torch.stack([p[where] - off[where, 0], p[where] + off[where, 1]], -1)
        ok = (seg[:, 1] - seg[:, 0]) > min_length
        all_segs.append(seg[ok])
        all_scores.append(flat[keep][ok])
        all_labels.append(label[ok])
    segs, scores, labels = torch.cat(all_segs), torch.cat(all_scores), torch.cat(all_labels)
    if scores.numel() > pre_nms_topk:
        top = scores.topk(pre_nms_topk).indices
        segs, scores, labels = segs[top], scores[top], labels[top]
    if nms == "none":
        order = scores.argsort(descending=True)[:max_segments]
        return segs[order], scores[order], labels[order]
    return nms_1d(segs, scores, labels, iou_threshold, nms == "soft", sigma, pre_nms_threshold, max_segments)
