"""Config → objects → training → `results.json`. The one place where names become objects."""

from __future__ import annotations

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
from actdistill.data.build import build_datasets, make_loader
from actdistill.data.transforms import build_image_transform
from actdistill.distill.base import Distiller
from actdistill.engine.checkpoint import atomic_save, load_checkpoint, rng_state, rotate, set_rng_state
from actdistill.engine.logging import MetricsLogger
from actdistill.engine.loop import evaluate, train_one_epoch
from actdistill.engine.optim import build_optimizer, build_scheduler
from actdistill.engine.runtime import epoch_seed, resolve_device, resolve_precision, seed_everything
from actdistill.errors import ActdistillError, suggest
from actdistill.models import create_model
from actdistill.models.renormalize import Renormalize
from actdistill.registry import METHODS

log = logging.getLogger("actdistill")


def prepare_run_dir(out_dir: str | Path, *, resume: bool, overwrite: bool) -> Path:
    """Create the run folder; refuse to overwrite an existing run unless asked to resume or overwrite."""
    run = Path(out_dir)
    has_run = (run / "checkpoints" / "last.pt").exists() or (run / "results.json").exists()
    if has_run and not (resume or overwrite):
        raise ActdistillError(
            f"run directory {run} already holds a run; pass --resume to continue it, --overwrite to replace it, "
            "or choose another train.out_dir"
        )
    if overwrite and run.exists() and not resume:
        for name in ("checkpoints", "tensorboard"):
            shutil.rmtree(run / name, ignore_errors=True)
        for name in ("metrics.jsonl", "results.json", "student_best.pt", "student_last.pt"):
            (run / name).unlink(missing_ok=True)
    if resume and not (run / "checkpoints" / "last.pt").exists():
        raise ActdistillError(f"--resume given but {run}/checkpoints/last.pt does not exist; start without --resume")
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
        teacher.load_state_dict(ckpt["student"])
        return teacher
    if not cfg.name:
        raise ActdistillError("this method needs a teacher: set teacher.name and teacher.checkpoint (a trained run)")
    return create_model(cfg.name, num_classes, pretrained=cfg.pretrained, **cfg.kwargs)


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


def _image_transforms(cfg: Config, student: nn.Module):
    mean, std = student.pretrained_cfg.mean, student.pretrained_cfg.std
    size = cfg.data.image_size
    train_tf = build_image_transform(True, size, mean, std, scale=(cfg.data.scale_min, 1.0))
    return train_tf, build_image_transform(False, size, mean, std)


def _versions() -> dict[str, str]:
    import torchvision

    try:
        import timm

        timm_version = timm.__version__
    except ImportError:  # pragma: no cover
        timm_version = "absent"
    return {
        "actdistill": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
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
    """Train `cfg.student` with `cfg.method` (and `cfg.teacher`), evaluate each epoch, write the run folder."""
    method_cls, _ = check_method(cfg.method)  # fail on a bad method name or hyper-parameter before any work
    run = prepare_run_dir(cfg.train.out_dir, resume=resume, overwrite=overwrite)
    device = resolve_device(cfg.train.device)
    amp_dtype = resolve_precision(cfg.train.precision, device)
    seed_everything(cfg.train.seed)

    # Models first (their pretrained_cfg decides normalisation), datasets read only split files.
    classes = _class_names(cfg)
    num_classes = len(classes)
    student = create_model(cfg.student.name, num_classes, pretrained=cfg.student.pretrained, **cfg.student.kwargs)
    train_tf, test_tf = _image_transforms(cfg, student)
    data = build_datasets(cfg.data, train_tf, test_tf, seed=cfg.train.seed)
    if len(data.train) == 0 or len(data.test) == 0:  # type: ignore[arg-type]
        raise ActdistillError(f"dataset '{cfg.data.name}' at {cfg.data.root} has an empty train or test split")

    method_name = str(cfg.method.get("name", "vanilla"))
    teacher = None
    if method_cls.uses_teacher:
        teacher = load_teacher(cfg.teacher, num_classes)
        t_cfg, s_cfg = teacher.pretrained_cfg, student.pretrained_cfg
        if tuple(t_cfg.mean) != tuple(s_cfg.mean) or tuple(t_cfg.std) != tuple(s_cfg.std):
            log.info("teacher expects mean/std %s/%s; re-normalising its input", t_cfg.mean, t_cfg.std)
            teacher = Renormalize(teacher, s_cfg.mean, s_cfg.std, t_cfg.mean, t_cfg.std)
    distiller = build_method(cfg.method, student, teacher, num_data=len(data.train)).to(device)  # type: ignore[arg-type]
    if cfg.train.channels_last:
        distiller.to(memory_format=torch.channels_last)

    optimizers = {s.name: build_optimizer(s.parameters(), cfg.optim) for s in distiller.stages()}
    schedulers = {n: build_scheduler(o, cfg.sched, cfg.train.epochs) for n, o in optimizers.items()}
    generator = torch.Generator()
    train_loader = make_loader(data.train, cfg.data, train=True, device=device, generator=generator)
    test_loader = make_loader(data.test, cfg.data, train=False, device=device)

    start_epoch, history, best = 1, [], {"epoch": 0, "value": -float("inf"), "metrics": {}}
    if resume:
        ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
        student.load_state_dict(ckpt["student"])
        distiller.load_student_state(ckpt.get("method", {}))
        for name, opt in optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        for name, sched in schedulers.items():
            sched.load_state_dict(ckpt["schedulers"][name])
        set_rng_state(ckpt["rng"])
        start_epoch, history, best = ckpt["epoch"] + 1, ckpt["history"], ckpt["best"]
        log.info("resumed %s at epoch %d", run, start_epoch)
    save_config(cfg, run / "config.yaml")

    image_shape = (1, 3, cfg.data.image_size, cfg.data.image_size)
    size = _model_size(student, image_shape)
    log.info(
        "%s: student %s (%.2f M params, %.3f GMACs), method %s, device %s, precision %s, %d train / %d test",
        cfg.name,
        cfg.student.name,
        size["params_m"],
        size["gmacs"],
        method_name,
        device,
        "fp32" if amp_dtype is None else str(amp_dtype).replace("torch.", ""),
        len(data.train),
        len(data.test),
    )
    metrics_log = MetricsLogger(run, tensorboard=cfg.train.tensorboard)
    model_spec = {"name": cfg.student.name, "num_classes": num_classes, "kwargs": cfg.student.kwargs}

    def checkpoint_state(epoch: int) -> dict[str, Any]:
        return {
            "student": student.state_dict(),
            "model": model_spec,
            "method": distiller.student_state(),
            "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in schedulers.items()},
            "epoch": epoch,
            "rng": rng_state(),
            "history": history,
            "best": best,
            "config": cfg.to_dict(),
            "class_names": classes,
            "versions": _versions(),
        }

    last_report: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        for epoch in range(start_epoch, cfg.train.epochs + 1):
            tick = time.perf_counter()
            seed = epoch_seed(cfg.train.seed, epoch)
            seed_everything(seed)
            data.train.set_epoch(epoch)  # type: ignore[attr-defined]
            generator.manual_seed(seed)
            lr = optimizers[next(iter(optimizers))].param_groups[0]["lr"]
            train_stats = train_one_epoch(
                distiller,
                train_loader,
                optimizers,
                device=device,
                amp_dtype=amp_dtype,
                epoch=epoch,
                grad_clip=cfg.train.grad_clip,
                progress=cfg.train.progress,
                on_nonfinite=lambda e=epoch: atomic_save(checkpoint_state(e - 1), run / "checkpoints" / "nonfinite.pt"),
            )
            for sched in schedulers.values():
                sched.step()
            record: dict[str, Any] = {"epoch": epoch, "lr": lr, "train": train_stats}
            if epoch % cfg.train.eval_every == 0 or epoch == cfg.train.epochs:
                last_report = evaluate(
                    distiller.predict, test_loader, device=device, amp_dtype=amp_dtype, class_names=classes
                )
                record["test"] = {k: last_report[k] for k in ("top1", "top5", "mean_class_accuracy", "mAP")}
                value = float(last_report[cfg.train.best_metric])
                if value > best["value"]:
                    best = {"epoch": epoch, "value": value, "metrics": record["test"]}
                    atomic_save(checkpoint_state(epoch), run / "checkpoints" / "best.pt")
                    atomic_save(student.state_dict(), run / "student_best.pt")
            record["epoch_time_s"] = round(time.perf_counter() - tick, 2)
            history.append(record)
            metrics_log.log(record, step=epoch)
            atomic_save(checkpoint_state(epoch), run / "checkpoints" / "last.pt")
            atomic_save(checkpoint_state(epoch), run / "checkpoints" / f"epoch_{epoch:04d}.pt")
            rotate(run / "checkpoints", "epoch_*.pt", cfg.train.keep_last)
            _log_epoch(record, cfg.train.epochs)
    finally:
        metrics_log.close()

    atomic_save(student.state_dict(), run / "student_last.pt")
    if not last_report:  # resumed a finished run: evaluate once so results.json is complete
        last_report = evaluate(distiller.predict, test_loader, device=device, amp_dtype=amp_dtype, class_names=classes)
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
    (run / "results.json").write_text(json.dumps(results, indent=1))
    return results


def _class_names(cfg: Config) -> list[str]:
    from actdistill.data.build import DATASETS

    _, classes = DATASETS.get(cfg.data.name)(cfg.data, "train", None)
    return list(classes)


def _log_epoch(record: dict[str, Any], epochs: int) -> None:
    train, test = record["train"], record.get("test", {})
    msg = f"epoch {record['epoch']}/{epochs} loss {train.get('loss', float('nan')):.4f} lr {record['lr']:.2e}"
    if test:
        msg += f" | test top1 {test['top1']:.4f} mAP {test['mAP']:.4f}"
    msg += f" | {record['epoch_time_s']:.1f}s (data {train['data_time_s']:.1f}s)"
    log.info(msg)
