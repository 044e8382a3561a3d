"""int8 deployment on the CPU: fp32 teacher (PyTorch eager) vs int8 student (ONNX Runtime), accuracy and latency.

Pairs (batch 1, one thread):
  demo    the `actdistill demo` run's resnet_demo teacher and pvt_v2_demo students (64², trained checkpoints):
          `actdistill export --quantize int8` (static QDQ, 64 training samples), accuracy of PyTorch / ONNX fp32 /
          ONNX int8 on the test split (`evaluate_checkpoint`, `evaluate_onnx`)
  paper1  convnext_small → pvt_v2_b2_li at 224², random weights (latency only; calibrated on random inputs)
  video   i3d → top_i3d at 16×112², random weights (latency only)
Latency: the six runners (eager/ONNX fp32/ONNX int8 × teacher/student) take turns in every round, so load changes
hit all alike; times are the calling thread's CPU time (`time.thread_time`: torch with 1 thread and ONNX Runtime
with 1 intra-op thread compute in the calling thread), robust to other processes on a shared machine; wall-clock
medians are reported beside them. Ratios are within one run. Per-op-type ONNX Runtime profiles (fp32 vs int8,
the median of 3 alternating profiling runs) show where the time goes.

Targets (tracker issue 19): int8 student ≥ 2.5× faster than the fp32 eager teacher and ≥ 1.5× faster than the int8
teacher at batch 1, with ≤ 1 point top-1 drop.

    python benchmarks/bench_int8.py --demo runs/demo19 [--pairs demo,paper1,video] [--json int8.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actdistill.deploy.export import ClassLogits, export_model, export_onnx, load_student
from actdistill.deploy.quantize import _session, op_type_profile, quantize_onnx
from actdistill.models import create_model
from actdistill.utils.runtime import cpu_model

KEYS = ("top1", "top5", "mean_class_accuracy", "mAP", "num_samples")


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 2) -> dict[str, dict[str, float]]:
    """Median thread-CPU and wall ms of each runner; the runners take turns in each round."""
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for r in range(warmup + rounds):
            for key, fn in fns.items():
                c0, w0 = time.thread_time(), time.perf_counter()
                fn()
                c1, w1 = time.thread_time(), time.perf_counter()
                if r >= warmup:
                    cpu[key].append(1000 * (c1 - c0))
                    wall[key].append(1000 * (w1 - w0))
    return {k: {"cpu_ms": statistics.median(cpu[k]), "wall_ms": statistics.median(wall[k])} for k in fns}


def _runners(models: dict[str, torch.nn.Module], files: dict[str, dict[str, Path]], shape: tuple[int, ...]):
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    feed = x.numpy()
    fns: dict[str, Callable[[], Any]] = {}
    for role, model in models.items():
        wrapped = ClassLogits(model).eval()
        fns[f"eager_fp32_{role}"] = lambda m=wrapped: m(x)
        for kind, path in files[role].items():
            session = _session(path)
            fns[f"onnx_{kind}_{role}"] = lambda s=session: s.run(None, {"input": feed})
    return fns, feed


def _ratios(lat: dict[str, dict[str, float]], metric: str) -> dict[str, float]:
    m = {k: v[metric] for k, v in lat.items()}
    return {
        "int8_student_vs_eager_teacher": m["eager_fp32_teacher"] / m["onnx_int8_student"],
        "int8_student_vs_int8_teacher": m["onnx_int8_teacher"] / m["onnx_int8_student"],
        "int8_student_vs_fp32_onnx_student": m["onnx_fp32_student"] / m["onnx_int8_student"],
        "int8_teacher_vs_fp32_onnx_teacher": m["onnx_fp32_teacher"] / m["onnx_int8_teacher"],
        "eager_teacher_vs_eager_student": m["eager_fp32_teacher"] / m["eager_fp32_student"],
    }


def profiles(files: dict[str, Path], feed: np.ndarray, runs: int, repeats: int = 3) -> dict[str, dict[str, float]]:
    """Per-op-type ms per run of each model (median of `repeats` alternating profiling sessions)."""
    got: dict[str, list[dict[str, float]]] = {k: [] for k in files}
    for _ in range(repeats):
        for key, path in files.items():
            got[key].append(op_type_profile(path, feed, runs=runs))
    out = {}
    for key, runs_ in got.items():
        ops = set().union(*runs_)
        med = {op: statistics.median(r.get(op, 0.0) for r in runs_) for op in ops}
        out[key] = dict(sorted(med.items(), key=lambda kv: -kv[1]))
    return out


GROUPS = {
    "gemm_fp32": ("Conv", "FusedConv", "NchwcConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm"),
    "gemm_int8": ("QLinearConv", "QLinearMatMul", "QGemm", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"),
    "quantize_dequantize": ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"),
    "layout": ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Slice", "Split", "Concat", "QLinearConcat", "Gather",
               "GatherND", "Where", "ReorderInput", "ReorderOutput", "Expand", "Shape", "Flatten", "Pad"),
    "norm_softmax": ("LayerNormalization", "SkipLayerNormalization", "Softmax", "QLinearSoftmax"),
}  # fmt: skip


def grouped_shares(ops: dict[str, float]) -> dict[str, float]:
    """Share (%) of the profiled time per group of op types (GEMMs fp32/int8, Q/DQ, layout, norms; the rest is
    element-wise arithmetic and pooling)."""
    total = ops.get("_total") or sum(v for k, v in ops.items() if k != "_total") or 1.0
    shares = {g: 100 * sum(ops.get(op, 0.0) for op in members) / total for g, members in GROUPS.items()}
    shares["elementwise_pool_other"] = 100 - sum(shares.values())
    return shares


# ---------------------------------------------------------------------------------------------------- pairs


def demo_pair(
    root: Path, out: Path, calibration: int, variants: bool = False
) -> tuple[dict, dict, dict, tuple[int, ...]]:
    """Export + int8 of the demo checkpoints, and PyTorch / ONNX fp32 / ONNX int8 test accuracy of each.

    `variants` adds two more int8 models per checkpoint: per-tensor weight scales (`int8pt`) and dynamic
    quantization with Conv as ConvInteger (`int8dynconv`)."""
    from actdistill.deploy.onnx_eval import evaluate_onnx
    from actdistill.engine.evaluate import evaluate_checkpoint

    student_run = "student_kd" if (root / "student_kd" / "checkpoints" / "best.pt").is_file() else "student"
    ckpts = {"teacher": root / "teacher" / "checkpoints" / "best.pt",
             "student": root / student_run / "checkpoints" / "best.pt"}  # fmt: skip
    models, files, acc = {}, {}, {}
    for role, ckpt in ckpts.items():
        info = export_onnx(ckpt, out / f"{role}.int8.onnx", quantize="int8", calibration=calibration)
        q = info["int8"]
        files[role] = {"fp32": Path(q["fp32_path"]), "int8": Path(q["path"])}
        if variants:
            pt = export_onnx(ckpt, out / f"{role}_pt.int8.onnx", quantize="int8", calibration=calibration,
                             per_channel=False, verify=False)  # fmt: skip
            files[role]["int8pt"] = Path(pt["int8"]["path"])
            dyn = quantize_onnx(q["fp32_path"], out / f"{role}_dynconv.onnx", mode="dynamic", dynamic_conv=True)
            files[role]["int8dynconv"] = Path(dyn["path"])
        models[role] = load_student(ckpt)[0]
        reports = {"pytorch": evaluate_checkpoint(ckpt)}
        for kind, path in files[role].items():
            reports[f"onnx_{kind}"] = evaluate_onnx(path)
        acc[role] = {
            "checkpoint": str(ckpt),
            **{name: {k: r[k] for k in KEYS if k in r} for name, r in reports.items()},
            "quantization": {k: q[k] for k in ("mode", "reason", "kernels", "agreement", "size_mb")},
        }
        acc[role]["top1_drop_points"] = 100 * (acc[role]["pytorch"]["top1"] - acc[role]["onnx_int8"]["top1"])
    shape = tuple(json.loads(info["metadata"]["input_size"]))
    return models, files, acc, shape


def random_pair(teacher: str, student: str, shape: tuple[int, ...], out: Path, classes: int) -> tuple[dict, dict]:
    """Random-weight models exported to ONNX and quantized (static QDQ, 8 random calibration inputs)."""
    models, files, quant = {}, {}, {}
    for role, name in (("teacher", teacher), ("student", student)):
        torch.manual_seed(0)
        model = create_model(name, classes).eval()
        fp32 = export_model(model, shape, out / f"{role}.onnx")
        calib = torch.randn(8, *shape, generator=torch.Generator().manual_seed(1)).numpy()
        q = quantize_onnx(fp32, out / f"{role}.int8.onnx", calib)
        models[role], files[role] = model, {"fp32": fp32, "int8": Path(q["path"])}
        quant[role] = {k: q[k] for k in ("mode", "reason", "kernels", "size_mb")}
    return models, files, quant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", default="runs/demo", help="`actdistill demo --out` folder (default: runs/demo)")
    ap.add_argument("--pairs", default="demo,paper1,video", help="comma-separated: demo, paper1, video")
    ap.add_argument("--calibration", type=int, default=64, help="demo: calibration samples (default: 64)")
    ap.add_argument("--rounds", default="demo=200,paper1=12,video=12", help="timed rounds per pair")
    ap.add_argument("--clip", type=int, default=16, help="video pair: frames per clip (default: 16)")
    ap.add_argument("--size", type=int, default=112, help="video pair: side in pixels (default: 112)")
    ap.add_argument("--no-profile", action="store_true", help="skip the per-op-type ONNX Runtime profiles")
    ap.add_argument(
        "--variants", action="store_true", help="demo: also per-tensor int8 and dynamic int8 with ConvInteger models"
    )
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rounds = {k: int(v) for k, v in (item.split("=") for item in args.rounds.split(","))}
    res: dict[str, Any] = {
        "setup": {
            "cpu": cpu_model(), "capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__, "threads": 1, "batch": 1,
            "time": "median thread CPU ms (calling thread); wall ms beside",
        },
        "pairs": {},
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        for pair in args.pairs.split(","):
            out = Path(tmp) / pair
            out.mkdir()
            t0 = time.perf_counter()
            entry: dict[str, Any] = {}
            if pair == "demo":
                models, files, entry["accuracy"], shape = demo_pair(
                    Path(args.demo), out, args.calibration, args.variants
                )
            elif pair == "paper1":
                shape = (3, 224, 224)
                models, files, entry["quantization"] = random_pair("convnext_small", "pvt_v2_b2_li", shape, out, 40)
            elif pair == "video":
                shape = (3, args.clip, args.size, args.size)
                models, files, entry["quantization"] = random_pair("i3d", "top_i3d", shape, out, 101)
            else:
                raise SystemExit(f"unknown pair {pair!r}")
            entry["models"] = {role: type(m).__name__ for role, m in models.items()}
            entry["input_shape"] = [1, *shape]
            entry["prepare_s"] = time.perf_counter() - t0
            fns, feed = _runners(models, files, shape)
            entry["latency"] = interleaved(fns, rounds.get(pair, 10))
            entry["ratios_cpu"] = _ratios(entry["latency"], "cpu_ms")
            entry["ratios_wall"] = _ratios(entry["latency"], "wall_ms")
            if not args.no_profile:
                flat = {
                    f"{role}_{kind}": p for role, kinds in files.items() for kind, p in kinds.items()
                    if kind in ("fp32", "int8")
                }  # fmt: skip
                runs = max(2, min(20, rounds.get(pair, 10)))
                entry["op_type_ms"] = profiles(flat, feed, runs=runs)
                entry["op_group_share_pct"] = {k: grouped_shares(v) for k, v in entry["op_type_ms"].items()}
            res["pairs"][pair] = entry
            print_pair(pair, entry)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
        print(f"JSON: {args.json}")


def print_pair(name: str, e: dict[str, Any]) -> None:
    print(f"\n== {name}: input {e['input_shape']}, batch 1, 1 thread")
    for key, v in e["latency"].items():
        print(f"  {key:<22} {v['cpu_ms']:9.2f} ms CPU {v['wall_ms']:9.2f} ms wall")
    for key, v in e["ratios_cpu"].items():
        print(f"  {key:<36} {v:6.2f}x  (wall {e['ratios_wall'][key]:.2f}x)")
    for role, acc in e.get("accuracy", {}).items():
        a = ", ".join(f"{k} {100 * v['top1']:.2f}" for k, v in acc.items() if isinstance(v, dict) and "top1" in v)
        print(f"  {role} top-1: {a} (int8 drop {acc['top1_drop_points']:.2f} points; {acc['quantization']['mode']})")
    for key, ops in e.get("op_type_ms", {}).items():
        top = ", ".join(f"{op} {ms:.2f}" for op, ms in list(ops.items())[:7] if op != "_total")
        print(f"  profile {key:<14} total {ops['_total']:8.2f} ms: {top}")
        shares = ", ".join(f"{g} {v:.0f}%" for g, v in e["op_group_share_pct"][key].items())
        print(f"          {'':<14} shares: {shares}")


if __name__ == "__main__":
    main()
