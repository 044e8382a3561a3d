"""One plain training loop and one evaluation loop. The loop never names a method (DESIGN.md)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from actdistill.distill.base import Batch, Distiller, Stage, StepOutput
from actdistill.engine.distributed import Replicas
from actdistill.engine.runtime import autocast
from actdistill.errors import ActdistillError
from actdistill.eval.metrics import ClassificationMeter

log = logging.getLogger("actdistill")


class NonFiniteLossError(ActdistillError):
    """The loss became NaN/inf; the message names the step and every loss part."""


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Move every tensor of the batch to `device` (non-blocking from pinned memory)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


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


def _progress(iterable: Iterable, enabled: bool, desc: str, total: int | None) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, mininterval=1.0)


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


class TrainingInterrupted(ActdistillError):
    """SIGINT/SIGTERM: a checkpoint was saved at a step boundary; the message says how to continue."""

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.signum = signum


def _batches(loader: Iterable[Batch], start: int) -> Iterable[Batch]:
    sampler = getattr(loader, "batch_sampler", None)
    if start and hasattr(sampler, "resume_at"):
        sampler.resume_at(start)  # type: ignore[union-attr]  # skip by index, without loading the samples
        return loader
    return itertools.islice(loader, start, None)


def _optimizer_step(
    optimizer: torch.optim.Optimizer, scaler: Any, params: list[nn.Parameter], grad_clip: float
) -> None:
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def train_one_epoch(
    distiller: Distiller,
    loader: Iterable[Batch],
    optimizers: dict[str, torch.optim.Optimizer],
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    epoch: int,
    grad_clip: float = 0.0,
    progress: bool = True,
    on_nonfinite: Callable[[EpochState], Any] | None = None,
    accumulate_steps: int = 1,
    scalers: dict[str, Any] | None = None,
    replicas: Replicas | None = None,
    state: EpochState | None = None,
    save: Callable[[EpochState], Any] | None = None,
    save_every: int = 0,
    stop_requested: Callable[[], int] | None = None,
) -> dict[str, Any]:
    """Run every stage of `distiller` for one pass over `loader`; returns epoch averages and timings.

    Gradients of `accumulate_steps` consecutive batches are averaged into one optimizer step. `save(state)` runs
    every `save_every` optimizer steps; a truthy `stop_requested()` (a signal number) saves at the next step
    boundary and raises `TrainingInterrupted`. `state` resumes a partly done epoch.
    """
    replicas = replicas or Replicas()
    state = state or EpochState()
    distiller.train()
    distiller.on_epoch(epoch)
    stages = distiller.stages()
    total = len(loader) if hasattr(loader, "__len__") else None
    for s in range(state.stage, len(stages)):
        stage, state.stage = stages[s], s
        optimizer, scaler = optimizers[stage.name], (scalers or {}).get(stage.name)
        prefix = f"{stage.name}/" if len(stages) > 1 else ""
        params = list(stage.parameters())
        contributed = unsynced = False  # the current accumulation group has gradients / has un-all-reduced ones
        with only_stage_trainable(distiller, stage, len(stages) > 1):
            optimizer.zero_grad(set_to_none=True)
            tick = time.perf_counter()
            left = total - state.batch if total is not None else None
            bar = _progress(_batches(loader, state.batch), progress, f"epoch {epoch} {stage.name}", left)
            for step, batch in enumerate(bar, start=state.batch):
                first = step % accumulate_steps == 0
                last = step % accumulate_steps == accumulate_steps - 1 or (total is not None and step == total - 1)
                group = min(accumulate_steps, total - step + step % accumulate_steps) if total else accumulate_steps
                empty, stop = replicas.any("input" not in batch, bool(stop_requested and stop_requested()))
                if stop and first:
                    path = save(state) if save is not None else None
                    signum = stop_requested() if stop_requested else 2
                    raise TrainingInterrupted(f"interrupted: saved {path}; continue with --resume", signum or 2)
                state.skipped += int(batch.pop("skipped", 0))
                if not empty:
                    batch = to_device(batch, device)
                    t_data = time.perf_counter()
                    with replicas.no_sync() if not last else contextlib.nullcontext():
                        with autocast(device, amp_dtype):
                            out = replicas.forward(s, stage, batch)
                        (bad,) = replicas.any(not bool(torch.isfinite(out.loss.detach())))
                        if bad:
                            saved = on_nonfinite(state) if on_nonfinite is not None else None
                            parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in out.parts.items())
                            raise NonFiniteLossError(
                                f"non-finite loss at epoch {epoch}, stage '{stage.name}', step {step} "
                                f"(optimizer step {state.steps}): {parts}; state before the step saved to {saved}. "
                                "Lower optim.lr, set train.grad_clip, or try train.precision=fp32"
                            )
                        loss = out.loss / group
                        (scaler.scale(loss) if scaler is not None else loss).backward()
                    contributed, unsynced = True, unsynced or (not last and replicas.world > 1)
                    _accumulate(state, prefix, out, batch["label"])
                    state.data_time += t_data - tick
                    state.step_time += time.perf_counter() - t_data
                stepped = last and contributed
                if stepped:
                    if empty and unsynced:  # DDP synchronises only in the group's final backward, which was skipped
                        replicas.average_gradients(iter(params))
                    _optimizer_step(optimizer, scaler, params, grad_clip)
                    contributed = unsynced = False
                    state.steps += 1
                state.batch = step + 1
                if stepped and save is not None and save_every > 0 and state.steps % save_every == 0:
                    save(state)
                tick = time.perf_counter()
                if progress and not empty and hasattr(bar, "set_postfix") and step % 10 == 0:
                    bar.set_postfix(loss=f"{float(out.loss):.3f}")
        state.batch = 0
    totals = state.totals(replicas)
    names = [k.split("/", 1)[1] for k in totals if k.startswith("sum/")]
    stats: dict[str, Any] = {k: totals[f"sum/{k}"] / max(totals[f"count/{k}"], 1) for k in names}
    skipped = int(totals.get("skipped", 0))
    stats.update(skipped=skipped, data_time_s=round(state.data_time, 3), step_time_s=round(state.step_time, 3))
    if skipped and replicas.is_main:
        log.warning("epoch %d: skipped %d unreadable samples (see warnings above for the files)", epoch, skipped)
    return stats


def _accumulate(state: EpochState, prefix: str, out: StepOutput, labels: Tensor) -> None:
    """Add a batch's loss, parts, metrics and correct predictions (device tensors: no sync per step)."""
    n = int(labels.shape[0])
    for key, value in {"loss": out.loss, **out.parts, **out.metrics}.items():
        state.sums[prefix + key] += (value.detach() if isinstance(value, Tensor) else value) * n
        state.counts[prefix + key] += n
    state.sums[prefix + "acc"] += (out.logits.detach().argmax(-1) == labels).sum()
    state.counts[prefix + "acc"] += n


@torch.no_grad()
def evaluate(
    predict: Callable[..., Tensor],
    loader: Iterable[Batch],
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    class_names: list[str],
    progress: bool = False,
    replicas: Replicas | None = None,
    inputs: tuple[str, ...] = ("input",),
) -> dict[str, Any]:
    """Classification report (top-1/5, mean class accuracy, per-class AP, mAP, confusion) over `loader`.

    `predict` receives the batch entries named in `inputs` (two-stream fusion: `("input", "input_flow")`).
    With several processes each evaluates its shard and the meters are gathered: the report is the whole set's.
    """
    meter = ClassificationMeter()
    skipped = 0
    total = len(loader) if hasattr(loader, "__len__") else None
    for batch in _progress(loader, progress, "eval", total):
        if "input" not in batch:
            skipped += int(batch.get("skipped", 0))
            continue
        skipped += int(batch.pop("skipped", 0))
        batch = to_device(batch, device)
        with autocast(device, amp_dtype):
            logits = predict(*(batch[key] for key in inputs))
        if logits.dim() == 3:  # video heads give per-time-step logits (B, K, T')
            logits = logits.mean(-1)
        meter.update(logits.float(), batch["label"])
    if replicas is not None and replicas.world > 1:
        meter = replicas.gather_meter(meter)
        skipped = int(replicas.sum_values({"skipped": float(skipped)})["skipped"])
    report = meter.compute(class_names)
    report["skipped"] = skipped
    for key in ("top1", "top5", "mean_class_accuracy", "mAP"):
        if key in report and isinstance(report[key], float) and math.isnan(report[key]):
            log.warning("evaluation: %s is NaN (no samples?)", key)
    return report
