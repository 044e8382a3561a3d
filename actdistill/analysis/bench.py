"""`actdistill bench`: teacher vs student inference latency/throughput/memory, and KD training-step cost.

Inference: PyTorch eager (eval, `torch.inference_mode`) at each batch size, and ONNX Runtime (CPU provider) when
installed, fp32 and (`int8=True`) int8 (`actdistill.deploy.quantize`); all rows of a batch size are timed in turn.
Peak memory: on CUDA `torch.cuda.max_memory_allocated` above the model's resident weights; on CPU the growth of the
peak RSS during one forward, with the kernel's peak mark reset first on Linux (`cpu_forward_peak_mb`).
Training: median optimizer-step time of a plain (cross-entropy) step, actdistill's online KD step (frozen teacher
in eval mode under no_grad, same autocast precision as the plain step), and a naive reference KD step (fp32,
teacher in train mode with autograd on, as in typical KD codebases); the ratios between them are measured in one
run, so they transfer across machines better than absolute times.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actdistill.errors import ActdistillError

__all__ = ["bench", "format_table", "load_bench_model"]


def load_bench_model(spec: str, classes: int, size: int, clip: int) -> tuple[nn.Module, tuple[int, ...], str]:
    """`(model, per-sample input shape, label)` from a checkpoint path or a model name (random weights)."""
    from actdistill.models import create_model

    path = Path(spec)
    if path.suffix in (".pt", ".pth") or path.is_file():
        from actdistill.deploy.export import load_student

        model, _, ckpt = load_student(path)
        label = f"{ckpt['model']['name']} ({path.name})"
    else:
        model, label = create_model(spec, classes), spec
    pcfg = model.pretrained_cfg.input_size
    shape = (pcfg[0], clip, size, size) if len(pcfg) == 4 else (pcfg[0], size, size)
    return model.eval(), shape, label


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_s(fn: Callable[[], Any], steps: int, warmup: int, device: torch.device) -> float:
    """Median wall time of `fn()` over `steps` runs after `warmup` runs."""
    times = []
    for i in range(warmup + steps):
        _sync(device)
        tick = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - tick)
    return statistics.median(times)


def _interleaved_medians(
    fns: dict[Any, Callable[[], Any]], steps: int, warmup: int, device: torch.device
) -> dict[Any, float]:
    """Median wall time of each `fns[key]()`, the calls taken in turn (round-robin), so a change of machine load
    during the measurement hits every entry alike and the ratios between them stay meaningful."""
    times: dict[Any, list[float]] = {k: [] for k in fns}
    for i in range(warmup + steps):
        for key, fn in fns.items():
            _sync(device)
            tick = time.perf_counter()
            fn()
            _sync(device)
            if i >= warmup:
                times[key].append(time.perf_counter() - tick)
    return {k: statistics.median(v) for k, v in times.items()}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _proc_status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise OSError(f"{field} not in /proc/self/status")


def cpu_forward_peak_mb(model: nn.Module, x: Tensor) -> float:
    """Peak memory (MB) one CPU inference forward adds above what the process holds before it.

    Linux: the peak-RSS mark (VmHWM) is reset first (`/proc/self/clear_refs` ← 5), so earlier, larger models do not
    hide this one. Elsewhere: growth of `ru_maxrss`, a never-decreasing mark (0 when an earlier peak was higher).
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back, or reuse of them would hide this peak
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        base = _proc_status_mb("VmRSS")
        with torch.inference_mode():
            model(x)
        return max(0.0, _proc_status_mb("VmHWM") - base)
    except OSError:
        base = _rss_mb()
        with torch.inference_mode():
            model(x)
        return max(0.0, _rss_mb() - base)


def _eager_peak_mb(model: nn.Module, x: Tensor, device: torch.device) -> float:
    """Peak memory (MB) of one eval-mode forward: CUDA activations above the weights, or the CPU peak-RSS growth."""
    if device.type != "cuda":
        return cpu_forward_peak_mb(model, x)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with torch.inference_mode():
        model(x)
    _sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def _onnx_sessions(
    model: nn.Module, shape: tuple[int, ...], folder: Path, name: str, int8: bool
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """ONNX Runtime sessions `{"onnx": fp32[, "onnx_int8": int8]}` and the int8 quantization summary.

    The int8 model is calibrated on 8 random-normal inputs: latency does not depend on the calibration data (the
    scales change, not the kernels); export a checkpoint with `--quantize int8` for a calibrated, accurate model.
    """
    from actdistill.deploy.export import export_model, require_onnx

    _, ort = require_onnx("ONNX Runtime benchmarks", exporter=True)
    path = export_model(model.cpu(), shape, folder / f"{name}.onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.log_severity_level = 3
    sessions = {"onnx": ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])}
    summary = None
    if int8:
        from actdistill.deploy.quantize import quantize_onnx

        calib = torch.randn(8, *shape, generator=torch.Generator().manual_seed(0)).numpy()
        summary = quantize_onnx(path, folder / f"{name}.int8.onnx", calib)
        sessions["onnx_int8"] = ort.InferenceSession(summary["path"], opts, providers=["CPUExecutionProvider"])
    return sessions, summary


def _ort_fn(session: Any, x: Tensor) -> Callable[[], Any]:
    feed = {session.get_inputs()[0].name: x.cpu().numpy()}
    return lambda: session.run(None, feed)


def _naive_kd_step(student: nn.Module, teacher: nn.Module, opt: torch.optim.Optimizer, batch: dict) -> None:
    """Reference KD step as typical codebases write it: fp32, teacher in train mode, autograd through it."""
    from actdistill.distill.functional import kd_loss
    from actdistill.distill.logit import class_logits

    teacher.train()
    student.train()
    logits_t = class_logits(teacher(batch["input"]))
    logits_s = class_logits(student(batch["input"]))
    loss = 0.45 * F.cross_entropy(logits_s, batch["label"]) + 0.55 * kd_loss(logits_s, logits_t, 11.0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _train_steps(
    student: nn.Module, teacher: nn.Module, batch: dict, steps: int, warmup: int, device: torch.device, precision: str
) -> dict[str, float]:
    """Median step seconds: plain, online KD (actdistill), naive reference KD."""
    from actdistill.distill.logit import KD, Vanilla
    from actdistill.utils.runtime import autocast, resolve_precision

    dtype = resolve_precision(precision, device)
    out = {}
    for key, method in (("plain", Vanilla(student)), ("online_kd", KD(student, teacher))):
        opt = torch.optim.AdamW(method.trainable_parameters(), lr=1e-4)
        method.train()

        def step(method=method, opt=opt) -> None:
            with autocast(device, dtype):
                loss = method(batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        out[key] = _median_s(step, steps, warmup, device)
    out["cached_kd"] = _cached_kd_step_s(student, teacher, batch, steps, warmup, device, dtype)
    naive_teacher = copy.deepcopy(teacher).requires_grad_(True)  # leaves the caller's teacher frozen
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    out["naive_kd"] = _median_s(lambda: _naive_kd_step(student, naive_teacher, opt, batch), steps, warmup, device)
    return out


def _cached_kd_step_s(
    student: nn.Module,
    teacher: nn.Module,
    batch: dict,
    steps: int,
    warmup: int,
    device: torch.device,
    dtype: torch.dtype | None,
) -> float:
    """Median seconds of a KD step fed from a teacher cache: the stored fp16 logits are restored every step
    (`restore_logits`, as `CachedTeacherView` does per sample) and the teacher never runs."""
    from actdistill.distill.cache import restore_logits
    from actdistill.distill.logit import KD, class_logits
    from actdistill.utils.runtime import autocast

    with torch.no_grad():
        logits = class_logits(teacher(batch["input"])).float().cpu()
    values, classes = logits.topk(logits.shape[-1], dim=-1)
    stored = {"values": values.half().numpy(), "classes": classes.short().numpy(), "lse": logits.logsumexp(-1).numpy()}
    method = KD(student, teacher).train()
    opt = torch.optim.AdamW(method.trainable_parameters(), lr=1e-4)

    def step() -> None:
        restored = restore_logits(
            torch.from_numpy(stored["values"]), torch.from_numpy(stored["classes"]),
            torch.from_numpy(stored["lse"]), logits.shape[-1],
        )  # fmt: skip
        cached = {**batch, "teacher_logits": restored.to(device, non_blocking=True)}
        with autocast(device, dtype):
            loss = method(cached).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _median_s(step, steps, warmup, device)


def bench(
    teacher: str,
    student: str,
    *,
    size: int = 224,
    batches: Sequence[int] = (1, 32),
    clip: int = 16,
    classes: int = 40,
    steps: int = 10,
    warmup: int = 3,
    train_batch: int = 8,
    device: str = "cpu",
    precision: str = "fp32",
    onnx: bool = True,
    int8: bool = False,
    train: bool = True,
) -> dict[str, Any]:
    """Benchmark teacher vs student (checkpoint paths or model names); returns the JSON-able results dict.

    Keys: `setup`, `inference` ({"eager"|"onnx"|"onnx_int8": {"teacher"|"student": {batch: {latency_ms,
    throughput[, peak_mem_mb]}}}}), `speedup` (teacher latency / student latency per runtime and batch),
    `speedup_vs_eager_teacher` (eager fp32 teacher latency / student latency, per runtime and batch), `train_step_ms`
    ({plain, online_kd, cached_kd, naive_kd}), `train_ratios` (online_kd/plain, naive_kd/plain, naive_kd/online_kd,
    cached_kd/plain, naive_kd/cached_kd).
    All inference rows of one batch size are timed in turn (round-robin), so their ratios are robust to load.
    `int8` (needs `onnx`) adds ONNX Runtime int8 rows (`quantize_onnx`, auto mode) and `setup["int8"]`.
    """
    from actdistill.utils.runtime import resolve_device

    dev = resolve_device(device)
    if not batches or min(batches) < 1 or steps < 1:
        raise ActdistillError(f"bench: batch sizes and --steps must be ≥ 1 (got {list(batches)}, {steps})")
    torch.manual_seed(0)
    models = {}
    for role, spec in (("student", student), ("teacher", teacher)):
        model, shape, label = load_bench_model(spec, classes, size, clip)
        models[role] = (model.to(dev), shape, label)
    if models["student"][0].num_classes != models["teacher"][0].num_classes:
        raise ActdistillError(
            f"bench: teacher has {models['teacher'][0].num_classes} classes, student "
            f"{models['student'][0].num_classes}; pass checkpoints of the same dataset"
        )
    results: dict[str, Any] = {
        "setup": {
            "teacher": models["teacher"][2], "student": models["student"][2], "device": str(dev),
            "threads": torch.get_num_threads(), "batches": list(batches), "steps": steps, "warmup": warmup,
            "input_shape": {role: list(m[1]) for role, m in models.items()}, "precision": precision,
            "parameters": {role: sum(p.numel() for p in m[0].parameters()) for role, m in models.items()},
            "memory": "cuda max_memory_allocated" if dev.type == "cuda" else "CPU peak-RSS growth, one forward",
        },
        "inference": {"eager": {"student": {}, "teacher": {}}},
    }  # fmt: skip
    inference: dict[str, Any] = results["inference"]
    tmp = tempfile.TemporaryDirectory(prefix="actdistill-bench-")
    sessions: dict[str, dict[str, Any]] = {}
    try:
        if onnx:
            for role, (model, shape, _) in models.items():
                sessions[role], summary = _onnx_sessions(model, shape, Path(tmp.name), role, int8)
                model.to(dev)
                if summary is not None:
                    keep = ("mode", "reason", "kernels")
                    results["setup"].setdefault("int8", {})[role] = {k: summary[k] for k in keep}
        for b in batches:
            fns: dict[tuple[str, str], Callable[[], Any]] = {}
            for role, (model, shape, _) in models.items():
                x = torch.randn(b, *shape, device=dev)
                peak = _eager_peak_mb(model, x, dev)  # first: before warm caches hide it
                inference["eager"][role][b] = {"peak_mem_mb": peak}
                fns[("eager", role)] = lambda model=model, x=x: model(x)
                for runtime, session in sessions.get(role, {}).items():
                    fns[(runtime, role)] = _ort_fn(session, x)
            with torch.inference_mode():
                sec = _interleaved_medians(fns, steps, warmup, dev)
            for (runtime, role), value in sec.items():
                row = inference.setdefault(runtime, {"student": {}, "teacher": {}})[role].setdefault(b, {})
                row.update(latency_ms=1000 * value, throughput=b / value)
    finally:
        sessions.clear()
        tmp.cleanup()
    for rows in inference.values():  # key order: latency, throughput, peak memory
        for role in rows:
            for b, row in rows[role].items():
                rows[role][b] = {k: row[k] for k in ("latency_ms", "throughput", "peak_mem_mb") if k in row}
    results["speedup"] = {
        runtime: {b: rows["teacher"][b]["latency_ms"] / rows["student"][b]["latency_ms"] for b in batches}
        for runtime, rows in results["inference"].items()
    }
    eager_teacher = results["inference"]["eager"]["teacher"]
    results["speedup_vs_eager_teacher"] = {
        runtime: {b: eager_teacher[b]["latency_ms"] / rows["student"][b]["latency_ms"] for b in batches}
        for runtime, rows in results["inference"].items()
    }
    if train:
        student_m, shape, _ = models["student"]
        batch = {
            "input": torch.randn(train_batch, *shape, device=dev),
            "label": torch.randint(0, student_m.num_classes, (train_batch,), device=dev),
        }
        sec = _train_steps(copy.deepcopy(student_m), models["teacher"][0], batch, steps, warmup, dev, precision)
        results["train_step_ms"] = {k: 1000 * v for k, v in sec.items()}
        results["train_ratios"] = {
            "online_kd/plain": sec["online_kd"] / sec["plain"],
            "naive_kd/plain": sec["naive_kd"] / sec["plain"],
            "naive_kd/online_kd": sec["naive_kd"] / sec["online_kd"],
            "cached_kd/plain": sec["cached_kd"] / sec["plain"],
            "naive_kd/cached_kd": sec["naive_kd"] / sec["cached_kd"],
        }
        results["setup"]["train_batch"] = train_batch
    return results


def format_table(results: dict[str, Any]) -> str:
    """Human-readable table of `bench()` results."""
    s = results["setup"]
    lines = [
        f"teacher {s['teacher']} ({s['parameters']['teacher'] / 1e6:.2f}M params) vs "
        f"student {s['student']} ({s['parameters']['student'] / 1e6:.2f}M), {s['device']}, {s['threads']} threads",
        f"{'runtime':<10} {'batch':>5} {'model':<8} {'latency ms':>11} {'samples/s':>10} {'peak MB':>8} {'speed-up':>9}"
        f" {'vs eager T':>10}",
    ]
    for runtime, rows in results["inference"].items():
        for b in s["batches"]:
            for role in ("teacher", "student"):
                r = rows[role][b]
                mem = f"{r['peak_mem_mb']:8.1f}" if "peak_mem_mb" in r else f"{'-':>8}"
                up = f"{results['speedup'][runtime][b]:8.2f}x" if role == "student" else ""
                vs = results.get("speedup_vs_eager_teacher", {}).get(runtime, {}).get(b)
                vs_eager = f"{vs:9.2f}x" if role == "student" and vs is not None else ""
                lines.append(
                    f"{runtime:<10} {b:>5} {role:<8} {r['latency_ms']:11.2f} {r['throughput']:10.1f} {mem} {up:>9}"
                    f" {vs_eager:>10}"
                )
    for role, q in s.get("int8", {}).items():
        why = f" ({q['reason']})" if q["reason"] else ""
        lines.append(
            f"int8 {role}: {q['mode']}{why}; kernels {q['kernels']['int8']} int8, {q['kernels']['float']} fp32"
        )
    lines.append("speed-up: teacher / student latency in the same runtime; vs eager T: fp32 eager teacher / student")
    if "train_step_ms" in results:
        steps = ", ".join(f"{k} {v:.1f} ms" for k, v in results["train_step_ms"].items())
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in results["train_ratios"].items())
        lines += [f"train step (batch {s['train_batch']}, {s['precision']}): {steps}", f"ratios: {ratios}"]
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run `actdistill bench`."""
    onnx = not args.no_onnx
    if onnx:
        try:
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            onnx = False
            print("ONNX Runtime rows skipped: pip install 'actdistill[onnx]' onnxscript")
    results = bench(
        args.teacher, args.student, size=args.size, batches=args.batch, clip=args.clip, classes=args.classes,
        steps=args.steps, warmup=args.warmup, train_batch=args.train_batch, device=args.device,
        precision=args.precision, onnx=onnx, int8=onnx and args.int8, train=not args.no_train,
    )  # fmt: skip
    print(format_table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"JSON: {args.json}")
    return 0
