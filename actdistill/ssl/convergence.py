"""Convergence statistics of per-epoch accuracy curves (paper 3, §4 and Figs. 4-9).

A curve is a list of per-epoch accuracies in [0, 1], epoch 1 first.
"""

from __future__ import annotations

from typing import Any


def epochs_to(curve: list[float], threshold: float) -> int | None:
    """First 1-based epoch `e` with `curve[e−1] ≥ threshold`; None when never reached.

    Toolkit metric for paper 3, §4: `epochs_to(τ) = min{e : acc_e ≥ τ}`; a value exactly at the threshold counts.
    """
    for epoch, value in enumerate(curve, start=1):
        if value >= threshold:
            return epoch
    return None


def convergence_summary(
    curves: dict[str, list[float]], teacher_final: float, threshold: float = 0.85
) -> dict[str, dict[str, Any]]:
    """Per run: `epochs_to_threshold` (τ = `threshold`, P3's 0.85), `epochs_to_teacher` (τ = teacher's final accuracy),
    `best`, `final`, `epochs`. Empty curves give None for every statistic but `epochs` (0)."""
    summary: dict[str, dict[str, Any]] = {}
    for name, curve in curves.items():
        summary[name] = {
            "epochs_to_threshold": epochs_to(curve, threshold),
            "epochs_to_teacher": epochs_to(curve, teacher_final),
            "best": max(curve) if curve else None,
            "final": curve[-1] if curve else None,
            "epochs": len(curve),
        }
    return summary
