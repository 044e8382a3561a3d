"""Evaluate a saved checkpoint on the test split of its dataset (`actdistill eval`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from actdistill.config import config_from_dict, merge, parse_overrides
from actdistill.data.build import DATASETS, build_transforms, make_loader
from actdistill.engine.checkpoint import load_checkpoint
from actdistill.engine.loop import evaluate
from actdistill.engine.runtime import resolve_device, resolve_precision
from actdistill.errors import ActdistillError
from actdistill.models import create_model


def evaluate_checkpoint(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Rebuild the checkpoint's model and dataset (with overrides), evaluate, return the classification report."""
    ckpt = load_checkpoint(path)
    cfg = config_from_dict(merge(ckpt["config"], parse_overrides(overrides or [])), where=str(path))
    spec = ckpt["model"]
    test, classes = DATASETS.get(cfg.data.name)(cfg.data, "test", None)
    if len(classes) != spec["num_classes"]:
        raise ActdistillError(
            f"checkpoint {path} was trained for {spec['num_classes']} classes but {cfg.data.name} at "
            f"{cfg.data.root} has {len(classes)}; evaluate on the dataset it was trained on (set data.root)"
        )
    model = create_model(spec["name"], spec["num_classes"], pretrained=False, **spec.get("kwargs", {}))
    model.load_state_dict(ckpt["student"])
    test.transform = build_transforms(cfg.data, model.pretrained_cfg.mean, model.pretrained_cfg.std)[1]
    device = resolve_device(cfg.train.device)
    model.to(device).eval()
    loader = make_loader(test, cfg.data, train=False, device=device)
    amp = resolve_precision(cfg.train.precision, device)
    return evaluate(model, loader, device=device, amp_dtype=amp, class_names=list(classes))
