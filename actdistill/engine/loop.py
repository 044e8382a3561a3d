"""One plain training loop and one evaluation loop. The loop never names a method (DESIGN.md)."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from actdistill.distill.base import Batch, Distiller, Stage
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
    on_nonfinite: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run every stage of `distiller` for one pass over `loader`; returns epoch averages and timings."""
    distiller.train()
    distiller.on_epoch(epoch)
    stages = distiller.stages()
    sums: dict[str, Tensor | float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    skipped, data_time, step_time = 0, 0.0, 0.0
    total = len(loader) if hasattr(loader, "__len__") else None
    for stage in stages:
        optimizer = optimizers[stage.name]
        prefix = f"{stage.name}/" if len(stages) > 1 else ""
        correct, seen = torch.zeros((), device=device), 0
        with only_stage_trainable(distiller, stage, len(stages) > 1):
            tick = time.perf_counter()
            bar = _progress(loader, progress, f"epoch {epoch} {stage.name}", total)
            for step, batch in enumerate(bar):
                if "input" not in batch:  # every sample of the batch was unreadable
                    skipped += int(batch.get("skipped", 0))
                    continue
                skipped += int(batch.pop("skipped", 0))
                batch = to_device(batch, device)
                t_data = time.perf_counter()
                with autocast(device, amp_dtype):
                    out = stage.forward(batch)
                if not torch.isfinite(out.loss.detach()):
                    if on_nonfinite is not None:
                        on_nonfinite()
                    parts = ", ".join(f"{k}={float(v):.4g}" for k, v in out.parts.items())
                    raise NonFiniteLossError(
                        f"non-finite loss at epoch {epoch}, stage '{stage.name}', step {step}: {parts}. "
                        "Lower optim.lr, set train.grad_clip, or try train.precision=fp32"
                    )
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                if grad_clip > 0:
                    nn.utils.clip_grad_norm_(list(stage.parameters()), grad_clip)
                optimizer.step()
                n = int(batch["label"].shape[0])
                sums[prefix + "loss"] += out.loss.detach() * n
                counts[prefix + "loss"] += n
                for key, value in {**out.parts, **out.metrics}.items():
                    sums[prefix + key] += (value.detach() if isinstance(value, Tensor) else value) * n
                    counts[prefix + key] += n
                correct += (out.logits.detach().argmax(-1) == batch["label"]).sum()
                seen += n
                now = time.perf_counter()
                data_time += t_data - tick
                step_time += now - t_data
                tick = now
                if progress and hasattr(bar, "set_postfix") and step % 10 == 0:
                    bar.set_postfix(loss=f"{float(out.loss):.3f}")
        sums[prefix + "acc"] = correct / max(seen, 1)
        counts[prefix + "acc"] = 1
    stats: dict[str, Any] = {k: float(sums[k]) / counts[k] for k in sums}
    stats.update(skipped=skipped, data_time_s=round(data_time, 3), step_time_s=round(step_time, 3))
    if skipped:
        log.warning("epoch %d: skipped %d unreadable samples (see warnings above for the files)", epoch, skipped)
    return stats


@torch.no_grad()
def evaluate(
    predict: Callable[[Tensor], Tensor],
    loader: Iterable[Batch],
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    class_names: list[str],
    progress: bool = False,
) -> dict[str, Any]:
    """Classification report (top-1/5, mean class accuracy, per-class AP, mAP, confusion) over `loader`."""
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
            logits = predict(batch["input"])
        if logits.dim() == 3:  # video heads give per-time-step logits (B, K, T')
            logits = logits.mean(-1)
        meter.update(logits.float(), batch["label"])
    report = meter.compute(class_names)
    report["skipped"] = skipped
    for key in ("top1", "top5", "mean_class_accuracy", "mAP"):
        if key in report and isinstance(report[key], float) and math.isnan(report[key]):
            log.warning("evaluation: %s is NaN (no samples?)", key)
    return report
