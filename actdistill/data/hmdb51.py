"""HMDB51 official splits (Kuehne et al. 2011, `testTrainMulti_7030_splits/`) → `(relative video path, class index)`.

Layout: one file per class and split, `<class>_test_split{1,2,3}.txt`, lines `<video>.avi <0|1|2> ` (trailing
space): 1 = train, 2 = test, 0 = not used in this split. Videos live in `<root>/<class>/<video>.avi`; class
indices follow sorted class-name order. Pure: reads only the split files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from actdistill.errors import ActdistillError

Subset = Literal["train", "test"]
LAYOUT = "testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt with lines '<video>.avi <0|1|2>'"
_CODE = {"train": "1", "test": "2"}


def _split_files(split_dir: Path, split: int) -> dict[str, Path]:
    suffix = f"_test_split{split}.txt"
    if not split_dir.is_dir():
        raise ActdistillError(f"HMDB51 split folder {split_dir} not found; expected {LAYOUT}")
    files = {p.name[: -len(suffix)]: p for p in split_dir.glob(f"*{suffix}")}
    if not files:
        raise ActdistillError(f"no HMDB51 split files '*{suffix}' in {split_dir}; expected {LAYOUT}")
    return dict(sorted(files.items()))


def read_classes(split_dir: str | Path, split: int = 1) -> list[str]:
    """Class names in sorted order (the class index order), from the split file names."""
    return list(_split_files(Path(split_dir), split))


def read_split(split_dir: str | Path, split: int = 1, subset: Subset = "train") -> list[tuple[str, int]]:
    """`[("<class>/<video>.avi", class index), ...]` for one official split and subset, sorted by class then file."""
    if split not in (1, 2, 3) or subset not in ("train", "test"):
        raise ActdistillError(f"HMDB51 has splits 1-3 and subsets train/test; got split={split}, subset={subset!r}")
    entries = []
    for label, (name, path) in enumerate(_split_files(Path(split_dir), split).items()):
        for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ActdistillError(f"{path}:{number}: expected '<video>.avi <0|1|2>', got {line.strip()!r}")
            if parts[1] == _CODE[subset]:
                entries.append((f"{name}/{parts[0]}", label))
    return entries
