"""Custom video data: a `path,label` list file (CSV/TSV) or a class-per-folder tree → `(path, label)` entries.

List format (one documented format, see docs/video_data.md):

    # optional comments and blank lines; an optional header row `path,label`
    Jumping/clip_001.mp4,Jumping          # label as a class name ...
    Waving/clip_007.avi,3                 # ... or as a 0-based class index (one kind per file)

`.csv` files use commas, `.tsv` tabs; other extensions are sniffed (tab, comma, else whitespace). Paths are
relative to the dataset root and name a video file or a frame folder (`img_00001.jpg`, ...).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from actdistill.data.decode import RGB_TEMPLATE, VIDEO_EXTENSIONS
from actdistill.errors import ActdistillError

Entry = tuple[str, int]


def _delimiter(path: Path, lines: list[str]) -> str | None:
    if path.suffix.lower() == ".csv":
        return ","
    if path.suffix.lower() == ".tsv":
        return "\t"
    sample = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    return "\t" if "\t" in sample else "," if "," in sample else None


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) for every data line of a list file."""
    if not path.is_file():
        raise ActdistillError(f"list file {path} not found; give a CSV/TSV with one 'path,label' row per video")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    delim = _delimiter(path, lines)
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = next(csv.reader([line], delimiter=delim)) if delim else line.split()
        rows.append((number, [f.strip() for f in fields]))
    if rows and rows[0][1] and rows[0][1][0].lower() == "path":
        rows = rows[1:]
    return rows


def _problems(path: Path, classes: Sequence[str] | None, root: Path | None) -> tuple[list[Entry], list[str], list[str]]:
    rows = _rows(path)
    problems: list[str] = []
    parsed: list[tuple[int, str, str]] = []
    seen: dict[str, int] = {}
    for number, fields in rows:
        where = f"{path}:{number}"
        if len(fields) != 2 or not fields[0] or not fields[1]:
            problems.append(f"{where}: expected 2 fields 'path,label', got {len(fields)} ({fields!r})")
            continue
        rel, label = fields
        if rel in seen:
            problems.append(f"{where}: '{rel}' already listed on line {seen[rel]}; remove the duplicate")
            continue
        seen[rel] = number
        if root is not None and not (root / rel).exists() and not (root / rel).with_suffix("").is_dir():
            problems.append(f"{where}: '{rel}' not found under {root}; fix the path or data.root")
        parsed.append((number, rel, label))
    numeric = [lab.lstrip("-").isdigit() for _, _, lab in parsed]
    if parsed and any(numeric) and not all(numeric):
        kind = numeric[0]
        number = next(n for (n, _, _), k in zip(parsed, numeric) if k != kind)
        problems.append(
            f"{path}:{number}: mixes class names and class indices (line {parsed[0][0]} uses "
            f"{'indices' if kind else 'names'}); use one kind of label in the whole file"
        )
        return [], [], problems
    if parsed and all(numeric):
        n_classes = len(classes) if classes is not None else max(int(lab) for _, _, lab in parsed) + 1
        names = list(classes) if classes is not None else [str(i) for i in range(n_classes)]
        entries = []
        for number, rel, lab in parsed:
            if not 0 <= int(lab) < n_classes:
                problems.append(f"{path}:{number}: label {lab} outside 0..{n_classes - 1}; labels are 0-based indices")
            entries.append((rel, int(lab)))
        return entries, names, problems
    names = list(classes) if classes is not None else sorted({lab for _, _, lab in parsed})
    lookup = {name: i for i, name in enumerate(names)}
    entries = []
    for number, rel, lab in parsed:
        if lab not in lookup:
            problems.append(f"{path}:{number}: unknown class '{lab}'; known classes: {', '.join(names[:10])} ...")
            continue
        entries.append((rel, lookup[lab]))
    return entries, names, problems


def validate_list(
    path: str | Path, *, classes: Sequence[str] | None = None, root: str | Path | None = None
) -> list[str]:
    """Every problem in a list file as 'file:line: what is wrong; how to fix' (empty when the file is valid)."""
    return _problems(Path(path), classes, Path(root) if root is not None else None)[2]


def read_list(
    path: str | Path, *, classes: Sequence[str] | None = None, root: str | Path | None = None
) -> tuple[list[Entry], list[str]]:
    """`(entries, class_names)` from a `path,label` list; the first problem raises ActdistillError with file:line.

    Class names are `classes` when given, else the sorted label names (or "0".."K-1" for index labels).
    With `root`, every listed path must exist under it.
    """
    entries, names, problems = _problems(Path(path), classes, Path(root) if root is not None else None)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise ActdistillError(problems[0] + more)
    if not entries:
        raise ActdistillError(f"{path}: no 'path,label' rows; add one row per video")
    return entries, names


def _is_frame_folder(path: Path) -> bool:
    return path.is_dir() and (path / RGB_TEMPLATE.format(1)).is_file()


def scan_class_folders(root: str | Path, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> tuple[list[Entry], list[str]]:
    """`(entries, classes)` from `root/<class>/<video file or frame folder>`; classes in sorted name order."""
    root = Path(root)
    if not root.is_dir():
        raise ActdistillError(f"{root} is not a folder; expected {root}/<class name>/<video files or frame folders>")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    entries: list[Entry] = []
    for label, name in enumerate(classes):
        for item in sorted((root / name).iterdir()):
            if (item.is_file() and item.suffix.lower() in extensions) or _is_frame_folder(item):
                entries.append((f"{name}/{item.name}", label))
    if not entries:
        raise ActdistillError(
            f"no videos found under {root}; expected {root}/<class name>/<clip>{{{','.join(extensions)}}} "
            "or <clip>/img_00001.jpg frame folders"
        )
    return entries, classes
