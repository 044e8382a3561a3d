"""Stand-alone evaluation of a checkpoint (`actdistill eval`): the same predictor and evaluator as training used.

`load_predictor` rebuilds what a run scored during training from its checkpoint (the student, or for paper 2's
method the student with its attention module; `Distiller.predictor_spec`), so `actdistill eval`, `--fuse-flow`,
`predict`, `export` and `analyze` all score the network the run reported.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from actdistill.config import Config, check_values, config_from_dict, parse_overrides
from actdistill.data.build import make_loader
from actdistill.engine.evaluators import ClassificationEvaluator
from actdistill.engine.tasks import task_for
from actdistill.errors import ActdistillError
from actdistill.models import create_model
from actdistill.models.class_remap import ClassRemap, class_order
from actdistill.models.two_stream import LateFusion
from actdistill.utils.checkpoint import load_checkpoint, state_mismatch
from actdistill.utils.runtime import resolve_device, resolve_precision

log = logging.getLogger("actdistill")


def load_predictor(path: str | Path, ckpt: dict[str, Any] | None = None) -> nn.Module:
    """The checkpoint's predictor in eval mode: the model its run evaluated (weights-only load)."""
    ckpt = ckpt if ckpt is not None else load_checkpoint(path)
    if "model" not in ckpt:
        raise ActdistillError(f"checkpoint {path} has no 'model' entry; pass a run's checkpoints/best.pt or last.pt")
    predictor = ckpt.get("predictor") or {}
    spec = predictor.get("spec") or ckpt["model"]
    state = predictor.get("state") or ckpt["student"]
    model = create_model(spec["name"], spec["num_classes"], pretrained=False, **spec.get("kwargs", {}))
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise ActdistillError(
            f"checkpoint {path}: its weights do not fit '{spec['name']}' ({state_mismatch(model, state)})"
        ) from None
    return model.eval()


def checkpoint_config(path: str | Path, ckpt: dict[str, Any], overrides: list[str] | None) -> Config:
    """The run's saved config with command-line overrides applied (e.g. `data.root=` of another copy), checked."""
    cfg = config_from_dict(ckpt["config"], where=str(path))
    cfg = config_from_dict(parse_overrides(overrides or []), "command line", base=cfg)
    check_values(cfg, str(path))
    return cfg


def _matched(model: nn.Module, ckpt: dict[str, Any], classes: list[str], path: str | Path) -> nn.Module:
    """`model` with outputs in the dataset's class order (remapped by name, said once) or an error."""
    saved = ckpt.get("class_names")
    if not saved:
        return model
    order = class_order(saved, classes, "checkpoint", str(path))
    if order is None:
        return model
    log.warning("checkpoint %s lists the dataset's classes in another order; its outputs are remapped by name", path)
    return ClassRemap(model, order).eval()


def evaluate_checkpoint(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Rebuild the checkpoint's predictor and test split (with overrides), evaluate, return the task's report."""
    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(path, ckpt, overrides)
    task = task_for(cfg)
    model = load_predictor(path, ckpt)
    data = task.build_data(cfg, model)
    model = _matched(model, ckpt, data.classes, path)
    device = resolve_device(cfg.train.device)
    loader = make_loader(data.test, cfg.data, train=False, device=device, collate=data.collate)
    evaluator = task.evaluator(cfg, data.classes)
    return evaluator(model.to(device), loader, device=device, amp_dtype=resolve_precision(cfg.train.precision, device))


def evaluate_fused(
    rgb_path: str | Path,
    flow_path: str | Path,
    overrides: list[str] | None = None,
    *,
    mode: str | None = None,
    rgb_weight: float = 0.5,
) -> dict[str, Any]:
    """Two-stream test accuracy: an RGB and a flow checkpoint fused late (`LateFusion`; paper 2's `p2` rule).

    The data settings are the RGB run's (overrides apply), read with `modality=rgb+flow` and the flow run's
    `flow_root`; `mode` defaults to the RGB run's `eval.fusion`. Each stream is its run's predictor.
    """
    rgb_ckpt, flow_ckpt = load_checkpoint(rgb_path), load_checkpoint(flow_path)
    flow_data = flow_ckpt["config"]["data"]
    if flow_data.get("modality") != "flow" or rgb_ckpt["config"]["data"].get("modality", "rgb") != "rgb":
        raise ActdistillError(
            f"fused evaluation needs an RGB run ({rgb_path}: modality {rgb_ckpt['config']['data'].get('modality')}) "
            f"and a flow run ({flow_path}: modality {flow_data.get('modality')}); pass them in that order"
        )
    stream = ["data.modality=rgb+flow", f"data.flow_root={flow_data.get('flow_root', '')}"]
    cfg = checkpoint_config(rgb_path, rgb_ckpt, [*stream, *(overrides or [])])
    mode = mode or cfg.eval.fusion
    rgb, flow = load_predictor(rgb_path, rgb_ckpt), load_predictor(flow_path, flow_ckpt)
    data = task_for(cfg).build_data(cfg, rgb)
    rgb, flow = _matched(rgb, rgb_ckpt, data.classes, rgb_path), _matched(flow, flow_ckpt, data.classes, flow_path)
    fusion = LateFusion(rgb, flow, mode=mode, rgb_weight=rgb_weight)  # type: ignore[arg-type]
    device = resolve_device(cfg.train.device)
    loader = make_loader(data.test, cfg.data, train=False, device=device, collate=data.collate)
    evaluator = ClassificationEvaluator(data.classes, "mean_logits", inputs=("input", "input_flow"))
    report = evaluator(
        FusedStreams(fusion).to(device).eval(),
        loader,
        device=device,
        amp_dtype=resolve_precision(cfg.train.precision, device),
    )
    report["fusion"] = {"mode": mode, "rgb_weight": rgb_weight, "rgb": str(rgb_path), "flow": str(flow_path)}
    return report


class FusedStreams(nn.Module):
    """`forward(rgb, flow)` → the late fusion's scores, so the classification evaluator can call it."""

    def __init__(self, fusion: LateFusion) -> None:
        super().__init__()
        self.fusion = fusion

    def forward(self, rgb: Any, flow: Any) -> Any:
        return self.fusion((rgb, flow))
