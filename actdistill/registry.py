"""Name → object registries, used only where users pick things by name (YAML configs and the CLI)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actdistill.errors import ActdistillError, suggest


class Registry:
    """A named table of factories with free-form metadata (paper, defaults, description)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Any] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[Any], Any]:
        """Decorator: `@METHODS.register("kd", paper="Hinton et al. 2015")`."""

        def deco(obj: Any) -> Any:
            key = name.lower()
            if key in self._items:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = obj
            self._meta[key] = dict(meta)
            return obj

        return deco

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._items

    def get(self, name: str) -> Any:
        key = name.lower()
        if key not in self._items:
            raise ActdistillError(
                f"unknown {self.kind} '{name}'.{suggest(key, self._items)} "
                f"Run `actdistill list {self.kind}s` to see all of them."
            )
        return self._items[key]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._meta[name.lower()]

    def names(self) -> list[str]:
        return sorted(self._items)


MODELS = Registry("model")
METHODS = Registry("method")
DATASETS = Registry("dataset")
