"""torchvision's video classification zoo behind the model contract: S3D, MViT-v1-B, MViT-v2-S, Swin3D-T/S/B.

The video ResNets (`r3d_18`, `mc3_18`, `r2plus1d_18`) live in `video_resnet.py` and are registered by `video_zoo.py`;
importing this module registers the six models below in `MODELS` (factories `f(num_classes, pretrained=False, **kw)`).

Each wrapper reuses torchvision's sub-modules under torchvision's attribute names, so a torchvision state dict and
the wrapper's are the same (`features.*`, `classifier.1.*` for S3D; `conv_proj`, `pos_encoding`, `blocks`, `norm`,
`head.1` for MViT; `patch_embed`, `features`, `norm`, `head` for Swin3D). `pretrained`:

* `True`: torchvision's Kinetics-400 weights (the `weights` enum in the metadata; a download). A class count other
  than 400 replaces the classifier with a fresh one (warning).
* a path: a torchvision state dict or an actdistill checkpoint (`{"student": ...}`), loaded with
  `factory.load_pretrained`: wrapper prefixes are handled, a classifier of another class count stays freshly
  initialised with a warning, any other mismatch is an error.

`forward(x)` is torchvision's forward (exactly, at the standard input); `forward_features(x)` returns one
`(B, C, T, H, W)` map per stage (tokens laid out as maps; MViT's class token dropped); the last map carries the final
norm of the token models. All three families run at inputs other than the standard one (see each class), so feature
taps can probe them on the short dummy clips of `distill.taps.dummy_input`.

`params_m` / `gmacs` in the metadata: 101 classes, batch 1, `input_size`, counted on the meta device with
`analysis.flops.count` (FlopCounterMode, MACs = FLOPs / 2); `tests/test_video_torchvision.py` pins them. At 400
classes the GMACs equal torchvision's own `_ops` figures (also measured at 16×224², all six).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actdistill.errors import ActdistillError
from actdistill.models._contract import FeatureInfo
from actdistill.models.inflate import cross_modality, load_adapted, read_state_dict
from actdistill.models.two_stream import IMAGENET_MEAN, IMAGENET_STD, modality_cfg
from actdistill.models.video_resnet import KINETICS_MEAN, KINETICS_STD
from actdistill.registry import MODELS

log = logging.getLogger(__name__)

KINETICS_CLASSES = 400
# torchvision's VideoClassification presets per family (`torchvision/models/video/*.py`, the weights' transforms).
MVIT_MEAN, MVIT_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
# Set by MViT's `forward_features` on its last map so that `forward_head` can classify from the class token.
_CLASS_TOKEN = "_actdistill_class_token"


def _kinetics_net(arch: str, num_classes: int, pretrained: bool, weights: str) -> nn.Module:
    """torchvision's `arch` with `num_classes` outputs; Kinetics-400 weights when `pretrained` (head left at 400)."""
    import torchvision.models.video as tv_video
    from torchvision.models import get_weight

    builder = getattr(tv_video, arch)
    if not pretrained:
        return builder(weights=None, num_classes=num_classes)
    try:
        return builder(weights=get_weight(weights))
    except Exception as err:  # download or hash failure, typically offline
        raise ActdistillError(
            f"could not fetch torchvision's Kinetics-400 weights for {arch} ({type(err).__name__}); download "
            f"{weights} where there is internet and set student.pretrained (or teacher.pretrained) to that .pth file"
        ) from err


def _replace_conv(old: nn.Conv3d, in_channels: int, pretrained: bool) -> nn.Conv3d:
    """`old` with `in_channels` inputs; the channel-averaged kernel (TSN cross-modality) when it was pretrained."""
    new = nn.Conv3d(
        in_channels,
        old.out_channels,
        old.kernel_size,  # type: ignore[arg-type]
        old.stride,  # type: ignore[arg-type]
        old.padding,  # type: ignore[arg-type]
        bias=old.bias is not None,
    )
    if pretrained:
        new.weight.data.copy_(cross_modality(old.weight.data, in_channels))
        if old.bias is not None:
            new.bias.data.copy_(old.bias.data)  # type: ignore[union-attr]
    return new


class TorchvisionVideoNet(nn.Module):
    """Shared plumbing of the wrappers: class count, classifier lookup, weight files, flow input channels.

    Subclasses set `first_conv` (state-dict key of the patch/stem conv) and `head_keys`, build their modules, then
    call `_finish(...)`.
    """

    arch: str = ""
    first_conv: str = ""
    head_keys: tuple[str, ...] = ()

    def _finish(self, num_classes: int, frames: int, size: tuple[int, int], mean, std, in_channels: int) -> None:
        self.num_classes = num_classes
        cfg = modality_cfg(in_channels, frames, size[0], mean, std)  # RGB stats for 3 channels, flow stats for 2
        self.pretrained_cfg = dataclasses.replace(cfg, input_size=(in_channels, frames, *size))

    def _new_head(self, old: nn.Module, num_classes: int) -> nn.Module:
        warnings.warn(
            f"{self.arch}: Kinetics head ({KINETICS_CLASSES} classes) replaced by a new {num_classes}-way "
            f"{type(old).__name__}",
            stacklevel=4,
        )
        if isinstance(old, nn.Conv3d):
            return nn.Conv3d(old.in_channels, num_classes, kernel_size=1, stride=1, bias=True)
        new = nn.Linear(old.in_features, num_classes)
        nn.init.trunc_normal_(new.weight, std=0.02)  # torchvision's init of MViT / Swin3D linear layers
        nn.init.zeros_(new.bias)
        return new

    def get_classifier(self) -> nn.Module:
        """The final Linear / 1×1×1 conv (timm convention; lets loaders find the head)."""
        raise NotImplementedError

    def load_file(self, path: str | os.PathLike) -> None:
        """Load a torchvision state dict or an actdistill checkpoint; another class count keeps the fresh head.

        RGB models go through `factory.load_pretrained`; flow models (`in_channels` ≠ 3) through `load_adapted`,
        which gives the first conv the channel-averaged RGB kernel.
        """
        if self.pretrained_cfg.input_size[0] == 3:
            from actdistill.models.factory import load_pretrained  # lazy: models/__init__ imports the factory

            load_pretrained(self, Path(path))
        else:
            load_adapted(
                self, read_state_dict(path), head=self.head_keys, first_conv=self.first_conv, source=os.fspath(path)
            )

    def forward(self, x: Tensor) -> Tensor:
        """Clip `(B, C, T, H, W)` → logits `(B, K)`."""
        return self.forward_head(self.forward_features(x)[-1])


class TorchvisionS3D(TorchvisionVideoNet):
    """torchvision's S3D (Xie et al. 2018); `(B, 3, T, H, W)` → `(B, K)`, standard input 3×16×224².

    Stages (the last block at each resolution, as for I3D): `features.0` (Conv1, 64 ch, stride 2, temporal 2),
    `features.3` (Conv2c, 192, 4, 2), `features.6` (Mixed_3c, 480, 8, 2), `features.12` (Mixed_4f, 832, 16, 4),
    `features.15` (Mixed_5c, 1024, 32, 8). Head: torchvision's AvgPool3d (2, 7, 7) stride 1 → Dropout → 1×1×1 conv →
    mean over the remaining positions; on maps smaller than the kernel the pool kernel shrinks to the map (global
    average), so any input of at least 5 frames × 17 px runs (the stride-2 temporal max-pool needs two steps);
    tests use 8×32².
    """

    arch = "s3d"
    first_conv = "features.0.0.0.weight"
    head_keys = ("classifier.1.weight", "classifier.1.bias")
    STAGES = (0, 3, 6, 12, 15)

    def __init__(self, num_classes: int = 101, in_channels: int = 3, pretrained: bool = False) -> None:
        super().__init__()
        net = _kinetics_net("s3d", num_classes, pretrained, "S3D_Weights.KINETICS400_V1")
        if pretrained and num_classes != KINETICS_CLASSES:
            net.classifier[1] = self._new_head(net.classifier[1], num_classes)
        if in_channels != 3:
            stem = net.features[0][0]
            stem[0] = _replace_conv(stem[0], in_channels, pretrained)
        self.features, self.avgpool, self.classifier = net.features, net.avgpool, net.classifier
        channels = (64, 192, 480, 832, 1024)
        strides, temporal = (2, 4, 8, 16, 32), (2, 2, 2, 4, 8)
        self.feature_info = [
            FeatureInfo(f"features.{i}", c, s, t)
            for i, c, s, t in zip(self.STAGES, channels, strides, temporal, strict=True)
        ]
        self._finish(num_classes, 16, (224, 224), KINETICS_MEAN, KINETICS_STD, in_channels)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Stage maps `(B, C, T, H, W)`; Mixed_5c is 1024×2×7×7 for a 16×224² clip."""
        feats = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.STAGES:
                feats.append(x)
        return feats

    def get_classifier(self) -> nn.Module:
        return self.classifier[1]

    def forward_head(self, feature: Tensor) -> Tensor:
        """Mixed_5c map `(B, 1024, T, H, W)` → logits `(B, K)` (torchvision's head; see the class docstring)."""
        kernel = tuple(self.avgpool.kernel_size)  # type: ignore[arg-type]
        if all(n >= k for n, k in zip(feature.shape[2:], kernel)):
            x = self.avgpool(feature)
        else:
            x = F.avg_pool3d(feature, tuple(min(n, k) for n, k in zip(feature.shape[2:], kernel)), stride=1)
        return self.classifier(x).mean(dim=(2, 3, 4))


class TorchvisionMViT(TorchvisionVideoNet):
    """torchvision's MViT-v1-B / MViT-v2-S (Fan et al. 2021, Li et al. 2022); `(B, 3, T, H, W)` → `(B, K)`.

    Standard input 3×16×224² (the patch grid 8×56² that the position encoding was built for). The wrapper computes
    the grid from the input instead of taking torchvision's fixed one, so other sizes run too: MViT-v1's absolute
    spatial/temporal position embeddings are resized (bilinear / linear) to the grid, MViT-v2's relative position
    tables are interpolated by torchvision itself. At the grid the model was built for, `forward` is torchvision's,
    bit for bit. Any clip of at least 1 frame × 1 px runs; tests use 8×32² (a 4×8² patch grid).

    Stages: the last block before each spatial pooling and the last block (after the final norm), e.g. for v1-B
    `blocks.0` (192 ch, stride 4), `blocks.2` (384, 8), `blocks.13` (768, 16), `blocks.15` (768, 32), temporal
    stride 2 throughout. Maps drop the class token. The head classifies the class token: `forward_features` attaches
    it to the last map, so `forward_head(forward_features(x)[-1]) == forward(x)`; a map without it (e.g. a projected
    student map in SimKD) is classified from its average over positions instead (logged once).
    """

    first_conv = "conv_proj.weight"
    head_keys = ("head.1.weight", "head.1.bias")

    def __init__(self, arch: str, num_classes: int = 101, in_channels: int = 3, pretrained: bool = False) -> None:
        super().__init__()
        self.arch = arch
        weights = {"mvit_v1_b": "MViT_V1_B_Weights.KINETICS400_V1", "mvit_v2_s": "MViT_V2_S_Weights.KINETICS400_V1"}
        if arch not in weights:
            raise ActdistillError(f"unknown torchvision MViT '{arch}'; use one of {sorted(weights)}")
        net = _kinetics_net(arch, num_classes, pretrained, weights[arch])
        if pretrained and num_classes != KINETICS_CLASSES:
            net.head[1] = self._new_head(net.head[1], num_classes)
        if in_channels != 3:
            net.conv_proj = _replace_conv(net.conv_proj, in_channels, pretrained)
        self.conv_proj, self.pos_encoding, self.blocks, self.norm, self.head = (
            net.conv_proj,
            net.pos_encoding,
            net.blocks,
            net.norm,
            net.head,
        )
        self._grid = (net.pos_encoding.temporal_size, *net.pos_encoding.spatial_size)
        self._warned_no_token = False
        n = len(self.blocks)
        self._ends = [i for i in range(n) if i == n - 1 or self.blocks[i + 1].pool_skip is not None]
        t_stride, stride = self.conv_proj.stride[0], self.conv_proj.stride[1]
        self.feature_info = []
        for i, block in enumerate(self.blocks):
            if block.pool_skip is not None:
                t_stride, stride = t_stride * block.pool_skip.pool.stride[0], stride * block.pool_skip.pool.stride[1]
            if i in self._ends:
                width = [m for m in block.mlp.modules() if isinstance(m, nn.Linear)][-1].out_features
                self.feature_info.append(FeatureInfo(f"blocks.{i}", width, stride, t_stride))
        self._finish(num_classes, 16, (224, 224), MVIT_MEAN, MVIT_STD, in_channels)

    def _embed(self, x: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
        """Patchify, add the class token and the position encoding; tokens `(B, 1 + T'H'W', C)` and the grid."""
        x = self.conv_proj(x)
        thw = (int(x.shape[2]), int(x.shape[3]), int(x.shape[4]))
        x = x.flatten(2).transpose(1, 2)
        if thw == self._grid:
            return self.pos_encoding(x), thw
        pe = self.pos_encoding
        x = torch.cat((pe.class_token.expand(x.size(0), -1).unsqueeze(1), x), dim=1)
        if pe.spatial_pos is None or pe.temporal_pos is None or pe.class_pos is None:
            return x, thw  # MViT-v2: relative positions only, resized inside the attention
        (t, h, w), (h0, w0) = thw, pe.spatial_size
        c = pe.spatial_pos.shape[1]
        spatial = F.interpolate(
            pe.spatial_pos.t().reshape(1, c, h0, w0), size=(h, w), mode="bilinear", align_corners=False
        ).reshape(c, h * w)
        temporal = F.interpolate(pe.temporal_pos.t().unsqueeze(0), size=t, mode="linear", align_corners=False)[0]
        pos = (temporal.t()[:, None, :] + spatial.t()[None]).reshape(t * h * w, c)  # torchvision's t-major order
        return x + torch.cat((pe.class_pos.unsqueeze(0), pos), dim=0).unsqueeze(0), thw

    @staticmethod
    def _to_map(tokens: Tensor, thw: tuple[int, int, int]) -> Tensor:
        b, _, c = tokens.shape
        return tokens[:, 1:].transpose(1, 2).reshape(b, c, *thw)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Stage maps `(B, C, T, H, W)` without the class token; the last is after the final norm (768×8×7² at
        the standard input) and carries the class token for `forward_head`."""
        x, thw = self._embed(x)
        feats = []
        for i, block in enumerate(self.blocks):
            x, thw = block(x, thw)
            if i in self._ends and i != len(self.blocks) - 1:
                feats.append(self._to_map(x, thw))
        x = self.norm(x)
        last = self._to_map(x, thw)
        setattr(last, _CLASS_TOKEN, x[:, 0])
        feats.append(last)
        return feats

    def get_classifier(self) -> nn.Module:
        return self.head[1]

    def forward_head(self, feature: Tensor) -> Tensor:
        """Last map `(B, C, T, H, W)` → logits `(B, K)` from its class token (else its average, see the class)."""
        token = getattr(feature, _CLASS_TOKEN, None)
        if token is None:
            if not self._warned_no_token:
                log.warning(
                    "%s classifies its class token, which this feature map does not carry; forward_head averages "
                    "the map's positions instead",
                    self.arch,
                )
                self._warned_no_token = True
            token = feature.flatten(2).mean(dim=-1)
        return self.head(token)

    def forward(self, x: Tensor) -> Tensor:
        """Clip `(B, C, T, H, W)` → logits `(B, K)`: torchvision's MViT forward (class token → head)."""
        x, thw = self._embed(x)
        for block in self.blocks:
            x, thw = block(x, thw)
        return self.head(self.norm(x)[:, 0])


class TorchvisionSwin3D(TorchvisionVideoNet):
    """torchvision's Video Swin Transformer T / S / B (Liu et al. 2022); `(B, 3, T, H, W)` → `(B, K)`.

    Standard input 3×16×224² (torchvision's `_ops` size; its Kinetics accuracies were measured on 32-frame clips).
    torchvision pads to the patch size and shrinks the 8×7×7 attention window to small grids, so any clip of at
    least 1 frame × 1 px runs; tests use 8×32². Stages `features.0`, `.2`, `.4`, `.6` (C, 2C, 4C, 8C channels with
    C = 96 / 96 / 128 for T / S / B; strides 4, 8, 16, 32; temporal stride 2); the last map is after the final norm,
    and the head (average pool → Linear) reads it, exactly as torchvision's forward does.
    """

    first_conv = "patch_embed.proj.weight"
    head_keys = ("head.weight", "head.bias")

    def __init__(self, arch: str, num_classes: int = 101, in_channels: int = 3, pretrained: bool = False) -> None:
        super().__init__()
        self.arch = arch
        weights = {f"swin3d_{v}": f"Swin3D_{v.upper()}_Weights.KINETICS400_V1" for v in "tsb"}
        if arch not in weights:
            raise ActdistillError(f"unknown torchvision Swin3D '{arch}'; use one of {sorted(weights)}")
        net = _kinetics_net(arch, num_classes, pretrained, weights[arch])
        if pretrained and num_classes != KINETICS_CLASSES:
            net.head = self._new_head(net.head, num_classes)
        if in_channels != 3:
            net.patch_embed.proj = _replace_conv(net.patch_embed.proj, in_channels, pretrained)
        self.patch_embed, self.pos_drop, self.features = net.patch_embed, net.pos_drop, net.features
        self.norm, self.avgpool, self.head = net.norm, net.avgpool, net.head
        embed, t_stride = self.patch_embed.proj.out_channels, self.patch_embed.proj.stride[0]
        self._stages = list(range(0, len(self.features), 2))  # stages at even indices, patch merging in between
        self.feature_info = [
            FeatureInfo(f"features.{i}", embed * 2**k, 4 * 2**k, t_stride) for k, i in enumerate(self._stages)
        ]
        self._finish(num_classes, 16, (224, 224), IMAGENET_MEAN, IMAGENET_STD, in_channels)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Stage maps `(B, C, T, H, W)`; the last (after the final norm) is 768×8×7² for Swin3D-T at 16×224²."""
        x = self.pos_drop(self.patch_embed(x))  # (B, T, H, W, C)
        feats = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == len(self.features) - 1:
                x = self.norm(x)
            if i in self._stages:
                feats.append(x.permute(0, 4, 1, 2, 3))
        return feats

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward_head(self, feature: Tensor) -> Tensor:
        """Last map `(B, C, T, H, W)` → logits `(B, K)`: average pool → Linear."""
        return self.head(self.avgpool(feature).flatten(1))


def _factory(cls: type[TorchvisionVideoNet], arch: str | None, doc: str) -> Callable[..., TorchvisionVideoNet]:
    def build(num_classes: int = 101, pretrained: bool | str | os.PathLike = False, **kwargs: Any) -> nn.Module:
        hub = pretrained is True
        args = (num_classes,) if arch is None else (arch, num_classes)
        model = cls(*args, pretrained=hub, **kwargs)  # type: ignore[arg-type]
        if pretrained and not hub:
            model.load_file(pretrained)  # type: ignore[arg-type]
        return model

    build.__name__ = build.__qualname__ = arch or cls.arch
    build.__doc__ = doc
    return build


s3d = _factory(TorchvisionS3D, None, "torchvision S3D; `(B, 3, 16, 224, 224)` → `(B, K)`.")
mvit_v1_b = _factory(TorchvisionMViT, "mvit_v1_b", "torchvision MViT-v1-B; `(B, 3, 16, 224, 224)` → `(B, K)`.")
mvit_v2_s = _factory(TorchvisionMViT, "mvit_v2_s", "torchvision MViT-v2-S; `(B, 3, 16, 224, 224)` → `(B, K)`.")
swin3d_t = _factory(TorchvisionSwin3D, "swin3d_t", "torchvision Swin3D-T; `(B, 3, 16, 224, 224)` → `(B, K)`.")
swin3d_s = _factory(TorchvisionSwin3D, "swin3d_s", "torchvision Swin3D-S; `(B, 3, 16, 224, 224)` → `(B, K)`.")
swin3d_b = _factory(TorchvisionSwin3D, "swin3d_b", "torchvision Swin3D-B; `(B, 3, 16, 224, 224)` → `(B, K)`.")

_STANDARD = (3, 16, 224, 224)
_ROLE = "teacher or student (torchvision video zoo, Kinetics-400 weights)"


def _meta(
    paper: str, params_m: float, gmacs: float, weights: str, top1: float, min_input: tuple[int, ...]
) -> dict[str, Any]:
    # loads_path: the factory reads `pretrained=<path>` itself (torchvision state dicts, actdistill checkpoints).
    return dict(
        paper=paper,
        role=_ROLE,
        params_m=params_m,
        gmacs=gmacs,
        input_size=_STANDARD,
        min_input=min_input,
        weights=weights,
        kinetics_top1=top1,
        source=f"torchvision.models.video ({weights}; Kinetics-400 clip top-1 from torchvision's weight metadata)",
        logits="(B, K)",
        loads_path=True,
    )


_ANY = (3, 1, 1, 1)
# name → (factory, metadata): one dict per model (input size, paper/source, params at 101 classes, GMACs at
# `input_size`, torchvision's Kinetics-400 weights enum and its top-1, the smallest clip that runs).
TORCHVISION_VIDEO_MODELS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "s3d": (s3d, _meta("Xie et al. 2018 (S3D)", 8.014, 17.98, "S3D_Weights.KINETICS400_V1", 68.368, (3, 5, 17, 17))),
    "mvit_v1_b": (
        mvit_v1_b,
        _meta("Fan et al. 2021 (MViT-v1-B)", 36.381, 70.60, "MViT_V1_B_Weights.KINETICS400_V1", 78.477, _ANY),
    ),
    "mvit_v2_s": (
        mvit_v2_s,
        _meta("Li et al. 2022 (MViT-v2-S)", 34.308, 64.22, "MViT_V2_S_Weights.KINETICS400_V1", 80.757, _ANY),
    ),
    "swin3d_t": (
        swin3d_t,
        _meta("Liu et al. 2022 (Video Swin-T)", 27.928, 43.88, "Swin3D_T_Weights.KINETICS400_V1", 77.715, _ANY),
    ),
    "swin3d_s": (
        swin3d_s,
        _meta("Liu et al. 2022 (Video Swin-S)", 49.587, 82.84, "Swin3D_S_Weights.KINETICS400_V1", 79.521, _ANY),
    ),
    "swin3d_b": (
        swin3d_b,
        _meta("Liu et al. 2022 (Video Swin-B)", 87.743, 140.67, "Swin3D_B_Weights.KINETICS400_V1", 79.427, _ANY),
    ),
}

for _name, (_build, _info) in TORCHVISION_VIDEO_MODELS.items():
    MODELS.register(_name, task="video", **_info)(_build)
