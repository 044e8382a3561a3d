"""Run configuration: dataclasses, flat YAML recipes and `section.key=value` command-line overrides.

A recipe is one YAML file with one level of sections (`data`, `student`, `teacher`, `method`, `optim`,
`sched`, `train`) and no inheritance. Unknown sections or keys are errors with a suggestion, never
silently ignored. The `method` section holds `name` plus that method's hyper-parameters, which are
checked against the method's keyword-only arguments when the method is built.
"""

from __future__ import annotations

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


@dataclass
class ModelConfig:
    """A network by registry or timm name; `pretrained` is False, True (hub) or a local checkpoint path."""

    name: str = ""
    pretrained: Any = False
    checkpoint: str = ""  # teacher: a trained actdistill run (checkpoints/best.pt) or a state-dict file
    cache: str = ""  # teacher: replay stored outputs (`actdistill cache build`) instead of running it
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
    """LR schedule stepped once per epoch: `step` (StepLR), `cosine`, or `none`; optional linear warm-up."""

    name: str = "step"
    step_size: int = 5
    gamma: float = 0.3
    min_lr: float = 0.0
    warmup_epochs: int = 0


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
    best_metric: str = "mAP"
    grad_clip: float = 0.0
    channels_last: bool = False
    compile: bool = False
    progress: bool = True
    tensorboard: bool = True
    accumulate_steps: int = 1  # micro-batches per optimizer step; global batch = batch_size × world × this
    save_every_steps: int = 0  # >0: also write checkpoints/last.pt every N optimizer steps (mid-epoch resume)


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


def config_from_dict(raw: dict[str, Any], where: str = "config") -> Config:
    """Build a `Config` from a nested mapping, rejecting unknown sections and keys with suggestions."""
    raw = dict(raw or {})
    cfg = Config()
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
            setattr(target, key, _coerce(section, key, value, getattr(target, key), where))
    return cfg


def _coerce(section: str, key: str, value: Any, default: Any, where: str) -> Any:
    """Convert YAML scalars to the field's type (e.g. `1e-3` parsed as a string by YAML 1.1)."""
    if isinstance(default, bool) or default is None or section in ("student", "teacher") and key == "pretrained":
        return value
    try:
        if isinstance(default, float):
            return float(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, tuple):
            return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ActdistillError(f"{where}: '{section}.{key}' must be {type(default).__name__}, got {value!r}") from None
    return value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["optim.lr=0.01", "method.temperature=4"]` → nested dict; values parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ActdistillError(f"override '{item}' must look like section.key=value (e.g. optim.lr=0.01)")
        dotted, value = item.split("=", 1)
        parts = dotted.strip().split(".")
        if len(parts) == 1 and parts[0] == "name":
            nested["name"] = value
            continue
        if len(parts) != 2:
            raise ActdistillError(f"override '{item}': key must be section.key (e.g. train.epochs=5)")
        nested.setdefault(parts[0], {})[parts[1]] = yaml.safe_load(value) if value != "" else ""
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
    """Read a YAML recipe (optional) and apply `section.key=value` overrides."""
    raw: dict[str, Any] = {}
    where = "overrides"
    if path is not None:
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
        where = str(path)
    raw = merge(raw, parse_overrides(overrides or []))
    return config_from_dict(raw, where)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
