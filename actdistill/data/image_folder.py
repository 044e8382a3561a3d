"""Image folders: one sub-folder of images per class under `train/` and `val/` (or `test/`), torchvision's layout.

```
ROOT/train/<class>/<any/depth>/<image>.jpg     training images
ROOT/val/<class>/...                           held-out images (the "test" split); `test/` when there is no `val/`
```

Classes are the sub-folder names of `train/`, sorted as torchvision's `ImageFolder` sorts them (plain `sorted`, so
the class index of a folder is the same as torchvision's); both splits must have the same class folders. Image files
are found recursively, in sorted order, with torchvision's extensions (`.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff
.webp`, any case); other files are ignored with a warning that counts them. Hidden folders and files (names starting
with `.`, e.g. `.ipynb_checkpoints/`, `.DS_Store`) are skipped. Items follow the Stanford 40 contract:
`{"input": transform((3, H, W) uint8), "label": int, "index": i}`; an unreadable image gives None (and a warning),
which `collate_skip_broken` drops and counts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from actdistill.data.stanford40 import load_image
from actdistill.errors import ActdistillError
from actdistill.registry import DATASETS, suggest

log = logging.getLogger("actdistill.data")

# torchvision.datasets.folder.IMG_EXTENSIONS, matched case-insensitively as torchvision does.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "test", "val")  # "val" is another name for the held-out split
_LAYOUT = "train/<class>/ and val/<class>/ (or test/<class>/) folders of images"


def split_dir(root: str | Path, split: str) -> Path:
    """The folder of `split`: `train/`, or for "test"/"val" `val/` when present, else `test/`."""
    if split not in SPLITS:
        raise ActdistillError(f"unknown image-folder split '{split}'.{suggest(split, SPLITS)} Use one of {SPLITS}.")
    root = Path(root)
    if not root.is_dir():
        raise ActdistillError(f"image-folder root {root} does not exist; set data.root to a folder holding {_LAYOUT}")
    if split == "train":
        if not (root / "train").is_dir():
            raise ActdistillError(
                f"{root} has no train/ folder (an image-folder root holds {_LAYOUT}); move the training class "
                f"folders into {root / 'train'}"
            )
        return root / "train"
    for name in ("val", "test"):
        if (root / name).is_dir():
            return root / name
    raise ActdistillError(
        f"{root} has neither val/ nor test/ (an image-folder root holds {_LAYOUT}); put the held-out images in "
        f"{root / 'val'}/<class>/"
    )


def _visible(name: str) -> bool:
    return not name.startswith(".")


def find_classes(folder: str | Path) -> list[str]:
    """Class folder names in `folder`, sorted as torchvision's `find_classes` (hidden folders skipped)."""
    folder = Path(folder)
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if e.is_dir() and _visible(e.name))
    if not names:
        raise ActdistillError(f"{folder} has no class folders; put each class's images in {folder}/<class name>/")
    return names


def read_classes(root: str | Path) -> list[str]:
    """The class names of an image-folder root (from `train/`), after checking the held-out split has the same."""
    train_dir, test_dir = split_dir(root, "train"), split_dir(root, "test")
    train, test = find_classes(train_dir), find_classes(test_dir)
    checks = ((train_dir, test_dir, set(train) - set(test)), (test_dir, train_dir, set(test) - set(train)))
    for here, there, names in checks:
        if names:
            first = sorted(names)[0]
            more = f" ({len(names)} classes in all: {', '.join(sorted(names)[:5])}{', …' if len(names) > 5 else ''})"
            raise ActdistillError(
                f"class '{first}' has a folder in {here} but not in {there}{more if len(names) > 1 else ''}; "
                f"every class needs images in both splits: add {there / first}/ or remove {here / first}/"
            )
    return train


def _unsupported(n: int) -> str:
    return "1 file with an unsupported extension" if n == 1 else f"{n} files with unsupported extensions"


def _files(folder: Path) -> list[Path]:
    """Every visible file below `folder`, recursively and in sorted order (symlinked folders followed)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if _visible(d))
        out += [Path(dirpath) / f for f in sorted(filenames) if _visible(f)]
    return out


def scan_split(folder: str | Path, classes: list[str]) -> list[tuple[str, int]]:
    """`(path relative to folder, class index)` of every image; opens no image. Other files are counted and logged."""
    folder = Path(folder)
    samples: list[tuple[str, int]] = []
    ignored: list[Path] = []
    for label, name in enumerate(classes):
        files = _files(folder / name)
        images = [f for f in files if f.suffix.lower() in IMG_EXTENSIONS]
        others = [f for f in files if f.suffix.lower() not in IMG_EXTENSIONS]
        if not images:
            what = f"only {_unsupported(len(others))}" if others else "no files"
            raise ActdistillError(
                f"class folder {folder / name} has no images ({what}); add {'/'.join(IMG_EXTENSIONS)} images to it "
                f"or remove the class from both splits"
            )
        ignored += others
        samples += [(f.relative_to(folder).as_posix(), label) for f in images]
    if ignored:
        kinds = sorted({f.suffix.lower() or "(no extension)" for f in ignored})
        log.warning(
            "%s: ignored %s (%s; e.g. %s); images must end in %s",
            folder,
            _unsupported(len(ignored)),
            ", ".join(kinds[:6]),
            ignored[0].relative_to(folder).as_posix(),
            " ".join(IMG_EXTENSIONS),
        )
    return samples


class ImageFolder(Dataset):
    """One split of an image-folder dataset; item i is `{"input": transform((3, H, W) uint8), "label", "index": i}`.

    `__init__` lists files only (no image is opened). An image that cannot be decoded gives `None` and a warning,
    so that `collate_skip_broken` drops and counts it.
    """

    def __init__(
        self, root: str | Path, split: str = "train", transform: Callable[[torch.Tensor], Any] | None = None
    ) -> None:
        self.root, self.split, self.transform = Path(root), split, transform
        self.classes: list[str] = read_classes(self.root)
        self.folder = split_dir(self.root, split)
        self.samples: list[tuple[str, int]] = scan_split(self.folder, self.classes)
        self.targets: list[int] = [label for _, label in self.samples]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.samples)

    def image_path(self, index: int) -> Path:
        """Path of sample `index`'s image file."""
        return self.folder / self.samples[index][0]

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        label = self.samples[index][1]
        path = self.image_path(index)
        try:
            img = load_image(path)
        except (OSError, RuntimeError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            # One bad file must not kill a DataLoader worker: warn, return None, let the collate drop it.
            log.warning("skipping unreadable image %s: %s", path, e)
            return None
        return {"input": self.transform(img) if self.transform else img, "label": label, "index": index}

    def __repr__(self) -> str:
        return (
            f"ImageFolder(root='{self.root}', split='{self.split}' ({self.folder.name}/), images={len(self)}, "
            f"classes={len(self.classes)}, transform={self.transform!r})"
        )


@DATASETS.register("image_folder", task="image", paper="torchvision ImageFolder layout: train/<class>/, val/ or test/")
def _image_folder(cfg: Any, split: str, transform: Callable | None) -> tuple[ImageFolder, list[str]]:
    if cfg.crop_person:
        raise ActdistillError("data.crop_person needs Stanford 40's person boxes; image folders have none: set false")
    ds = ImageFolder(cfg.root, split=split, transform=transform)
    return ds, list(ds.classes)
