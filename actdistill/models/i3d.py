"""Inception-v1 I3D family: one network with a per-block 2D/3D switch; presets I3D, Top-I3D, Bottom-I3D, I2D.

Layer table, TF "same" padding and the Top-I3D split follow P2's official code (`i3d_backbone.py`,
`Top_heavy_i3d_backbone.py:L45-L364`); Bottom-I3D and I2D (paper 2, Table 5) are toolkit decisions, as P2's code
does not define them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actdistill.errors import ActdistillError
from actdistill.models._contract import FeatureInfo
from actdistill.models.two_stream import modality_cfg

# Endpoint order of Inception-v1 I3D (Carreira & Zisserman 2017, Fig. 3; P2's i3d_backbone.py).
ENDPOINTS = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
)
# Inception blocks' branch widths [b0, b1a, b1b, b2a, b2b, b3b] (P2's i3d_backbone.py).
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# Max-pools keep the I3D kernel/stride in every preset (as P2's Top-I3D code does): (kernel, stride) as (T, H, W).
POOLS = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}
SWITCHABLE = ("Conv3d_1a_7x7", "Conv3d_2c_3x3", *MIXED)
_TOP = ("Mixed_4d", "Mixed_4e", "Mixed_4f", "Mixed_5b", "Mixed_5c")
# Which blocks are 3D per preset. Top-I3D = P2's student (its code's split); Bottom-I3D its exact complement; I2D none.
PRESETS: dict[str, frozenset[str]] = {
    "i3d": frozenset(SWITCHABLE),
    "top_i3d": frozenset(_TOP),
    "bottom_i3d": frozenset(SWITCHABLE) - frozenset(_TOP),
    "i2d": frozenset(),
}
# forward_features taps: the last endpoint at each spatial resolution (strides 4, 8, 16, 32).
STAGES = ("Conv3d_2c_3x3", "Mixed_3c", "Mixed_4f", "Mixed_5c")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" (front, back) padding: pad = max(k−s, 0) if L % s == 0 else max(k − L % s, 0) (P2's code)."""
    pad = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return pad // 2, pad - pad // 2


def pad_same(x: Tensor, kernel: Sequence[int], stride: Sequence[int]) -> Tensor:
    """Zero-pad `(B, C, T, H, W)` so a `kernel`/`stride` window yields ceil(L / s) outputs per dim."""
    pads: list[int] = []
    for dim in (2, 1, 0):  # F.pad lists the last dim first
        pads += same_padding(x.shape[2 + dim], kernel[dim], stride[dim])
    return F.pad(x, pads) if any(pads) else x


class Unit3D(nn.Module):
    """Conv3d(bias=False) → BatchNorm3d(eps=1e-3, momentum=0.01) → ReLU with TF "same" padding; `(B,C,T,H,W)` in/out."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: Sequence[int] = (1, 1, 1), stride: Sequence[int] = (1, 1, 1)
    ) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.conv = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, bias=False)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(pad_same(x, self.kernel, self.stride))))


class MaxPool3dSame(nn.Module):
    """Max-pool with TF "same" zero padding (inputs are post-ReLU, so zeros never win); `(B,C,T,H,W)` in/out."""

    def __init__(self, kernel: Sequence[int], stride: Sequence[int]) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(pad_same(x, self.kernel, self.stride), self.kernel, self.stride)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


class Inception3D(nn.Module):
    """Inception block, temporal kernel `kt` (3 = 3D, 1 = 2D); `(B, C, T, H, W)` → `(B, b0+b1b+b2b+b3b, T, H, W)`."""

    def __init__(self, in_channels: int, widths: Sequence[int], kt: int) -> None:
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3b = widths
        self.b0 = Unit3D(in_channels, b0)
        self.b1a = Unit3D(in_channels, b1a)
        self.b1b = Unit3D(b1a, b1b, (kt, 3, 3))
        self.b2a = Unit3D(in_channels, b2a)
        self.b2b = Unit3D(b2a, b2b, (kt, 3, 3))
        self.b3a = MaxPool3dSame((kt, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, b3b)
        self.out_channels = b0 + b1b + b2b + b3b

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class I3DHead(nn.Module):
    """Per-step logits: AvgPool3d (2,7,7)/1 → Dropout → 1×1×1 conv with bias; `(B,C,T,H,W)` → `(B, K, max(T−1, 1))`.

    The pool kernel adapts to small inputs as `(min(2, T), H, W)`; at the standard 8×7×7 Mixed_5c it is P2's (2,7,7).
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.logits = nn.Conv3d(in_channels, num_classes, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        x = F.avg_pool3d(x, (min(2, x.shape[2]), x.shape[3], x.shape[4]), stride=1)
        return self.logits(self.dropout(x))[..., 0, 0]


class InceptionI3D(nn.Module):
    """Inception-v1 I3D with a per-block 2D/3D switch; `forward((B, C, T, H, W))` → per-step logits `(B, K, T')`.

    `blocks_3d` names the switchable blocks (`SWITCHABLE`) that are 3D: Conv3d_1a gets a 7×7×7 kernel (else 1×7×7,
    temporal stride 2 either way), Conv3d_2c 3×3×3 (else 1×3×3), Inception blocks k=3 (else k=1). `channel_scale`
    multiplies every channel count (tiny test models); `in_channels=2` builds a flow model. The toolkit treats the
    3-D logits by averaging over time (`logits.mean(-1)`) for losses and metrics.
    """

    def __init__(
        self,
        num_classes: int = 400,
        in_channels: int = 3,
        blocks_3d: Iterable[str] = PRESETS["i3d"],
        channel_scale: float = 1.0,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        blocks_3d = frozenset(blocks_3d)
        unknown = blocks_3d - set(SWITCHABLE)
        if unknown:
            raise ActdistillError(f"unknown I3D blocks {sorted(unknown)} in blocks_3d; choose from {list(SWITCHABLE)}")
        if channel_scale <= 0:
            raise ActdistillError(f"channel_scale must be > 0, got {channel_scale}")
        self.blocks_3d = blocks_3d
        self.num_classes = num_classes

        def ch(c: int) -> int:
            return max(1, round(c * channel_scale))

        def kt(name: str, k: int) -> int:
            return k if name in blocks_3d else 1

        self.Conv3d_1a_7x7 = Unit3D(in_channels, ch(64), (kt("Conv3d_1a_7x7", 7), 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame(*POOLS["MaxPool3d_2a_3x3"])
        self.Conv3d_2b_1x1 = Unit3D(ch(64), ch(64))
        self.Conv3d_2c_3x3 = Unit3D(ch(64), ch(192), (kt("Conv3d_2c_3x3", 3), 3, 3))
        channels = {"Conv3d_1a_7x7": ch(64), "Conv3d_2b_1x1": ch(64), "Conv3d_2c_3x3": ch(192)}
        c = ch(192)
        for name in ENDPOINTS[4:]:
            if name in POOLS:
                self.add_module(name, MaxPool3dSame(*POOLS[name]))
            else:
                block = Inception3D(c, [ch(w) for w in MIXED[name]], kt(name, 3))
                self.add_module(name, block)
                c = block.out_channels
            channels[name] = c
        self.head = I3DHead(c, num_classes, dropout)
        strides = {"Conv3d_2c_3x3": (4, 2), "Mixed_3c": (8, 2), "Mixed_4f": (16, 4), "Mixed_5c": (32, 8)}
        self.feature_info = [FeatureInfo(n, channels[n], *strides[n]) for n in STAGES]
        self.pretrained_cfg = modality_cfg(in_channels, 64, 224)

    def temporal_kernels(self) -> dict[str, int]:
        """Temporal kernel size of every switchable block (7/3 when 3D, 1 when 2D)."""
        out = {"Conv3d_1a_7x7": self.Conv3d_1a_7x7.kernel[0], "Conv3d_2c_3x3": self.Conv3d_2c_3x3.kernel[0]}
        out.update({n: getattr(self, n).b1b.kernel[0] for n in MIXED})
        return out

    def extract_endpoints(self, x: Tensor) -> dict[str, Tensor]:
        """All endpoint maps `(B, C, T, H, W)` by name, plus `'Logits'` `(B, K, T')`."""
        out = {}
        for name in ENDPOINTS:
            x = getattr(self, name)(x)
            out[name] = x
        out["Logits"] = self.head(x)
        return out

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Stage maps `(B, C, T, H, W)` at Conv3d_2c_3x3, Mixed_3c, Mixed_4f, Mixed_5c (1024×8×7×7 for 64×224²)."""
        feats = []
        for name in ENDPOINTS:
            x = getattr(self, name)(x)
            if name in STAGES:
                feats.append(x)
        return feats

    def get_classifier(self) -> nn.Module:
        """The 1×1×1 logits conv (timm convention; lets loaders find the head)."""
        return self.head.logits

    def forward_head(self, feature: Tensor) -> Tensor:
        """Mixed_5c `(B, C, T, H, W)` → per-step logits `(B, K, T')`."""
        return self.head(feature)

    def forward(self, x: Tensor) -> Tensor:
        """Clip `(B, C, T, H, W)` → per-step logits `(B, K, T')` (T' = 7 for 64 frames)."""
        return self.forward_head(self.forward_features(x)[-1])


def _build(preset: str, num_classes: int, pretrained: bool | str, **kwargs: Any) -> InceptionI3D:
    kwargs.setdefault("blocks_3d", PRESETS[preset])
    model = InceptionI3D(num_classes, **kwargs)
    if pretrained is True:
        raise ActdistillError(
            f"{preset} has no downloadable weights here; set student.pretrained (or teacher.pretrained) to a "
            "pytorch-i3d Kinetics checkpoint (rgb_imagenet.pt), a torchvision GoogLeNet state dict (inflated) or an "
            "actdistill checkpoint"
        )
    if pretrained:
        from actdistill.models.inflate import load_i3d_checkpoint

        load_i3d_checkpoint(model, pretrained)
    return model


def i3d(num_classes: int = 101, pretrained: bool | str = False, **kwargs: Any) -> InceptionI3D:
    """I3D (P2 teacher): every block 3D; `(B, 3, 64, 224, 224)` → `(B, K, 7)`."""
    return _build("i3d", num_classes, pretrained, **kwargs)


def top_i3d(num_classes: int = 101, pretrained: bool | str = False, **kwargs: Any) -> InceptionI3D:
    """Top-I3D (P2 student): 2D up to Mixed_4c, 3D from Mixed_4d; `(B, 3, 64, 224, 224)` → `(B, K, 7)`."""
    return _build("top_i3d", num_classes, pretrained, **kwargs)


def bottom_i3d(num_classes: int = 101, pretrained: bool | str = False, **kwargs: Any) -> InceptionI3D:
    """Bottom-I3D (complement of Top-I3D): 3D up to Mixed_4c, 2D from Mixed_4d; `(B, 3, 64, 224, 224)` → `(B, K, 7)`."""
    return _build("bottom_i3d", num_classes, pretrained, **kwargs)


def i2d(num_classes: int = 101, pretrained: bool | str = False, **kwargs: Any) -> InceptionI3D:
    """I2D: all temporal kernels 1 (max-pools keep I3D's); `(B, 3, 64, 224, 224)` → `(B, K, 7)`."""
    return _build("i2d", num_classes, pretrained, **kwargs)


def output_time(frames: int) -> int:
    """Length T' of the per-step logits for a `frames`-long clip (Mixed_5c has ceil(T/8) steps; head pool 2/1)."""
    t = math.ceil(frames / 8)
    return max(t - 1, 1)
