"""UCF101 official split files (Soomro et al. 2012, `ucfTrainTestlist/`) → `(relative video path, class index)`.

Layout: `classInd.txt` ("1 ApplyEyeMakeup", 1-based), `trainlist0{1,2,3}.txt` ("Class/v_Class_gGG_cCC.avi 1"),
`testlist0{1,2,3}.txt` ("Class/v_Class_gGG_cCC.avi", no label). The official files use CRLF line ends.
Pure: reads only the annotation files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from actdistill.errors import ActdistillError

Subset = Literal["train", "test"]
LAYOUT = "ucfTrainTestlist/{classInd.txt, trainlist01.txt .. trainlist03.txt, testlist01.txt .. testlist03.txt}"


def _lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise ActdistillError(f"UCF101 split file {path} not found; expected the official layout {LAYOUT}")
    text = path.read_text(encoding="utf-8-sig")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_classes(annotation_dir: str | Path) -> list[str]:
    """Class names in `classInd.txt` order (index 0 = the class numbered 1)."""
    path = Path(annotation_dir) / "classInd.txt"
    classes: list[str] = []
    for number, line in _lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(classes) + 1:
            raise ActdistillError(
                f"{path}:{number}: expected '<index> <ClassName>' numbered from 1 in order, got {line!r}"
            )
        classes.append(parts[1])
    return classes


def read_split(annotation_dir: str | Path, split: int = 1, subset: Subset = "train") -> list[tuple[str, int]]:
    """`[(relative video path, 0-based class index), ...]` for one official split and subset, in file order.

    The class comes from the folder part of the path (test lists carry no label; train labels must agree).
    Folder names are matched case-insensitively and returned as spelled in `classInd.txt`, so the list's
    `HandstandPushups/v_HandStandPushups_g01_c01.avi` keeps the real folder `HandstandPushups`.
    """
    if split not in (1, 2, 3) or subset not in ("train", "test"):
        raise ActdistillError(f"UCF101 has splits 1-3 and subsets train/test; got split={split}, subset={subset!r}")
    root = Path(annotation_dir)
    classes = read_classes(root)
    by_folder = {name.lower(): i for i, name in enumerate(classes)}
    path = root / f"{subset}list0{split}.txt"
    entries = []
    for number, line in _lines(path):
        parts = line.split()
        rel = parts[0].replace("\\", "/")
        folder, _, name = rel.partition("/")
        if not name or len(parts) > 2:
            raise ActdistillError(f"{path}:{number}: expected 'Class/v_Class_gGG_cCC.avi [label]', got {line!r}")
        label = by_folder.get(folder.lower())
        if label is None:
            raise ActdistillError(
                f"{path}:{number}: class folder '{folder}' is not in {root / 'classInd.txt'}; "
                "fix the line or add the class to classInd.txt"
            )
        if len(parts) == 2 and (not parts[1].isdigit() or int(parts[1]) != label + 1):
            raise ActdistillError(
                f"{path}:{number}: label {parts[1]} disagrees with folder '{folder}' (class {label + 1} in "
                "classInd.txt); fix the label or the folder"
            )
        entries.append((f"{classes[label]}/{name}", label))
    return entries


def group_of(path: str) -> str:
    """The `<Class>_gGG` group a UCF101 clip belongs to (clips of one group share actor and scene)."""
    stem = Path(path).stem  # v_Class_g08_c01
    return stem[2:].rsplit("_", 1)[0].lower()
