"""Paper 3's network: PCL's (VCP + contrastive) wrapper around a video backbone, and residual-frame fine-tuning.

Registered models: `pcl` (a `PCLNet` around any video backbone, e.g. `create_model("pcl", 5, backbone="r3d_10")`)
and `residual_input` (a backbone fed residual frames, for fine-tuning a PCL backbone; PCL's `ft_classify.py
--modality res`). Shapes: a tuple is three clips `(B, C, T, H, W)`; backbone features `(B, D)` (D = 512 for paper 3's
backbones); pretext logits `(B, 5)`; projections `(B, 128)` with unit L2 norm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actdistill.models._contract import prefixed_stages
from actdistill.models.factory import create_model
from actdistill.registry import MODELS

NUM_PRETEXT = 5
"""Pretext labels: 0 identity, 1 rotation, 2 quadrant permutation, 3 temporal adjacent shuffle, 4 remote clip."""


def residual_frames(x: Tensor) -> Tensor:
    """Residual-frame input (PCL's `models/pcl_net.py`, `--modality res`): `roll(x, +1, time) − x` on `(B, C, T, H, W)`.

    Output frame t is frame t−1 minus frame t, wrapping at t = 0 (frame T−1 minus frame 0). Same shape as `x`.
    """
    return torch.roll(x, shifts=1, dims=2) - x


class ProjectionHead(nn.Module):
    """PCL's `MoCoHead` (pcl_net.py): Linear(D→D) → ReLU → Linear(D→P) → L2-normalise; `head="linear"`: Linear(D→P).

    `(B, D)` → `(B, P)` with unit rows. P3 says "a perceptron": the single-linear variant is kept as an option.
    """

    def __init__(self, feat_dim: int = 512, proj_dim: int = 128, head: str = "mlp") -> None:
        super().__init__()
        if head == "mlp":
            self.net: nn.Module = nn.Sequential(
                nn.Linear(feat_dim, feat_dim), nn.ReLU(inplace=True), nn.Linear(feat_dim, proj_dim)
            )
        elif head == "linear":
            self.net = nn.Linear(feat_dim, proj_dim)
        else:
            raise ValueError(f"head must be 'mlp' or 'linear', got {head!r}")

    def forward(self, f: Tensor) -> Tensor:
        """`(B, D)` → `(B, P)`, L2-normalised."""
        return F.normalize(self.net(f), dim=1)


@dataclass
class PCLOutput:
    """What `PCLNet.forward` returns: pretext `logits (B, 5)`, projections `v1, v2 (B, P)` of clips 0 and 2,
    and the pooled backbone `features (B, 3, D)` of clips 0, 1, 2."""

    logits: Tensor
    v1: Tensor
    v2: Tensor
    features: Tensor


class PCLNet(nn.Module):
    """PCL wrapper (PCL's released code, `models/pcl_net.py`): one shared backbone over the three clips of a tuple.

    `f_k = GAP(backbone.forward_features(res(x_k))[-1]) ∈ R^D`; pretext logits `Linear(3D → 5)(concat f_0,f_1,f_2)`;
    projection head on f_0 and f_2 only (the untransformed clips). `residual=True` is PCL's default `--modality res`.
    `feat_dim=None` takes D from `backbone.feature_info[-1].channels` (512 for C3D / R3D-10 / R(2+1)D-10).
    The backbone's own classifier is unused.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int | None = None,
        proj_dim: int = 128,
        head: str = "mlp",
        num_pretext: int = NUM_PRETEXT,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if feat_dim is None:
            info = getattr(backbone, "feature_info", None)
            feat_dim = info[-1].channels if info else 512
        self.backbone = backbone
        self.feat_dim = feat_dim
        self.residual = residual
        self.pretext_fc = nn.Linear(3 * feat_dim, num_pretext)
        self.head = ProjectionHead(feat_dim, proj_dim, head)

    def embed(self, x: Tensor) -> Tensor:
        """One clip batch `(B, C, T, H, W)` → pooled feature `(B, D)` (residual frames first when `residual`)."""
        if self.residual:
            x = residual_frames(x)
        return self.backbone.forward_features(x)[-1].mean(dim=(2, 3, 4))

    def forward(self, clips: Tensor) -> Tensor:
        """Pretext logits `(B, 5)` of a tuple batch `(B, 3, C, T, H, W)` (the model contract's `forward`)."""
        return self.forward_tuple(clips).logits

    def forward_tuple(self, clips: Sequence[Tensor] | Tensor) -> PCLOutput:
        """`clips`: three `(B, C, T, H, W)` tensors (or one `(B, 3, C, T, H, W)`) → `PCLOutput`.

        Each clip goes through the backbone separately, as in PCL, so train-mode BatchNorm sees per-clip statistics.
        """
        if isinstance(clips, Tensor):
            clips = clips.unbind(1)
        if len(clips) != 3:
            raise ValueError(f"PCLNet takes a 3-clip tuple, got {len(clips)} clips")
        b = clips[0].shape[0]
        f = torch.stack([self.embed(c) for c in clips], dim=1)  # (B, 3, D)
        logits = self.pretext_fc(f.reshape(b, -1))
        return PCLOutput(logits=logits, v1=self.head(f[:, 0]), v2=self.head(f[:, 2]), features=f)


class ResidualInput(nn.Module):
    """Contract-following wrapper: `forward_features(x) = backbone.forward_features(residual_frames(x))`.

    `(B, C, T, H, W)` → logits `(B, K)`; weights live under `backbone.`, so a plain backbone state dict loads into it.
    `forward` also takes the engine's multi-clip test input `(B, V, C, T, H, W)` and averages the V clips' logits
    (PCL tests on 10 clips per video).
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = backbone.num_classes
        self.feature_info = prefixed_stages(backbone, "backbone.")
        self.pretrained_cfg = backbone.pretrained_cfg

    def forward_features(self, x: Tensor) -> list[Tensor]:
        return self.backbone.forward_features(residual_frames(x))

    def get_classifier(self) -> nn.Module:
        return self.backbone.get_classifier()

    def forward_head(self, feature: Tensor) -> Tensor:
        return self.backbone.forward_head(feature)

    def forward(self, x: Tensor) -> Tensor:
        """Clip `(B, C, T, H, W)` or clips `(B, V, C, T, H, W)` → logits `(B, K)` (mean over the V clips)."""
        if x.dim() == 6:
            b, v = x.shape[:2]
            return self.forward(x.flatten(0, 1)).view(b, v, -1).mean(1)
        return self.forward_head(self.forward_features(x)[-1])


@MODELS.register(
    "residual_input",
    paper="PCL fine-tuning with residual-frame input (ft_classify.py --modality res)",
    role="fine-tuning wrapper for PCL backbones",
    loads_path=True,
    sizes=False,
)
def residual_input(
    num_classes: int, pretrained: bool | str = False, backbone: str = "r3d_10", **kwargs: Any
) -> ResidualInput:
    """`create_model("residual_input", K, pretrained=<backbone state dict>, backbone="c3d", channel_scale=..)`."""
    return ResidualInput(create_model(backbone, num_classes, pretrained=pretrained or False, **kwargs))


@MODELS.register(
    "pcl",
    task="video",
    paper="paper 3 via PCL's released code (models/pcl_net.py)",
    role="PCL network: backbone + pretext classifier + projection head (paper 3's student and teacher)",
    input_size=(3, 3, 16, 112, 112),
)
def pcl_network(
    num_classes: int = NUM_PRETEXT,
    pretrained: bool | str = False,
    *,
    backbone: str = "r3d_10",
    backbone_kwargs: dict[str, Any] | None = None,
    head: str = "mlp",
    proj_dim: int = 128,
    residual: bool = True,
) -> PCLNet:
    """`create_model("pcl", 5, backbone="c3d")`: a PCL network (`num_classes` = pretext classes) around a fresh
    backbone; `pretrained` is a whole PCL network's weights (a `pcl` run's checkpoint or `student_*.safetensors`)."""
    if pretrained is True:
        raise ValueError("pcl has no hub weights; pass a path to a pcl run's weights, or false")
    net = create_model(backbone, num_classes, pretrained=False, **(backbone_kwargs or {}))
    return PCLNet(net, proj_dim=proj_dim, head=head, num_pretext=num_classes, residual=residual)


def backbone_state(model: PCLNet) -> dict[str, Tensor]:
    """`model.backbone.state_dict()` (its 5-way `fc` included; fine-tuning drops it), detached on CPU."""
    return {k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}
