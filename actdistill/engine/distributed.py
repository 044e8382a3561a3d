"""Data parallelism under torchrun: process group, the DDP-wrapped distiller, and the few collectives the loop needs.

Design (docs/distributed.md): the whole `Distiller` is wrapped in `DistributedDataParallel` through `TrainStep`, a
module whose forward runs stage `i`, so every stage's loss passes through DDP's forward and the gradients of the
student and adapters are all-reduced during backward. The teacher is replicated, never synchronised: its
parameters and buffers are excluded from DDP. With one process every `Replicas` method is the plain local path.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import wraps
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from actdistill.distill.base import Batch, Distiller, Stage, StepOutput
from actdistill.errors import ActdistillError
from actdistill.eval.metrics import ClassificationMeter
from actdistill.utils.runtime import autocast, resolve_device

log = logging.getLogger("actdistill")

# Modules whose `update(index, *embeddings, ...)` writes a memory bank: their updates are all-gathered so that
# every rank's bank sees every sample (CRD, paper 3's PCL). A new memory-bank module is added here, not in the loop.
GATHERED_UPDATES = ("ContrastMemory", "MemoryBank")


@dataclass
class DistContext:
    """This process's place in the job (`world == 1`: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        """Destroy the process group if `init_distributed` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device_spec: str = "auto", timeout_s: float = 1800.0) -> tuple[DistContext, torch.device]:
    """Join the torchrun job described by WORLD_SIZE/RANK/LOCAL_RANK (nccl on CUDA, gloo on CPU); else one process.

    `timeout_s`: a collective that waits longer (a rank died or hangs) raises instead of blocking the job forever.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), resolve_device(device_spec)
    if "RANK" not in os.environ:
        raise ActdistillError(
            "WORLD_SIZE is set but RANK is not; launch with `torchrun --nproc-per-node N -m actdistill`"
        )
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)  # one GPU per process, whatever index the config named
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ActdistillError(f"distributed training runs on CUDA or CPU, not {device.type}; set train.device=cpu")
    owns = not dist.is_initialized()
    if owns:
        timeout = datetime.timedelta(seconds=timeout_s)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    if rank != 0:
        logging.getLogger("actdistill").setLevel(logging.WARNING)  # rank 0 reports; others only warn
    return DistContext(rank, world, local_rank, owns), device


class TrainStep(nn.Module):
    """`forward(batch, i)` runs stage `i` of the method: one module forward per stage, so DDP can wrap them all."""

    def __init__(self, distiller: Distiller) -> None:
        super().__init__()
        self.distiller = distiller

    def forward(self, batch: Batch, stage: int) -> tuple[Tensor, Tensor, dict[str, Tensor], dict[str, Any]]:
        out = self.distiller.stages()[stage].forward(batch)
        return out.loss, out.logits, out.parts, out.metrics  # a pytree (not a dataclass) so DDP finds the tensors


def _teacher_names(runner: TrainStep) -> list[str]:
    teacher = runner.distiller.teacher
    if teacher is None:
        return []
    ids = {id(t) for t in (*teacher.parameters(), *teacher.buffers())}
    named = (*runner.named_parameters(), *runner.named_buffers())
    return [name for name, t in named if id(t) in ids]


def _reachable(loss: Tensor) -> set[int]:
    """ids of the leaf tensors the autograd graph of `loss` accumulates gradients into."""
    found: set[int] = set()
    stack, seen = [loss.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            found.add(id(fn.variable))
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return found


def unused_parameters(
    distiller: Distiller, stage: Stage, batch: Batch, device: torch.device, amp_dtype: torch.dtype | None
) -> list[str]:
    """Names of `stage`'s parameters that one forward's loss does not reach; buffers and RNG are left untouched."""
    saved = [(b, b.detach().clone()) for b in distiller.buffers()]
    devices = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), autocast(device, amp_dtype):
        out = stage.forward(batch)
    reached = _reachable(out.loss)
    del out
    with torch.no_grad():
        for buf, copy in saved:
            buf.copy_(copy)
    names = {id(p): n for n, p in distiller.named_parameters()}
    return [names.get(id(p), "?") for p in stage.parameters() if id(p) not in reached]


def _gather_cat(x: Tensor) -> Tensor:
    """Concatenate `x` (B, ...) of every rank along dim 0, in rank order (ranks may hold different B)."""
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def gather_tensor_args(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap `fn` so that its tensor positional arguments are all-gathered (dim 0) over ranks before the call."""

    @wraps(fn)
    def gathered(*args: Any, **kwargs: Any) -> Any:
        args = tuple(_gather_cat(a.detach()) if isinstance(a, Tensor) else a for a in args)
        return fn(*args, **kwargs)

    gathered.gathered = True  # type: ignore[attr-defined]
    return gathered


class Replicas:
    """The loop's view of data parallelism: stage forwards, gradient-sync control and collectives.

    With one process (`ctx.world == 1`) there are no collectives and `forward` calls the stage directly.
    """

    def __init__(self, ctx: DistContext | None = None, device: torch.device | None = None) -> None:
        self.ctx = ctx or DistContext()
        self.device = device or torch.device("cpu")
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        self.local: TrainStep | None = None
        # Per-step flags and epoch statistics travel over a CPU (gloo) group: with NCCL, reading a flag back
        # from the GPU would wait for all queued GPU work every step. Every rank builds Replicas at the same point.
        self.host_group = None
        if self.world > 1 and dist.get_backend() != "gloo":
            self.host_group = dist.new_group(backend="gloo")

    @property
    def world(self) -> int:
        return self.ctx.world

    @property
    def is_main(self) -> bool:
        return self.ctx.is_main

    def wrap(self, distiller: Distiller, *, find_unused: bool) -> None:
        """Wrap the distiller in DDP (teacher excluded) and make memory-bank updates see every rank's samples."""
        self.local = TrainStep(distiller)
        if self.world == 1:
            return
        for module in distiller.modules():
            if type(module).__name__ in GATHERED_UPDATES and not getattr(module.update, "gathered", False):
                module.update = gather_tensor_args(module.update)
        # Depthwise convolutions yield gradients whose size-1 dims have other strides than DDP's buckets: only a
        # copy, not an error, and torch would say so once per process.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        runner = self.local
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(runner, _teacher_names(runner))
        self.ddp = nn.parallel.DistributedDataParallel(
            runner,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=find_unused,
        )

    def step(self, batch: Batch, stage: int) -> StepOutput:
        """Stage `stage` of the method on `batch` (its loss, logits, parts), through DDP when distributed."""
        loss, logits, parts, metrics = (self.ddp or self.local)(batch, stage)
        return StepOutput(loss=loss, logits=logits, parts=parts, metrics=metrics)

    def no_sync(self) -> contextlib.AbstractContextManager:
        """Accumulate gradients locally (non-final micro-steps of gradient accumulation)."""
        return self.ddp.no_sync() if self.ddp is not None else contextlib.nullcontext()

    def any(self, *flags: bool) -> list[bool]:
        """Each flag OR-ed over ranks, so that every rank takes the same branch."""
        if self.world == 1:
            return [bool(f) for f in flags]
        t = torch.tensor([float(f) for f in flags])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.host_group)
        return [bool(v) for v in t.tolist()]

    def sum_values(self, values: Mapping[str, float]) -> dict[str, float]:
        """Sum float-valued dicts over ranks (keys missing on a rank count as 0)."""
        if self.world == 1:
            return dict(values)
        every: list[Any] = [None] * self.world
        dist.all_gather_object(every, dict(values), group=self.host_group)
        keys = sorted({k for d in every for k in d})
        return {k: sum(d.get(k, 0.0) for d in every) for k in keys}

    def average_gradients(self, params: Iterator[nn.Parameter]) -> None:
        """Mean of the gradients over ranks, outside DDP (only when an accumulation group ends on a skipped batch)."""
        if self.world == 1:
            return
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(self.world)

    def sync_buffers(self, module: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm statistics, memory banks) to every rank, teacher excluded."""
        if self.world == 1:
            return
        teacher = getattr(module, "teacher", None)
        skip = {id(b) for b in teacher.buffers()} if teacher is not None else set()
        for buf in module.buffers():
            if id(buf) not in skip:
                dist.broadcast(buf, src=0)

    def gather_objects(self, items: list[Any]) -> list[Any]:
        """Concatenate a picklable list of every rank, in rank order (e.g. detection predictions)."""
        if self.world == 1:
            return list(items)
        every: list[Any] = [None] * self.world
        dist.all_gather_object(every, list(items), group=self.host_group)
        return [item for part in every for item in part]

    def gather_meter(self, meter: ClassificationMeter) -> ClassificationMeter:
        """One meter holding every rank's samples, in rank order (each rank holds a contiguous test shard)."""
        if self.world == 1:
            return meter
        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, meter.state(), group=self.host_group)
        merged = ClassificationMeter()
        for state in states:
            merged.merge(state)
        return merged


def wrap_distiller(
    replicas: Replicas, distiller: Distiller, loader: Any, device: torch.device, amp_dtype: torch.dtype | None
) -> None:
    """DDP around the distiller, looking for unused parameters only where a probe forward finds some."""
    if replicas.world == 1:
        replicas.wrap(distiller, find_unused=False)
        return
    stages = distiller.stages()
    find_unused, unused = len(stages) > 1, []  # stages freeze each other's parameters: always look
    if not find_unused:
        batch = next(iter(loader))
        if "input" in batch:
            batch.pop("skipped", None)
            batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            unused = unused_parameters(distiller.train(), stages[0], batch, device, amp_dtype)
            if unused:
                log.info(
                    "DDP: %d parameters get no gradient (e.g. %s); find_unused_parameters on", len(unused), unused[0]
                )
        (find_unused,) = replicas.any("input" not in batch or bool(unused))
    replicas.wrap(distiller, find_unused=find_unused)
