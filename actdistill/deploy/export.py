"""`actdistill export`: a checkpoint's predictor → ONNX with a dynamic batch axis, checked against PyTorch.

Uses torch's dynamo-based exporter (`torch.onnx.export(..., dynamo=True)`, needs onnxscript): the TorchScript
exporter (`dynamo=False`) fails on the zoo's timm and video models (adaptive pooling, shape-dependent heads).
The graph is traced with a batch of at least 2: a traced batch of 1 is specialised and would fix the batch axis.
`--quantize int8` also writes an int8 model (`actdistill/deploy/quantize.py`, docs/deploy.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from actdistill.deploy.onnx_deps import require_onnx
from actdistill.errors import ActdistillError

__all__ = ["export_model", "export_onnx", "input_shape", "load_student", "require_onnx"]

log = logging.getLogger("actdistill")
TOLERANCE = 1e-3


class ClassLogits(nn.Module):
    """Wraps a model so that its output is `(B, K)` logits (video heads' per-time-step logits are averaged)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """`(B, C, H, W)` or `(B, C, T, H, W)` → `(B, K)`."""
        out = self.model(x)
        return out.mean(dim=-1) if out.dim() == 3 else out


def load_student(path: str | Path) -> tuple[nn.Module, Any, dict[str, Any]]:
    """The checkpoint's predictor in eval mode (what its run scored: the student, or student + attention / SimKD's
    projector) and the run's config: `(model, config, ckpt)`; never the teacher or training-only adapters."""
    import actdistill.data.build  # noqa: F401  (registers datasets, for dataset_task)
    from actdistill.config import config_from_dict
    from actdistill.engine.evaluate import load_predictor
    from actdistill.utils.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    if "model" not in ckpt or "config" not in ckpt:
        raise ActdistillError(f"checkpoint {path} has no 'model'/'config' entries; pass a run's checkpoints/best.pt")
    cfg = config_from_dict(ckpt["config"], where=str(path))
    return load_predictor(path, ckpt), cfg, ckpt


def input_shape(model: nn.Module, cfg: Any) -> tuple[int, ...]:
    """Per-sample input shape from the run config: `(C, S, S)` for images, `(C, T, S, S)` for video."""
    from actdistill.data.build import dataset_task

    channels = int(model.pretrained_cfg.input_size[0])
    size = int(cfg.data.image_size)
    video = dataset_task(cfg.data.name) == "video" or len(model.pretrained_cfg.input_size) == 4
    return (channels, int(cfg.data.clip_len), size, size) if video else (channels, size, size)


def export_model(model: nn.Module, shape: tuple[int, ...], out_path: str | Path, *, opset: int = 18) -> Path:
    """Export `model` (eval) taking `(B, *shape)` with a dynamic batch axis to `out_path`; returns the path."""
    require_onnx(exporter=True)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(2, *shape)  # batch ≥ 2: a traced batch of 1 is specialised to a static axis
    batch = torch.export.Dim("batch", min=1, max=65536)
    wrapped = ClassLogits(model).eval()
    quiet = logging.getLogger("onnxscript").level
    logging.getLogger("onnxscript").setLevel(logging.ERROR)  # version-converter fallbacks are logged as errors
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapped,
                (example,),
                dynamo=True,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                verbose=False,
            )
    except Exception as exc:  # noqa: BLE001 - exporter failures come in many types
        raise ActdistillError(
            f"ONNX export of {type(model).__name__} failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            "try another --opset or report the model"
        ) from None
    finally:
        logging.getLogger("onnxscript").setLevel(quiet)
    program.save(str(out_path))
    return out_path


def _metadata(model: nn.Module, cfg: Any, ckpt: dict[str, Any], shape: tuple[int, ...]) -> dict[str, str]:
    from actdistill import __version__
    from actdistill.data.build import dataset_task

    pcfg = model.pretrained_cfg
    classes = ckpt.get("class_names") or [str(i) for i in range(ckpt["model"]["num_classes"])]
    return {
        "input_size": json.dumps(list(shape)),
        "mean": json.dumps([float(v) for v in pcfg.mean]),
        "std": json.dumps([float(v) for v in pcfg.std]),
        "class_names": json.dumps(list(classes)),
        "model_name": str(ckpt["model"]["name"]),
        "task": "video" if len(shape) == 4 else dataset_task(cfg.data.name),
        "frame_interval": str(int(cfg.data.frame_interval)),
        "resize": str(int(cfg.data.resize)),
        "actdistill_version": __version__,
        # The run's config (data section included): `evaluate_onnx` rebuilds the test split from it.
        "config": json.dumps(cfg.to_dict() if hasattr(cfg, "to_dict") else ckpt["config"], default=str),
    }


def write_metadata(path: str | Path, metadata: dict[str, str]) -> None:
    """Store `metadata` as the ONNX model's `metadata_props` (string key/value pairs)."""
    onnx, _ = require_onnx()
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The `metadata_props` of an ONNX file as a dict."""
    onnx, _ = require_onnx("reading an ONNX model")
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def verify_onnx(model: nn.Module, path: str | Path, shape: tuple[int, ...], batch: int = 1, seed: int = 0) -> float:
    """Max abs difference of ONNX Runtime vs PyTorch logits on a random `(batch, *shape)` input."""
    _, ort = require_onnx()
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = ClassLogits(model).eval()(x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return float((torch.from_numpy(got) - expected).abs().max())


def export_onnx(
    checkpoint: str | Path,
    out_path: str | Path | None = None,
    *,
    opset: int = 18,
    batch: int = 1,
    verify: bool = True,
    quantize: str | None = None,
    calibration: int = 64,
    quant_mode: str = "auto",
    per_channel: bool = True,
    calibration_method: str = "minmax",
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Export a checkpoint's student to ONNX (+ metadata), verify with ONNX Runtime; returns a summary dict.

    `quantize="int8"` also writes an int8 model (`actdistill.deploy.quantize.quantize_onnx`): static QDQ calibrated
    on `calibration` samples of the run's training split (test transform), or dynamic where static cannot apply
    (`quant_mode`). Then `out_path` (default `<checkpoint>.int8.onnx`) is the int8 model, the fp32 one is kept beside
    it (`model.onnx` / `model.int8.onnx` → `model.fp32.onnx`; `<checkpoint>.onnx` by default), and the summary has an
    `int8` entry. `overrides`
    (`data.root=...`) relocate the dataset; they are stored in the metadata's config.
    """
    require_onnx(exporter=True)
    if quantize not in (None, "int8"):
        raise ActdistillError(f"unknown --quantize '{quantize}'; use int8")
    model, cfg, ckpt = load_student(checkpoint)
    if overrides:
        from actdistill.config import config_from_dict, merge, parse_overrides

        cfg = config_from_dict(merge(cfg.to_dict(), parse_overrides(overrides)), where=str(checkpoint))
    shape = input_shape(model, cfg)
    if quantize:
        final = Path(out_path) if out_path else Path(checkpoint).with_suffix(".int8.onnx")
        out = Path(checkpoint).with_suffix(".onnx")
        if out_path:  # model.onnx or model.int8.onnx → model.fp32.onnx beside it
            out = final.with_name(final.name.removesuffix(".onnx").removesuffix(".int8") + ".fp32.onnx")
    else:
        out = Path(out_path) if out_path else Path(checkpoint).with_suffix(".onnx")
    export_model(model, shape, out, opset=opset)
    metadata = _metadata(model, cfg, ckpt, shape)
    write_metadata(out, metadata)
    diff = verify_onnx(model, out, shape, batch=batch) if verify else None
    if diff is not None and not diff <= TOLERANCE:
        raise ActdistillError(
            f"{out}: ONNX Runtime differs from PyTorch by {diff:.2e} (> {TOLERANCE:g}); try another --opset"
        )
    info: dict[str, Any] = {
        "path": str(out),
        "input_shape": ["batch", *shape],
        "max_abs_diff": diff,
        "parameters": sum(p.numel() for p in model.parameters()),
        "metadata": metadata,
    }
    if quantize:
        info["int8"] = _quantize(out, final, model, cfg, shape, metadata, calibration, quant_mode, per_channel,
                                 calibration_method, verify)  # fmt: skip
    return info


def _quantize(
    fp32: Path,
    final: Path,
    model: nn.Module,
    cfg: Any,
    shape: tuple[int, ...],
    metadata: dict[str, str],
    calibration: int,
    mode: str,
    per_channel: bool,
    method: str,
    verify: bool,
) -> dict[str, Any]:
    from actdistill.deploy.quantize import calibration_inputs, compare_onnx, quantize_onnx

    pcfg = model.pretrained_cfg
    inputs = None
    if mode != "dynamic":
        inputs = calibration_inputs(cfg, pcfg.mean, pcfg.std, shape, calibration)
    summary = quantize_onnx(fp32, final, inputs, mode=mode, per_channel=per_channel, method=method)
    summary["fp32_path"] = str(fp32)
    if verify and inputs is not None:
        summary["agreement"] = compare_onnx(fp32, final, inputs)
    keep = ("mode", "reason", "per_channel", "calibration")
    quant = {k: summary[k] for k in keep} | {"static_coverage": round(summary["coverage"]["static_coverage"], 4)}
    write_metadata(final, {**metadata, "quantization": json.dumps(quant)})
    return summary


def cmd_export(args: argparse.Namespace) -> int:
    """Run `actdistill export`."""
    if args.format != "onnx":
        raise ActdistillError(f"unknown export format '{args.format}'; use --format onnx")
    info = export_onnx(
        args.checkpoint, args.out, opset=args.opset, batch=args.batch, verify=not args.no_verify,
        quantize=args.quantize, calibration=args.calibration, quant_mode=args.quant_mode,
        per_channel=not args.per_tensor, calibration_method=args.calibration_method, overrides=args.overrides,
    )  # fmt: skip
    meta = info["metadata"]
    print(f"exported {meta['model_name']} ({info['parameters']:,} parameters) → {info['path']}")
    print(f"input {tuple(info['input_shape'])}, {len(json.loads(meta['class_names']))} classes")
    if info["max_abs_diff"] is not None:
        print(f"ONNX Runtime vs PyTorch: max abs diff {info['max_abs_diff']:.2e}")
    q = info.get("int8")
    if q:
        how = (
            f"static QDQ, {q['calibration']['samples']} calibration samples ({q['calibration']['method']}), "
            f"{'per-channel' if q['per_channel'] else 'per-tensor'} weights"
            if q["mode"] == "static"
            else f"dynamic{' (fallback: ' + q['reason'] + ')' if q['reason'] else ''}"
        )
        print(f"int8 ({how}) → {q['path']}  [{q['size_mb']['fp32']:.1f} MB → {q['size_mb']['int8']:.1f} MB]")
        k = q["kernels"]
        print(f"ONNX Runtime compute kernels: {k['int8']} int8, {k['float']} fp32")
        if "agreement" in q:
            a = q["agreement"]
            print(
                f"int8 vs fp32 on the {a['samples']} calibration samples: "
                f"top-1 agreement {100 * a['top1_agreement']:.1f}%, "
                f"max abs logit diff {a['max_abs_diff']:.3g} (logit range {a['logit_range']:.3g})"
            )
        print(f"accuracy: actdistill eval {q['path']}  vs  actdistill eval {q['fp32_path']}")
    return 0
