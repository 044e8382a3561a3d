"""C3D with BatchNorm as in PCL's models/c3d.py (Tran et al. 2015 without fc6/fc7, global average pool instead)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from actdistill.errors import ActdistillError
from actdistill.models._contract import FeatureInfo
from actdistill.models.two_stream import modality_cfg

# Stages: (conv widths, max-pool applied before the stage as (kernel=stride) in (T, H, W)); PCL `models/c3d.py`.
_STAGES = (
    ((64,), None),
    ((128,), (1, 2, 2)),
    ((256, 256), (2, 2, 2)),
    ((512, 512), (2, 2, 2)),
    ((512, 512), (2, 2, 2)),
)


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    # PCL keeps the conv bias even though BN follows (it matters only for the parameter count).
    return [nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]


class C3D(nn.Module):
    """C3D-BN: 8 convs 3×3×3 with BN+ReLU, pools (1,2,2),(2,2,2)×3; `(B, C, T, H, W)` → logits `(B, K)`.

    Stages `conv1`..`conv5` (each stage's max-pool precedes its convs); head = AdaptiveAvgPool3d(1) → Linear(512, K).
    """

    def __init__(self, num_classes: int = 101, in_channels: int = 3, channel_scale: float = 1.0) -> None:
        super().__init__()
        if channel_scale <= 0:
            raise ActdistillError(f"channel_scale must be > 0, got {channel_scale}")
        self.num_classes = num_classes
        cin, stride, tstride = in_channels, 1, 1
        self.feature_info = []
        for i, (widths, pool) in enumerate(_STAGES, start=1):
            layers: list[nn.Module] = []
            if pool is not None:
                layers.append(nn.MaxPool3d(pool, pool))
                tstride, stride = tstride * pool[0], stride * pool[1]
            for w in widths:
                w = max(1, round(w * channel_scale))
                layers += _conv_bn_relu(cin, w)
                cin = w
            self.add_module(f"conv{i}", nn.Sequential(*layers))
            self.feature_info.append(FeatureInfo(f"conv{i}", cin, stride, tstride))
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(cin, num_classes)
        self.pretrained_cfg = modality_cfg(in_channels, 16, 112)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Stage maps `(B, C, T, H, W)` after conv1..conv5 (512×2×7×7 last for 16×112²)."""
        feats = []
        for i in range(1, 6):
            x = getattr(self, f"conv{i}")(x)
            feats.append(x)
        return feats

    def get_classifier(self) -> nn.Module:
        """The final Linear (timm convention; lets loaders find the head)."""
        return self.fc

    def forward_head(self, feature: Tensor) -> Tensor:
        """conv5 map `(B, 512, T, H, W)` → logits `(B, K)`."""
        return self.fc(self.pool(feature).flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        """Clip `(B, C, T, H, W)` → logits `(B, K)`."""
        return self.forward_head(self.forward_features(x)[-1])


def c3d(num_classes: int = 101, pretrained: bool | str = False, **kwargs: Any) -> C3D:
    """C3D-BN (P3 backbone, PCL's definition); `(B, 3, 16, 112, 112)` → `(B, K)`."""
    model = C3D(num_classes, **kwargs)
    if pretrained is True:
        raise ActdistillError(
            "c3d has no downloadable weights; set student.pretrained (or teacher.pretrained) to a C3D state dict file"
        )
    if pretrained:
        from actdistill.models.inflate import load_adapted, read_state_dict

        load_adapted(
            model,
            read_state_dict(pretrained),
            head=("fc.weight", "fc.bias"),
            first_conv="conv1.0.weight",
            source=str(pretrained),
        )
    return model
