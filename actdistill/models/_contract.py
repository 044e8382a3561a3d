"""The model contract every teacher and student follows (DESIGN.md, contract 1).

A model is an `nn.Module` with:
  * `forward(x) -> logits` of shape `(B, num_classes)`;
  * `forward_features(x) -> list[Tensor]`, one map per stage: `(B, C, H, W)` for images,
    `(B, C, T, H, W)` for video (transformer tokens are reshaped to maps);
  * `forward_head(feature) -> logits`, applied to the last element of `forward_features(x)`,
    so that `forward_head(forward_features(x)[-1]) == forward(x)`;
  * `feature_info: list[FeatureInfo]`, one entry per stage, in the order of `forward_features`;
  * `pretrained_cfg: PretrainedCfg` (input size, mean, std) and `num_classes: int`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FeatureInfo:
    """One stage's output: `name` (module path), `channels`, spatial `stride` w.r.t. the input."""

    name: str
    channels: int
    stride: int
    temporal_stride: int = 1


@dataclass(frozen=True)
class PretrainedCfg:
    """Input expectations: `input_size` is (C, H, W) for images, (C, T, H, W) for video."""

    input_size: tuple[int, ...]
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)


def prefixed_stages(model: Any, prefix: str) -> list[FeatureInfo] | None:
    """`model.feature_info` with every stage name under `prefix` (for a wrapper holding `model` as a submodule)."""
    info = getattr(model, "feature_info", None)
    if info is None:
        return None
    return [FeatureInfo(prefix + f.name, f.channels, f.stride, f.temporal_stride) for f in info]
