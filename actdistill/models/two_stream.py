"""Two-stream video models: flow variants of any video model (`in_channels=2`) and RGB+flow late fusion."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from actdistill.errors import ActdistillError
from actdistill.models._contract import PretrainedCfg

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TV-L1 flow stored as 8-bit x/y images, normalised with mean 0.5, std 0.226 (P2's official flow transform).
FLOW_MEAN = (0.5, 0.5)
FLOW_STD = (0.226, 0.226)

FusionMode = Literal["softmax", "logits", "p2"]


def modality_cfg(
    in_channels: int,
    frames: int,
    size: int,
    rgb_mean: tuple[float, ...] = IMAGENET_MEAN,
    rgb_std: tuple[float, ...] = IMAGENET_STD,
) -> PretrainedCfg:
    """`PretrainedCfg` for a `(in_channels, frames, size, size)` clip: RGB stats for 3 channels, flow stats for 2."""
    if in_channels == 3:
        return PretrainedCfg((3, frames, size, size), rgb_mean, rgb_std)
    if in_channels == 2:
        return PretrainedCfg((2, frames, size, size), FLOW_MEAN, FLOW_STD)
    return PretrainedCfg((in_channels, frames, size, size), (0.5,) * in_channels, (0.25,) * in_channels)


def create_flow_model(name: str, num_classes: int, pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
    """Build registered video model `name` for 2-channel (x, y) optical-flow clips `(B, 2, T, H, W)`."""
    from actdistill.registry import MODELS

    return MODELS.get(name)(num_classes, pretrained=pretrained, in_channels=2, **kwargs)


def _split(x: Any) -> tuple[Tensor, Tensor]:
    if isinstance(x, dict):
        missing = {"rgb", "flow"} - set(x)
        if missing:
            raise ActdistillError(f"LateFusion input dict lacks {sorted(missing)}; pass {{'rgb': clip, 'flow': clip}}")
        return x["rgb"], x["flow"]
    if isinstance(x, list | tuple) and len(x) == 2:
        return x[0], x[1]
    raise ActdistillError("LateFusion input must be a dict {'rgb', 'flow'} or a tuple (rgb, flow)")


def _per_step(z: Tensor) -> Tensor:
    """Logits `(B, K)` or `(B, K, T')` → `(B, K, T')` (T' = 1 for clip-level logits)."""
    return z if z.dim() == 3 else z.unsqueeze(-1)


class LateFusion(nn.Module):
    """Fuse an RGB and a flow model's class scores; `forward({'rgb': (B,3,T,H,W), 'flow': (B,2,T,H,W)})` → `(B, K)`.

    Modes (all return values whose softmax is the fused class distribution, so they can be used as logits):
      * `"softmax"`: log of the weighted mean of the two streams' softmax probabilities (time-averaged first);
      * `"logits"`: weighted mean of the two streams' time-averaged logits;
      * `"p2"`: paper 2's test-time fusion (its official code, `test_Top_I3D_att_fusion.py:L191-L203`): per-step logits
        summed over streams, softmax over classes, summed over time; softmax of the result is P2's prediction.
    """

    def __init__(
        self, rgb_model: nn.Module, flow_model: nn.Module, mode: FusionMode = "softmax", rgb_weight: float = 0.5
    ) -> None:
        super().__init__()
        if mode not in ("softmax", "logits", "p2"):
            raise ActdistillError(f"unknown LateFusion mode '{mode}'; use 'softmax', 'logits' or 'p2'")
        self.rgb = rgb_model
        self.flow = flow_model
        self.mode = mode
        self.rgb_weight = rgb_weight
        self.num_classes = getattr(rgb_model, "num_classes", None)

    def forward(self, x: dict[str, Tensor] | tuple[Tensor, Tensor]) -> Tensor:
        """Fused scores `(B, K)` from `(rgb (B,3,T,H,W), flow (B,2,T,H,W))`."""
        rgb, flow = _split(x)
        z_rgb, z_flow = _per_step(self.rgb(rgb)), _per_step(self.flow(flow))
        w = self.rgb_weight
        if self.mode == "p2":
            if z_rgb.shape != z_flow.shape:
                raise ActdistillError(f"'p2' fusion needs equal per-step logits, got {z_rgb.shape} vs {z_flow.shape}")
            # P2 sums the two streams' logits unweighted (rgb_weight is ignored in this mode).
            return torch.softmax(z_rgb + z_flow, dim=1).sum(dim=2)
        z_rgb, z_flow = z_rgb.mean(-1), z_flow.mean(-1)
        if self.mode == "logits":
            return w * z_rgb + (1 - w) * z_flow
        p = w * torch.softmax(z_rgb, dim=1) + (1 - w) * torch.softmax(z_flow, dim=1)
        return p.clamp_min(torch.finfo(p.dtype).tiny).log()
