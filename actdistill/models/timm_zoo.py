"""timm models behind the actdistill model contract: paper 1's six networks (Table I) and tiny CPU demo presets."""

from __future__ import annotations

import logging
from typing import Any

import timm
import torch
from timm.models import build_model_with_cfg, get_pretrained_cfg
from timm.models.mvitv2 import MultiScaleVit, MultiScaleVitCfg
from torch import Tensor, nn

from actdistill.errors import ActdistillError
from actdistill.models._contract import FeatureInfo, PretrainedCfg
from actdistill.registry import MODELS

log = logging.getLogger(__name__)

_NLC_CLASSES = ("Twins", "MultiScaleVit", "ConVit", "VisionTransformer", "Eva")


class TimmAdapter(nn.Module):
    """A timm classifier that follows the actdistill model contract (`actdistill/models/_contract.py`).

    `forward_features(x)` returns timm's `forward_intermediates` maps, one `(B, C_i, H/s_i, W/s_i)` per entry of
    `feature_info`; the last map is exactly timm's `forward_features(x)` laid out as a map (so it includes the final
    norm of token models, and drops class tokens). `forward_head` undoes the layout and calls timm's `forward_head`,
    so `forward_head(forward_features(x)[-1]) == forward(x)` in eval mode.

    Exception: models that pool the class token (`global_pool='token'`, e.g. `convit_small`) cannot recover it from
    a map; their `forward_head` pools the patch tokens instead and does not reproduce `forward(x)`. Build them with
    `global_pool='avg'` where the identity matters.
    """

    def __init__(self, model: nn.Module, *, input_size: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.model = model
        self.num_classes = int(model.num_classes)
        cfg = dict(getattr(model, "pretrained_cfg", None) or {})
        size = tuple(input_size) if input_size else tuple(cfg.get("input_size", (3, 224, 224)))
        self.pretrained_cfg = PretrainedCfg(
            input_size=size,
            mean=tuple(cfg.get("mean", PretrainedCfg.mean)),
            std=tuple(cfg.get("std", PretrainedCfg.std)),
        )
        self.feature_info = [
            FeatureInfo(_module_path(model, f["module"]), int(f["num_chs"]), int(f["reduction"]))
            for f in model.feature_info
        ]
        # The layout timm's forward_head expects; confirmed from real shapes on every forward_features call.
        fmt = str(getattr(model, "output_fmt", "NCHW")).lower()
        self._layout = "nlc" if type(model).__name__ in _NLC_CLASSES else "nhwc" if "nhwc" in fmt else "nchw"
        self._prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        self._warned_token_pool = False

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) → logits (B, num_classes)."""
        return self.model(x)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) → one map (B, C_i, H/s_i, W/s_i) per stage; the last is timm's `forward_features` as a map."""
        final, maps = self.model.forward_intermediates(x)
        maps = list(maps)
        maps[-1] = self._final_to_map(final, maps[-1])
        return maps

    def forward_head(self, feature: Tensor) -> Tensor:
        """Last map (B, C, h, w) → logits (B, num_classes)."""
        if self._layout == "nchw":
            return self.model.forward_head(feature)
        if self._layout == "nhwc":
            return self.model.forward_head(feature.permute(0, 2, 3, 1))
        tokens = feature.flatten(2).transpose(1, 2)
        if getattr(self.model, "global_pool", "avg") == "token":
            if not self._warned_token_pool:
                log.warning(
                    "%s pools its class token, which a feature map lacks; forward_head averages the patch tokens "
                    "instead (build with global_pool='avg' for an exact head)",
                    type(self.model).__name__,
                )
                self._warned_token_pool = True
            return self.model.forward_head(tokens.mean(1, keepdim=True))
        if self._prefix:
            # timm's avg pool skips the prefix (class) tokens, so zeros in their place leave the result exact.
            tokens = torch.cat([tokens.new_zeros(tokens.shape[0], self._prefix, tokens.shape[2]), tokens], dim=1)
        return self.model.forward_head(tokens)

    def get_classifier(self) -> nn.Module:
        """The final linear layer (the weights a change of `num_classes` replaces)."""
        return self.model.get_classifier()

    def _final_to_map(self, final: Tensor, last: Tensor) -> Tensor:
        b, c, h, w = last.shape
        if final.ndim == 4 and final.shape == last.shape:
            self._layout = "nchw"
            return final
        if final.ndim == 4 and tuple(final.shape[1:]) == (h, w, c):
            self._layout = "nhwc"
            return final.permute(0, 3, 1, 2)
        if final.ndim == 3 and final.shape[2] == c and final.shape[1] >= h * w:
            self._layout, self._prefix = "nlc", final.shape[1] - h * w
            return final[:, self._prefix :].transpose(1, 2).reshape(b, c, h, w)
        shape = tuple(final.shape)
        raise RuntimeError(f"{type(self.model).__name__}: cannot lay out forward_features {shape} as a map")


def _module_path(model: nn.Module, path: str) -> str:
    """timm's feature_info module name as a path inside the adapter (`model.` + the real submodule path)."""
    names = dict(model.named_modules())
    if path not in names:
        # Some timm models name stages 'block.i' although the module is 'blocks.i' or 'stages.i'.
        index = path.rsplit(".", 1)[-1]
        path = next((f"{p}.{index}" for p in ("stages", "blocks", "layers") if f"{p}.{index}" in names), path)
    return f"model.{path}"


def _is_hub_error(exc: BaseException) -> bool:
    module = type(exc).__module__.split(".")[0]
    return isinstance(exc, OSError) or module in {"huggingface_hub", "requests", "httpx", "urllib3"}


def create_timm(
    name: str, num_classes: int, *, pretrained: bool = False, img_size: int | None = None, **kwargs: Any
) -> TimmAdapter:
    """Build timm model `name` (optionally `name.tag`) with a `num_classes` head, wrapped in a `TimmAdapter`.

    `pretrained=True` downloads timm's ImageNet weights from the Hugging Face hub. `img_size` is passed to models
    with size-dependent position embeddings or windows and recorded in `pretrained_cfg.input_size` for all.
    """
    if pretrained:
        cfg = get_pretrained_cfg(name)
        if cfg is None or not cfg.has_weights:
            raise ActdistillError(
                f"timm model '{name}' has no pretrained weights; set student.pretrained (or teacher.pretrained) to "
                "false or to a local .pth or .safetensors file"
            )
    if img_size is not None:
        kwargs["img_size"] = img_size
    try:
        model = _timm_create(name, num_classes, pretrained, kwargs)
    except Exception as exc:
        if pretrained and _is_hub_error(exc):
            raise ActdistillError(
                f"could not download pretrained weights '{name}' from the Hugging Face hub ({type(exc).__name__}); "
                "set student.pretrained (or teacher.pretrained) to a local .pth or .safetensors file"
            ) from exc
        raise
    return TimmAdapter(model, input_size=(3, img_size, img_size) if img_size else None)


def _timm_create(name: str, num_classes: int, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except TypeError as exc:
        if "img_size" not in kwargs or "img_size" not in str(exc):
            raise
    # Fully convolutional families (ConvNeXt, PVT-v2) take any input size and have no img_size argument.
    kwargs = {k: v for k, v in kwargs.items() if k != "img_size"}
    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)


# ---- paper 1, Table I (matched by param count): exact timm names and the ImageNet tags the paper fine-tunes from ----

_PAPER1 = {
    "convnext_small": ("ConvNeXt", "teacher", "fb_in1k", 49.48, 8.6),
    "swinv2_cr_tiny_ns_224": ("Swinv2", "student", "sw_in1k", 27.59, 4.3),
    "twins_svt_small": ("Twins", "student", "in1k", 23.56, 2.8),
    "mvitv2_tiny": ("MViTv2", "student", "fb_in1k", 23.43, 4.2),
    "convit_small": ("ConViT", "student", "fb_in1k", 27.36, 4.5),
    "pvt_v2_b2_li": ("PVT-v2", "student", "in1k", 22.06, 2.9),
}


def _register_paper1(name: str, paper_name: str, role: str, tag: str, params_m: float, gflops: float) -> None:
    def factory(num_classes: int, pretrained: bool = False, **kwargs: Any) -> TimmAdapter:
        return create_timm(f"{name}.{tag}" if pretrained else name, num_classes, pretrained=bool(pretrained), **kwargs)

    factory.__doc__ = f"Paper 1 {role} {paper_name}: timm `{name}`, ImageNet weights `{name}.{tag}`."
    MODELS.register(
        name,
        paper_name=paper_name,
        role=role,
        paper="P1",
        params_m_paper=params_m,
        gflops_paper=gflops,
        timm_name=name,
        pretrained_tag=f"{name}.{tag}",
        input_size=(3, 224, 224),
        description=f"paper 1 {role} {paper_name} (timm {name})",
    )(factory)


for _name, _row in _PAPER1.items():
    _register_paper1(_name, *_row)


# ---- tiny demo presets: the same timm classes at small widths, 64 px, trainable in minutes on 2 CPU cores ----

_DEMO_SIZE = 64


def _mvitv2_demo(num_classes: int, img_size: int, cfg_args: dict[str, Any], **kwargs: Any) -> nn.Module:
    # MViTv2's widths live in a config dataclass, which timm.create_model cannot override.
    cfg = MultiScaleVitCfg(**cfg_args)
    feature_cfg = dict(out_indices=4, feature_cls="getter")
    return build_model_with_cfg(
        MultiScaleVit,
        "mvitv2_tiny",
        False,
        model_cfg=cfg,
        feature_cfg=feature_cfg,
        num_classes=num_classes,
        img_size=(img_size, img_size),
        **kwargs,
    )


_DEMOS: dict[str, tuple[str, str, dict[str, Any]]] = {
    # Teacher ≈ 1.2 M parameters, students ≈ 0.85-0.9 M, so the demo teacher is the larger network as in paper 1.
    "convnext_demo": ("teacher", "convnext_small", dict(dims=(32, 64, 128, 256), depths=(1, 1, 3, 1))),
    # The CPU demo's teacher: a tiny ConvNeXt trained from scratch stays at chance on the synthetic set within the
    # demo's budget (BENCHMARKS.md), while this BatchNorm ResNet learns it in a few epochs.
    "resnet_demo": ("teacher", "resnet10t", dict(channels=(32, 64, 128, 256))),
    "pvt_v2_demo": (
        "student",
        "pvt_v2_b2_li",
        dict(embed_dims=(32, 64, 96, 160), depths=(1, 1, 2, 1), num_heads=(1, 2, 3, 5), mlp_ratios=(4, 4, 4, 4)),
    ),
    "twins_demo": (
        "student",
        "twins_svt_small",
        dict(
            embed_dims=(32, 64, 96, 128),
            depths=(2, 2, 2, 2),
            num_heads=(1, 2, 3, 4),
            mlp_ratios=(4, 4, 4, 4),
            wss=(4, 4, 4, 4),
            sr_ratios=(4, 2, 1, 1),
        ),
    ),
    "swinv2_demo": (
        "student",
        "swinv2_cr_tiny_ns_224",
        dict(embed_dim=24, depths=(2, 2, 2, 1), num_heads=(1, 2, 4, 8), window_size=4),
    ),
    "mvitv2_demo": ("student", "mvitv2_tiny", dict(depths=(1, 1, 2, 1), embed_dim=28, num_heads=1)),
    # global_pool='avg' (ConViT-S pools its class token) keeps forward_head(forward_features(x)[-1]) == forward(x).
    "convit_demo": (
        "student",
        "convit_small",
        dict(patch_size=8, embed_dim=32, num_heads=4, depth=4, local_up_to_layer=3, global_pool="avg"),
    ),
}


def _register_demo(name: str, role: str, base: str, overrides: dict[str, Any]) -> None:
    def factory(num_classes: int, pretrained: bool = False, *, img_size: int = _DEMO_SIZE, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise ActdistillError(
                f"model '{name}' is a demo preset without pretrained weights; set student.pretrained (or "
                "teacher.pretrained) to false or to a local .pth or .safetensors file"
            )
        if name == "mvitv2_demo":
            model = _mvitv2_demo(num_classes, img_size, overrides, **kwargs)
            return TimmAdapter(model, input_size=(3, img_size, img_size))
        return create_timm(base, num_classes, img_size=img_size, **{**overrides, **kwargs})

    factory.__doc__ = f"Tiny {role} demo preset built from timm `{base}` at {_DEMO_SIZE} px (no pretrained weights)."
    MODELS.register(
        name,
        paper_name=f"{base} (demo)",
        role=role,
        paper="demo",
        params_m_paper=None,
        gflops_paper=None,
        timm_name=base,
        pretrained_tag=None,
        input_size=(3, _DEMO_SIZE, _DEMO_SIZE),
        description=f"tiny {role} built from timm {base} for the CPU demo",
    )(factory)


for _name, (_role, _base, _overrides) in _DEMOS.items():
    _register_demo(_name, _role, _base, _overrides)
