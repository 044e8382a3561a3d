"""`create_model`: registered names first, then any timm name; weights from timm's hub or a local file."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import timm
from torch import Tensor, nn

from actdistill.errors import ActdistillError, suggest
from actdistill.models.timm_zoo import create_timm
from actdistill.registry import MODELS
from actdistill.utils.checkpoint import safe_load

log = logging.getLogger(__name__)

_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
# Containers people save weights in, most specific first: actdistill runs, Lightning/DeiT-style, plain wrappers.
_CONTAINER_KEYS = ("student", "state_dict", "model", "model_state_dict", "module", "net")
# Wrapper prefixes on saved keys: DataParallel/DDP, timm-style `model.` wrappers, actdistill distillers.
_PREFIXES = ("module.", "model.", "student.", "_orig_mod.")


def create_model(name: str, num_classes: int, pretrained: bool | str | Path = False, **kwargs: Any) -> nn.Module:
    """Build model `name` with a `num_classes` head, following the model contract (`_contract.py`).

    `name` is looked up in `MODELS`, then among timm's models (wrapped in `TimmAdapter`). `pretrained`: False (random
    init), True (the model's ImageNet weights from timm's hub), or a local `.pth/.pt/.bin/.safetensors` path whose
    classifier is dropped with a warning when its class count differs (fine-tuning). A registered factory receives
    `pretrained` as a bool, unless its metadata says `loads_path=True`: then it receives the path and loads it itself.
    """
    pretrained = pretrained or False  # YAML null or an empty string mean "no weights"
    path = None if isinstance(pretrained, bool) else Path(pretrained).expanduser()
    hub = bool(pretrained) if path is None else False
    try:
        if name.lower() in MODELS:
            if path is not None and MODELS.meta(name).get("loads_path"):
                # The factory converts its own weight layouts (e.g. pytorch-i3d, torchvision video checkpoints).
                return MODELS.get(name)(num_classes, str(path), **kwargs)
            model = MODELS.get(name)(num_classes, hub, **kwargs)
        elif timm.is_model(name):
            model = create_timm(name, num_classes, pretrained=hub, **kwargs)
        else:
            raise _unknown(name)
    except TypeError as exc:
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if bad is None:
            raise
        raise ActdistillError(
            f"model '{name}' has no option '{bad.group(1)}'; remove it from the model kwargs"
        ) from None
    if path is not None:
        load_pretrained(model, path)
    return model


def _unknown(name: str) -> ActdistillError:
    choices = sorted({*MODELS.names(), *timm.list_models()})
    return ActdistillError(
        f"unknown model '{name}'.{suggest(name.lower(), choices)} Run `actdistill list models` to see them."
    )


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a local `.pth/.pt/.bin/.ckpt/.safetensors` file and return its flat `{name: tensor}` state dict.

    Accepts raw state dicts and ones nested under `student` (actdistill checkpoints), `state_dict`, `model`, ...
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ActdistillError(f"checkpoint file '{path}' does not exist; check the path given as pretrained=")
    if path.suffix.lower() not in _SUFFIXES:
        raise ActdistillError(f"checkpoint '{path}' has an unknown suffix; use one of {', '.join(_SUFFIXES)}")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - a broken file, whatever the library's exception type
            raise ActdistillError(
                f"weights file '{path}' could not be read ({type(exc).__name__}); it is corrupt"
            ) from None
    obj = safe_load(path)
    return _unwrap(obj, path)


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    while isinstance(obj, dict):
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return obj
        key = next((k for k in _CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        obj = obj[key]
    keys = ", ".join(map(str, list(obj)[:5])) if isinstance(obj, dict) else type(obj).__name__
    raise ActdistillError(
        f"checkpoint '{path}' holds no state dict (found: {keys}); "
        "save model.state_dict() or a dict with it under 'state_dict', 'model' or 'student'"
    )


def load_pretrained(model: nn.Module, path: str | Path) -> None:
    """Load the weights in `path` into `model`; a classifier of another class count is dropped with a warning.

    Any other missing, unexpected or mis-shaped key raises ActdistillError (a checkpoint of another architecture).
    """
    target = model.state_dict()
    state = _match_prefix(load_state_dict_file(path), target)
    head = _classifier_keys(model)
    # BatchNorm counters are absent from many published checkpoints and carry no weights.
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    mismatched = [k for k in state if k in target and state[k].shape != target[k].shape]
    wrong = [k for k in missing + unexpected + mismatched if k not in head]
    if wrong:
        shown = "; ".join(_describe(k, state, target) for k in wrong[:5])
        raise ActdistillError(
            f"checkpoint '{path}' is for a different architecture than {type(model).__name__}: {len(wrong)} keys "
            f"do not fit ({shown}); pass a checkpoint saved from the same model name"
        )
    dropped = [k for k in head if k in mismatched or k in missing]
    if dropped:
        shapes = ", ".join(f"{k} {tuple(state[k].shape) if k in state else 'absent'}" for k in dropped)
        log.warning(
            "checkpoint '%s': classifier (%s) does not match num_classes=%s; the head stays randomly initialised "
            "(fine-tuning)",
            path,
            shapes,
            getattr(model, "num_classes", "?"),
        )
        state = {k: v for k, v in state.items() if k not in dropped}
    model.load_state_dict(state, strict=False)


def _describe(key: str, state: dict[str, Tensor], target: dict[str, Tensor]) -> str:
    if key not in state:
        return f"missing {key}"
    if key not in target:
        return f"unexpected {key}"
    return f"{key} {tuple(state[key].shape)} vs {tuple(target[key].shape)}"


def _match_prefix(state: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip wrapper prefixes (`module.`, `model.`, ...) and/or add the target's, whichever matches most keys."""
    variants, frontier = [state], [state]
    while frontier:
        current = frontier.pop()
        for prefix in _PREFIXES:
            if current and all(k.startswith(prefix) for k in current):
                stripped = {k[len(prefix) :]: v for k, v in current.items()}
                variants.append(stripped)
                frontier.append(stripped)
    first = {k.split(".", 1)[0] for k in target}
    if len(first) == 1 and len(target) > 1:  # a wrapper such as TimmAdapter keeps everything under `model.`
        own = f"{first.pop()}."
        variants += [{own + k: v for k, v in s.items()} for s in list(variants)]
    return max(variants, key=lambda s: sum(k in target for k in s))


def _classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the final classifier (`get_classifier()`, else the last layer with num_classes outputs)."""
    modules = dict(model.named_modules())
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    name = next((n for n, m in modules.items() if m is head), None) if isinstance(head, nn.Module) else None
    if name is None:
        n_cls = getattr(model, "num_classes", None)
        outs = [n for n, m in modules.items() if getattr(m, "out_features", getattr(m, "out_channels", None)) == n_cls]
        name = outs[-1] if outs else None
    if name is None:
        return set()
    return {f"{name}.{k}" if name else k for k in modules[name].state_dict()}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (all, or only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_summary(name: str) -> dict[str, Any]:
    """Metadata of a model name for `actdistill list models`, without building it."""
    if name.lower() in MODELS:
        return {"name": name.lower(), "source": "actdistill", **MODELS.meta(name)}
    if timm.is_model(name):
        cfg = timm.models.get_pretrained_cfg(name)
        return {
            "name": name,
            "source": "timm",
            "timm_name": name,
            "pretrained_tag": f"{name}.{cfg.tag}" if cfg is not None and cfg.has_weights and cfg.tag else None,
            "input_size": tuple(cfg.input_size) if cfg is not None else None,
        }
    raise _unknown(name)
