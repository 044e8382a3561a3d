"""Temporal-detection data: per-video snippet features with THUMOS-style annotations, as sample dicts.

Dataset `detection_features` (task `detection`): `data.root` is a folder written by `actdistill detect extract`
(`features.json` + one `(T, C)` `.npy` per video), `data.annotations` a folder of `<Class>_<subset>.txt` files or an
ActionFormer-style `.json`, `data.train_subset` / `data.test_subset` the subsets (THUMOS14: val / test). Training
takes random crops of `data.crop_len` feature steps (drawn from the torch RNG that `SeededView` seeds per
(seed, epoch, index)); evaluation runs whole videos. Samples: `input` `(C, T)`, `segments` `(N, 2)` on the level-0
grid, `labels` `(N,)`, `video`, `offset`, and `input_t` with `data.teacher_root`.

With `ssl=True` (`build_detection_data` sets it for training data when the recipe's method has `ssl_weight > 0`:
the dataset asks the method) every training sample also carries AFSD's boundary-consistency sample (AFSD (Lin et
al. CVPR-21), boundary consistency learning; `detect/boundary.py`), drawn after the crop from the same seeded RNG:
`ssl_input` `(C, T)` (and `ssl_input_t`, the same splice of the teacher's features), `ssl_segments` `(3, 2)` int64
inclusive steps (left part, right part, inserted background piece) and `ssl_valid` (False: no suitable action or
background in the crop; then `ssl_input` is a copy of `input` and the segments are zeros).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from actdistill.config import Config
from actdistill.detect.annotations import load_annotations
from actdistill.detect.boundary import draw_splice, splice_threshold
from actdistill.detect.features import INDEX
from actdistill.errors import ActdistillError
from actdistill.eval.detection import AMBIGUOUS
from actdistill.registry import DATASETS


def read_index(folder: str | Path) -> dict[str, Any]:
    """The `features.json` of a feature folder."""
    path = Path(folder) / INDEX
    if not path.is_file():
        raise ActdistillError(f"{path} not found; run `actdistill detect extract --out {folder}` first")
    return json.loads(path.read_text())


def resolve_classes(spec: Any, rows: list[dict[str, Any]]) -> list[str]:
    """Class names from a list, a classes.txt file, or (empty) the sorted non-Ambiguous labels of `rows`."""
    if isinstance(spec, (list, tuple)) and spec:
        return [str(c) for c in spec]
    if spec:
        path = Path(spec)
        if not path.is_file():
            raise ActdistillError(f"classes file {path} not found; give a file with one class a line, or a list")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return sorted({str(r["label"]) for r in rows} - {AMBIGUOUS})


class FeatureSequences(Dataset):
    """Videos with features and annotations → dicts of `input` `(C, T)`, `segments` `(N, 2)` grid, `labels` `(N,)`."""

    def __init__(
        self,
        feature_dir: str | Path,
        rows: list[dict[str, Any]],
        classes: list[str],
        crop_len: int = 0,
        teacher_dir: str | Path = "",
        ssl: bool = False,
    ) -> None:
        self.dir, self.teacher_dir = Path(feature_dir), Path(teacher_dir) if teacher_dir else None
        self.ssl = ssl  # also build AFSD's boundary-consistency sample (module docstring)
        self.index = read_index(feature_dir)
        self.fps, self.stride = float(self.index["fps"]), int(self.index["stride"])
        self.classes, self.crop_len = classes, crop_len
        self.rows = rows
        annotated = sorted({str(r["video"]) for r in rows})
        missing = [v for v in annotated if v not in self.index["videos"]]
        if missing:
            raise ActdistillError(
                f"{len(missing)} annotated videos have no features in {self.dir} (e.g. {missing[0]}); "
                "run `actdistill detect extract` on their folder into it"
            )
        self.videos = annotated
        self.class_id = {c: i for i, c in enumerate(classes)}

    def __len__(self) -> int:
        return len(self.videos)

    def to_grid(self, seconds: np.ndarray) -> np.ndarray:
        """Seconds → level-0 grid coordinate x, where x stands for `(x + 0.5)·stride / fps` (features.py)."""
        return seconds * self.fps / self.stride - 0.5

    def to_seconds(self, grid: Tensor) -> Tensor:
        """Level-0 grid coordinates → seconds."""
        return (grid + 0.5) * self.stride / self.fps

    def feature_stats(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean and std `(C,)` of the student features over every step of every video."""
        total, sq, n = 0.0, 0.0, 0
        for video in self.videos:
            x = self._load(self.dir, video).double()
            total, sq, n = total + x.sum(1), sq + (x**2).sum(1), n + x.shape[1]
        mean = total / n
        return mean.float(), (sq / n - mean**2).clamp_min(0).sqrt().float()

    def _load(self, folder: Path, video: str) -> Tensor:
        path = folder / f"{video}.npy"
        if not path.is_file():
            raise ActdistillError(f"feature file {path} not found; (re-)run `actdistill detect extract` for it")
        return torch.from_numpy(np.load(path).astype(np.float32)).T.contiguous()  # (C, T)

    def __getitem__(self, i: int) -> dict[str, Any]:
        video = self.videos[i]
        x = self._load(self.dir, video)
        xt = self._load(self.teacher_dir, video) if self.teacher_dir else None
        if xt is not None and xt.shape[1] != x.shape[1]:
            raise ActdistillError(
                f"{video}: student features have {x.shape[1]} steps, teacher features {xt.shape[1]}; "
                "extract both with the same --fps and --stride"
            )
        every = [r for r in self.rows if str(r["video"]) == video]
        own = [r for r in every if r["label"] in self.class_id]
        seg = self.to_grid(np.asarray([[r["start"], r["end"]] for r in own], np.float64).reshape(-1, 2))
        labels = np.asarray([self.class_id[r["label"]] for r in own], np.int64)
        th = splice_threshold(seg)  # AFSD's per-video threshold: over the whole video's actions, before the crop
        ignored = self.to_grid(np.asarray([[r["start"], r["end"]] for r in every], np.float64).reshape(-1, 2))
        offset = 0
        if self.crop_len and x.shape[1] > self.crop_len:
            offset = int(torch.randint(0, x.shape[1] - self.crop_len + 1, ()))
            x = x[:, offset : offset + self.crop_len]
            xt = xt[:, offset : offset + self.crop_len] if xt is not None else None
            clipped = np.clip(seg - offset, 0, self.crop_len - 1)
            lengths = np.maximum(seg[:, 1] - seg[:, 0], 1e-6)
            # ActionFormer's truncation rule: keep a segment when more than half of it lies inside the crop.
            keep = (clipped[:, 1] - clipped[:, 0]) / lengths > 0.5
            seg, labels = clipped[keep], labels[keep]
        item = {
            "video": video,
            "input": x,
            "segments": torch.from_numpy(seg).float(),
            "labels": torch.from_numpy(labels),
        }
        if xt is not None:
            item["input_t"] = xt
        item["offset"] = offset
        if self.ssl:
            # After the crop's draw, from the same RNG: crops are the same with and without the SSL sample.
            splice = draw_splice(seg, x.shape[1], th, ignored - offset)
            item["ssl_valid"] = splice is not None
            item["ssl_input"] = splice.apply(x) if splice else x.clone()
            item["ssl_segments"] = splice.segments() if splice else torch.zeros(3, 2, dtype=torch.long)
            if xt is not None:
                item["ssl_input_t"] = splice.apply(xt) if splice else xt.clone()
        return item


def collate_sequences(items: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Pad `input` (and `input_t`, `ssl_input`, `ssl_input_t`) to the longest sequence: `(B, C, T)`, with `mask`
    `(B, T)` bool; `ssl_segments` `(B, 3, 2)` and `ssl_valid` `(B,)` are stacked when the samples have them."""
    kept = [it for it in items if it is not None]
    if not kept:
        return {"skipped": len(items)}
    skipped, items = len(items) - len(kept), kept
    length = max(it["input"].shape[1] for it in items)
    batch: dict[str, Any] = {"video": [it["video"] for it in items]}
    for key in ("input", "input_t", "ssl_input", "ssl_input_t"):
        if key in items[0]:
            x = torch.zeros(len(items), items[0][key].shape[0], length)
            for b, it in enumerate(items):
                x[b, :, : it[key].shape[1]] = it[key]
            batch[key] = x
    mask = torch.zeros(len(items), length, dtype=torch.bool)
    for b, it in enumerate(items):
        mask[b, : it["input"].shape[1]] = True
    batch["mask"] = mask
    batch["segments"] = [it["segments"] for it in items]
    batch["labels"] = [it["labels"] for it in items]
    batch["offset"] = torch.tensor([it["offset"] for it in items])
    batch["index"] = torch.tensor([it.get("index", -1) for it in items])
    if "ssl_valid" in items[0]:
        batch["ssl_segments"] = torch.stack([it["ssl_segments"] for it in items])
        batch["ssl_valid"] = torch.tensor([bool(it["ssl_valid"]) for it in items])
    batch["skipped"] = skipped
    return batch


def feature_stats(dataset: Any) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std `(C,)` of the student features over every step of the training videos."""
    inner = dataset
    while not isinstance(inner, FeatureSequences):  # SeededView / Subset wrappers
        inner = inner.dataset
    return inner.feature_stats()


def check_detection_data(cfg: Config) -> None:
    """Settings of a detection run, before any work: the feature folder and the annotations exist."""
    if not cfg.data.root or not cfg.data.annotations:
        raise ActdistillError(
            "detection needs data.root (a feature folder) and data.annotations (see configs/detection/)"
        )
    read_index(cfg.data.root)
    if not Path(cfg.data.annotations).exists():
        raise ActdistillError(f"data.annotations {cfg.data.annotations} not found; give the annotation folder or .json")
    if cfg.data.teacher_root:
        read_index(cfg.data.teacher_root)


def feature_width(cfg: Config) -> int:
    """Channels C of the student's features (`features.json`)."""
    return int(read_index(cfg.data.root)["feature_dim"])


def detection_classes(cfg: Config) -> list[str]:
    """Class names: `data.classes` (a classes.txt) or the sorted labels of the training subset."""
    return resolve_classes(cfg.data.classes, load_annotations(cfg.data.annotations, cfg.data.train_subset))


def wants_ssl(cfg: Config) -> bool:
    """The recipe's method trains with AFSD's triplet term (`method.ssl_weight > 0`), so training samples need it."""
    try:
        return float(cfg.method.get("ssl_weight") or 0.0) > 0
    except (TypeError, ValueError):  # not a number: the method's own check reports it
        return False


def build_detection_data(cfg: Config, train_crops: bool = True) -> tuple[FeatureSequences, FeatureSequences, list[str]]:
    """(train, test, classes): training videos (cropped to `data.crop_len` unless `train_crops=False`; with the SSL
    sample when `wants_ssl(cfg)` and `train_crops`), test videos."""
    data = cfg.data
    train_rows = load_annotations(data.annotations, data.train_subset)
    test_rows = load_annotations(data.annotations, data.test_subset)
    classes = resolve_classes(data.classes, train_rows)
    crop = data.crop_len if train_crops else 0
    ssl = train_crops and wants_ssl(cfg)
    train = FeatureSequences(data.root, train_rows, classes, crop, data.teacher_root, ssl)
    test = FeatureSequences(data.root, test_rows, classes, 0, data.teacher_root)
    return train, test, classes


@DATASETS.register("detection_features", task="detection", paper="THUMOS14-style annotations over snippet features")
def _detection_features(cfg: Any, split: str, transform: Any) -> tuple[Dataset, list[str]]:
    """The registry entry (the engine builds detection data through `build_detection_data`)."""
    train, test, classes = build_detection_data(Config(data=cfg))
    return (train if split == "train" else test), classes
