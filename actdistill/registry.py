"""Name → object registries: where users pick models, methods and datasets by name (YAML configs and the CLI).

One mechanism for all three. Things register themselves with a decorator next to their code
(`@METHODS.register("kd", paper=...)`); each registry knows the modules that hold its registrations (`providers`)
and imports them the first time a name is looked up, so `create_model("residual_input")` works in a fresh
interpreter without importing anything else first. Hyper-parameters given by name (a recipe's `method:` section)
are checked here, against the keyword-only arguments of the registered class, before anything is built.

`actdistill list ...` must answer without importing torch, so the names and metadata are also written to
`catalog.json` beside this file (`python -m actdistill.registry` regenerates it; a test keeps it in sync).
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from actdistill.errors import ActdistillError, suggest

CATALOG = Path(__file__).with_name("catalog.json")


class Registry:
    """A named table of factories with free-form metadata (paper, defaults, description)."""

    def __init__(self, kind: str, providers: Iterable[str] = ()) -> None:
        self.kind = kind
        self.providers = tuple(providers)
        self._items: dict[str, Any] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._loaded = False

    def register(self, name: str, **meta: Any) -> Callable[[Any], Any]:
        """Decorator: `@METHODS.register("kd", paper="Hinton et al. 2015")`."""

        def deco(obj: Any) -> Any:
            key = name.lower()
            old = self._items.get(key)
            same = (
                old is obj
                or getattr(old, "__qualname__", None) == getattr(obj, "__qualname__", 0)
                and getattr(old, "__module__", None) == getattr(obj, "__module__", 0)
            )  # importlib.reload registers the same definition again
            if old is not None and not same:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = obj
            self._meta[key] = dict(meta)
            return obj

        return deco

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # set first: a provider may look names up while it is being imported
            for module in self.providers:
                importlib.import_module(module)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name.lower() in self._items

    def get(self, name: str) -> Any:
        """The registered object; an unknown name is an error with suggestions."""
        self._load()
        key = str(name).lower()
        if key not in self._items:
            raise ActdistillError(
                f"unknown {self.kind} '{name}'.{suggest(key, self._items)} "
                f"Run `actdistill list {self.kind}s` to see all of them."
            )
        return self._items[key]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._meta[str(name).lower()]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def hyperparameters(self, name: str) -> dict[str, Any]:
        """Keyword-only arguments of the registered class's `__init__` (or function) with their defaults."""
        target = self.get(name)
        signature = inspect.signature(target.__init__ if inspect.isclass(target) else target)
        return {
            p.name: p.default
            for p in signature.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and not p.name.startswith("_")
        }

    def check_params(self, name: str, params: dict[str, Any], where: str = "") -> None:
        """Every key of `params` must be a keyword-only argument of `name`; else one error line with suggestions."""
        allowed = self.hyperparameters(name)
        for key in params:
            if key not in allowed:
                raise ActdistillError(
                    f"{where + ': ' if where else ''}{self.kind} '{name}' has no hyper-parameter '{key}'."
                    f"{suggest(key, allowed)} Its hyper-parameters: {', '.join(sorted(allowed)) or 'none'}."
                )

    def catalog(self) -> dict[str, dict[str, Any]]:
        """`{name: metadata}` as JSON-able values (what `actdistill list` prints)."""
        entries = {}
        for name in self.names():
            meta = {k: _plain(v) for k, v in self._meta[name].items()}
            if self.kind == "method":
                meta["defaults"] = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters(name).items())
            entries[name] = meta
        return entries


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


MODELS = Registry(
    "model",
    providers=(
        "actdistill.models.timm_zoo",
        "actdistill.models.video_zoo",
        "actdistill.models.video_demo",
        "actdistill.models.torchvision_video",
        "actdistill.models.pcl_net",
        "actdistill.models.temporal_detector",
        "actdistill.distill.predictors",
    ),
)
METHODS = Registry(
    "method",
    providers=(
        "actdistill.distill.logit",
        "actdistill.distill.feature",
        "actdistill.distill.relation",
        "actdistill.distill.combined",
        "actdistill.distill.generative",
        "actdistill.ssl.methods",
        "actdistill.detect.methods",
    ),
)
DATASETS = Registry(
    "dataset",
    providers=(
        "actdistill.data.stanford40",
        "actdistill.data.image_folder",
        "actdistill.data.video_dataset",
        "actdistill.ssl.dataset",
        "actdistill.detect.dataset",
    ),
)
REGISTRIES = {"models": MODELS, "methods": METHODS, "datasets": DATASETS}


def register_method(
    name: str,
    *aliases: str,
    paper: str,
    knowledge: str,
    task: str = "classification",
    source: str = "",
    notes: str = "",
) -> Callable[[type], type]:
    """Register a `Distiller` under `name` (and `aliases`) for `task`; `actdistill list methods` prints the metadata
    and the keyword-only defaults of its signature."""

    def deco(cls: type) -> type:
        meta: dict[str, Any] = {"paper": paper, "knowledge": knowledge, "task": task, "source": source}
        if notes:
            meta["notes"] = notes
        METHODS.register(name, **meta)(cls)
        for alias in aliases:
            METHODS.register(alias, **meta, alias_of=name)(cls)
        return cls

    return deco


def build_catalog() -> dict[str, Any]:
    """Every registry's names and metadata (imports every provider, so torch)."""
    return {what: registry.catalog() for what, registry in REGISTRIES.items()}


def read_catalog() -> dict[str, Any]:
    """The catalogue written by `python -m actdistill.registry` (no torch import)."""
    return json.loads(CATALOG.read_text())


def write_catalog() -> None:
    """Regenerate `catalog.json` from the live registries."""
    CATALOG.write_text(json.dumps(build_catalog(), indent=1, sort_keys=True, ensure_ascii=False) + "\n")


if __name__ == "__main__":  # python -m actdistill.registry: regenerate catalog.json after registering something
    # The providers register into `actdistill.registry`, not into this `__main__` copy of the module.
    importlib.import_module("actdistill.registry").write_catalog()
    print(f"wrote {CATALOG}")
