"""Run configuration: dataclasses, flat YAML recipes and `section.key=value` command-line overrides.

A recipe is one YAML file with one level of sections (`data`, `student`, `teacher`, `method`, `optim`,
`sched`, `train`, `eval`) and no inheritance; every task (classification, paper 3's PCL, temporal detection) uses
the same sections. Unknown sections or keys are errors with a suggestion that name where the key came from (the
recipe file or the command line), never silently ignored. The `method` section holds `name` plus that method's
hyper-parameters, checked against the method's keyword-only arguments. `check_values` checks every value's range
before any work starts; the engine adds the checks that need the task (metric names, method/task match).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from actdistill.errors import ActdistillError, suggest


@dataclass
class DataConfig:
    """Dataset, input size and loader settings."""

    name: str = "stanford40"
    root: str = ""
    image_size: int = 224
    batch_size: int = 32
    eval_batch_size: int = 0  # 0: same as batch_size
    num_workers: int = 2
    crop_person: bool = False  # Stanford 40: crop to the XML person box (off in paper 1)
    scale_min: float = 0.08  # RandomResizedCrop lower scale (torchvision default; paper 1 gives none)
    hflip: bool = True  # random horizontal flips in training; off for classes that differ only in direction
    limit_train: int = 0  # >0: use only the first N training samples (smoke runs)
    limit_test: int = 0
    # Video datasets (ucf101, hmdb51, video_folder, video_list); docs/video_data.md.
    split: int = 1  # official split number (1-3)
    annotation_dir: str = ""  # split files; default: the official folder inside or beside root
    clip_len: int = 16  # frames per clip (paper 2: 64 consecutive frames)
    frame_interval: int = 1
    num_clips: int = 1  # test-time clips per video (scores averaged)
    modality: str = "rgb"  # rgb | flow | rgb+flow
    flow_root: str = ""
    resize: int = 0  # short-side resize before cropping (0: none)
    train_list: str = ""  # video_list: CSV/TSV files
    test_list: str = ""
    multiscale_offsets: str = "crop"  # video MultiScaleCrop offsets: crop (clean) | target (paper 2's code)
    val_fraction: float = 0.0  # >0: a stratified, seeded validation split carved out of train (model selection)
    allow_empty_classes: bool = False  # a class with no training sample is an error unless this is set
    # Paper 3's PCL tuples (dataset pcl_ucf101; docs/pcl_kd.md): 3 clips of clip_len frames, tuple_interval apart.
    tuple_len: int = 3
    tuple_interval: int = 8
    tuple_mode: str = "faithful"  # faithful (PCL's code) | clean
    remote_rule: str = "both_sides"  # remote clip (label 4): both_sides (PCL's code) | either_side
    remote_min_gap: int = 16
    val_repeats: int = 1  # seeded tuples per test video (PCL: 1)
    augment: dict[str, Any] = field(default_factory=dict)  # PCL per-clip augmentation (ssl/augment.py keys)
    # Temporal detection (dataset detection_features; docs/detection.md): root = the student's feature folder.
    annotations: str = ""  # folder of <Class>_<subset>.txt files or an ActionFormer-style .json
    teacher_root: str = ""  # the teacher's feature folder when it used another backbone (same stride)
    classes: str = ""  # classes.txt (one a line); empty: the sorted training labels
    train_subset: str = "val"
    test_subset: str = "test"
    crop_len: int = 128  # feature steps per training crop (0: whole videos)


@dataclass
class ModelConfig:
    """A network by registry or timm name; `pretrained` is False, True (hub) or a local checkpoint path."""

    name: str = ""
    pretrained: Any = False
    checkpoint: str = ""  # teacher: a trained actdistill run (checkpoints/best.pt) or a state-dict file
    cache: str = ""  # teacher: replay stored outputs (`actdistill cache build`) instead of running it
    prefetch: bool = False  # teacher: its logits for the next batch computed in a background thread (logit methods)
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """Optimiser: `sgd` or `adamw`. Defaults are paper 1's (SGD, lr 1e-3, momentum 0.9, wd 1e-5)."""

    name: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-5
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class SchedConfig:
    """LR schedule: `step` (StepLR), `cosine`, `none` or `plateau` (ReduceLROnPlateau on `monitor`, paper 3's PCL);
    optional linear warm-up. `per_step`: warm-up and cosine advance every optimiser step instead of every epoch."""

    name: str = "step"
    step_size: int = 5
    gamma: float = 0.3
    min_lr: float = 0.0
    warmup_epochs: int = 0
    per_step: bool = False
    patience: int = 10  # plateau: epochs without improvement before the LR is multiplied by gamma
    monitor: str = ""  # plateau: metric of the selection split (default: the task's loss)


@dataclass
class TrainConfig:
    """Loop settings. `precision`: auto | bf16 | fp16 | fp32 (auto = bf16 where the device supports it)."""

    epochs: int = 15
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    out_dir: str = "runs/default"
    eval_every: int = 1
    keep_last: int = 2
    best_metric: str = ""  # empty: the task's (classification mAP, pcl pretext_acc, detection average_map)
    grad_clip: float = 0.0
    channels_last: bool = False
    compile: bool = False
    progress: bool = True
    tensorboard: bool = True
    accumulate_steps: int = 1  # micro-batches per optimizer step; global batch = batch_size × world × this
    save_every_steps: int = 0  # >0: also write checkpoints/last.pt every N optimizer steps (mid-epoch resume)
    select_on: str = "auto"  # best.pt chosen on: val | test (labelled optimistic) | none | auto (val if present)
    dist_timeout_s: float = 1800.0  # torchrun: a rank silent this long ends the job with a message


@dataclass
class EvalConfig:
    """How models are scored. Classification: `temporal_pooling` of per-step video logits, two-stream `fusion`.
    Detection: protocol, tIoU thresholds, NMS. (PCL's retrieval and linear probe: `actdistill ssl-grid`'s
    `evaluation:` block.)"""

    temporal_pooling: str = "mean_logits"  # mean_logits | sum_softmax (paper 2's official test code)
    fusion: str = "softmax"  # --fuse-flow default: softmax | logits | p2 (paper 2's rule)
    protocol: str = "thumos14"  # detection: thumos14 | activitynet | thumos14_updated
    tiou: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5])
    nms: str = "soft"  # detection: soft | hard
    iou_threshold: float = 0.5
    sigma: float = 0.5
    max_segments: int = 200
    pre_nms_threshold: float = 0.001


@dataclass
class Config:
    """A whole run. `method` is a free-form mapping: `name` plus the method's hyper-parameters."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    teacher: ModelConfig = field(default_factory=ModelConfig)
    method: dict[str, Any] = field(default_factory=lambda: {"name": "vanilla"})
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON serialisable)."""
        d = dataclasses.asdict(self)
        d["optim"]["betas"] = list(d["optim"]["betas"])
        return d


_SECTIONS = {f.name for f in fields(Config)} - {"name"}


def _check_keys(section: str, given: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in given:
        if key not in allowed:
            raise ActdistillError(
                f"{where}: unknown key '{section}.{key}'.{suggest(key, allowed)} "
                f"Valid keys of '{section}': {', '.join(sorted(allowed))}."
            )


def config_from_dict(raw: dict[str, Any], where: str = "config", base: Config | None = None) -> Config:
    """A `Config` from a nested mapping applied over `base` (default: all defaults), rejecting unknown sections and
    keys with suggestions; `where` (a file, "command line") is named in every error."""
    raw = dict(raw or {})
    cfg = copy.deepcopy(base) if base is not None else Config()
    if "name" in raw:
        cfg.name = str(raw.pop("name"))
    for section, values in raw.items():
        if section not in _SECTIONS:
            raise ActdistillError(
                f"{where}: unknown section '{section}'.{suggest(section, _SECTIONS)} "
                f"Valid sections: name, {', '.join(sorted(_SECTIONS))}."
            )
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ActdistillError(f"{where}: section '{section}' must be a mapping of key: value, got {values!r}")
        if section == "method":
            cfg.method = {**cfg.method, **values} if "name" not in values else dict(values)
            continue
        target = getattr(cfg, section)
        allowed = {f.name for f in fields(target)}
        _check_keys(section, values, allowed, where)
        for key, value in values.items():
            old = getattr(target, key)
            value = _coerce(section, key, value, old, where)
            if isinstance(old, dict) and base is not None:  # a mapping setting given again: entries merge
                value = {**old, **value}
            setattr(target, key, value)
    return cfg


def _coerce(section: str, key: str, value: Any, default: Any, where: str) -> Any:
    """Convert YAML scalars to the field's type (e.g. `1e-3` parsed as a string by YAML 1.1)."""
    if section in ("student", "teacher") and key == "pretrained":
        return value
    expected = type(default).__name__
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError
            return value
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if isinstance(default, int):
            if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, str):
            if isinstance(value, (dict, list)):
                raise ValueError
            return "" if value is None else str(value)
        if isinstance(default, tuple):
            return tuple(float(v) for v in value)
        if isinstance(default, list):
            if not isinstance(value, (list, tuple)):
                raise ValueError
            kind = type(default[0]) if default else (lambda v: v)
            return [kind(v) for v in value]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (TypeError, ValueError):
        raise ActdistillError(f"{where}: '{section}.{key}' must be {expected}, got {value!r}") from None
    return value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["optim.lr=0.01", "student.kwargs.attention=true"]` → nested dict; values parsed as YAML scalars.

    `section.key=value` sets a setting; `section.key.sub=value` sets one entry of a mapping setting (`student.kwargs`,
    `teacher.kwargs`, `data.augment`) and leaves its other entries as they are.
    """
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ActdistillError(f"override '{item}' must look like section.key=value (e.g. optim.lr=0.01)")
        dotted, value = item.split("=", 1)
        parts = dotted.strip().split(".")
        if len(parts) == 1 and parts[0] == "name":
            nested["name"] = value
            continue
        if len(parts) not in (2, 3) or not all(parts):
            raise ActdistillError(
                f"override '{item}': key must be section.key (e.g. train.epochs=5) or section.key.entry for a "
                "mapping (e.g. student.kwargs.attention=true)"
            )
        parsed = yaml.safe_load(value) if value != "" else ""
        section = nested.setdefault(parts[0], {})
        if len(parts) == 2:
            section[parts[1]] = parsed
        else:
            entry = section.setdefault(parts[1], {})
            if not isinstance(entry, dict):
                raise ActdistillError(f"override '{item}': {parts[0]}.{parts[1]} was also given as a whole value")
            entry[parts[2]] = parsed
    return nested


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge two nested config mappings (one level of sections); `update` wins."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def split_recipe_args(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """CLI `[CONFIG] [overrides...]`: a first argument that is an override, not a YAML file, starts the overrides."""
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        return None, [config, *overrides]
    return config, list(overrides)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML recipe (optional) and apply `section.key=value` overrides; errors name the file or the command line.

    Only names and types are checked here; `check_values` checks ranges.
    """
    cfg = Config()
    if path is not None:
        cfg = config_from_dict(read_recipe(path), str(path))
    return config_from_dict(parse_overrides(overrides or []), "command line", base=cfg)


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML recipe file, with one-line errors for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ActdistillError(
            f"config file {path} not found; recipes live in configs/ (e.g. configs/image/stanford40_pvt_v2_kd.yaml)"
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ActdistillError(f"{path}: not valid YAML ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise ActdistillError(f"{path}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    return raw


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


_CHOICES: dict[str, tuple[str, ...]] = {
    "data.modality": ("rgb", "flow", "rgb+flow"),
    "data.multiscale_offsets": ("crop", "target"),
    "data.tuple_mode": ("faithful", "clean"),
    "data.remote_rule": ("both_sides", "either_side"),
    "optim.name": ("sgd", "adam", "adamw"),
    "sched.name": ("step", "cosine", "none", "plateau"),
    "train.precision": ("auto", "bf16", "fp16", "fp32"),
    "train.select_on": ("auto", "val", "test", "none"),
    "eval.temporal_pooling": ("mean_logits", "sum_softmax"),
    "eval.fusion": ("softmax", "logits", "p2"),
    "eval.protocol": ("thumos14", "activitynet", "thumos14_updated"),
    "eval.nms": ("soft", "hard"),
}
# (low, high, low inclusive, high inclusive); None = unbounded.
_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "data.image_size": (1, None, True, True),
    "data.batch_size": (1, None, True, True),
    "data.eval_batch_size": (0, None, True, True),
    "data.num_workers": (0, None, True, True),
    "data.scale_min": (0, 1, False, True),
    "data.limit_train": (0, None, True, True),
    "data.limit_test": (0, None, True, True),
    "data.split": (1, 3, True, True),
    "data.clip_len": (1, None, True, True),
    "data.frame_interval": (1, None, True, True),
    "data.num_clips": (1, None, True, True),
    "data.resize": (0, None, True, True),
    "data.val_fraction": (0, 0.5, True, True),
    "data.tuple_len": (2, None, True, True),
    "data.tuple_interval": (0, None, True, True),
    "data.remote_min_gap": (0, None, True, True),
    "data.val_repeats": (1, None, True, True),
    "data.crop_len": (0, None, True, True),
    "optim.lr": (0, None, False, True),
    "optim.momentum": (0, 1, True, False),
    "optim.weight_decay": (0, None, True, True),
    "sched.step_size": (1, None, True, True),
    "sched.gamma": (0, 1, False, True),
    "sched.min_lr": (0, None, True, True),
    "sched.warmup_epochs": (0, None, True, True),
    "sched.patience": (0, None, True, True),
    "train.epochs": (1, None, True, True),
    "train.eval_every": (1, None, True, True),
    "train.keep_last": (0, None, True, True),
    "train.grad_clip": (0, None, True, True),
    "train.accumulate_steps": (1, None, True, True),
    "train.save_every_steps": (0, None, True, True),
    "train.dist_timeout_s": (0, None, False, True),
    "eval.iou_threshold": (0, 1, False, True),
    "eval.sigma": (0, None, False, True),
    "eval.max_segments": (1, None, True, True),
    "eval.pre_nms_threshold": (0, 1, True, False),
}


def _range_text(low: float | None, high: float | None, low_in: bool, high_in: bool) -> str:
    if high is None:
        return f"{'at least' if low_in else 'more than'} {low:g}"
    return f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def check_values(cfg: Config, where: str = "config") -> None:
    """Every setting's range and choices, before any work (docs/errors.md, "settings"); one error line each."""
    for dotted, choices in _CHOICES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        if value not in choices:
            raise ActdistillError(f"{where}: {dotted} must be one of {', '.join(choices)}; got {value!r}")
    for dotted, (low, high, low_in, high_in) in _RANGES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        ok = (low is None or (value >= low if low_in else value > low)) and (
            high is None or (value <= high if high_in else value < high)
        )
        if not ok:
            raise ActdistillError(f"{where}: {dotted} must be {_range_text(low, high, low_in, high_in)}; got {value!r}")
    if not all(0 <= b < 1 for b in cfg.optim.betas) or len(cfg.optim.betas) != 2:
        raise ActdistillError(f"{where}: optim.betas must be two numbers in [0, 1); got {list(cfg.optim.betas)}")
    if not cfg.eval.tiou or not all(0 < t <= 1 for t in cfg.eval.tiou):
        raise ActdistillError(
            f"{where}: eval.tiou must be a non-empty list of thresholds in (0, 1]; got {cfg.eval.tiou}"
        )
    if cfg.sched.warmup_epochs > cfg.train.epochs:
        raise ActdistillError(
            f"{where}: sched.warmup_epochs ({cfg.sched.warmup_epochs}) must be at most train.epochs "
            f"({cfg.train.epochs})"
        )
    if cfg.student.cache:
        raise ActdistillError(
            f"{where}: student.cache is not a setting; the teacher-output cache is teacher.cache=PATH"
        )
    if cfg.student.prefetch:
        raise ActdistillError(f"{where}: student.prefetch is not a setting; the teacher's is teacher.prefetch=true")
    if cfg.teacher.prefetch and cfg.teacher.cache:
        raise ActdistillError(
            f"{where}: teacher.prefetch and teacher.cache both replace the online teacher; set one of them"
        )
    if not isinstance(cfg.method.get("name", "vanilla"), str):
        raise ActdistillError(f"{where}: method.name must be a method name; got {cfg.method.get('name')!r}")
