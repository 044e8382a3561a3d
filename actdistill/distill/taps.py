"""Feature taps without model surgery: stages of the model contract, or any named module through hooks.

A tap spec (method hyper-parameters such as `student_layer: -1`) is one of:
  * an int (negative allowed) or a digit string: index into `model.forward_features(x)` / `model.feature_info`;
  * a `feature_info` name, e.g. `Mixed_5c` or `model.stages.2`;
  * `module:<dotted.name>`: the output of that sub-module (a forward hook; tuples give their first tensor);
  * `input:<dotted.name>`: the first input of that sub-module (a forward pre-hook; e.g. a classifier's input).

`run_model(model, x, taps)` runs ONE forward and returns the logits and the tapped tensors: `model(x)` when only
hooks are needed, else `forward_head(forward_features(x)[-1])`, which the model contract makes equal to `model(x)`
(timm models that pool a class token, e.g. `convit_small`, pool the patch tokens there instead). Inside
`shared_forward()` (one training step of a `combo`) results are cached per (model, input tensor), so methods sharing a
student or teacher share its forward pass. Hooks are attached only for the duration of that forward.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from actdistill.errors import ActdistillError, suggest

_PREFIXES = ("module:", "input:")


@dataclass(frozen=True)
class Tap:
    """A resolved tap: `kind` is "stage" (key: stage index ≥ 0), "module" or "input" (key: dotted module path)."""

    kind: str
    key: int | str

    def __str__(self) -> str:
        return f"stage {self.key}" if self.kind == "stage" else f"{self.kind}:{self.key}"


@dataclass
class ModelRun:
    """One forward: `logits` (model output), `stages` (`forward_features` maps), `hooked` (by `str(tap)`)."""

    logits: Tensor
    stages: list[Tensor] | None
    hooked: dict[str, Tensor] = field(default_factory=dict)
    x: Tensor | None = None

    def get(self, tap: Tap) -> Tensor:
        """The tensor of `tap` from this run (`hooked` first: a run replayed from a teacher cache holds every tap)."""
        if str(tap) in self.hooked:
            return self.hooked[str(tap)]
        if tap.kind == "stage":
            assert self.stages is not None, "stage maps were not computed in this run"
            return self.stages[int(tap.key)]
        return self.hooked[str(tap)]


def cached_run(batch: dict, taps: Sequence[Tap]) -> ModelRun | None:
    """The teacher's run replayed from the batch's cached maps (`teacher_maps`, `teacher_logits`), or None when the
    batch has no cache or lacks one of `taps`."""
    maps = batch.get("teacher_maps")
    if maps is None or any(str(tap) not in maps for tap in taps):
        return None
    return ModelRun(
        logits=batch["teacher_logits"].float(), stages=None, hooked={str(t): maps[str(t)].float() for t in taps}
    )


def has_contract(model: nn.Module) -> bool:
    """Whether `model` exposes `forward_features`/`forward_head` (the model contract)."""
    return callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))


def _first_tensor(value: object) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    return None


@contextlib.contextmanager
def _hooks(model: nn.Module, taps: Sequence[Tap], store: dict[str, Tensor]) -> Iterator[None]:
    modules = dict(model.named_modules())
    handles = []
    for tap in taps:
        if tap.kind == "stage":
            continue
        module = modules[str(tap.key)]

        def save(_m: nn.Module, args: tuple, out: object = None, name: str = str(tap), kind: str = tap.kind) -> None:
            value = _first_tensor(args if kind == "input" else out)
            if value is not None:
                store[name] = value

        if tap.kind == "input":
            handles.append(module.register_forward_pre_hook(lambda m, a, save=save: save(m, a)))
        else:
            handles.append(module.register_forward_hook(save))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


_CACHE: contextvars.ContextVar[dict[int, ModelRun] | None] = contextvars.ContextVar("actdistill_taps", default=None)


@contextlib.contextmanager
def shared_forward() -> Iterator[None]:
    """Within this context `run_model` reuses one forward per (model, input tensor); used by `combo` for a step."""
    token = _CACHE.set({})
    try:
        yield
    finally:
        _CACHE.reset(token)


def _forward(model: nn.Module, x: Tensor, taps: Sequence[Tap], stages: bool = False) -> ModelRun:
    """`model(x)` with hooks, or, when stage maps are wanted, `forward_head(forward_features(x)[-1])`."""
    hooked: dict[str, Tensor] = {}
    stages = stages or any(t.kind == "stage" for t in taps)
    if stages and not has_contract(model):
        raise ActdistillError(f"{type(model).__name__} has no forward_features/forward_head; tap modules instead")
    with _hooks(model, taps, hooked):
        if stages:
            maps: list[Tensor] | None = list(model.forward_features(x))
            logits = model.forward_head(maps[-1])
        else:
            maps, logits = None, model(x)
    for tap in taps:
        if tap.kind == "stage" and int(tap.key) >= len(maps or ()):
            raise ActdistillError(f"{type(model).__name__} gave {len(maps or ())} stage maps; no tap {tap}")
        if tap.kind != "stage" and str(tap) not in hooked:
            raise ActdistillError(f"tap {tap} of {type(model).__name__} was not called during the forward pass")
    return ModelRun(logits, maps, hooked, x)


def _serves(run: ModelRun | None, x: Tensor, taps: Sequence[Tap]) -> bool:
    if run is None or run.x is not x:
        return False
    return all(str(t) in run.hooked if t.kind != "stage" else run.stages is not None for t in taps)


def run_model(model: nn.Module, x: Tensor, taps: Sequence[Tap] = ()) -> ModelRun:
    """One forward of `model` on `x` returning its logits and the tensors of `taps` (shared within a step).

    Without stage taps this is exactly `model(x)` (plus hooks); with them it is the contract's
    `forward_head(forward_features(x)[-1])`, equal to `model(x)` except for heads that pool a class token.
    """
    cache = _CACHE.get()
    if cache is None:
        return _forward(model, x, taps)
    run = cache.get(id(model))
    if _serves(run, x, taps):
        return run  # type: ignore[return-value]
    wanted, stages = list(taps), False
    if run is not None and run.x is x:  # a second forward only when the first lacked a hook or the stage maps
        wanted += [Tap(*k.split(":", 1)) for k in run.hooked if k not in {str(t) for t in taps}]
        stages = run.stages is not None
    cache[id(model)] = run = _forward(model, x, wanted, stages)
    return run


# ------------------------------------------------------------------------------------------ resolving and probing


def dummy_input(model: nn.Module, batch: int = 1) -> Tensor:
    """A zero input shaped like `model.pretrained_cfg.input_size`; clips are cut to at most 8 frames (cheaper)."""
    cfg = getattr(model, "pretrained_cfg", None)
    size = tuple(getattr(cfg, "input_size", ()) or ())
    if len(size) not in (3, 4):
        raise ActdistillError(
            f"{type(model).__name__} has no pretrained_cfg.input_size (C, H, W) or (C, T, H, W); taps need the model "
            "contract (actdistill/models/_contract.py)"
        )
    if len(size) == 4:
        size = (size[0], min(size[1], 8), *size[2:])
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.zeros(batch, *size, device=device)


@contextlib.contextmanager
def _eval_no_grad(model: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm statistics untouched) and no autograd, restoring every module's mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode


_PROBES: weakref.WeakKeyDictionary[nn.Module, dict[str, tuple[int, ...]]] = weakref.WeakKeyDictionary()


def probe_shapes(model: nn.Module, taps: Sequence[Tap]) -> list[tuple[int, ...]]:
    """Shapes of `taps` (batch 1) from one forward on `dummy_input(model)`; cached per model."""
    known = _PROBES.setdefault(model, {})
    missing = [t for t in taps if str(t) not in known]
    if missing:
        with _eval_no_grad(model):
            run = _forward(model, dummy_input(model), missing)
        known["logits"] = tuple(run.logits.shape)
        known.update({str(t): tuple(run.get(t).shape) for t in missing})
    return [known[str(t)] for t in taps]


def layer_shapes(model: nn.Module) -> dict[str, tuple[int, ...] | None]:
    """`{module path: output shape}` for every named sub-module (None when not called) from one dummy forward."""
    shapes: dict[str, tuple[int, ...] | None] = {n: None for n, _ in model.named_modules() if n}
    handles = []
    for name, module in model.named_modules():
        if name:

            def save(_m: nn.Module, _a: tuple, out: object, name: str = name) -> None:
                value = _first_tensor(out)
                if value is not None:
                    shapes[name] = tuple(value.shape)

            handles.append(module.register_forward_hook(save))
    try:
        with _eval_no_grad(model):
            _forward(model, dummy_input(model), (), stages=has_contract(model))
    except Exception:  # noqa: BLE001 - only used to enrich an error message; names alone still help
        pass
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def _fmt(shape: tuple[int, ...] | None) -> str:
    return "×".join(map(str, shape[1:])) if shape else "not called"


def _unknown_layer(model: nn.Module, spec: object, why: str) -> ActdistillError:
    shapes = layer_shapes(model)
    info = getattr(model, "feature_info", []) or []
    stages = ", ".join(f"{i}={f.name} ({_fmt(shapes.get(f.name))})" for i, f in enumerate(info)) or "none"
    called = {n: s for n, s in shapes.items() if s is not None} or shapes  # hooks on uncalled modules never fire
    listed = [f"{n} ({_fmt(s)})" for n, s in called.items()]
    more = f", … {len(listed) - 80} more" if len(listed) > 80 else ""
    name = str(spec).split(":", 1)[-1]
    return ActdistillError(
        f"{why} in {type(model).__name__}.{suggest(name, called)} Stages: {stages}. "
        f"Modules (output shape without batch): {', '.join(listed[:80])}{more}"
    )


def resolve_tap(model: nn.Module, spec: int | str) -> Tap:
    """Turn a tap spec (module docstring) into a `Tap`; unknown layers raise ActdistillError listing names + shapes."""
    info = list(getattr(model, "feature_info", []) or [])
    if isinstance(spec, str) and spec.lstrip("-").isdigit():
        spec = int(spec)
    if isinstance(spec, int):
        if not info or not -len(info) <= spec < len(info):
            raise _unknown_layer(model, spec, f"stage index {spec} is out of range ({len(info)} stages)")
        return Tap("stage", spec % len(info))
    spec = str(spec)
    if spec.startswith(_PREFIXES):
        kind, path = spec.split(":", 1)
        if path not in dict(model.named_modules()) or not path:
            raise _unknown_layer(model, spec, f"no module named '{path}'")
        return Tap("input" if kind == "input" else "module", path)
    names = [f.name for f in info]
    if spec in names:
        return Tap("stage", names.index(spec))
    raise _unknown_layer(model, spec, f"no stage named '{spec}' (use module:<name> for any sub-module)")


def find_classifier(model: nn.Module) -> tuple[str, nn.Module]:
    """`(path, module)` of the model's final classifier: `get_classifier()` when it exists, else the last Linear or
    1×1(×1) conv registered in the model. ActdistillError when there is none."""
    modules = list(model.named_modules())
    get = getattr(model, "get_classifier", None)
    found = get() if callable(get) else None
    if isinstance(found, (nn.Linear, nn.Conv2d, nn.Conv3d)):
        for name, module in modules:
            if module is found:
                return name, module

    def is_linear(m: nn.Module) -> bool:
        return isinstance(m, nn.Linear) or (isinstance(m, (nn.Conv2d, nn.Conv3d)) and set(m.kernel_size) == {1})

    candidates = [(n, m) for n, m in modules if n and is_linear(m)]
    if not candidates:
        raise ActdistillError(f"{type(model).__name__} has no Linear or 1×1 conv classifier to reuse")
    return candidates[-1]


def classifier_weights(module: nn.Module) -> tuple[Tensor, Tensor | None]:
    """`(W (K, D), b (K,) or None)` of a Linear or 1×1(×1) conv classifier."""
    weight = module.weight
    return weight.reshape(weight.shape[0], -1), module.bias


def head_only(model: nn.Module, feature_shape: tuple[int, ...]) -> nn.Module:
    """A copy of `model` in which every sub-module that `forward_head` never calls is replaced by `nn.Identity`.

    Found by running `forward_head` once on zeros shaped `feature_shape` with pre-hooks recording the calls.
    """
    copied = copy.deepcopy(model).eval()
    called: set[str] = set()
    handles = [
        m.register_forward_pre_hook(lambda _m, _a, name=name: called.add(name))
        for name, m in copied.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            param = next(copied.parameters(), None)
            copied.forward_head(torch.zeros(feature_shape, device=param.device if param is not None else "cpu"))
    finally:
        for handle in handles:
            handle.remove()
    pruned: list[str] = []
    for name, _ in list(copied.named_modules()):
        if not name or name in called or any(c.startswith(name + ".") for c in called):
            continue
        if any(name.startswith(p + ".") for p in pruned):
            continue
        parent, _, attr = name.rpartition(".")
        owner = copied.get_submodule(parent) if parent else copied
        owner._modules[attr] = nn.Identity()
        pruned.append(name)
    return copied
