"""An anchor-free temporal action detector over snippet features (ActionFormer-style, Zhang et al. ECCV 2022).

Features `(B, C, T)` → conv embedding + residual conv stem → a temporal pyramid (max-pool ×2 per level; strides
1, 2, 4, 8 by default) → shared heads per position: sigmoid class scores `(B, K, T_l)` and distances to the start
and end `(B, 2, T_l)` in units of the level stride. Positions are "points" `p = j·2^l` on the level-0 grid, where
grid coordinate x stands for time `(x + 0.5)·feature_stride / fps` (see `features.py`). Training targets come
from centre sampling per level with regression ranges (ActionFormer `label_points`), the losses are a sigmoid
focal loss and a 1-D DIoU loss, and decoding keeps the top candidates and runs (soft-)NMS per class.

With `attention=True` the stem output F is split by a per-(channel, time) attention A (1-D form of paper 2, eq. 8)
into `F_fg = F⊙A·N/ΣA` and `F_bg = F⊙(1−A)·N/Σ(1−A)` (the detection form of eqs. 9-10 in paper 2's official code,
GKD/thumos14/train.py; the sums are taken per sample over valid positions and rescaled by their count N so
magnitudes stay O(1)); the heads run on F_fg, and on F_bg for the background loss (as in that code).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actdistill.errors import ActdistillError

__all__ = [
    "PRESETS",
    "DetectorConfig",
    "TemporalDetector",
    "assign_targets",
    "build_detector",
    "decode_segments",
    "detection_losses",
    "diou_loss_1d",
    "gap_segments",
    "nms_1d",
    "sigmoid_focal_loss",
]

# Student (small) and teacher (large) shapes; any DetectorConfig field can be overridden.
PRESETS: dict[str, dict[str, Any]] = {
    "small": {"embed_dim": 64, "stem_layers": 1, "head_layers": 1},
    "large": {"embed_dim": 256, "stem_layers": 3, "head_layers": 2},
}


@dataclass
class DetectorConfig:
    """Shape and assignment settings of `TemporalDetector`."""

    in_channels: int
    num_classes: int
    embed_dim: int = 128
    stem_layers: int = 2
    head_layers: int = 2
    levels: int = 4
    kernel: int = 3
    center_sample_radius: float = 1.5
    prior_prob: float = 0.01
    attention: bool = False
    regression_ranges: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.levels < 1 or self.embed_dim < 1 or self.in_channels < 1 or self.num_classes < 1:
            raise ActdistillError(f"detector needs levels, embed_dim, in_channels, num_classes ≥ 1; got {self}")
        if not self.regression_ranges:
            # ActionFormer's ranges (0,4),(4,8),(8,16),... in level-0 units, the last level open-ended.
            self.regression_ranges = [
                (0.0 if lv == 0 else float(2 ** (lv + 1)), float(2 ** (lv + 2)) if lv < self.levels - 1 else math.inf)
                for lv in range(self.levels)
            ]
        self.regression_ranges = [(float(a), float(b)) for a, b in self.regression_ranges]
        if len(self.regression_ranges) != self.levels:
            n = len(self.regression_ranges)
            raise ActdistillError(f"regression_ranges has {n} entries for {self.levels} levels; give one per level")


def build_detector(preset: str, in_channels: int, num_classes: int, **overrides: Any) -> TemporalDetector:
    """`TemporalDetector` from a preset name (`small` / `large`) plus field overrides."""
    if preset not in PRESETS:
        raise ActdistillError(f"unknown detector preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return TemporalDetector(DetectorConfig(in_channels, num_classes, **{**PRESETS[preset], **overrides}))


def _groups(channels: int) -> int:
    return math.gcd(channels, 16)


class ConvBlock(nn.Module):
    """Masked Conv1d → GroupNorm → ReLU, residual when shapes allow: `(B, C, T)`, mask `(B, T)` → `(B, D, T)`."""

    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, padding=kernel // 2)
        self.norm = nn.GroupNorm(_groups(cout), cout)
        self.residual = cin == cout

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        m = mask[:, None].to(x.dtype)
        y = F.relu(self.norm(self.conv(x * m)))
        return (x + y if self.residual else y) * m


class AttentionHead1d(nn.Module):
    """P2 eq. 8 in 1-D: `A = sigmoid(GN(Conv1d(F)))`, `(B, C, T)` → `(B, C, T)` in (0, 1)."""

    def __init__(self, channels: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.norm = nn.GroupNorm(_groups(channels), channels)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.norm(self.conv(x)))


def _weighted(x: Tensor, weight: Tensor, mask: Tensor) -> Tensor:
    """`x⊙w · N / Σw` per sample over valid positions (paper 2's official detection code, rescaled by the count N)."""
    m = mask[:, None].to(x.dtype)
    total = (weight * m).sum(dim=(1, 2), keepdim=True)
    count = (m.expand_as(weight)).sum(dim=(1, 2), keepdim=True)
    return x * weight * m * (count / total.clamp_min(1e-6))


class TemporalDetector(nn.Module):
    """`forward(x (B, C, T), mask (B, T) bool)` → dict of per-level `cls` `(B, K, T_l)`, `reg` `(B, 2, T_l)`, ...

    Keys: `cls`, `reg`, `feats` (`(B, D, T_l)` pyramid features), `masks` (`(B, T_l)`), `strides`, `attention`
    (`(B, D, T)` or None), `background` (the same heads on F_bg, or None), `stem` (the map the pyramid starts from:
    F, or F_fg with attention) and `feature` (the un-weighted stem output F, what paper 2's CVAE models).
    """

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        d, k = config.embed_dim, config.kernel
        self.embed = ConvBlock(config.in_channels, d, k)
        self.stem = nn.ModuleList(ConvBlock(d, d, k) for _ in range(config.stem_layers))
        self.attention = AttentionHead1d(d, k) if config.attention else None
        self.down = nn.ModuleList(ConvBlock(d, d, k) for _ in range(config.levels - 1))
        self.cls_tower = nn.ModuleList(ConvBlock(d, d, k) for _ in range(config.head_layers))
        self.reg_tower = nn.ModuleList(ConvBlock(d, d, k) for _ in range(config.head_layers))
        self.cls_out = nn.Conv1d(d, config.num_classes, k, padding=k // 2)
        self.reg_out = nn.Conv1d(d, 2, k, padding=k // 2)
        self.scales = nn.Parameter(torch.ones(config.levels))
        # Focal-loss prior (Lin et al. 2017): start every class at probability prior_prob.
        nn.init.constant_(self.cls_out.bias, -math.log((1 - config.prior_prob) / config.prior_prob))
        # Start every prediction one stride to each side: near-zero offsets give IoU ≈ 0 and a flat DIoU gradient.
        nn.init.constant_(self.reg_out.bias, 1.0)
        self.strides = [2**lv for lv in range(config.levels)]
        # Per-channel input standardisation, set from the training features (`set_input_stats`): backbone features
        # can be tiny or huge (a randomly initialised I3D gives ~1e-7), which the first conv's bias would swamp.
        self.register_buffer("input_mean", torch.zeros(config.in_channels))
        self.register_buffer("input_std", torch.ones(config.in_channels))

    def set_input_stats(self, mean: Tensor, std: Tensor) -> None:
        """Standardise inputs with these per-channel `(C,)` statistics (zero std is treated as 1)."""
        self.input_mean.copy_(mean)
        self.input_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def _pyramid(self, x: Tensor, mask: Tensor) -> dict[str, list[Tensor]]:
        feats, masks = [x], [mask]
        for block in self.down:
            x = F.max_pool1d(x, 3, 2, 1)
            mask = mask[:, ::2]
            x = block(x, mask)
            feats.append(x)
            masks.append(mask)
        cls, reg = [], []
        for lv, (f, m) in enumerate(zip(feats, masks)):
            c, r = f, f
            for block in self.cls_tower:
                c = block(c, m)
            for block in self.reg_tower:
                r = block(r, m)
            cls.append(self.cls_out(c))
            reg.append(F.relu(self.scales[lv] * self.reg_out(r)))
        return {"cls": cls, "reg": reg, "feats": feats, "masks": masks}

    def forward(self, x: Tensor, mask: Tensor | None = None, background: bool = False) -> dict[str, Any]:
        """See the class docstring; `background=True` also runs the heads on F_bg (attention models only)."""
        if x.dim() != 3 or x.shape[1] != self.config.in_channels:
            raise ActdistillError(
                f"detector expects features (B, {self.config.in_channels}, T), got {tuple(x.shape)}; "
                "check that the feature folder matches the checkpoint's backbone"
            )
        if mask is None:
            mask = torch.ones(x.shape[0], x.shape[2], dtype=torch.bool, device=x.device)
        x = (x - self.input_mean[:, None]) / self.input_std[:, None]
        h = self.embed(x, mask)
        for block in self.stem:
            h = block(h, mask)
        attention, bg, feature = None, None, h
        if self.attention is not None:
            attention = self.attention(h)
            if background:
                bg = self._pyramid(_weighted(h, 1 - attention, mask), mask)
            h = _weighted(h, attention, mask)
        out: dict[str, Any] = self._pyramid(h, mask)
        out.update(strides=self.strides, attention=attention, background=bg, stem=h, feature=feature)
        return out

    def points(self, length: int, device: torch.device | None = None) -> list[Tensor]:
        """Point positions `(T_l,)` on the level-0 grid for every level of a length-`length` input."""
        out, n = [], length
        for s in self.strides:
            out.append(torch.arange(n, device=device, dtype=torch.float32) * s)
            n = (n + 1) // 2
        return out

    def describe(self) -> dict[str, Any]:
        """The config as a plain dict (stored in checkpoints)."""
        return asdict(self.config)


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
    norm = pos.sum().clamp_min(1).to(cls_logits.dtype)
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
