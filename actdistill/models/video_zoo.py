"""Importing this module registers every video model in `MODELS` (factories `f(num_classes, pretrained=False, **kw)`).

torchvision's other video models (S3D, MViT, Swin3D) are registered by `torchvision_video.py`, with the same metadata.

`params_m` and `gmacs` were measured at 101 classes, batch 1 and `input_size` with FlopCounterMode (MACs = FLOPs / 2)
and match P2 Table 1 within 0.2 G; `tests/test_models_video_sizes.py` pins them. `gmacs_paper` is what P2 reports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actdistill.models import c3d, frames, i3d, video_resnet
from actdistill.registry import MODELS

_I3D_INPUT = (3, 64, 224, 224)
_PCL_INPUT = (3, 16, 112, 112)
_P2 = "P2 (Wang et al., Generative Model-based Feature KD, AAAI-24)"
_P3 = "P3 (Camarena et al., Boosting Self-supervised Video-based HAR Through KD)"
_PER_STEP = "per-step (B, K, T'); average over T' for clip logits"


def _meta(paper: str, role: str, params_m: float | None, gmacs: float | None, **extra: Any) -> dict[str, Any]:
    # loads_path: the factory itself reads `pretrained=<path>` in every layout it supports (pytorch-i3d, GoogLeNet,
    # torchvision), so a caller should hand it the path instead of loading the file generically.
    return dict(paper=paper, role=role, params_m=params_m, gmacs=gmacs, loads_path=True, **extra)


VIDEO_MODELS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "i3d": (
        i3d.i3d,
        _meta(
            "Carreira & Zisserman 2017 (I3D)",
            f"teacher in {_P2}",
            12.391,
            111.15,
            gmacs_paper=111.3,
            input_size=_I3D_INPUT,
            source="paper 2 Table 1; official code i3d_backbone.py",
            logits=_PER_STEP,
        ),
    ),
    "top_i3d": (
        i3d.top_i3d,
        _meta(
            "Xie et al. 2018 (Top-heavy I3D), P2's split",
            f"student in {_P2}",
            10.533,
            45.36,
            gmacs_paper=45.5,
            input_size=_I3D_INPUT,
            source="paper 2 Table 1; official code Top_heavy_i3d_backbone.py",
            logits=_PER_STEP,
        ),
    ),
    "bottom_i3d": (
        i3d.bottom_i3d,
        _meta(
            "Xie et al. 2018 (Bottom-heavy I3D), complement of Top-I3D",
            f"Table 5 student in {_P2}",
            7.562,
            102.68,
            input_size=_I3D_INPUT,
            source="paper 2 Table 5 (split is a toolkit decision)",
            logits=_PER_STEP,
        ),
    ),
    "i2d": (
        i3d.i2d,
        _meta(
            "Xie et al. 2018 (I2D)",
            f"Table 5 student in {_P2}",
            5.703,
            36.89,
            input_size=_I3D_INPUT,
            source="paper 2 Table 1; official code Top_heavy_i3d_backbone.py",
            logits=_PER_STEP,
        ),
    ),
    "c3d": (
        c3d.c3d,
        _meta(
            "Tran et al. 2015 (C3D), PCL's BN variant",
            f"teacher/student in {_P3}",
            27.713,
            38.50,
            input_size=_PCL_INPUT,
            source="paper 3 via PCL's released code",
            logits="(B, K)",
        ),
    ),
    "r3d_10": (
        video_resnet.r3d_10,
        _meta(
            "Tran et al. 2018 (R3D), PCL's 10-layer net",
            f"teacher/student in {_P3}",
            14.414,
            19.89,
            input_size=_PCL_INPUT,
            source="paper 3 via PCL's released code",
            logits="(B, K)",
        ),
    ),
    "r2plus1d_10": (
        video_resnet.r2plus1d_10,
        _meta(
            "Tran et al. 2018 (R(2+1)D), PCL's 10-layer net",
            f"teacher/student in {_P3}",
            14.417,
            21.36,
            input_size=_PCL_INPUT,
            source="paper 3 via PCL's released code",
            logits="(B, K)",
        ),
    ),
    "r3d_18": (
        video_resnet.r3d_18,
        _meta(
            "Tran et al. 2018 (R3D-18, torchvision)",
            f"optional backbone for {_P3}",
            33.218,
            40.70,
            input_size=_PCL_INPUT,
            source="paper 3 via PCL's released code",
            logits="(B, K)",
            weights="R3D_18_Weights.KINETICS400_V1",
            kinetics_top1=63.2,
        ),
    ),
    "mc3_18": (
        video_resnet.mc3_18,
        _meta(
            "Tran et al. 2018 (MC3-18, torchvision)",
            f"optional backbone for {_P3}",
            11.542,
            43.34,
            input_size=_PCL_INPUT,
            source="paper 3 via PCL's released code",
            logits="(B, K)",
            weights="MC3_18_Weights.KINETICS400_V1",
            kinetics_top1=63.96,
        ),
    ),
    "r2plus1d_18": (
        video_resnet.r2plus1d_18,
        _meta(
            "Tran et al. 2018 (R(2+1)D-18, torchvision)",
            f"optional backbone for {_P3}",
            31.352,
            40.52,
            input_size=_PCL_INPUT,
            source="paper 3 via PCL's released code",
            logits="(B, K)",
            weights="R2Plus1D_18_Weights.KINETICS400_V1",
            kinetics_top1=67.463,
        ),
    ),
    "frames": (
        frames.frames,
        _meta(
            "image model applied per frame, logits pooled over time",
            "frame baseline (needs image_model=...)",
            None,
            None,
            input_size=(3, 8, 224, 224),
            source="depends on image_model",
            logits="(B, K)",
        ),
    ),
}

for _name, (_factory, _info) in VIDEO_MODELS.items():
    MODELS.register(_name, task="video", **_info)(_factory)
