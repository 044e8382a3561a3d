"""Run an image model over every frame of a clip and pool the per-frame logits (mean or learned attention)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from actdistill.errors import ActdistillError
from actdistill.models._contract import FeatureInfo, PretrainedCfg

Pooling = Literal["mean", "attention"]


class FrameModel(nn.Module):
    """Image model applied per frame: `(B, C, T, H, W)` → `(B·T, C, H, W)` → per-frame logits → pooled `(B, K)`.

    `image_model` follows the model contract for images. `pooling="attention"` weights frames by
    softmax_t(w·GAP(F_t) + b) computed from the last stage map F_t (initialised to uniform weights, i.e. the mean).
    """

    def __init__(self, image_model: nn.Module, pooling: Pooling = "mean", num_frames: int = 8) -> None:
        super().__init__()
        if pooling not in ("mean", "attention"):
            raise ActdistillError(f"unknown frame pooling '{pooling}'; use 'mean' or 'attention'")
        for attr in ("forward_features", "forward_head", "feature_info"):
            if not hasattr(image_model, attr):
                raise ActdistillError(f"FrameModel needs an image model with `{attr}` (the model contract)")
        self.image_model = image_model
        self.pooling = pooling
        self.num_classes = image_model.num_classes
        self.feature_info = [
            FeatureInfo(f"image_model.{f.name}", f.channels, f.stride, 1) for f in image_model.feature_info
        ]
        self.attention = None
        if pooling == "attention":
            self.attention = nn.Linear(self.feature_info[-1].channels, 1)
            nn.init.zeros_(self.attention.weight)
            nn.init.zeros_(self.attention.bias)
        cfg = getattr(image_model, "pretrained_cfg", None) or PretrainedCfg((3, 224, 224))
        c, h, w = cfg.input_size
        self.pretrained_cfg = PretrainedCfg((c, num_frames, h, w), cfg.mean, cfg.std)

    def get_classifier(self) -> nn.Module | None:
        """The image model's classifier, when it exposes one."""
        get = getattr(self.image_model, "get_classifier", None)
        return get() if callable(get) else None

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Clip `(B, C, T, H, W)` → the image model's stage maps restacked as `(B, C_i, T, h_i, w_i)`."""
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        return [f.reshape(b, t, *f.shape[1:]).transpose(1, 2) for f in self.image_model.forward_features(frames)]

    def forward_head(self, feature: Tensor) -> Tensor:
        """Last stage map `(B, C, T, h, w)` → pooled logits `(B, K)`."""
        b, c, t = feature.shape[:3]
        per_frame = self.image_model.forward_head(feature.transpose(1, 2).reshape(b * t, c, *feature.shape[3:]))
        per_frame = per_frame.reshape(b, t, -1)
        if self.attention is None:
            return per_frame.mean(dim=1)
        scores = self.attention(feature.mean(dim=(3, 4)).transpose(1, 2))  # (B, T, 1)
        return (torch.softmax(scores, dim=1) * per_frame).sum(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Clip `(B, C, T, H, W)` → logits `(B, K)`."""
        return self.forward_head(self.forward_features(x)[-1])


def frames(
    num_classes: int = 101,
    pretrained: bool | str = False,
    image_model: str | None = None,
    pooling: Pooling = "mean",
    num_frames: int = 8,
    **kwargs: Any,
) -> FrameModel:
    """Per-frame wrapper around registered image model `image_model`; `(B, 3, T, H, W)` → `(B, K)`."""
    if not image_model:
        raise ActdistillError("model 'frames' needs image_model=<name of an image model>, e.g. image_model=resnet18")
    from actdistill.models import create_model  # lazy: the factory module imports this zoo

    net = create_model(image_model, num_classes=num_classes, pretrained=pretrained, **kwargs)
    return FrameModel(net, pooling=pooling, num_frames=num_frames)
