"""Tiny models for the reference tests: a contract-following CNN (2-D or 3-D) and a 'model' that is its logits."""

from __future__ import annotations

import torch
from torch import nn

from actdistill.models._contract import FeatureInfo, PretrainedCfg


class ToyNet(nn.Module):
    """Stages of Conv(k3, stride s) → ReLU; head: global average pool → Linear (the model contract)."""

    def __init__(self, channels=(4, 8), strides=(2, 2), video: bool = False, num_classes: int = 5) -> None:
        super().__init__()
        conv = nn.Conv3d if video else nn.Conv2d
        stages, c, total = [], 3, 1
        self.feature_info = []
        for i, (out, s) in enumerate(zip(channels, strides)):
            stages.append(nn.Sequential(conv(c, out, 3, (1, s, s) if video else s, 1), nn.ReLU()))
            c, total = out, total * s
            self.feature_info.append(FeatureInfo(f"stages.{i}", out, total))
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(c, num_classes)
        self.num_classes = num_classes
        self.pretrained_cfg = PretrainedCfg((3, 4, 16, 16) if video else (3, 16, 16))

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward_head(self, feature: torch.Tensor) -> torch.Tensor:
        return self.fc(feature.flatten(2).mean(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x)[-1])

    def get_classifier(self) -> nn.Module:
        return self.fc


class Fixed(nn.Module):
    """A 'model' whose logits are a trainable tensor (ignores its input)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits * 1.0


def far(a: torch.Tensor | float, b: torch.Tensor | float, rtol: float = 1e-3) -> bool:
    """True when a and b differ by more than `rtol` relative: used to show a comparison can fail."""
    a, b = float(torch.as_tensor(a).detach()), float(torch.as_tensor(b).detach())
    return abs(a - b) > rtol * max(abs(a), abs(b), 1e-12)
