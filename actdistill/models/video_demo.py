"""Small video CNNs for CPU runs on the synthetic video set: a 3D CNN and its per-frame 2D twin (same depth).

`video3d_demo` convolves over time (3×3×3 kernels, time halved in the last two stages); `frame2d_demo` has the same
four stages with 1×3×3 kernels and no temporal stride, i.e. a 2D CNN applied to every frame whose features are
averaged over time before the classifier, so it sees the set of frames but not their order. Its widths are scaled
by √3 so both have about the same number of parameters (a 1×3×3 kernel holds a third of a 3×3×3 one).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from actdistill.errors import ActdistillError
from actdistill.models._contract import FeatureInfo, PretrainedCfg
from actdistill.registry import MODELS

_WIDTHS = (16, 32, 64, 128)
_FRAME_SCALE = 3**0.5
_INPUT = (3, 16, 64, 64)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "group":  # batch-size independent: equal results for any split of a batch over processes
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    raise ActdistillError(f"norm must be 'batch' or 'group', got {kind!r}")


def _block(cin: int, cout: int, kt: int, stride: tuple[int, int, int], convs: int, norm: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(convs):
        layers += [
            nn.Conv3d(cin if k == 0 else cout, cout, (kt, 3, 3), stride if k == 0 else 1, (kt // 2, 1, 1), bias=False),
            _norm(norm, cout),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class SmallVideoCNN(nn.Module):
    """Four stages (a one-conv stem, then three of two convs), spatial stride 2 each; `(B, C, T, H, W)` → `(B, K)`.

    `temporal=True`: 3×3×3 kernels, temporal stride 2 in stages 3-4 (3D CNN). `temporal=False`: 1×3×3 kernels and
    no temporal stride, so every frame is processed alone and the head averages the features over time (2D CNN).
    `last_width` fixes the last stage's channels whatever `channel_scale` (a thin student whose last map matches a
    full-width teacher's, as Top-I3D's Mixed_5c matches I3D's for paper 2's CVAE). `norm`: `batch` (default) or
    `group` (GroupNorm, independent of the batch split).
    """

    def __init__(
        self,
        num_classes: int = 101,
        temporal: bool = True,
        channel_scale: float = 1.0,
        in_channels: int = 3,
        dropout: float = 0.2,
        last_width: int | None = None,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if channel_scale <= 0:
            raise ActdistillError(f"channel_scale must be > 0, got {channel_scale}")
        self.num_classes, self.temporal = num_classes, temporal
        kt = 3 if temporal else 1
        cin, stride, tstride = in_channels, 1, 1
        self.feature_info = []
        for i, width in enumerate(_WIDTHS, start=1):
            st = 2 if temporal and i >= 3 else 1
            cout = max(1, round(width * channel_scale))
            if last_width is not None and i == len(_WIDTHS):
                cout = int(last_width)
            self.add_module(f"stage{i}", _block(cin, cout, kt, (st, 2, 2), 1 if i == 1 else 2, norm))
            cin, stride, tstride = cout, stride * 2, tstride * st
            self.feature_info.append(FeatureInfo(f"stage{i}", cout, stride, tstride))
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)
        self.pretrained_cfg = PretrainedCfg((in_channels, *_INPUT[1:]))

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Clip `(B, C, T, H, W)` → stage maps `(B, C_i, T_i, H/2^i, W/2^i)`, i = 1..4."""
        feats = []
        for i in range(1, len(_WIDTHS) + 1):
            x = getattr(self, f"stage{i}")(x)
            feats.append(x)
        return feats

    def get_classifier(self) -> nn.Module:
        """The final Linear (timm convention; lets loaders find the head)."""
        return self.fc

    def forward_head(self, feature: Tensor) -> Tensor:
        """Last stage map `(B, C, T', h, w)` → space-time average → logits `(B, K)`."""
        return self.fc(self.dropout(self.pool(feature).flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        """Clip `(B, C, T, H, W)` → logits `(B, K)`."""
        return self.forward_head(self.forward_features(x)[-1])


def video3d_demo(num_classes: int = 101, pretrained: bool | str = False, **kwargs: Any) -> SmallVideoCNN:
    """Small 3D CNN (0.87 M params at 8 classes); `(B, 3, T, H, W)` → `(B, K)`."""
    if pretrained:
        raise ActdistillError("video3d_demo has no pretrained weights; train it from scratch")
    return SmallVideoCNN(num_classes, temporal=True, **kwargs)


def frame2d_demo(num_classes: int = 101, pretrained: bool | str = False, **kwargs: Any) -> SmallVideoCNN:
    """Per-frame 2D twin of `video3d_demo`, widths ×√3 to match its parameters; `(B, 3, T, H, W)` → `(B, K)`."""
    if pretrained:
        raise ActdistillError("frame2d_demo has no pretrained weights; train it from scratch")
    kwargs["channel_scale"] = kwargs.get("channel_scale", 1.0) * _FRAME_SCALE
    return SmallVideoCNN(num_classes, temporal=False, **kwargs)


_META = dict(paper="synthetic-video motion demo (issue #4)", input_size=_INPUT, logits="(B, K)")
for _name, _factory, _role in (
    ("video3d_demo", video3d_demo, "3D CNN for the synthetic video set (CPU)"),
    ("frame2d_demo", frame2d_demo, "per-frame 2D baseline matching video3d_demo"),
):
    MODELS.register(_name, task="video", role=_role, **_META)(_factory)
