"""Stanford 40 Actions (Yao et al. 2011) in its official on-disk layout; paper 1's still-image dataset.

Layout: `JPEGImages/<action>_<NNN>.jpg`, `ImageSplits/{actions,train,test}.txt` (plus per-action lists) and
`XMLAnnotations/<stem>.xml` with one person box per image.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from actdistill.errors import ActdistillError, suggest
from actdistill.registry import DATASETS

log = logging.getLogger("actdistill.data")

SPLITS = ("train", "test")
_LAYOUT = "a Stanford 40 root must contain JPEGImages/ and ImageSplits/ (train.txt, test.txt, actions.txt)"
_NAME = re.compile(r"(?P<action>.+)_\d+\.jpe?g", re.IGNORECASE)


def _lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-blank lines; tolerates CRLF, a BOM and trailing spaces."""
    if not path.is_file():
        raise ActdistillError(f"{path} not found: {_LAYOUT}; set data.root to that folder")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ActdistillError(f"{path} is not a UTF-8 text file ({e.reason}); restore the original list file") from e
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_actions(root: str | Path) -> list[str]:
    """Action names in `ImageSplits/actions.txt` order (the class index is the position in this list)."""
    path = Path(root) / "ImageSplits" / "actions.txt"
    names: list[str] = []
    for k, (lineno, line) in enumerate(_lines(path)):
        name = line.split()[0]
        if k == 0 and name.startswith("action_name"):
            continue
        if name in names:
            raise ActdistillError(f"{path}:{lineno}: action '{name}' is listed twice; remove the duplicate line")
        names.append(name)
    if not names:
        raise ActdistillError(f"{path} lists no actions; expected lines like 'applauding<TAB>284'")
    return names


def action_of(image_name: str) -> str | None:
    """The action encoded in a Stanford 40 file name (`applauding_001.jpg` -> `applauding`), or None."""
    m = _NAME.fullmatch(image_name)
    return m.group("action") if m else None


def read_split(root: str | Path, split: str) -> list[tuple[str, int]]:
    """(image file name, class index) for every line of `ImageSplits/{split}.txt`; opens no image."""
    if split not in SPLITS:
        raise ActdistillError(f"unknown Stanford 40 split '{split}'.{suggest(split, SPLITS)} Use one of {SPLITS}.")
    root = Path(root)
    path = root / "ImageSplits" / f"{split}.txt"
    lines = _lines(path)  # checked before actions.txt so a wrong root names the split file first
    index = {name: i for i, name in enumerate(read_actions(root))}
    samples: list[tuple[str, int]] = []
    for lineno, name in lines:
        action = action_of(name)
        if action is None:
            raise ActdistillError(f"{path}:{lineno}: '{name}' is not a Stanford 40 image name like applauding_001.jpg")
        if action not in index:
            raise ActdistillError(
                f"{path}:{lineno}: action '{action}' of {name} is not in ImageSplits/actions.txt."
                f"{suggest(action, index)} Add it there or remove the line."
            )
        samples.append((name, index[action]))
    return samples


def read_person_box(root: str | Path, image_name: str) -> tuple[int, int, int, int]:
    """(xmin, ymin, xmax, ymax) pixel box of the person from `XMLAnnotations/<stem>.xml` (union of all objects)."""
    path = Path(root) / "XMLAnnotations" / f"{Path(image_name).stem}.xml"
    if not path.is_file():
        raise ActdistillError(f"{path} not found: crop_person needs the XMLAnnotations/ folder; set crop_person=false")
    try:
        boxes = [
            tuple(int(float(b.findtext(k, ""))) for k in ("xmin", "ymin", "xmax", "ymax"))
            for b in ET.parse(path).getroot().iter("bndbox")
        ]
    except (ET.ParseError, ValueError) as e:
        raise ActdistillError(f"{path}: unreadable person box ({e}); fix or delete the file") from e
    if not boxes:
        raise ActdistillError(f"{path} has no <bndbox>; add the person box or set crop_person=false")
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def load_image(path: str | Path) -> torch.Tensor:
    """Decode a JPEG/PNG file into a `(3, H, W)` uint8 RGB tensor (grey and CMYK files are converted)."""
    # PIL rather than torchvision.io: the latter's decoders are deprecated from torchvision 0.29.
    with Image.open(path) as im:
        arr = np.array(im.convert("RGB"))
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


class Stanford40(Dataset):
    """Stanford 40 still images; item i is `{"input": transform((3, H, W) uint8), "label": int, "index": i}`.

    `__init__` reads only the split lists. An image that cannot be read gives `None` (and a warning) so that
    `collate_skip_broken` can drop it. With `crop_person=True` the image is cut to the XML person box first.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable[[torch.Tensor], Any] | None = None,
        crop_person: bool = False,
    ) -> None:
        self.root = Path(root)
        self.split, self.transform, self.crop_person = split, transform, crop_person
        if not self.root.is_dir():
            raise ActdistillError(f"Stanford 40 root {self.root} does not exist; set data.root to the dataset folder")
        self.classes: list[str] = read_actions(self.root)
        self.samples: list[tuple[str, int]] = _existing(self.root, split, read_split(self.root, split))
        self.targets: list[int] = [label for _, label in self.samples]
        if crop_person and not (self.root / "XMLAnnotations").is_dir():
            raise ActdistillError(
                f"{self.root / 'XMLAnnotations'} not found: crop_person needs the person boxes; set crop_person=false"
            )

    def __len__(self) -> int:
        return len(self.samples)

    def image_path(self, index: int) -> Path:
        """Path of sample `index`'s JPEG."""
        return self.root / "JPEGImages" / self.samples[index][0]

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        name, label = self.samples[index]
        path = self.image_path(index)
        try:
            img = load_image(path)
            if self.crop_person:
                img = _crop(img, read_person_box(self.root, name))
        except (OSError, RuntimeError, ValueError, SyntaxError, Image.DecompressionBombError, ActdistillError) as e:
            # One bad file must not kill a DataLoader worker: warn, return None, let the collate drop it.
            log.warning("skipping unreadable image %s: %s", path, e)
            return None
        return {"input": self.transform(img) if self.transform else img, "label": label, "index": index}

    def __repr__(self) -> str:
        return (
            f"Stanford40(root='{self.root}', split='{self.split}', images={len(self)}, classes={len(self.classes)}, "
            f"crop_person={self.crop_person}, transform={self.transform!r})"
        )


def _existing(root: Path, split: str, samples: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The listed images whose file exists (a stat, no decoding); missing ones are named once and dropped."""
    images = root / "JPEGImages"
    present = [s for s in samples if (images / s[0]).is_file()]
    missing = len(samples) - len(present)
    if samples and not present:
        raise ActdistillError(
            f"none of the {len(samples)} images listed in {root / 'ImageSplits' / f'{split}.txt'} exists under "
            f"{images} (first: {samples[0][0]}); check data.root"
        )
    if missing:
        first = next(s[0] for s in samples if not (images / s[0]).is_file())
        log.warning("%s split: %d of %d listed images are missing under %s (first: %s); they are left out",
                    split, missing, len(samples), images, first)  # fmt: skip
    return present


@DATASETS.register("stanford40", task="image", paper="Stanford 40 Actions (Yao et al. 2011); paper 1")
def _stanford40(cfg: Any, split: str, transform: Callable | None) -> tuple[Stanford40, list[str]]:
    ds = Stanford40(cfg.root, split=split, transform=transform, crop_person=cfg.crop_person)
    return ds, list(ds.classes)


def _crop(img: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Cut a `(3, H, W)` image to `box` (max exclusive), clamped to the image and at least 1×1."""
    _, h, w = img.shape
    x0, y0 = min(max(box[0], 0), w - 1), min(max(box[1], 0), h - 1)
    x1, y1 = max(min(box[2], w), x0 + 1), max(min(box[3], h), y0 + 1)
    return img[:, y0:y1, x0:x1]
