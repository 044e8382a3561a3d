"""Device choice, seeding and mixed precision. Nothing here hard-codes a device."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator
from functools import cache

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


@cache
def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for `precision` on `device`, or None for fp32.

    `auto` picks bf16 on CUDA GPUs that support it and fp32 elsewhere. On CPU, bf16 autocast measured 1.18×
    faster for a paper-1 training step (ConvNeXt-S → PVT-v2 at 224²) but 1.9× slower for the demo's ~1 M-parameter
    models (BENCHMARKS.md), so it is opt-in there: `train.precision=bf16`.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        if device.type == "cpu" and not _cpu_has_bf16():
            log.warning("this CPU has no native bf16 instructions; bf16 autocast will be slow (emulated)")
        return torch.bfloat16
    if precision == "fp16":
        if device.type == "cpu":
            raise ActdistillError("train.precision=fp16 needs a GPU; use bf16 or fp32 on CPU")
        return torch.float16
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return None
    raise ActdistillError(f"train.precision must be auto, bf16, fp16 or fp32, got '{precision}'")


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
