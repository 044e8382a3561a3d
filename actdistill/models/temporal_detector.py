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
from actdistill.registry import MODELS

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


class MaskedGroupNorm(nn.GroupNorm):
    """GroupNorm over the valid steps only: `(B, C, T)` with mask `(B, T)`, so a video's outputs do not depend on
    how much padding its batch adds (nor on how a batch is split over processes). Same parameters as `nn.GroupNorm`.
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if mask is None:
            return super().forward(x)
        b, c, t = x.shape
        g = self.num_groups
        m = mask[:, None, None, :].to(x.dtype)  # (B, 1, 1, T)
        xg = x.view(b, g, c // g, t)
        count = (m.sum(dim=(2, 3), keepdim=True) * (c // g)).clamp_min(1)
        mean = (xg * m).sum(dim=(2, 3), keepdim=True) / count
        var = (((xg - mean) ** 2) * m).sum(dim=(2, 3), keepdim=True) / count
        y = ((xg - mean) * torch.rsqrt(var + self.eps)).view(b, c, t)
        return y * self.weight[None, :, None] + self.bias[None, :, None]


class ConvBlock(nn.Module):
    """Masked Conv1d → masked GroupNorm → ReLU, residual when shapes allow: `(B, C, T)`, mask `(B, T)` → `(B, D, T)`."""

    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, padding=kernel // 2)
        self.norm = MaskedGroupNorm(_groups(cout), cout)
        self.residual = cin == cout

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        m = mask[:, None].to(x.dtype)
        y = F.relu(self.norm(self.conv(x * m), mask))
        return (x + y if self.residual else y) * m


class AttentionHead1d(nn.Module):
    """P2 eq. 8 in 1-D: `A = sigmoid(GN(Conv1d(F)))`, `(B, C, T)` → `(B, C, T)` in (0, 1) (norm over valid steps)."""

    def __init__(self, channels: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.norm = MaskedGroupNorm(_groups(channels), channels)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        m = mask[:, None].to(x.dtype) if mask is not None else 1.0
        return torch.sigmoid(self.norm(self.conv(x * m), mask))


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
            attention = self.attention(h, mask)
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


@MODELS.register(
    "temporal_detector",
    task="detection",
    role="anchor-free temporal action detector over snippet features (presets small / large)",
    paper="ActionFormer-style (Zhang et al. ECCV 2022); paper 2's detection variant with attention=true",
    input_size=(2048, 128),
)
def temporal_detector(
    num_classes: int,
    pretrained: bool | str = False,
    *,
    in_channels: int = 2048,
    preset: str = "small",
    **overrides: Any,
) -> TemporalDetector:
    """`create_model("temporal_detector", K, in_channels=C, preset="small", attention=True, ...)`; any
    `DetectorConfig` field can be overridden."""
    if pretrained is True:
        raise ActdistillError("temporal_detector has no hub weights; pass a path to a detection run's weights")
    return build_detector(preset, in_channels, num_classes, **overrides)
