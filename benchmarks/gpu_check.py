"""GPU check (tracker issue 19, part 3): training-step cost of the paper pairs on one CUDA GPU, in under 5 minutes.

Sections (each in its own try/except: an error is recorded in the JSON and the rest still runs; a global time
budget skips what would overrun it):
  steps_<pair>       plain (cross-entropy), online-KD (frozen teacher forward + KD loss) and cached-KD (teacher
                     logits restored from a teacher cache) optimiser steps, fp32 and bf16 autocast, contiguous and
                     channels-last memory format: median ms, samples/s, peak memory
  compile_<pair>     the same three steps with torch.compile'd student and teacher (bf16, channels-last): first-step
                     (compile) seconds and steady-state ms
  cache_build_<pair> teacher-cache building throughput (`actdistill.distill.cache.write_cache`, bf16), views/s
  ddp_nccl           a 1-process NCCL DistributedDataParallel run (world size 1): online-KD steps, ms vs no DDP
Pairs: paper 1, ConvNeXt-S → PVT-v2-b2-li at 224² (batch 32, 40 classes); paper 2, I3D → Top-I3D at 64×224²
(batch 6, 101 classes). Random weights and inputs: this measures compute, not data loading or accuracy.

Built from the library's own pieces (create_model, actdistill.distill's Vanilla/KD, actdistill.distill.cache), with
models and methods built directly so that it does not depend on the engine's internals.

    python benchmarks/gpu_check.py [--json gpu_check.json] [--budget 270]

Without CUDA it says so and exits 0. `--smoke` runs every section on the CPU with tiny models (gloo instead of
NCCL, torch.compile with the "eager" backend): a test of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

PAIRS = {
    "paper1_convnext_s_pvt_v2_b2": {
        "teacher": "convnext_small", "student": "pvt_v2_b2_li", "shape": (3, 224, 224), "classes": 40, "batch": 32,
    },
    "paper2_i3d_top_i3d": {
        "teacher": "i3d", "student": "top_i3d", "shape": (3, 64, 224, 224), "classes": 101, "batch": 6,
    },
}  # fmt: skip
SMOKE_PAIRS = {
    "smoke_image": {"teacher": "resnet_demo", "student": "pvt_v2_demo", "shape": (3, 32, 32), "classes": 5, "batch": 4},
    "smoke_video": {
        "teacher": "i3d", "student": "top_i3d", "shape": (3, 8, 32, 32), "classes": 5, "batch": 2,
        "kwargs": {"channel_scale": 0.125},
    },
}  # fmt: skip
METHODS = ("plain", "online_kd", "cached_kd")


class Budget:
    """Wall-clock budget: sections that would start after `seconds` are skipped (recorded as such)."""

    def __init__(self, seconds: float) -> None:
        self.start, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


# ---------------------------------------------------------------------------------------------------- helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _layout(shape: tuple[int, ...], channels_last: bool) -> torch.memory_format:
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last_3d if len(shape) == 4 else torch.channels_last


def _models(pair: dict[str, Any], device: torch.device, channels_last: bool):
    from actdistill.models import create_model

    kwargs = pair.get("kwargs", {})
    fmt = _layout(pair["shape"], channels_last)
    torch.manual_seed(0)
    teacher = create_model(pair["teacher"], pair["classes"], **kwargs).to(device, memory_format=fmt)
    student = create_model(pair["student"], pair["classes"], **kwargs).to(device, memory_format=fmt)
    return teacher, student


def _batch(pair: dict[str, Any], device: torch.device, channels_last: bool, batch: int | None = None) -> dict:
    b = batch or pair["batch"]
    x = torch.randn(b, *pair["shape"], device=device).contiguous(memory_format=_layout(pair["shape"], channels_last))
    return {"input": x, "label": torch.randint(0, pair["classes"], (b,), device=device), "index": torch.arange(b)}


def _teacher_logits_from_cache(teacher: torch.nn.Module, batch: dict, precision: str, device: torch.device):
    """Build a one-epoch teacher cache of this batch with `write_cache` and return a function that restores the
    batch's logits from it (as `CachedTeacherView` does per sample) on each call."""
    from actdistill.distill.cache import TeacherCache

    folder = Path(tempfile.mkdtemp(prefix="gpu-check-cache-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = _write_cache(
        folder / "cache", teacher, batch["input"].cpu(), precision, device, batch_size=len(batch["input"])
    )
    cache = TeacherCache(path)

    def restore() -> torch.Tensor:
        return torch.stack([cache.logits(1, i) for i in range(len(batch["input"]))]).to(device, non_blocking=True)

    return restore


class _Views(torch.utils.data.Dataset):
    """A fixed tensor of inputs as a dataset of `{input, label, index}` samples."""

    def __init__(self, inputs: torch.Tensor) -> None:
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> dict:
        return {"input": self.inputs[i], "label": 0, "index": i}


def _write_cache(path: Path, teacher, inputs: torch.Tensor, precision: str, device, batch_size: int) -> Path:
    from actdistill.data.build import SeededView
    from actdistill.distill.cache import write_cache

    view = SeededView(_Views(inputs), seed=0)
    loader = torch.utils.data.DataLoader(view, batch_size=batch_size, shuffle=False, num_workers=0)
    amp = torch.bfloat16 if precision == "bf16" else None
    num_classes = int(teacher.num_classes)
    return write_cache(
        path, teacher, view, loader, epochs=1, topk=0, num_classes=num_classes,
        key={"gpu_check": True}, device=device, amp_dtype=amp,
    )  # fmt: skip


def _step_fn(method, opt, batch: dict, precision: str, device: torch.device, restore: Callable | None = None):
    def step() -> None:
        b = {**batch, "teacher_logits": restore()} if restore is not None else batch
        with _autocast(device, precision):
            loss = method(b).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _time(step: Callable[[], None], steps: int, warmup: int, device: torch.device) -> dict[str, float]:
    """First-step seconds (includes compilation, cuDNN autotuning), median ms of `steps` steps after `warmup`."""
    times = []
    for _ in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"first_step_s": times[0], "ms": 1000 * statistics.median(times[warmup:])}


def _methods(student, teacher, compile_backend: str | None):
    """plain / online_kd / cached_kd distillers (KD with paper 1's T=11, α=0.45) sharing one student."""
    from actdistill.distill.logit import KD, Vanilla

    if compile_backend is not None:
        student = torch.compile(student, backend=compile_backend)
        teacher = torch.compile(teacher, backend=compile_backend)
    return {"plain": Vanilla(student), "online_kd": KD(student, teacher), "cached_kd": KD(student, teacher)}


def _run_steps(
    pair: dict[str, Any],
    device: torch.device,
    precision: str,
    channels_last: bool,
    steps: int,
    warmup: int,
    compile_backend: str | None = None,
) -> dict[str, Any]:
    teacher, student = _models(pair, device, channels_last)
    batch = _batch(pair, device, channels_last)
    restore = _teacher_logits_from_cache(teacher, batch, precision, device)
    out: dict[str, Any] = {}
    for name, method in _methods(student, teacher, compile_backend).items():
        try:
            method.train()
            opt = torch.optim.SGD(method.trainable_parameters(), lr=1e-3, momentum=0.9)
            step = _step_fn(method, opt, batch, precision, device, restore if name == "cached_kd" else None)
            _reset_peak(device)
            row = _time(step, steps, warmup, device)
            row["samples_per_s"] = pair_batch(pair) / (row["ms"] / 1000)
            row["peak_mem_mb"] = _peak_mb(device)
            out[name] = row
        except Exception as exc:  # noqa: BLE001 - one failing configuration (e.g. fp32 OOM) must not hide the rest
            out[name] = _error(exc)
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if all("ms" in out.get(k, {}) for k in METHODS):
        out["ratios"] = {
            "online_kd/plain": out["online_kd"]["ms"] / out["plain"]["ms"],
            "cached_kd/plain": out["cached_kd"]["ms"] / out["plain"]["ms"],
        }
    return out


def pair_batch(pair: dict[str, Any]) -> int:
    return int(pair["batch"])


def _error(exc: BaseException) -> dict[str, str]:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
            "traceback": "".join(tb[-4:])[-2000:]}  # fmt: skip


# ---------------------------------------------------------------------------------------------------- sections


def section_steps(pair, device, steps, warmup, budget: Budget, smoke: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    configs = [(p, cl) for p in ("bf16", "fp32") for cl in (True, False)]
    for precision, channels_last in configs[::3] if smoke else configs:  # smoke: bf16 channels-last, fp32 contiguous
        key = f"{precision}_{'channels_last' if channels_last else 'contiguous'}"
        if budget.left() <= 0:
            out[key] = {"skipped": "time budget"}
            continue
        try:
            out[key] = _run_steps(pair, device, precision, channels_last, steps, warmup)
        except Exception as exc:  # noqa: BLE001
            out[key] = _error(exc)
    return out


def section_compile(pair, device, steps, warmup, backend: str) -> dict[str, Any]:
    return {"bf16_channels_last": _run_steps(pair, device, "bf16", True, steps, warmup, compile_backend=backend)}


def section_cache_build(pair, device, views: int) -> dict[str, Any]:
    teacher, _ = _models(pair, device, channels_last=True)
    inputs = torch.randn(views, *pair["shape"])
    with tempfile.TemporaryDirectory(prefix="gpu-check-cache-") as tmp:
        write = lambda: _write_cache(Path(tmp) / "c", teacher, inputs, "bf16", device, pair_batch(pair))  # noqa: E731
        write()  # warm-up: cuDNN autotuning, memory pool
        _reset_peak(device)
        t0 = time.perf_counter()
        write()
        _sync(device)
        sec = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in (Path(tmp) / "c").iterdir())
    return {
        "views": views, "seconds": sec, "views_per_s": views / sec, "cache_bytes": size,
        "peak_mem_mb": _peak_mb(device), "note": "inputs on the host, batch: the pair's training batch",
    }  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def section_ddp(pair, device, steps, warmup, backend: str) -> dict[str, Any]:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from actdistill.distill.logit import KD

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(_free_port())
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        teacher, student = _models(pair, device, channels_last=True)
        batch = _batch(pair, device, channels_last=True)
        out: dict[str, Any] = {"backend": backend, "world_size": dist.get_world_size()}
        for name, model in (("no_ddp", student), ("ddp", None)):
            if model is None:
                kwargs = {"device_ids": [device.index or 0]} if device.type == "cuda" else {}
                model = DDP(student, **kwargs)
            method = KD(model, teacher).train()
            opt = torch.optim.SGD(method.trainable_parameters(), lr=1e-3, momentum=0.9)
            _reset_peak(device)
            row = _time(_step_fn(method, opt, batch, "bf16", device), steps, warmup, device)
            row["peak_mem_mb"] = _peak_mb(device)
            out[name] = row
        out["ddp/no_ddp"] = out["ddp"]["ms"] / out["no_ddp"]["ms"]
        work = torch.ones(1, device=device)
        dist.all_reduce(work)
        out["all_reduce_ok"] = bool(work.item() == 1.0)
        return out
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------- driver


def run(args: argparse.Namespace) -> dict[str, Any]:
    smoke = args.smoke
    device = torch.device("cpu") if smoke else torch.device("cuda", 0)
    if smoke:
        torch.set_num_threads(1)  # tiny models on a shared CPU: more threads only oversubscribe
    pairs = SMOKE_PAIRS if smoke else PAIRS
    steps, warmup = (2, 1) if smoke else (args.steps, args.warmup)
    backend, compile_backend = ("gloo", "eager") if smoke else ("nccl", "inductor")
    budget = Budget(args.budget)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL and DDP use the current device
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    res: dict[str, Any] = {
        "setup": {
            "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (smoke test)",
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
            "steps": steps, "warmup": warmup, "budget_s": args.budget, "smoke": smoke,
            "pairs": {k: {kk: (list(vv) if isinstance(vv, tuple) else vv) for kk, vv in v.items()}
                      for k, v in pairs.items()},
            "tf32": device.type == "cuda", "optimizer": "SGD momentum 0.9", "kd": "T=11, alpha=0.45 (paper 1)",
        },
        "sections": {},
    }  # fmt: skip
    # (name, function, seconds of budget it needs left to start)
    sections: list[tuple[str, Callable[[], dict[str, Any]], float]] = []
    for name, pair in pairs.items():
        sections.append((f"steps_{name}", lambda p=pair: section_steps(p, device, steps, warmup, budget, smoke), 0))
    for name, pair in pairs.items():
        sections.append((f"cache_build_{name}", lambda p=pair: section_cache_build(p, device, 4 * p["batch"]), 0))
    first = next(iter(pairs.values()))
    sections.append(("ddp_" + backend, lambda: section_ddp(first, device, steps, warmup, backend), 0))
    for k, (name, pair) in enumerate(pairs.items()):  # last: compilation is the slowest and most optional part
        need = 0 if smoke else 120 + 30 * k  # inductor compiles student and teacher, forward and backward
        run_compile = lambda p=pair: section_compile(p, device, steps, warmup, compile_backend)  # noqa: E731
        sections.append((f"compile_{name}", run_compile, need))
    if args.only:
        sections = [sec for sec in sections if any(part and part in sec[0] for part in args.only.split(","))]
    for name, fn, need in sections:
        if budget.left() <= need:
            res["sections"][name] = {"skipped": f"under {need:.0f} s left of the {args.budget:.0f} s budget"}
            continue
        t0 = time.perf_counter()
        try:
            res["sections"][name] = fn()
        except Exception as exc:  # noqa: BLE001 - record and go on
            res["sections"][name] = _error(exc)
        res["sections"][name]["section_s"] = time.perf_counter() - t0
        print(f"[{time.perf_counter() - budget.start:6.1f} s] {name} done", file=sys.stderr, flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    res["setup"]["total_s"] = time.perf_counter() - budget.start
    return res


def format_table(res: dict[str, Any]) -> str:
    lines = [f"GPU check on {res['setup']['device']} (torch {res['setup']['torch']}, {res['setup']['total_s']:.0f} s)"]
    lines.append(f"{'section':<40} {'config':<22} {'method':<10} {'ms/step':>9} {'samples/s':>10} {'peak MB':>9}")
    for name, sec in res["sections"].items():
        if "error" in sec or "skipped" in sec:
            lines.append(f"{name:<40} {sec.get('error') or sec.get('skipped')}")
            continue
        if name.startswith(("steps_", "compile_")):
            for config, rows in sec.items():
                if not isinstance(rows, dict):
                    continue
                if "error" in rows or "skipped" in rows:
                    lines.append(f"{name:<40} {config:<22} {rows.get('error') or rows.get('skipped')}")
                    continue
                for method in METHODS:
                    r = rows.get(method, {})
                    if "error" in r:
                        lines.append(f"{name:<40} {config:<22} {method:<10} {r['error']}")
                    elif r:
                        mem = f"{r['peak_mem_mb']:9.0f}" if r.get("peak_mem_mb") is not None else f"{'-':>9}"
                        first = f"  (first step {r['first_step_s']:.1f} s)" if name.startswith("compile_") else ""
                        speed = f"{r['ms']:9.1f} {r['samples_per_s']:10.1f}"
                        lines.append(f"{name:<40} {config:<22} {method:<10} {speed} {mem}{first}")
        elif name.startswith("cache_build_"):
            lines.append(f"{name:<40} {'bf16':<22} {'teacher':<10} {'':>9} {sec['views_per_s']:10.1f} views/s")
        elif name.startswith("ddp_"):
            lines.append(
                f"{name:<40} {'bf16 world 1':<22} {'online_kd':<10} {sec['ddp']['ms']:9.1f}   "
                f"(no DDP {sec['no_ddp']['ms']:.1f} ms, ratio {sec['ddp/no_ddp']:.2f}, all_reduce ok "
                f"{sec['all_reduce_ok']})"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default="gpu_check.json", help="results file (default: gpu_check.json)")
    ap.add_argument("--budget", type=float, default=270.0, help="seconds after which sections are skipped")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per configuration (default: 10)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny models: checks the script, measures nothing")
    ap.add_argument("--only", default="", help="comma-separated parts of section names to run (default: all)")
    args = ap.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        msg = "CUDA is not available: gpu_check.py measured nothing (run it on a machine with one CUDA GPU)."
        print(msg)
        if args.json:
            Path(args.json).write_text(json.dumps({"cuda_available": False, "message": msg}, indent=1))
        return 0
    res = run(args)
    print(format_table(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
        print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
