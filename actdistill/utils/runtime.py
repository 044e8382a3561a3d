"""Device choice, seeding and mixed precision. Nothing here hard-codes a device."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import random
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from actdistill.errors import ActdistillError

log = logging.getLogger("actdistill")


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` → cuda, then mps, then cpu; otherwise the named device, checked to exist."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ActdistillError(f"train.device={spec} but CUDA is not available here; use train.device=auto or cpu")
    return device


def cpu_model() -> str:
    """This machine's CPU as benchmark tables name it, e.g. `AMD EPYC (2 cores)` (/proc/cpuinfo where it exists)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


@cache
def cpu_bf16_support() -> str:
    """How this CPU does bf16 math: `native (AMX)`, `native (AVX512_BF16)`, or `emulated (<capability>)`."""
    capability = torch.backends.cpu.get_cpu_capability()
    checks = (("AMX", "_is_amx_tile_supported"), ("AVX512_BF16", "_is_avx512_bf16_supported"))
    for name, check in checks:
        if name in capability or getattr(torch.cpu, check, lambda: False)():
            return f"native ({name})"
    return f"emulated ({capability})"


def time_steps(step: Callable[[], None], repeats: int = 3) -> float:
    """Median seconds of `step()` after one warm-up call."""
    step()
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        step()
        times.append(time.perf_counter() - tick)
    return sorted(times)[len(times) // 2]


def resolve_precision(
    precision: str, device: torch.device, probe: Callable[[torch.dtype | None], None] | None = None
) -> torch.dtype | None:
    """Autocast dtype for `precision` on `device`, or None for fp32. Measured, not assumed, on CPU.

    `auto`: bf16 on CUDA GPUs that support it; on a CPU only when it does bf16 natively (`cpu_bf16_support`) *and*
    `probe(dtype)` (one training step of the run's own models under that autocast) is at least 5 % faster in bf16;
    else fp32. `bf16` on a CPU that emulates bf16 warns with the measured slow-down (28× on one AVX2 machine).
    Without a `probe`, `auto` on CPU is fp32.
    """
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type == "cpu":
            raise ActdistillError("train.precision=fp16 needs a GPU; use bf16 or fp32 on CPU")
        return torch.float16
    if precision not in ("auto", "bf16"):
        raise ActdistillError(f"train.precision must be auto, bf16, fp16 or fp32, got '{precision}'")
    if device.type == "cuda":
        return torch.bfloat16 if precision == "bf16" or torch.cuda.is_bf16_supported() else None
    if device.type != "cpu":
        return torch.bfloat16 if precision == "bf16" else None
    support = cpu_bf16_support()
    if precision == "auto" and (probe is None or not support.startswith("native")):
        return None
    ratio = None
    if probe is not None:
        ratio = time_steps(lambda: probe(None)) / max(time_steps(lambda: probe(torch.bfloat16)), 1e-9)
    if precision == "bf16":
        if not support.startswith("native"):
            slow = f"measured {1 / ratio:.1f}× slower than fp32 on the run's models; " if ratio else ""
            log.warning("train.precision=bf16 on a CPU without native bf16 (%s): %sset train.precision=fp32 or auto",
                        support, slow)  # fmt: skip
        return torch.bfloat16
    chosen = torch.bfloat16 if ratio is not None and ratio >= 1.05 else None
    log.info("precision auto on CPU (%s): a bf16 step is %.2f× the speed of fp32 here → %s", support, ratio or 0.0,
             "bf16" if chosen else "fp32")  # fmt: skip
    return chosen


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Mixed-precision context for the forward pass; a no-op for fp32."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def mean_over_ranks(x: Tensor) -> Tensor:
    """The mean of scalar `x` over the processes of a torchrun job (no gradient); `x` itself in one process.

    Loss normalisers that count things in the batch (positives, valid steps) use it, so that DDP's average of the
    per-rank gradients equals one process with the whole global batch.
    """
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return x.detach()
    total = x.detach().clone().float()
    dist.all_reduce(total)
    return (total / dist.get_world_size()).to(x.dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed per epoch, so that resuming at an epoch boundary replays the same data."""
    return (seed * 1_000_003 + epoch * 7919) % 2**31
