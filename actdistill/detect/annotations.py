"""Detection annotations: ActionFormer-style JSON and THUMOS14 per-class files as `{video, start, end, label}` rows.

The rows are what `actdistill.eval.detection.detection_map` takes; times are seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from actdistill.errors import ActdistillError
from actdistill.eval.detection import AMBIGUOUS, load_thumos14_annotations

__all__ = ["load_actionformer_json", "load_annotations", "video_durations", "write_thumos_annotations"]


def _read_database(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ActdistillError(f"annotation file {path} not found; pass an ActionFormer-style JSON file")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ActdistillError(f"{path}: not valid JSON ({exc}); expected {{'database': {{video: {{...}}}}}}") from None
    database = raw.get("database") if isinstance(raw, dict) else None
    if not isinstance(database, dict):
        raise ActdistillError(
            f"{path}: no 'database' mapping; expected the ActionFormer/ActivityNet layout "
            "{'database': {video: {'subset', 'duration', 'annotations': [{'segment': [s, e], 'label': name}]}}}"
        )
    return database


def _subset_matches(entry: Mapping[str, Any], subset: str | None) -> bool:
    # ActionFormer's THUMOS14 JSON says "Validation"/"Test", ActivityNet "training"/"validation": compare loosely.
    return subset is None or str(entry.get("subset", "")).lower() == subset.lower()


def load_actionformer_json(path: str | Path, subset: str | None = None) -> list[dict[str, Any]]:
    """Rows `{video, start, end, label}` (seconds) of an ActionFormer-style JSON, optionally of one `subset`.

    `subset` is compared case-insensitively with each video's `subset` field (e.g. "validation", "test").
    """
    path = Path(path)
    rows: list[dict[str, Any]] = []
    for video, entry in _read_database(path).items():
        if not isinstance(entry, dict):
            raise ActdistillError(f"{path}: database[{video!r}] must be a mapping, got {type(entry).__name__}")
        if not _subset_matches(entry, subset):
            continue
        for i, ann in enumerate(entry.get("annotations", []) or []):
            segment = ann.get("segment") if isinstance(ann, dict) else None
            label = ann.get("label") if isinstance(ann, dict) else None
            if not isinstance(segment, (list, tuple)) or len(segment) != 2 or label is None:
                raise ActdistillError(
                    f"{path}: database[{video!r}].annotations[{i}] needs 'segment': [start, end] and 'label'"
                )
            start, end = float(segment[0]), float(segment[1])
            if start > end:
                raise ActdistillError(f"{path}: database[{video!r}].annotations[{i}]: start {start:g} > end {end:g}")
            rows.append({"video": str(video), "start": start, "end": end, "label": str(label)})
    return rows


def video_durations(path: str | Path, subset: str | None = None) -> dict[str, float]:
    """`{video: duration in seconds}` from an ActionFormer-style JSON (videos without `duration` are skipped)."""
    path = Path(path)
    return {
        str(v): float(e["duration"])
        for v, e in _read_database(path).items()
        if isinstance(e, dict) and "duration" in e and _subset_matches(e, subset)
    }


def load_annotations(source: str | Path, subset: str = "test") -> list[dict[str, Any]]:
    """Rows from a folder of THUMOS14 `<Class>_<subset>.txt` files or an ActionFormer-style `.json` file.

    A folder without such files but with an `annotations_<subset>/` sub-folder (the official release's layout,
    e.g. `thumos14_annotations/`) is read from that sub-folder.
    """
    source = Path(source)
    if source.is_dir():
        nested = source / f"annotations_{subset}"
        if not any(source.glob(f"*_{subset}.txt")) and nested.is_dir():
            source = nested
        return load_thumos14_annotations(source, subset)
    if source.suffix.lower() == ".json":
        json_subset = {"val": "validation"}.get(subset, subset)
        return load_actionformer_json(source, json_subset)
    raise ActdistillError(
        f"annotations {source}: expected a folder of THUMOS14 '<Class>_{subset}.txt' files or a .json file"
    )


def write_thumos_annotations(
    rows: Iterable[Mapping[str, Any]], out_dir: str | Path, subset: str, classes: Iterable[str] = ()
) -> list[Path]:
    """Write `<Class>_<subset>.txt` files (`video start end` per line, seconds) into `out_dir`; returns the paths.

    One file per label in `rows` plus one (maybe empty) per name in `classes`; `Ambiguous` is written like any class.
    """
    if subset not in ("val", "test"):
        raise ActdistillError(f"THUMOS14 subset must be 'val' or 'test', got {subset!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {str(c): [] for c in classes}
    for row in rows:
        label = str(row["label"])
        if any(ch in label for ch in "/\\ \t"):
            raise ActdistillError(f"class name {label!r} cannot be a THUMOS file name; remove spaces and slashes")
        lines.setdefault(label, []).append(f"{row['video']} {float(row['start']):.2f} {float(row['end']):.2f}")
    paths = []
    for label in sorted(lines, key=lambda s: (s == AMBIGUOUS, s)):
        path = out / f"{label}_{subset}.txt"
        path.write_text("".join(f"{line}\n" for line in lines[label]), encoding="utf-8")
        paths.append(path)
    return paths
