"""Evaluate a saved checkpoint on the test split of its dataset (`actdistill eval`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from actdistill.config import config_from_dict, merge, parse_overrides
from actdistill.data.build import DATASETS, build_transforms, make_loader
from actdistill.engine.loop import evaluate
from actdistill.engine.runtime import resolve_device, resolve_precision
from actdistill.errors import ActdistillError
from actdistill.models import create_model
from actdistill.utils.checkpoint import load_checkpoint


def _load_model(path: str | Path, ckpt: dict[str, Any], num_classes: int, where: str) -> nn.Module:
    """The checkpoint's student with its weights, checked against the dataset's class count."""
    spec = ckpt["model"]
    if num_classes != spec["num_classes"]:
        raise ActdistillError(
            f"checkpoint {path} was trained for {spec['num_classes']} classes but {where} has {num_classes}; "
            "evaluate on the dataset it was trained on (set data.root)"
        )
    model = create_model(spec["name"], spec["num_classes"], pretrained=False, **spec.get("kwargs", {}))
    model.load_state_dict(ckpt["student"])
    return model.eval()


def evaluate_checkpoint(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Rebuild the checkpoint's model and dataset (with overrides), evaluate, return the classification report."""
    ckpt = load_checkpoint(path)
    cfg = config_from_dict(merge(ckpt["config"], parse_overrides(overrides or [])), where=str(path))
    test, classes = DATASETS.get(cfg.data.name)(cfg.data, "test", None)
    model = _load_model(path, ckpt, len(classes), f"{cfg.data.name} at {cfg.data.root}")
    test.transform = build_transforms(cfg.data, model.pretrained_cfg.mean, model.pretrained_cfg.std)[1]
    device = resolve_device(cfg.train.device)
    model.to(device)
    loader = make_loader(test, cfg.data, train=False, device=device)
    amp = resolve_precision(cfg.train.precision, device)
    return evaluate(model, loader, device=device, amp_dtype=amp, class_names=list(classes))


def evaluate_fused(
    rgb_path: str | Path,
    flow_path: str | Path,
    overrides: list[str] | None = None,
    *,
    mode: str = "softmax",
    rgb_weight: float = 0.5,
) -> dict[str, Any]:
    """Two-stream test accuracy: an RGB and a flow checkpoint fused late (`LateFusion`, paper 2's official code).

    The data settings are the RGB run's (overrides apply), read with `modality=rgb+flow` and the flow run's
    `flow_root`; each stream gets its own test transform and normalisation.
    """
    from actdistill.models.two_stream import LateFusion

    rgb_ckpt, flow_ckpt = load_checkpoint(rgb_path), load_checkpoint(flow_path)
    flow_data = flow_ckpt["config"]["data"]
    if flow_data.get("modality") != "flow" or rgb_ckpt["config"]["data"].get("modality", "rgb") != "rgb":
        raise ActdistillError(
            f"fused evaluation needs an RGB run ({rgb_path}: modality {rgb_ckpt['config']['data'].get('modality')}) "
            f"and a flow run ({flow_path}: modality {flow_data.get('modality')}); pass them in that order"
        )
    base = merge(rgb_ckpt["config"], {"data": {"modality": "rgb+flow", "flow_root": flow_data.get("flow_root", "")}})
    cfg = config_from_dict(merge(base, parse_overrides(overrides or [])), where=str(rgb_path))
    test, classes = DATASETS.get(cfg.data.name)(cfg.data, "test", None)
    where = f"{cfg.data.name} at {cfg.data.root}"
    rgb, flow = (
        _load_model(rgb_path, rgb_ckpt, len(classes), where),
        _load_model(flow_path, flow_ckpt, len(classes), where),
    )
    test.transform = build_transforms(cfg.data, rgb.pretrained_cfg.mean, rgb.pretrained_cfg.std)[1]
    fusion = LateFusion(rgb, flow, mode=mode, rgb_weight=rgb_weight)  # type: ignore[arg-type]
    device = resolve_device(cfg.train.device)
    fusion.to(device).eval()
    loader = make_loader(test, cfg.data, train=False, device=device)
    amp = resolve_precision(cfg.train.precision, device)
    report = evaluate(
        lambda x_rgb, x_flow: fusion((x_rgb, x_flow)),
        loader,
        device=device,
        amp_dtype=amp,
        class_names=list(classes),
        inputs=("input", "input_flow"),
    )
    report["fusion"] = {"mode": mode, "rgb_weight": rgb_weight, "rgb": str(rgb_path), "flow": str(flow_path)}
    return report
