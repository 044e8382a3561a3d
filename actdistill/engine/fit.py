"""`fit(cfg)`: check the config, build the run, train epoch by epoch, evaluate, checkpoint, write `results.json`.

Every task trains here (classification, paper 3's PCL, temporal detection). Under torchrun every process calls
`fit`; rank 0 alone writes files and logs (docs/distributed.md). The run folder is locked while a run writes to it.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch.distributed as dist

from actdistill.config import Config, check_values, save_config
from actdistill.engine.build import Run, build_run, check_method
from actdistill.engine.checkpoint import Checkpointer, Progress, versions
from actdistill.engine.distributed import init_distributed
from actdistill.engine.logging import MetricsLogger
from actdistill.engine.loop import EpochState, TrainingInterrupted, train_one_epoch
from actdistill.engine.signals import StopRequest, stop_on_signals
from actdistill.engine.tasks import Task, task_for
from actdistill.errors import ActdistillError, suggest
from actdistill.utils.checkpoint import remove_stale_temp_files, set_rng_state
from actdistill.utils.files import MARKER, FolderLock, is_run_folder
from actdistill.utils.runtime import epoch_seed, seed_everything

log = logging.getLogger("actdistill")


def check_config(cfg: Config, *, data_ready: bool = True) -> Task:
    """Every setting checked before any work: value ranges, the method for this task, metric names; and, when the
    data is already in place (`data_ready`), what the task checks in it."""
    check_values(cfg)
    task = task_for(cfg)
    if data_ready:
        task.check(cfg)
    check_method(cfg.method, task)
    cfg.train.best_metric = cfg.train.best_metric or task.default_best
    if cfg.train.best_metric not in task.metrics:
        raise ActdistillError(
            f"train.best_metric '{cfg.train.best_metric}' is not a metric of the {task.name} task."
            f"{suggest(cfg.train.best_metric, task.metrics)} Its metrics: {', '.join(task.metrics)}."
        )
    return task


def prepare_run_dir(out_dir: str | Path, *, resume: bool, overwrite: bool, create: bool = True) -> Path:
    """The run folder, checked: refuse to overwrite a run unless asked, and never write into a foreign folder.

    `create=False` (ranks other than 0) only checks: those processes never touch the run folder.
    """
    run = Path(out_dir)
    finished = (run / "checkpoints" / "last.pt").exists() or (run / "results.json").exists()
    if finished and not (resume or overwrite):
        raise ActdistillError(
            f"run directory {run} already holds a run; pass --resume to continue it, --overwrite to replace it, "
            "or choose another train.out_dir"
        )
    if resume and not (run / "checkpoints" / "last.pt").exists():
        raise ActdistillError(f"--resume given but {run}/checkpoints/last.pt does not exist; start without --resume")
    if run.is_dir() and any(run.iterdir()) and not is_run_folder(run):
        raise ActdistillError(
            f"train.out_dir {run} is not empty and does not hold an actdistill run; choose a new or empty folder"
        )
    return run


def _clear_previous_run(run: Path) -> None:
    """--overwrite: remove what an earlier run wrote in its own folder, nothing else."""
    for name in ("checkpoints", "tensorboard"):
        shutil.rmtree(run / name, ignore_errors=True)
    for name in ("metrics.jsonl", "results.json", "student_best.safetensors", "student_last.safetensors"):
        (run / name).unlink(missing_ok=True)


def fit(cfg: Config, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train `cfg.student` with `cfg.method` (and `cfg.teacher`), evaluate each epoch, write the run folder."""
    task = check_config(cfg)
    folder = prepare_run_dir(cfg.train.out_dir, resume=resume, overwrite=overwrite)
    ctx, device = init_distributed(cfg.train.device, cfg.train.dist_timeout_s)
    lock = None
    try:
        if ctx.is_main:
            folder.mkdir(parents=True, exist_ok=True)
            lock = FolderLock(folder).acquire()
            if overwrite and not resume:
                _clear_previous_run(folder)
            (folder / MARKER).touch()
            (folder / "checkpoints").mkdir(exist_ok=True)
            remove_stale_temp_files(folder / "checkpoints")
            remove_stale_temp_files(folder)
        seed_everything(cfg.train.seed)
        run = build_run(cfg, task, ctx, device, folder)
        return train(run, resume=resume)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT):
            raise
        fix = "free space there" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "make it writable"
        raise ActdistillError(
            f"could not write {exc.filename or cfg.train.out_dir}: {exc.strerror}; {fix} or choose another "
            "train.out_dir (continue with --resume once fixed)"
        ) from None
    except dist.DistBackendError as exc:
        raise ActdistillError(
            f"rank {ctx.rank}: a collective failed or waited longer than train.dist_timeout_s="
            f"{cfg.train.dist_timeout_s:g} s (another process stopped or hangs; see its log): "
            f"{str(exc).splitlines()[0][:160]}"
        ) from None
    except RuntimeError as exc:  # gloo reports a timed-out collective as a plain RuntimeError
        if ctx.world == 1 or "timed out" not in str(exc).lower() and "timeout" not in str(exc).lower():
            raise
        raise ActdistillError(
            f"rank {ctx.rank}: a collective waited longer than train.dist_timeout_s={cfg.train.dist_timeout_s:g} s "
            f"(another process stopped or hangs; see its log): {str(exc).splitlines()[0][:160]}"
        ) from None
    finally:
        if lock is not None:
            lock.release()
        ctx.close()


def train(run: Run, *, resume: bool = False) -> dict[str, Any]:
    """Resume (optionally), then run the remaining epochs of `run`; returns the results written to results.json."""
    cfg, ctx = run.cfg, run.ctx
    ckpt = Checkpointer(run)
    progress = ckpt.restore() if resume else Progress()
    if resume:
        set_rng_state(progress.rng)  # type: ignore[arg-type]
        where = f"epoch {progress.epoch + 1}" + (f", batch {progress.position['batch']}" if progress.position else "")
        log.info("resumed %s at %s", run.folder, where)
    if ctx.is_main:
        save_config(cfg, run.folder / "config.yaml")
    _log_start(run)
    metrics_log = MetricsLogger(run.folder, tensorboard=cfg.train.tensorboard) if ctx.is_main else None
    reports: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    try:
        with stop_on_signals() as stop:
            for epoch in range(progress.epoch + 1, cfg.train.epochs + 1):
                reports = run_epoch(run, ckpt, progress, epoch, stop)
                if metrics_log is not None:
                    metrics_log.log(progress.history[-1], step=epoch)
                if epoch < cfg.train.epochs and run.replicas.any(bool(stop()))[0]:
                    path = run.folder / "checkpoints" / "last.pt"
                    raise TrainingInterrupted(f"interrupted: saved {path}; continue with --resume", stop() or 2)
    finally:
        if metrics_log is not None:
            metrics_log.close()
    ckpt.save_weights("last")
    if "test" not in reports:  # resumed a finished run: evaluate once so results.json is complete
        reports = evaluate_splits(run, ["test"])
    return write_results(run, progress, reports["test"], time.perf_counter() - started)


def run_epoch(run: Run, ckpt: Checkpointer, progress: Progress, epoch: int, stop: StopRequest) -> dict[str, Any]:
    """Train one epoch (continuing a saved position), evaluate when due, update `progress` and the checkpoints."""
    cfg = run.cfg
    tick = time.perf_counter()
    seed = epoch_seed(cfg.train.seed, epoch)
    seed_everything(seed)
    run.data.train.set_epoch(epoch)  # type: ignore[attr-defined]
    run.train_loader.batch_sampler.set_epoch(epoch)  # type: ignore[union-attr]
    run.train_loader.generator.manual_seed(seed)  # type: ignore[union-attr]
    state = EpochState()
    if progress.position is not None and progress.position["epoch"] == epoch:
        state = EpochState.from_dict(progress.position, with_totals=run.ctx.is_main)
        set_rng_state(progress.rng)  # type: ignore[arg-type]  # the RNG as it was after the last saved step
    lr = run.optimizers[next(iter(run.optimizers))].param_groups[0]["lr"]
    train_stats = train_one_epoch(run, epoch, state, stop, partial(ckpt.save_position, progress, epoch))
    progress.position = None
    run.replicas.sync_buffers(run.method)  # rank 0's BatchNorm statistics everywhere before evaluating
    record: dict[str, Any] = {"epoch": epoch, "lr": lr, "train": train_stats}
    reports: dict[str, Any] = {}
    if epoch % cfg.train.eval_every == 0 or epoch == cfg.train.epochs:
        reports = evaluate_splits(run, list(run.eval_loaders))
        for split, report in reports.items():
            record[split] = {k: report[k] for k in (*run.evaluator.metrics, "skipped") if k in report}
    selection = record.get(run.selection) if run.selection != "none" else None
    for schedule in run.schedules.values():
        schedule.after_epoch(selection)
    progress.epoch = epoch
    record["epoch_time_s"] = round(time.perf_counter() - tick, 2)
    progress.history.append(record)
    if selection is not None and _improves(run, float(selection[cfg.train.best_metric]), progress.best["value"]):
        progress.best = {"epoch": epoch, "value": float(selection[cfg.train.best_metric]), "split": run.selection,
                         "metrics": record.get("test", {})}  # fmt: skip
        ckpt.save("best.pt", progress)
        ckpt.save_weights("best")
    ckpt.save_epoch(progress)
    if run.ctx.is_main:
        _log_epoch(record, cfg.train.epochs, run.evaluator.shown)
    return reports


def _improves(run: Run, value: float, best: float | None) -> bool:
    if best is None:
        return value == value  # not NaN
    return value < best if run.cfg.train.best_metric in run.task.lower_is_better else value > best


def evaluate_splits(run: Run, splits: list[str]) -> dict[str, dict[str, Any]]:
    """The evaluator's report for each split (eval mode: dropout off, BatchNorm statistics frozen)."""
    run.method.eval()
    predictor = run.method.predictor()
    reports: dict[str, dict[str, Any]] = {}
    done: dict[int, dict[str, Any]] = {}  # a loader shared by two splits is evaluated once
    for split in splits:
        loader = run.eval_loaders[split]
        if id(loader) not in done:
            done[id(loader)] = run.evaluator(
                predictor, loader, device=run.device, amp_dtype=run.amp_dtype, replicas=run.replicas
            )
        reports[split] = done[id(loader)]
    return reports


def write_results(run: Run, progress: Progress, last: dict[str, Any], train_time_s: float) -> dict[str, Any]:
    """`results.json`: settings, sizes, best (and the split it was chosen on) and last epoch, history."""
    cfg = run.cfg
    results = {
        "name": cfg.name,
        "task": run.task.name,
        "dataset": cfg.data.name,
        "student": cfg.student.name,
        "teacher": (cfg.teacher.name or "from checkpoint") if run.teacher is not None else None,
        "method": dict(cfg.method),
        **run.size,
        "input_shape": list(run.task.input_shape(cfg)[1:]),
        "epochs": cfg.train.epochs,
        "seed": cfg.train.seed,
        "device": str(run.device),
        **run.layout,
        "precision": run.precision,
        "train_time_s": round(train_time_s, 1),
        "selected_on": run.selection,
        "best_metric": cfg.train.best_metric,
        "best": progress.best,
        "last": {k: last[k] for k in run.evaluator.metrics if k in last},
        "class_names": run.data.classes,
        "history": progress.history,
        "versions": versions(),
    }
    results.update({k: v for k, v in last.items() if k in ("per_class_ap", "confusion_matrix", "map", "per_class")})
    if run.ctx.is_main:
        (run.folder / "results.json").write_text(json.dumps(results, indent=1))
    return results


def _log_start(run: Run) -> None:
    cfg, layout, size = run.cfg, run.layout, run.size
    teacher = f" from teacher {cfg.teacher.name or cfg.teacher.checkpoint}" if run.teacher is not None else ""
    val = f"{len(run.data.val)} val" if run.data.val is not None else "no val"  # type: ignore[arg-type]
    log.info(
        "run '%s': %s (%.2f M params, %.3f GMACs) trained with method %s%s on %s (%s), %d train / %s / %d test; "
        "global batch %d (%d processes × %d × %d accumulated); best chosen on %s",
        cfg.name, cfg.student.name, size["params_m"], size["gmacs"], cfg.method.get("name"), teacher, run.device,
        run.precision, len(run.data.train), val, len(run.data.test), layout["global_batch"],  # type: ignore[arg-type]
        layout["world_size"], cfg.data.batch_size, cfg.train.accumulate_steps, run.selection,
    )  # fmt: skip


def _log_epoch(record: dict[str, Any], epochs: int, metrics: tuple[str, ...]) -> None:
    train = record["train"]
    losses = {k: v for k, v in train.items() if k == "loss" or k.endswith("/loss")}  # one per stage if several
    shown = " ".join(f"{k} {v:.4f}" for k, v in losses.items()) or "loss nan"
    msg = f"epoch {record['epoch']}/{epochs} {shown} lr {record['lr']:.2e}"
    for split in ("val", "test"):
        if split in record:
            msg += f" | {split} " + " ".join(f"{k} {record[split][k]:.4f}" for k in metrics if k in record[split])
    msg += f" | {record['epoch_time_s']:.1f}s (data {train['data_time_s']:.1f}s)"
    log.info(msg)
