"""Per-epoch series from a run's `results.json` history, for curves and reports."""

from __future__ import annotations

from typing import Any


def curve(results: dict[str, Any], key: str = "mAP", group: str = "test") -> list[float]:
    """Per-epoch values of `group/key` from a run's history (NaN where the epoch was not evaluated)."""
    return [float(h.get(group, {}).get(key, float("nan"))) for h in results["history"]]
