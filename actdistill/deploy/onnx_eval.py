"""Test-split accuracy of an exported `.onnx` model (fp32 or int8) with ONNX Runtime: `actdistill eval model.onnx`.

The data come from the model's metadata (written by `actdistill export`): the run's config (dataset, root, sizes)
rebuilds the test split with the same loader and test transform as `actdistill eval` of the checkpoint, normalised
with the metadata's mean/std. The report has the same keys as checkpoint evaluation (`top1`, `top5`,
`mean_class_accuracy`, `mAP`, `num_samples`, per-class AP, confusion matrix, `skipped`), plus `model`, `runtime`
and `quantization`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actdistill.errors import ActdistillError

__all__ = ["evaluate_onnx", "onnx_config"]


def onnx_config(path: str | Path, overrides: list[str] | None = None):
    """`(Config, metadata)` of an exported model: its stored run config with `section.key=value` overrides."""
    from actdistill.config import config_from_dict, merge, parse_overrides
    from actdistill.deploy.export import read_metadata

    try:
        meta = read_metadata(path)
    except ActdistillError:
        raise
    except Exception as exc:  # noqa: BLE001 - protobuf errors all mean an unusable file
        raise ActdistillError(f"{path}: not a readable ONNX model ({type(exc).__name__}); export it again") from None
    if "config" not in meta:
        raise ActdistillError(
            f"{path}: no run config in its metadata (exported before actdistill stored it); export the checkpoint "
            "again with `actdistill export` to evaluate the .onnx file"
        )
    raw = json.loads(meta["config"])
    return config_from_dict(merge(raw, parse_overrides(overrides or [])), where=str(path)), meta


def evaluate_onnx(
    path: str | Path,
    overrides: list[str] | None = None,
    *,
    threads: int = 0,
    batch_size: int = 0,
) -> dict[str, Any]:
    """Evaluate an exported ONNX model on its run's test split (see module docstring); returns the report.

    `threads`: ONNX Runtime intra-op threads (0: torch's thread count). `batch_size`: 0 uses the run's
    `data.eval_batch_size` / `data.batch_size`. Multi-clip video test samples `(B, V, C, T, H, W)` are scored per
    clip and their logits averaged.
    """
    from actdistill.data.build import DATASETS, build_transforms, make_loader
    from actdistill.deploy.onnx_deps import require_onnx
    from actdistill.eval.metrics import ClassificationMeter
    from actdistill.models.class_remap import class_order

    _, ort = require_onnx("evaluating an ONNX model")
    path = Path(path)
    if not path.is_file():
        raise ActdistillError(f"{path}: no such ONNX file")
    cfg, meta = onnx_config(path, overrides)
    if batch_size:
        cfg.data.eval_batch_size = batch_size
    classes_onnx = json.loads(meta.get("class_names", "[]"))
    test, classes = DATASETS.get(cfg.data.name)(cfg.data, "test", None)
    if classes_onnx and len(classes_onnx) != len(classes):
        raise ActdistillError(
            f"{path} was exported for {len(classes_onnx)} classes but {cfg.data.name} at {cfg.data.root} has "
            f"{len(classes)}; evaluate on the dataset it was trained on (set data.root)"
        )
    # the same class names in another order are remapped by name, as `actdistill eval` does for checkpoints
    order = class_order(classes_onnx, classes, "model", str(path)) if classes_onnx else None
    mean, std = tuple(json.loads(meta["mean"])), tuple(json.loads(meta["std"]))
    test.transform = build_transforms(cfg.data, mean, std)[1]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    shape = tuple(json.loads(meta["input_size"]))
    loader = make_loader(test, cfg.data, train=False, device=torch.device("cpu"))
    meter, skipped, tick = ClassificationMeter(), 0, time.perf_counter()
    for batch in loader:
        skipped += int(batch.get("skipped", 0))
        if "input" not in batch:
            continue
        x = batch["input"]
        views = x.dim() == len(shape) + 2  # (B, V, *shape)
        flat = x.flatten(0, 1) if views else x
        if tuple(flat.shape[1:]) != shape:
            raise ActdistillError(
                f"{path} takes inputs of shape {shape}, the data give {tuple(flat.shape[1:])}; do not override "
                "data.image_size / data.clip_len"
            )
        logits = torch.from_numpy(session.run(None, {name: flat.numpy().astype(np.float32, copy=False)})[0])
        if views:
            logits = logits.unflatten(0, x.shape[:2]).mean(1)
        if order is not None:
            logits = logits[:, order]
        meter.update(logits, batch["label"])
    report = meter.compute(list(classes))
    report["skipped"] = skipped
    report["model"] = str(path)
    report["runtime"] = f"onnxruntime {ort.__version__} CPU, {opts.intra_op_num_threads} threads"
    report["eval_seconds"] = time.perf_counter() - tick
    report["quantization"] = json.loads(meta["quantization"]) if "quantization" in meta else None
    return report
