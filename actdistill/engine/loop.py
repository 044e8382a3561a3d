"""One training loop for every task and method. The loop never names a method (DESIGN.md).

Per epoch, each stage of the method (one for most methods, two for paper 2's generative KD) makes a full pass over
the training loader: the batch goes to the method in one call (`run.replicas.step(batch, stage)`), its loss is
back-propagated, and an optimiser step follows every `train.accumulate_steps` batches. `GradientAccumulation`
hides how micro-batches are grouped and when DDP synchronises gradients.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from actdistill.distill.base import Batch, Distiller, Stage, StepOutput
from actdistill.engine.build import Run
from actdistill.engine.distributed import Replicas
from actdistill.engine.evaluators import to_device
from actdistill.engine.teacher_prefetch import teacher_prefetch
from actdistill.errors import ActdistillError
from actdistill.utils.runtime import autocast

log = logging.getLogger("actdistill")


class NonFiniteLossError(ActdistillError):
    """The loss became NaN/inf; the message names the step and every loss part."""


class TrainingInterrupted(ActdistillError):
    """SIGINT/SIGTERM: a checkpoint was saved at a step boundary; the message says how to continue."""

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.signum = signum


@dataclass
class EpochState:
    """How far an epoch got: stage, loader batches done in it, optimizer steps, and this rank's running sums.

    Saved in mid-epoch checkpoints (sums added over ranks) so that `--resume` continues at the next batch.
    """

    stage: int = 0
    batch: int = 0
    steps: int = 0
    sums: dict[str, Tensor | float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    skipped: int = 0
    data_time: float = 0.0
    step_time: float = 0.0

    def totals(self, replicas: Replicas) -> dict[str, float]:
        """Sums and counts (keys `sum/...`, `count/...`, `skipped`) added over ranks."""
        flat = {f"sum/{k}": float(v) for k, v in self.sums.items()}
        flat.update({f"count/{k}": float(v) for k, v in self.counts.items()}, skipped=float(self.skipped))
        return replicas.sum_values(flat)

    def to_dict(self, replicas: Replicas) -> dict[str, Any]:
        """Checkpointable position with the sums of every rank (a collective: call it on every rank)."""
        return {"stage": self.stage, "batch": self.batch, "steps": self.steps, "totals": self.totals(replicas)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], with_totals: bool = True) -> EpochState:
        """The saved position; only one rank (`with_totals`) takes the saved sums so they are not counted twice."""
        state = cls(stage=d["stage"], batch=d["batch"], steps=d["steps"])
        for key, value in d["totals"].items() if with_totals else ():
            if key == "skipped":
                state.skipped = int(value)
            else:
                kind, name = key.split("/", 1)
                (state.sums if kind == "sum" else state.counts)[name] = value
        return state

    def record(self, prefix: str, out: StepOutput, batch_size: int, labels: Tensor | None) -> None:
        """Add a batch's loss, parts, metrics and correct predictions (device tensors: no sync per step)."""
        for key, value in {"loss": out.loss, **out.parts, **out.metrics}.items():
            self.sums[prefix + key] += (value.detach() if isinstance(value, Tensor) else value) * batch_size
            self.counts[prefix + key] += batch_size
        if labels is not None and out.logits.dim() == 2:  # classification-style logits (B, K)
            self.sums[prefix + "acc"] += (out.logits.detach().argmax(-1) == labels).sum()
            self.counts[prefix + "acc"] += batch_size


@contextlib.contextmanager
def only_stage_trainable(distiller: Distiller, stage: Stage, multi_stage: bool) -> Iterator[None]:
    """While a stage runs, parameters outside it get no gradients (paper 2: the other half is frozen)."""
    if not multi_stage:
        yield
        return
    keep = {id(p) for p in stage.parameters()}
    frozen = [p for p in distiller.trainable_parameters() if id(p) not in keep and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


class GradientAccumulation:
    """Groups `steps` consecutive batches into one optimiser step (the last group of an epoch may be shorter).

    `micro_step(i)` is the context of batch `i`'s backward: DDP's `no_sync` except for a group's last batch, so
    gradients are all-reduced once per optimiser step. `scale` is the factor of each batch's loss (1/group size).
    """

    def __init__(self, steps: int, total: int | None, replicas: Replicas) -> None:
        self.steps, self.total, self.replicas = steps, total, replicas
        self.has_grads = False  # the current group has local gradients
        self.unsynced = False  # ... some of which were never all-reduced

    def first(self, i: int) -> bool:
        return i % self.steps == 0

    def last(self, i: int) -> bool:
        return i % self.steps == self.steps - 1 or (self.total is not None and i == self.total - 1)

    def scale(self, i: int) -> float:
        if self.total is None:
            return 1.0 / self.steps
        return 1.0 / min(self.steps, self.total - i + i % self.steps)

    def micro_step(self, i: int) -> contextlib.AbstractContextManager:
        self.has_grads = True
        self.unsynced = self.unsynced or (not self.last(i) and self.replicas.world > 1)
        return self.replicas.no_sync() if not self.last(i) else contextlib.nullcontext()

    def finish_group(self, params: list[nn.Parameter], synced_now: bool) -> None:
        """Before the optimiser step: DDP all-reduces only in a group's final backward; if that batch was empty,
        average the locally accumulated gradients here instead."""
        if not synced_now and self.unsynced:
            self.replicas.average_gradients(iter(params))
        self.has_grads = self.unsynced = False


def _batches(loader: Iterable[Batch], start: int) -> Iterable[Batch]:
    sampler = getattr(loader, "batch_sampler", None)
    if start and hasattr(sampler, "resume_at"):
        sampler.resume_at(start)  # type: ignore[union-attr]  # skip by index, without loading the samples
        return loader
    return itertools.islice(loader, start, None)


def _progress(iterable: Iterable, enabled: bool, desc: str, total: int | None) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, mininterval=1.0)


def _optimizer_step(optimizer: torch.optim.Optimizer, scaler: Any, params: list[nn.Parameter], clip: float) -> None:
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip > 0:
        nn.utils.clip_grad_norm_(params, clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _check_finite(run: Run, out: StepOutput, where: str, save_nonfinite: Callable[[], Path | None]) -> None:
    (bad,) = run.replicas.any(not bool(torch.isfinite(out.loss.detach())))
    if bad:
        saved = save_nonfinite()
        parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in out.parts.items())
        raise NonFiniteLossError(
            f"non-finite loss at {where}: {parts}; state before the step saved to {saved}. "
            "Lower optim.lr, set train.grad_clip, or try train.precision=fp32"
        )


def train_stage(
    run: Run,
    index: int,
    epoch: int,
    state: EpochState,
    stop_requested: Callable[[], int],
    save: Callable[[EpochState, str], Path | None],
) -> None:
    """One pass of stage `index` over the training loader, continuing from `state.batch`.

    `save(state, name)` writes a checkpoint (`last.pt` every `train.save_every_steps` optimiser steps and when a
    stop signal arrives, `nonfinite.pt` before a non-finite step).
    """
    cfg, replicas, device = run.cfg.train, run.replicas, run.device
    stage = run.method.stages()[index]
    optimizer, scaler, schedule = run.optimizers[stage.name], run.scalers.get(stage.name), run.schedules[stage.name]
    prefix = f"{stage.name}/" if len(run.optimizers) > 1 else ""
    params = list(stage.parameters())
    total = len(run.train_loader)
    groups = GradientAccumulation(cfg.accumulate_steps, total, replicas)
    with teacher_prefetch(run.method, device, run.amp_dtype, run.cfg.teacher.prefetch) as prefetch:
        batches = prefetch(_batches(run.train_loader, state.batch))  # + the teacher's logits, one batch ahead
        bar = _progress(batches, cfg.progress and run.ctx.is_main, f"epoch {epoch} {stage.name}", total - state.batch)
        optimizer.zero_grad(set_to_none=True)
        tick = time.perf_counter()
        for i, batch in enumerate(bar, start=state.batch):
            empty, stop = replicas.any("input" not in batch, bool(stop_requested()))
            if stop and groups.first(i):
                path = save(state, "last.pt")
                raise TrainingInterrupted(f"interrupted: saved {path}; continue with --resume", stop_requested() or 2)
            state.skipped += int(batch.pop("skipped", 0))
            if not empty:
                batch = to_device(batch, device)
                t_data = time.perf_counter()
                with groups.micro_step(i):
                    with autocast(device, run.amp_dtype):
                        out = replicas.step(batch, index)  # the method: loss, logits and parts of this stage
                    where = f"epoch {epoch}, stage '{stage.name}', step {i} (optimizer step {state.steps})"
                    _check_finite(run, out, where, lambda: save(state, "nonfinite.pt"))
                    loss = out.loss * groups.scale(i)
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                state.record(prefix, out, len(batch["input"]), batch.get("label"))
                state.data_time += t_data - tick
                state.step_time += time.perf_counter() - t_data
            if groups.last(i) and groups.has_grads:
                groups.finish_group(params, synced_now=not empty)
                _optimizer_step(optimizer, scaler, params, cfg.grad_clip)
                schedule.after_step()
                state.steps += 1
                if cfg.save_every_steps > 0 and state.steps % cfg.save_every_steps == 0:
                    state.batch = i + 1
                    save(state, "last.pt")
            state.batch = i + 1
            tick = time.perf_counter()
            if not empty and hasattr(bar, "set_postfix") and i % 10 == 0:
                bar.set_postfix(loss=f"{float(out.loss.detach()):.3f}")


def train_one_epoch(
    run: Run,
    epoch: int,
    state: EpochState,
    stop_requested: Callable[[], int],
    save: Callable[[EpochState, str], Path | None],
) -> dict[str, Any]:
    """Every stage of the method for one pass each; returns epoch averages (over ranks) and timings."""
    method = run.method
    method.train()
    method.on_epoch(epoch)
    stages = method.stages()
    for index in range(state.stage, len(stages)):
        state.stage = index
        with only_stage_trainable(method, stages[index], len(stages) > 1):
            train_stage(run, index, epoch, state, stop_requested, save)
        state.batch = 0
    totals = state.totals(run.replicas)
    names = [k.split("/", 1)[1] for k in totals if k.startswith("sum/")]
    stats: dict[str, Any] = {k: totals[f"sum/{k}"] / max(totals[f"count/{k}"], 1) for k in names}
    skipped = int(totals.get("skipped", 0))
    if not names:
        raise ActdistillError(
            f"epoch {epoch}: no training sample of dataset '{run.cfg.data.name}' at {run.cfg.data.root} could be "
            f"read ({skipped} skipped); check the files (warnings above name them)"
        )
    stats.update(skipped=skipped, data_time_s=round(state.data_time, 3), step_time_s=round(state.step_time, 3))
    if skipped and run.ctx.is_main:
        log.warning("epoch %d: skipped %d unreadable samples (see warnings above for the files)", epoch, skipped)
    return stats
