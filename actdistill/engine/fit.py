"""Config → objects → training → `results.json`. The one place where names become objects."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from actdistill import __version__
from actdistill.config import Config, ModelConfig, save_config
from actdistill.data.build import build_datasets, build_transforms, dataset_task, make_loader
from actdistill.distill.base import Distiller
from actdistill.engine.checkpoint import load_resumable, restore_training_state, rotate
from actdistill.engine.distributed import DistContext, Replicas, init_distributed, wrap_distiller
from actdistill.engine.logging import MetricsLogger
from actdistill.engine.loop import EpochState, TrainingInterrupted, evaluate, train_one_epoch
from actdistill.engine.optim import build_optimizer, build_scheduler
from actdistill.engine.runtime import epoch_seed, resolve_precision, seed_everything
from actdistill.engine.signals import stop_on_signals
from actdistill.errors import ActdistillError, suggest
from actdistill.models import create_model
from actdistill.models.renormalize import Renormalize
from actdistill.registry import METHODS
from actdistill.utils.checkpoint import (
    atomic_save,
    load_checkpoint,
    rng_state,
    save_weights,
    set_rng_state,
    state_mismatch,
)

log = logging.getLogger("actdistill")


def prepare_run_dir(out_dir: str | Path, *, resume: bool, overwrite: bool, create: bool = True) -> Path:
    """Create the run folder; refuse to overwrite an existing run unless asked to resume or overwrite.

    `create=False` (ranks other than 0) only checks: those processes never touch the run folder.
    """
    run = Path(out_dir)
    has_run = (run / "checkpoints" / "last.pt").exists() or (run / "results.json").exists()
    if has_run and not (resume or overwrite):
        raise ActdistillError(
            f"run directory {run} already holds a run; pass --resume to continue it, --overwrite to replace it, "
            "or choose another train.out_dir"
        )
    if resume and not (run / "checkpoints" / "last.pt").exists():
        raise ActdistillError(f"--resume given but {run}/checkpoints/last.pt does not exist; start without --resume")
    if not create:
        return run
    if overwrite and run.exists() and not resume:
        for name in ("checkpoints", "tensorboard"):
            shutil.rmtree(run / name, ignore_errors=True)
        for name in ("metrics.jsonl", "results.json", "student_best.safetensors", "student_last.safetensors"):
            (run / name).unlink(missing_ok=True)
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    return run


def load_teacher(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The frozen teacher: from a trained actdistill run (`teacher.checkpoint`) or from weights (`pretrained`)."""
    if cfg.checkpoint:
        ckpt = load_checkpoint(cfg.checkpoint)
        spec = ckpt.get("model", {})
        name = spec.get("name") or cfg.name
        if cfg.name and name != cfg.name:
            raise ActdistillError(
                f"teacher.checkpoint {cfg.checkpoint} holds a '{name}' model but teacher.name is '{cfg.name}'; "
                "fix teacher.name or leave it empty"
            )
        ckpt_classes = spec.get("num_classes")
        if ckpt_classes is not None and ckpt_classes != num_classes:
            raise ActdistillError(
                f"teacher.checkpoint {cfg.checkpoint} predicts {ckpt_classes} classes but the dataset has "
                f"{num_classes}; train the teacher on the same dataset (same class list)"
            )
        teacher = create_model(name, num_classes, pretrained=False, **{**spec.get("kwargs", {}), **cfg.kwargs})
        try:
            teacher.load_state_dict(ckpt["student"])
        except RuntimeError:
            raise ActdistillError(
                f"teacher.checkpoint {cfg.checkpoint} does not fit a '{name}' model "
                f"({state_mismatch(teacher, ckpt['student'])}); "
                "point it at a run trained with that architecture or fix teacher.name / teacher.kwargs"
            ) from None
        return teacher
    if not cfg.name:
        raise ActdistillError("this method needs a teacher: set teacher.name and teacher.checkpoint (a trained run)")
    return create_model(cfg.name, num_classes, pretrained=cfg.pretrained, **cfg.kwargs)


def teacher_for_student(cfg: ModelConfig, student: nn.Module, num_classes: int) -> nn.Module:
    """The frozen teacher, re-normalising the student's input when the two expect different mean/std."""
    teacher = load_teacher(cfg, num_classes)
    t_cfg, s_cfg = teacher.pretrained_cfg, student.pretrained_cfg
    if tuple(t_cfg.mean) != tuple(s_cfg.mean) or tuple(t_cfg.std) != tuple(s_cfg.std):
        log.info("teacher expects mean/std %s/%s; re-normalising its input", t_cfg.mean, t_cfg.std)
        teacher = Renormalize(teacher, s_cfg.mean, s_cfg.std, t_cfg.mean, t_cfg.std)
    return teacher


def logit_only_method(method_cfg: dict[str, Any]) -> bool:
    """True when the method (every sub-method of a combo) needs only the teacher's logits, so a cache can serve it."""
    name = str(method_cfg.get("name", "vanilla"))
    if name == "combo":
        return all(logit_only_method(sub) for sub in method_cfg.get("methods", []))
    cls = METHODS.get(name)
    return METHODS.meta(name).get("knowledge") in ("logits", "none") or cls.reads_only_teacher_logits


def open_teacher_cache(cfg: Config, student: nn.Module, train_view: Any, num_classes: int) -> Any:
    """Wrap the training view so that samples carry cached teacher logits; refuse stale caches and feature methods."""
    from actdistill.distill.cache import CachedTeacherView, TeacherCache, cache_key

    cache = TeacherCache(cfg.teacher.cache)
    name = str(cfg.method.get("name", "vanilla"))
    if not logit_only_method(cfg.method):
        cls = METHODS.get(name)
        if not cls.reads_pooled_teacher_feature:
            raise ActdistillError(
                f"teacher.cache holds teacher logits (and pooled features), but method '{name}' taps teacher feature "
                "maps; use kd, dkd, ctkd, dist, fn (logits) or rkd, crd (pooled features) with the cache, or drop "
                "teacher.cache to run the teacher online"
            )
        layer = str(
            cfg.method.get("teacher_layer", inspect.signature(cls.__init__).parameters["teacher_layer"].default)
        )
        if cache.feature_layer != layer:
            stored = (
                "no pooled features"
                if cache.feature_layer is None
                else f"pooled features of layer {cache.feature_layer}"
            )
            raise ActdistillError(
                f"method '{name}' reads the teacher's pooled layer {layer} but teacher.cache {cache.path} holds "
                f"{stored}; rebuild it with `actdistill cache build CONFIG --features {layer} --out {cache.path}`"
            )
    pcfg = student.pretrained_cfg
    key = cache_key(dataclasses.asdict(cfg.data), dataclasses.asdict(cfg.teacher), cfg.train.seed, pcfg.mean, pcfg.std)
    cache.check(key, len(train_view), num_classes)
    if cfg.train.epochs > cache.epochs:
        log.info("teacher.cache holds %d epochs of views; they repeat over the %d training epochs", cache.epochs,
                 cfg.train.epochs)  # fmt: skip
    return CachedTeacherView(train_view, cache)


def _cached_teacher_must_not_run(module: nn.Module, args: Any) -> None:
    raise ActdistillError(
        "the teacher was run although teacher.cache is set: this method does not read the cached logits; "
        "drop teacher.cache for it"
    )


def check_method(method_cfg: dict[str, Any]) -> tuple[type[Distiller], dict[str, Any]]:
    """The registered method class and its hyper-parameters, checked against its keyword-only arguments."""
    params = dict(method_cfg)
    name = str(params.pop("name", "vanilla"))
    cls = METHODS.get(name)
    signature = inspect.signature(cls.__init__)
    allowed = {p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    for key in params:
        if key not in allowed:
            raise ActdistillError(
                f"method '{name}' has no hyper-parameter '{key}'.{suggest(key, allowed)} "
                f"Its hyper-parameters: {', '.join(sorted(allowed)) or 'none'}."
            )
    return cls, params


def build_method(
    method_cfg: dict[str, Any], student: nn.Module, teacher: nn.Module | None, num_data: int = 0
) -> Distiller:
    """Instantiate the registered method with its checked hyper-parameters (`num_data` for memory banks)."""
    cls, params = check_method(method_cfg)
    if "num_data" in inspect.signature(cls.__init__).parameters and not params.get("num_data"):
        params["num_data"] = num_data
    if cls.uses_teacher and teacher is None:
        raise ActdistillError(f"method '{cls.__name__}' needs a teacher: set teacher.checkpoint (or teacher.name)")
    return cls(student, teacher, **params)


def _versions() -> dict[str, str]:
    import torchvision

    try:
        import timm

        timm_version = timm.__version__
    except ImportError:  # pragma: no cover
        timm_version = "absent"
    return {
        "actdistill": __version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "timm": timm_version,
        "python": platform.python_version(),
    }


def _model_size(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    from actdistill.analysis.flops import count

    params = sum(p.numel() for p in model.parameters())
    try:
        gmacs = count(model, input_shape).gmacs
    except Exception as exc:  # noqa: BLE001 - counting is a report nicety, never a reason to stop training
        log.warning("could not count MACs of %s (%s)", type(model).__name__, exc)
        gmacs = float("nan")
    return {"params_m": params / 1e6, "gmacs": gmacs}


def fit(cfg: Config, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train `cfg.student` with `cfg.method` (and `cfg.teacher`), evaluate each epoch, write the run folder.

    Under torchrun every process calls this; rank 0 alone writes files and logs (docs/distributed.md).
    """
    check_method(cfg.method)  # fail on a bad method name or hyper-parameter before any work
    _check_train_config(cfg)
    ctx, device = init_distributed(cfg.train.device)
    try:
        return _fit(cfg, ctx, device, resume=resume, overwrite=overwrite)
    finally:
        ctx.close()


def _check_train_config(cfg: Config) -> None:
    if cfg.student.cache:
        raise ActdistillError("student.cache is not a setting; the teacher-output cache is teacher.cache=PATH")
    if cfg.train.accumulate_steps < 1:
        raise ActdistillError(f"train.accumulate_steps must be at least 1, got {cfg.train.accumulate_steps}")
    if cfg.train.save_every_steps < 0:
        raise ActdistillError(
            f"train.save_every_steps must be 0 (epoch ends only) or more, got {cfg.train.save_every_steps}"
        )


def _fit(cfg: Config, ctx: DistContext, device: torch.device, *, resume: bool, overwrite: bool) -> dict[str, Any]:
    method_cls, _ = check_method(cfg.method)
    run = prepare_run_dir(cfg.train.out_dir, resume=resume, overwrite=overwrite, create=ctx.is_main)
    amp_dtype = resolve_precision(cfg.train.precision, device)
    replicas = Replicas(ctx, device)
    seed_everything(cfg.train.seed)

    # Models first (their pretrained_cfg decides normalisation), datasets read only split files.
    classes = _class_names(cfg)
    num_classes = len(classes)
    student = create_model(cfg.student.name, num_classes, pretrained=cfg.student.pretrained, **cfg.student.kwargs)
    train_tf, test_tf = build_transforms(cfg.data, student.pretrained_cfg.mean, student.pretrained_cfg.std)
    data = build_datasets(cfg.data, train_tf, test_tf, seed=cfg.train.seed)
    if len(data.train) == 0 or len(data.test) == 0:  # type: ignore[arg-type]
        raise ActdistillError(
            f"dataset '{cfg.data.name}' at {cfg.data.root} has an empty train or test split "
            f"({len(data.train)} train / {len(data.test)} test samples); check data.root and the split files"  # type: ignore[arg-type]
        )
    if len(data.train) < ctx.world:  # type: ignore[arg-type]
        raise ActdistillError(
            f"dataset '{cfg.data.name}' at {cfg.data.root} has {len(data.train)} training samples, fewer than the "  # type: ignore[arg-type]
            f"{ctx.world} processes; start fewer (torchrun --nproc-per-node)"
        )

    method_name = str(cfg.method.get("name", "vanilla"))
    teacher = None
    if method_cls.uses_teacher:
        teacher = teacher_for_student(cfg.teacher, student, num_classes)
        if cfg.teacher.cache:
            data.train = open_teacher_cache(cfg, student, data.train, num_classes)
            teacher.register_forward_pre_hook(_cached_teacher_must_not_run)
    distiller = build_method(cfg.method, student, teacher, num_data=len(data.train)).to(device)  # type: ignore[arg-type]
    if cfg.train.channels_last:
        distiller.to(memory_format=torch.channels_last)
    if cfg.train.compile:  # compiles each model's __call__ in place; state_dict keys stay unchanged
        for model in (student, teacher):
            if model is not None:
                model.compile()

    # A stage may carry its own optimiser settings (paper 2's CVAE stage: Adam 1e-4, betas (0.8, 0.999)).
    optimizers = {
        s.name: build_optimizer(s.parameters(), dataclasses.replace(cfg.optim, **(getattr(s, "optim", None) or {})))
        for s in distiller.stages()
    }
    schedulers = {n: build_scheduler(o, cfg.sched, cfg.train.epochs) for n, o in optimizers.items()}
    scalers = {n: torch.amp.GradScaler(device.type) for n in optimizers} if amp_dtype == torch.float16 else {}
    generator = torch.Generator()
    shard = {"rank": ctx.rank, "world": ctx.world}
    train_loader = make_loader(
        data.train, cfg.data, train=True, device=device, generator=generator, seed=cfg.train.seed, **shard
    )
    test_loader = make_loader(data.test, cfg.data, train=False, device=device, **shard)
    layout = {
        "world_size": ctx.world,
        "per_device_batch": cfg.data.batch_size,
        "accumulate_steps": cfg.train.accumulate_steps,
        "global_batch": cfg.data.batch_size * ctx.world * cfg.train.accumulate_steps,
    }

    start_epoch, history, best = 1, [], {"epoch": 0, "value": -float("inf"), "metrics": {}}
    position, resume_rng = None, None
    if resume:
        ckpt = load_resumable(run / "checkpoints" / "last.pt", cfg.student.name, layout)
        restore_training_state(
            ckpt, run / "checkpoints" / "last.pt", student, distiller, optimizers, schedulers, scalers
        )
        start_epoch, history, best = ckpt["epoch"] + 1, ckpt["history"], ckpt["best"]
        position, resume_rng = ckpt.get("position"), ckpt["rng"]
        set_rng_state(resume_rng)
        where = f"epoch {start_epoch}" + (f", batch {position['batch']}" if position else "")
        log.info("resumed %s at %s", run, where)
    if ctx.is_main:
        save_config(cfg, run / "config.yaml")
    wrap_distiller(replicas, distiller, train_loader, device, amp_dtype)

    image_shape: tuple[int, ...] = (1, 3, cfg.data.image_size, cfg.data.image_size)
    if dataset_task(cfg.data.name) == "video":
        channels = 2 if cfg.data.modality == "flow" else 3
        image_shape = (1, channels, cfg.data.clip_len, cfg.data.image_size, cfg.data.image_size)
    size = _model_size(student, image_shape) if ctx.is_main else {"params_m": float("nan"), "gmacs": float("nan")}
    log.info(
        "%s: student %s (%.2f M params, %.3f GMACs), method %s, device %s, precision %s, %d train / %d test, "
        "global batch %d (%d processes × %d × %d accumulated)",
        cfg.name,
        cfg.student.name,
        size["params_m"],
        size["gmacs"],
        method_name,
        device,
        "fp32" if amp_dtype is None else str(amp_dtype).replace("torch.", ""),
        len(data.train),  # type: ignore[arg-type]
        len(data.test),  # type: ignore[arg-type]
        layout["global_batch"],
        ctx.world,
        cfg.data.batch_size,
        cfg.train.accumulate_steps,
    )
    metrics_log = MetricsLogger(run, tensorboard=cfg.train.tensorboard) if ctx.is_main else None
    model_spec = {"name": cfg.student.name, "num_classes": num_classes, "kwargs": cfg.student.kwargs}

    def checkpoint_state(epoch: int, position: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "student": student.state_dict(),
            "model": model_spec,
            "method": distiller.student_state(),
            "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in schedulers.items()},
            "scalers": {n: s.state_dict() for n, s in scalers.items()},
            "epoch": epoch,  # completed epochs; `position` says how far the next one got
            "position": position,
            "layout": layout,
            "rng": rng_state(),
            "history": history,
            "best": best,
            "config": cfg.to_dict(),
            "class_names": classes,
            "versions": _versions(),
        }

    def write(obj: Any, path: Path) -> Path:
        if ctx.is_main:
            atomic_save(obj, path)
        return path

    def mid_epoch_saver(epoch: int) -> Any:
        def save(state: EpochState) -> Path:
            position = {"epoch": epoch, **state.to_dict(replicas)}  # a collective: every rank calls save
            return write(checkpoint_state(epoch - 1, position), run / "checkpoints" / "last.pt")

        return save

    last_report: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        with stop_on_signals() as stop:
            for epoch in range(start_epoch, cfg.train.epochs + 1):
                tick = time.perf_counter()
                seed = epoch_seed(cfg.train.seed, epoch)
                seed_everything(seed)
                data.train.set_epoch(epoch)  # type: ignore[attr-defined]
                train_loader.batch_sampler.set_epoch(epoch)  # type: ignore[union-attr]
                generator.manual_seed(seed)
                state = None
                if position is not None and epoch == position["epoch"]:
                    state = EpochState.from_dict(position, with_totals=ctx.is_main)
                    set_rng_state(resume_rng)  # the RNG as it was after the last saved step
                lr = optimizers[next(iter(optimizers))].param_groups[0]["lr"]
                train_stats = train_one_epoch(
                    distiller,
                    train_loader,
                    optimizers,
                    device=device,
                    amp_dtype=amp_dtype,
                    epoch=epoch,
                    grad_clip=cfg.train.grad_clip,
                    progress=cfg.train.progress and ctx.is_main,
                    on_nonfinite=lambda _, e=epoch: write(
                        checkpoint_state(e - 1), run / "checkpoints" / "nonfinite.pt"
                    ),
                    accumulate_steps=cfg.train.accumulate_steps,
                    scalers=scalers,
                    replicas=replicas,
                    state=state,
                    save=mid_epoch_saver(epoch),
                    save_every=cfg.train.save_every_steps,
                    stop_requested=stop,
                )
                for sched in schedulers.values():
                    sched.step()
                replicas.sync_buffers(distiller)  # rank 0's BatchNorm statistics everywhere before evaluating
                record: dict[str, Any] = {"epoch": epoch, "lr": lr, "train": train_stats}
                if epoch % cfg.train.eval_every == 0 or epoch == cfg.train.epochs:
                    distiller.eval()  # dropout/drop-path off, BatchNorm statistics frozen while evaluating
                    last_report = evaluate(
                        distiller.predict,
                        test_loader,
                        device=device,
                        amp_dtype=amp_dtype,
                        class_names=classes,
                        replicas=replicas,
                    )
                    record["test"] = {
                        k: last_report[k] for k in ("top1", "top5", "mean_class_accuracy", "mAP", "skipped")
                    }
                    value = float(last_report[cfg.train.best_metric])
                    if value > best["value"]:
                        best = {"epoch": epoch, "value": value, "metrics": record["test"]}
                        write(checkpoint_state(epoch), run / "checkpoints" / "best.pt")
                        if ctx.is_main:
                            save_weights(student.state_dict(), run / "student_best.safetensors")
                record["epoch_time_s"] = round(time.perf_counter() - tick, 2)
                history.append(record)
                if metrics_log is not None:
                    metrics_log.log(record, step=epoch)
                end_state = checkpoint_state(epoch)
                last = write(end_state, run / "checkpoints" / "last.pt")
                write(end_state, run / "checkpoints" / f"epoch_{epoch:04d}.pt")
                if ctx.is_main:
                    rotate(run / "checkpoints", "epoch_*.pt", cfg.train.keep_last)
                    _log_epoch(record, cfg.train.epochs)
                if epoch < cfg.train.epochs and replicas.any(bool(stop()))[0]:
                    raise TrainingInterrupted(f"interrupted: saved {last}; continue with --resume", stop() or 2)
    finally:
        if metrics_log is not None:
            metrics_log.close()

    if ctx.is_main:
        save_weights(student.state_dict(), run / "student_last.safetensors")
    if not last_report:  # resumed a finished run: evaluate once so results.json is complete
        distiller.eval()
        last_report = evaluate(
            distiller.predict, test_loader, device=device, amp_dtype=amp_dtype, class_names=classes, replicas=replicas
        )
    results = {
        "name": cfg.name,
        "dataset": cfg.data.name,
        "student": cfg.student.name,
        "teacher": (cfg.teacher.name or "from checkpoint") if teacher is not None else None,
        "method": dict(cfg.method),
        **size,
        "input_shape": list(image_shape[1:]),
        "epochs": cfg.train.epochs,
        "seed": cfg.train.seed,
        "device": str(device),
        **layout,
        "precision": "fp32" if amp_dtype is None else str(amp_dtype).replace("torch.", ""),
        "train_time_s": round(time.perf_counter() - started, 1),
        "best": best,
        "last": {k: last_report[k] for k in ("top1", "top5", "mean_class_accuracy", "mAP")},
        "per_class_ap": last_report.get("per_class_ap"),
        "confusion_matrix": last_report.get("confusion_matrix"),
        "class_names": classes,
        "history": history,
        "versions": _versions(),
    }
    if ctx.is_main:
        (run / "results.json").write_text(json.dumps(results, indent=1))
    return results


def _class_names(cfg: Config) -> list[str]:
    from actdistill.data.build import build_split

    _, classes = build_split(cfg.data, "train", None)
    return list(classes)


def _log_epoch(record: dict[str, Any], epochs: int) -> None:
    train, test = record["train"], record.get("test", {})
    losses = {k: v for k, v in train.items() if k == "loss" or k.endswith("/loss")}  # one per stage if several
    shown = " ".join(f"{k} {v:.4f}" for k, v in losses.items()) or "loss nan"
    msg = f"epoch {record['epoch']}/{epochs} {shown} lr {record['lr']:.2e}"
    if test:
        msg += f" | test top1 {test['top1']:.4f} mAP {test['mAP']:.4f}"
    msg += f" | {record['epoch_time_s']:.1f}s (data {train['data_time_s']:.1f}s)"
    log.info(msg)
