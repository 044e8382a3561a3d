"""Tables from `results.json` files: a paper-1 "Table I" (params, GMACs, accuracy, mAP, gain from KD)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class TableRow:
    """One line of Table I. Accuracy and mAP are fractions in [0, 1]; `baseline` links a KD row to its plain run."""

    label: str
    params_m: float
    gmacs: float
    top1: float
    mAP: float
    baseline: TableRow | None = None


def load_results(run_dir: str | Path) -> dict[str, Any]:
    """Read `<run_dir>/results.json`."""
    return json.loads((Path(run_dir) / "results.json").read_text())


def row_from_results(label: str, results: dict[str, Any], which: str = "last", baseline: TableRow | None = None):
    """A `TableRow` from a run's results (`which`: "last" epoch, as paper 1 reports, or "best")."""
    metrics = results[which] if which == "last" else results["best"]["metrics"]
    return TableRow(label, results["params_m"], results["gmacs"], metrics["top1"], metrics["mAP"], baseline)


def _gain(value: float, base: float) -> str:
    delta = 100 * (value - base)
    arrow = "↑" if delta > 0 else ("↓" if delta < 0 else "")
    return f" ({delta:+.2f}{arrow})"


def table_one_markdown(rows: list[TableRow]) -> str:
    """Markdown table in the layout of paper 1's Table I; KD rows show the gain over their baseline."""
    lines = [
        "| Network | Parameters (M) | GMACs | Accuracy (%) | mAP (%) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        acc, mAP = f"{100 * r.top1:.2f}", f"{100 * r.mAP:.2f}"
        if r.baseline is not None:
            acc += _gain(r.top1, r.baseline.top1)
            mAP += _gain(r.mAP, r.baseline.mAP)
            params = gmacs = ""
        else:
            params, gmacs = f"{r.params_m:.2f}", f"{r.gmacs:.3f}"
        lines.append(f"| {r.label} | {params} | {gmacs} | {acc} | {mAP} |")
    return "\n".join(lines)


def table_one_text(rows: list[TableRow]) -> str:
    """The same table as aligned plain text for the terminal."""
    header = f"{'Network':<28}{'Params (M)':>11}{'GMACs':>9}{'Accuracy (%)':>22}{'mAP (%)':>22}"
    out = [header, "-" * len(header)]
    for r in rows:
        acc, mAP = f"{100 * r.top1:.2f}", f"{100 * r.mAP:.2f}"
        params = gmacs = ""
        if r.baseline is not None:
            acc += _gain(r.top1, r.baseline.top1)
            mAP += _gain(r.mAP, r.baseline.mAP)
        else:
            params, gmacs = f"{r.params_m:.2f}", f"{r.gmacs:.3f}"
        out.append(f"{r.label:<28}{params:>11}{gmacs:>9}{acc:>22}{mAP:>22}")
    return "\n".join(out)


def curve(results: dict[str, Any], key: str = "mAP", group: str = "test") -> list[float]:
    """Per-epoch values of `group/key` from a run's history (NaN where the epoch was not evaluated)."""
    return [float(h.get(group, {}).get(key, float("nan"))) for h in results["history"]]
