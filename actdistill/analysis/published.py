"""Published result tables of the reproduced papers, stored as JSON data in `analysis/published/`.

Each file holds one table: `paper`, `table`, `dataset` (a registry dataset name, or a list when the table has
one column group per dataset and each row names its own `dataset`), `units` ("percent"), `metrics` (the value
columns) and `rows` (`model`, `method` and the metric values; optionally `params_m`, `gflops`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = ["published_rows", "published_tables"]


@lru_cache(maxsize=1)
def _load() -> tuple[dict[str, Any], ...]:
    folder = resources.files("actdistill.analysis").joinpath("published")
    tables = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            table = json.loads(entry.read_text(encoding="utf-8"))
            table["file"] = entry.name
            tables.append(table)
    return tuple(tables)


def published_tables() -> list[dict[str, Any]]:
    """All published tables (copies), in file-name order."""
    return [json.loads(json.dumps(t)) for t in _load()]


def _datasets(table: dict[str, Any]) -> list[str]:
    ds = table["dataset"]
    return [ds] if isinstance(ds, str) else list(ds)


def published_rows(dataset: str) -> list[dict[str, Any]]:
    """Rows of every published table reported on `dataset` (e.g. "stanford40"), each labelled with its source.

    Each row gets `source` (e.g. "published: paper 1, Table I"), `paper`, `table`, `dataset`, `units` and
    `metrics` (the table's value columns); values stay as printed (percent). Unknown datasets give [].
    """
    key = dataset.strip().lower()
    out = []
    for table in _load():
        if key not in _datasets(table):
            continue
        for row in table["rows"]:
            if row.get("dataset", key) != key:
                continue
            out.append(
                {
                    **row,
                    "dataset": key,
                    "paper": table["paper"],
                    "table": table["table"],
                    "units": table["units"],
                    "metrics": list(table["metrics"]),
                    "source": f"published: {_short(table['paper'])}, {table['table']}",
                }
            )
    return out


def _short(paper: str) -> str:
    return paper[paper.rfind("(") + 1 : paper.rfind(")")] if paper.endswith(")") else paper
