"""Config → `Run`: every object a training run needs, built and checked before the first batch.

`build_run` is the one place where names from a recipe become objects: the task (from the dataset), the student
and teacher (`create_model`), the method (`METHODS`), datasets and loaders, one optimiser and schedule per method
stage, the evaluator, and the data-parallel wrapper. `engine/fit.py` then runs it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from actdistill.batch import CACHE_KEYS, missing_keys
from actdistill.config import Config, ModelConfig
from actdistill.data.build import make_loader
from actdistill.distill.base import Distiller
from actdistill.distill.cache import CachedTeacherView, TeacherCache, cache_key
from actdistill.engine.distributed import DistContext, Replicas, wrap_distiller
from actdistill.engine.optim import Schedule, build_optimizer
from actdistill.engine.tasks import Task, TaskData
from actdistill.errors import ActdistillError
from actdistill.models import create_model
from actdistill.models.class_remap import ClassRemap, class_order
from actdistill.models.renormalize import Renormalize
from actdistill.registry import METHODS
from actdistill.utils.checkpoint import load_checkpoint, state_mismatch
from actdistill.utils.flops import count
from actdistill.utils.runtime import autocast, resolve_precision

log = logging.getLogger("actdistill")


@dataclass
class Run:
    """Everything one training run uses; built by `build_run`, run by `engine.fit`."""

    cfg: Config
    task: Task
    ctx: DistContext
    device: torch.device
    amp_dtype: torch.dtype | None
    folder: Path
    student: nn.Module
    teacher: nn.Module | None
    method: Distiller
    data: TaskData
    train_loader: DataLoader
    eval_loaders: dict[str, DataLoader]  # "val" (model selection, when there is one) and "test" (reported)
    optimizers: dict[str, torch.optim.Optimizer]
    schedules: dict[str, Schedule]
    scalers: dict[str, torch.amp.GradScaler]
    replicas: Replicas
    evaluator: Any
    model_spec: dict[str, Any]
    predictor_spec: dict[str, Any]
    selection: str  # the split `best` is chosen on: val | test | none
    layout: dict[str, int] = field(default_factory=dict)
    size: dict[str, float] = field(default_factory=dict)

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]


# --- method --------------------------------------------------------------------------------------------------------


def method_params(method_cfg: dict[str, Any], where: str = "") -> tuple[type[Distiller], dict[str, Any]]:
    """The registered method class and its hyper-parameters, checked against its keyword-only arguments."""
    params = dict(method_cfg)
    name = str(params.pop("name", "vanilla"))
    METHODS.check_params(name, params, where)
    return METHODS.get(name), params


# Hyper-parameter names whose values have an obvious valid range, whatever the method.
_POSITIVE = ("temperature", "kd_temperature", "t_start", "t_end", "tau")
_FRACTIONS = ("alpha",)


def check_method_values(name: str, params: dict[str, Any], where: str = "") -> None:
    """Ranges every method shares by name: temperatures > 0, weights ≥ 0, KD's α in [0, 1] (one error line)."""
    prefix = f"{where + ': ' if where else ''}method.{{}} of '{name}'"
    for key, value in params.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if key in _POSITIVE and not value > 0:
            raise ActdistillError(f"{prefix.format(key)} must be > 0; got {value}")
        if (key.endswith("weight") or key in ("beta", "gamma")) and value < 0:
            raise ActdistillError(f"{prefix.format(key)} must be ≥ 0; got {value}")
        if key in _FRACTIONS and name in ("kd", "pcl_kd") and not 0 <= value <= 1:
            raise ActdistillError(f"{prefix.format(key)} must be in [0, 1]; got {value}")


def check_method(method_cfg: dict[str, Any], task: Task, where: str = "") -> type[Distiller]:
    """The method exists, its hyper-parameters are its own and in range, and it is a method of the run's task."""
    cls, params = method_params(method_cfg, where)
    check_method_values(str(method_cfg.get("name", "vanilla")), params, where)
    name = str(method_cfg.get("name", "vanilla"))
    method_task = METHODS.meta(name).get("task", "classification")
    if method_task != task.name:
        same = [n for n in METHODS.names() if METHODS.meta(n).get("task", "classification") == task.name]
        raise ActdistillError(
            f"{where + ': ' if where else ''}method '{name}' is a {method_task} method but dataset runs a {task.name} "
            f"task; its methods: {', '.join(same)}"
        )
    return cls


def build_method(
    method_cfg: dict[str, Any],
    student: nn.Module,
    teacher: nn.Module | None,
    *,
    num_data: int = 0,
    train_targets: list[int] | None = None,
) -> Distiller:
    """Instantiate the registered method; `num_data` (memory banks) and `train_targets` (class-aware sampling)
    are passed to methods whose `__init__` takes them."""
    cls, params = method_params(method_cfg)
    wanted = METHODS.hyperparameters(str(method_cfg.get("name", "vanilla")))
    if "num_data" in wanted and not params.get("num_data"):
        params["num_data"] = num_data
    if "train_labels" in wanted and params.get("train_labels") is None and train_targets is not None:
        params["train_labels"] = train_targets
    if cls.uses_teacher and teacher is None:
        raise ActdistillError(f"method '{method_cfg.get('name')}' needs a teacher: set teacher.checkpoint (or name)")
    try:
        return cls(student, teacher, **params)
    except (ValueError, TypeError) as exc:  # a method's own check of its settings: one line, not a traceback
        raise ActdistillError(f"method '{method_cfg.get('name')}': {str(exc).splitlines()[0]}") from None


# --- models --------------------------------------------------------------------------------------------------------


def model_spec(cfg: ModelConfig, num_classes: int, extra_kwargs: dict[str, Any]) -> dict[str, Any]:
    """`{"name", "num_classes", "kwargs"}`: what `create_model` needs to rebuild the network."""
    return {"name": cfg.name, "num_classes": num_classes, "kwargs": {**extra_kwargs, **cfg.kwargs}}


def load_teacher(cfg: ModelConfig, classes: list[str], extra_kwargs: dict[str, Any]) -> tuple[nn.Module, dict]:
    """The teacher and its model spec: from a trained run (`teacher.checkpoint`) or from weights (`pretrained`).

    A checkpoint whose classes are the dataset's in another order is remapped by name (said once); other classes
    are refused.
    """
    if not cfg.checkpoint:
        if not cfg.name:
            raise ActdistillError("this method needs a teacher: set teacher.checkpoint (a trained run) or teacher.name")
        spec = model_spec(cfg, len(classes), extra_kwargs)
        return create_model(cfg.name, len(classes), pretrained=cfg.pretrained, **spec["kwargs"]), spec
    ckpt = load_checkpoint(cfg.checkpoint)
    spec = dict(ckpt.get("model", {}))
    name = spec.get("name") or cfg.name
    if cfg.name and name != cfg.name:
        raise ActdistillError(
            f"teacher.checkpoint {cfg.checkpoint} holds a '{name}' model but teacher.name is '{cfg.name}'; "
            "fix teacher.name or leave it empty"
        )
    saved_classes = ckpt.get("class_names")
    order = class_order(saved_classes, classes, "teacher.checkpoint", cfg.checkpoint) if saved_classes else None
    num = spec.get("num_classes", len(classes))
    if num != len(classes):
        raise ActdistillError(
            f"teacher.checkpoint {cfg.checkpoint} predicts {num} classes but the dataset has {len(classes)}; "
            "train the teacher on the same dataset (same class list)"
        )
    spec = {"name": name, "num_classes": num, "kwargs": {**spec.get("kwargs", {}), **cfg.kwargs}}
    teacher = create_model(name, num, pretrained=False, **spec["kwargs"])
    try:
        teacher.load_state_dict(ckpt["student"])
    except RuntimeError:
        raise ActdistillError(
            f"teacher.checkpoint {cfg.checkpoint} does not fit a '{name}' model "
            f"({state_mismatch(teacher, ckpt['student'])}); "
            "point it at a run trained with that architecture or fix teacher.name / teacher.kwargs"
        ) from None
    if order is not None:
        log.info("teacher.checkpoint %s lists the classes in another order; its outputs are remapped by name",
                 cfg.checkpoint)  # fmt: skip
        teacher = ClassRemap(teacher, order)
    return teacher, spec


def teacher_for_student(
    cfg: ModelConfig, student: nn.Module, classes: list[str], extra_kwargs: dict[str, Any] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen teacher, re-normalising the student's input when the two expect different mean/std."""
    teacher, spec = load_teacher(cfg, classes, extra_kwargs or {})
    t_cfg, s_cfg = getattr(teacher, "pretrained_cfg", None), getattr(student, "pretrained_cfg", None)
    if (
        t_cfg is not None
        and s_cfg is not None
        and (tuple(t_cfg.mean) != tuple(s_cfg.mean) or tuple(t_cfg.std) != tuple(s_cfg.std))
    ):
        log.info("teacher expects mean/std %s/%s; re-normalising its input", t_cfg.mean, t_cfg.std)
        teacher = Renormalize(teacher, s_cfg.mean, s_cfg.std, t_cfg.mean, t_cfg.std)
    return teacher, spec


# --- teacher cache -------------------------------------------------------------------------------------------------


def teacher_taps(method: Distiller) -> tuple:
    """The teacher feature maps a method reads (every sub-method of a combo), as taps."""
    subs = getattr(method, "subs", None) or [method]
    return tuple(dict.fromkeys(t for sub in subs for t in getattr(sub, "teacher_taps", ())))


def teacher_logits_suffice(method: Distiller, name: str) -> bool:
    """Whether the method needs nothing of its teacher but the logits (a cache or a prefetch can then serve it)."""
    if teacher_taps(method) or method.reads_pooled_teacher_feature:
        return False
    return METHODS.meta(name).get("knowledge") in ("logits", "none") or method.reads_only_teacher_logits


def check_teacher_prefetch(cfg: Config, task: Task, method: Distiller) -> None:
    """`teacher.prefetch` serves classification methods that read only the teacher's logits."""
    name = str(cfg.method.get("name", "vanilla"))
    if method.teacher is None:
        raise ActdistillError(f"teacher.prefetch: method '{name}' trains without a teacher; drop teacher.prefetch")
    if task.name != "classification" or not teacher_logits_suffice(method, name):
        raise ActdistillError(
            f"teacher.prefetch serves classification methods that read only the teacher's logits; method '{name}' "
            f"({task.name}) runs its teacher in other ways: drop teacher.prefetch"
        )


def open_teacher_cache(cfg: Config, student: nn.Module, method: Distiller, train_view: Any, num_classes: int) -> Any:
    """Wrap the training view so that samples carry the cached teacher outputs this method reads; refuse a stale
    cache, or one that lacks what the method needs (with the command that builds the right one)."""
    cache = TeacherCache(cfg.teacher.cache)
    name = str(cfg.method.get("name", "vanilla"))
    rebuild = f"rebuild it with `actdistill cache build CONFIG --out {cache.path} --overwrite`"
    taps = [str(t) for t in teacher_taps(method)]
    if method.reads_pooled_teacher_feature:
        layer = str(cfg.method.get("teacher_layer", METHODS.hyperparameters(name)["teacher_layer"]))
        if cache.feature_layer != layer:
            stored = "no pooled features" if cache.feature_layer is None else f"pooled layer {cache.feature_layer}"
            raise ActdistillError(
                f"method '{name}' reads the teacher's pooled layer {layer} but teacher.cache {cache.path} holds "
                f"{stored}; {rebuild} --features {layer}"
            )
    elif taps:
        missing = [t for t in taps if t not in cache.map_taps]
        if missing:
            raise ActdistillError(
                f"method '{name}' reads the teacher maps {missing} but teacher.cache {cache.path} holds "
                f"{cache.map_taps or 'no maps'}; {rebuild} (it stores the maps the recipe's method reads)"
            )
    elif not teacher_logits_suffice(method, name):
        raise ActdistillError(
            f"method '{name}' runs its teacher in ways a cache cannot replay; drop teacher.cache to run it online"
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


# --- the run -------------------------------------------------------------------------------------------------------


def selection_split(cfg: Config, data: TaskData) -> str:
    """Where `best` is chosen: `val` when there is a validation split; `test` only when asked (labelled)."""
    choice = cfg.train.select_on
    if choice == "auto":
        return "val" if data.val is not None else "none"
    if choice == "val" and data.val is None:
        raise ActdistillError(
            "train.select_on=val needs a validation split: set data.val_fraction (e.g. 0.1), or train.select_on=none "
            "to keep only the last epoch (or test, labelled as optimistic in every report)"
        )
    return choice


def _tensors(out: Any) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _tensors(v)]
    return []


def choose_precision(
    cfg: Config, task: Task, ctx: DistContext, device: torch.device, student: nn.Module, teacher: nn.Module | None
) -> torch.dtype | None:
    """`train.precision` resolved for this device; on CPU, `auto` and `bf16` time one step of the run's own models
    in fp32 and bf16 (eval mode, RNG untouched) — the same decision on every process (rank 0's)."""
    shape = task.input_shape(cfg)
    batch = max(1, min(cfg.data.batch_size, 8))

    def step(dtype: torch.dtype | None) -> None:
        with torch.random.fork_rng(devices=[]):
            x = torch.randn(batch, *shape[1:], device=device)
        with autocast(device, dtype):
            if teacher is not None and task.name == "classification":  # other tasks' teachers may read other inputs
                with torch.no_grad():
                    teacher(x)
            loss = sum(t.float().mean() for t in _tensors(student(x)) if t.is_floating_point())
        loss.backward()  # type: ignore[union-attr]
        student.zero_grad(set_to_none=True)

    student.to(device).eval()
    if teacher is not None:
        teacher.to(device).eval()
    try:
        dtype = resolve_precision(cfg.train.precision, device, probe=step)
    finally:
        student.train()
    if ctx.world > 1:  # every process must train in the same precision
        flag = torch.tensor([0 if dtype is None else 1 if dtype == torch.bfloat16 else 2], device=device)
        torch.distributed.broadcast(flag, src=0)
        dtype = [None, torch.bfloat16, torch.float16][int(flag.item())]
    return dtype


def _model_size(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    params = sum(p.numel() for p in model.parameters())
    try:
        gmacs = count(model, input_shape).gmacs
    except Exception as exc:  # noqa: BLE001 - counting is a report nicety, never a reason to stop training
        log.warning("could not count MACs of %s (%s)", type(model).__name__, exc)
        gmacs = float("nan")
    return {"params_m": params / 1e6, "gmacs": gmacs}


def build_run(cfg: Config, task: Task, ctx: DistContext, device: torch.device, folder: Path) -> Run:
    """Build models, method, data, loaders, optimisers and schedules for `cfg` (checked before any batch)."""
    method_cls = check_method(cfg.method, task)
    classes = task.class_names(cfg)
    extra = task.student_kwargs(cfg)
    student_spec = model_spec(cfg.student, len(classes), extra)
    student = create_model(cfg.student.name, len(classes), pretrained=cfg.student.pretrained, **student_spec["kwargs"])
    data = task.build_data(cfg, student)
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
    if not cfg.student.pretrained:
        task.prepare_student(student, data)
    teacher, teacher_spec = None, None
    provided = set(task.batch_keys) | (CACHE_KEYS if cfg.teacher.cache and method_cls.uses_teacher else set())
    if method_cls.uses_teacher:
        teacher, teacher_spec = teacher_for_student(cfg.teacher, student, classes, extra)
    amp_dtype = choose_precision(cfg, task, ctx, device, student, teacher)
    missing = missing_keys(method_cls.requires, provided)
    if missing:
        raise ActdistillError(f"method '{cfg.method.get('name')}' needs batch keys {missing} that {task.name} data "
                              "does not provide")  # fmt: skip
    method = build_method(
        cfg.method,
        student,
        teacher,
        num_data=len(data.train),
        train_targets=data.train_targets,  # type: ignore[arg-type]
    ).to(device)
    if teacher is not None and cfg.teacher.cache:
        if task.name != "classification":
            raise ActdistillError(
                f"teacher.cache serves classification methods; {task.name} methods run their teacher online: drop "
                "teacher.cache"
            )
        data.train = open_teacher_cache(cfg, student, method, data.train, len(classes))
        teacher.register_forward_pre_hook(_cached_teacher_must_not_run)
    if cfg.teacher.prefetch:
        check_teacher_prefetch(cfg, task, method)
    if cfg.train.channels_last:
        method.to(memory_format=torch.channels_last)
    if cfg.train.compile:  # compiles each model's __call__ in place; state_dict keys stay unchanged
        for model in (student, teacher):
            if model is not None:
                model.compile()

    shard = {"rank": ctx.rank, "world": ctx.world, "collate": data.collate}
    generator = torch.Generator()
    train_loader = make_loader(
        data.train, cfg.data, train=True, device=device, generator=generator, seed=cfg.train.seed, **shard
    )
    eval_loaders = {"test": make_loader(data.test, cfg.data, train=False, device=device, **shard)}
    if data.val is data.test:  # PCL validates on the test videos' fixed tuples: one loader, evaluated once
        eval_loaders["val"] = eval_loaders["test"]
    elif data.val is not None:
        eval_loaders["val"] = make_loader(data.val, cfg.data, train=False, device=device, **shard)

    steps_per_epoch = max(1, -(-len(train_loader) // cfg.train.accumulate_steps))
    monitor = cfg.sched.monitor or task.default_monitor
    if cfg.sched.name == "plateau" and monitor not in task.metrics:
        raise ActdistillError(f"sched.monitor '{monitor}' is not a metric of the {task.name} task "
                              f"({', '.join(task.metrics)})")  # fmt: skip
    optimizers, schedules = {}, {}
    for stage in method.stages():
        # A stage may carry its own optimiser settings (paper 2's CVAE stage: Adam 1e-4, betas (0.8, 0.999)).
        optim_cfg = dataclasses.replace(cfg.optim, **(getattr(stage, "optim", None) or {}))
        optimizers[stage.name] = build_optimizer(stage.parameters(), optim_cfg)
        schedules[stage.name] = Schedule(
            optimizers[stage.name], cfg.sched, cfg.train.epochs, steps_per_epoch, monitor,
            minimise=monitor in task.lower_is_better,
        )  # fmt: skip
    scalers = {n: torch.amp.GradScaler(device.type) for n in optimizers} if amp_dtype == torch.float16 else {}
    replicas = Replicas(ctx, device)
    wrap_distiller(replicas, method, train_loader, device, amp_dtype)
    run = Run(
        cfg=cfg,
        task=task,
        ctx=ctx,
        device=device,
        amp_dtype=amp_dtype,
        folder=folder,
        student=student,
        teacher=teacher,
        method=method,
        data=data,
        train_loader=train_loader,
        eval_loaders=eval_loaders,
        optimizers=optimizers,
        schedules=schedules,
        scalers=scalers,
        replicas=replicas,
        evaluator=task.evaluator(cfg, classes),
        model_spec=student_spec,
        predictor_spec=method.predictor_spec(student_spec, teacher_spec),
        selection=selection_split(cfg, data),
    )
    run.layout = {
        "world_size": ctx.world,
        "per_device_batch": cfg.data.batch_size,
        "accumulate_steps": cfg.train.accumulate_steps,
        "global_batch": cfg.data.batch_size * ctx.world * cfg.train.accumulate_steps,
    }
    nan = float("nan")
    # The network evaluation scores (paper 2: the student with its attention module), as Table 1 counts it.
    scored = method.predictor()
    run.size = _model_size(scored, task.input_shape(cfg)) if ctx.is_main else {"params_m": nan, "gmacs": nan}
    return run
