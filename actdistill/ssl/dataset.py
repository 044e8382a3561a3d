"""Paper 3's training data: PCL tuples from UCF101-layout videos, as sample dicts (the batch contract).

Dataset `pcl_ucf101` (task `pcl`): each sample is `{"input": (3, C, T, H, W) float, "label": pretext label 0-4}`
(`index` is added by the engine's `SeededView`). A tuple is three clips of `data.clip_len` frames spaced by
`data.tuple_interval`; one pretext transform (PCL's datasets/ucf101.py) is applied to the middle clip. Training draws
come from the torch RNG that `SeededView` seeds per (seed, epoch, index), so they are the same for any number of
workers or processes and after a resume; validation tuples are fixed per index. The validation split is PCL's: the
tuples of the test split's videos (`data.val_repeats` draws per video), unless `data.val_fraction` carves one out of
the training videos.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torch.utils.data import Dataset

from actdistill.config import Config
from actdistill.data.decode import read_frames
from actdistill.data.manifest import VideoRecord, build_manifest
from actdistill.data.ucf101 import read_split
from actdistill.data.video_transforms import IMAGENET_MEAN, IMAGENET_STD, VideoCompose
from actdistill.errors import ActdistillError
from actdistill.registry import DATASETS
from actdistill.ssl.augment import AugmentConfig, build_pcl_augment, clip_generator
from actdistill.ssl.pretext import NUM_PRETEXT, apply_pretext, remote_clip_start, tuple_starts, tuple_total

PRETEXT_NAMES = ("original", "rotation", "permutation", "shuffle", "remote")  # labels 0-4


class PCLTupleDataset(Dataset):
    """PCL tuples of `records` (videos shorter than the tuple window are dropped; PCL keeps those with ≥ 64 frames).

    `augment`: a `(T, C, H, W)` uint8 → `(C, T, H, W)` float pipeline (`build_pcl_augment`) drawn once per clip with a
    generator seeded by (tuple seed, clip number 0-2, 3 = remote); None = frames resized to `size` × `size` (even, for
    the quadrant permutation; None keeps the stored size), `[0, 1]` and ImageNet normalisation. `train=False`: draws
    fixed per index; `repeats` > 1 (validation only) gives `repeats` differently seeded tuples per video (item i is
    video i mod N).
    """

    def __init__(
        self,
        root: str | Path,
        records: list[VideoRecord],
        *,
        clip_len: int = 16,
        interval: int = 8,
        tuple_len: int = 3,
        mode: str = "faithful",
        remote_rule: str = "both_sides",
        min_gap: int = 16,
        train: bool = True,
        seed: int = 0,
        augment: VideoCompose | None = None,
        repeats: int = 1,
        size: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.window = tuple_total(clip_len, interval, tuple_len)
        self.records = [r for r in records if r.num_frames >= self.window]
        if not self.records:
            raise ActdistillError(
                f"{self.root}: no video has the {self.window} frames a PCL tuple needs (data.clip_len·3 + "
                "data.tuple_interval·2); lower data.clip_len or data.tuple_interval, or use longer videos"
            )
        if repeats < 1 or (train and repeats != 1):
            raise ActdistillError(f"repeats must be ≥ 1, and 1 for training (memory-bank indices), got {repeats}")
        self.clip_len, self.interval, self.tuple_len, self.mode = clip_len, interval, tuple_len, mode
        self.remote_rule, self.min_gap, self.train, self.seed = remote_rule, min_gap, train, seed
        self.augment, self.repeats, self.size = augment, repeats, size
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)

    def __len__(self) -> int:
        return len(self.records) * self.repeats

    def _tuple_seed(self, index: int) -> int:
        if self.train:  # SeededView has seeded torch's RNG with (seed, epoch, index)
            return int(torch.randint(2**62, ()).item())
        return (self.seed * 1_000_003 + 1) * 1_000_003 + index

    def _clip(self, frames: dict[int, Tensor], start: int, seed: int, number: int) -> Tensor:
        """Frames `start..start+clip_len−1` → `(C, T, H, W)` float, augmented with clip `number`'s own draw."""
        clip = torch.stack([frames[start + t] for t in range(self.clip_len)])  # (T, C, H, W) uint8
        if self.augment is not None:
            return self.augment(clip, clip_generator(seed, number))
        if self.size and tuple(clip.shape[-2:]) != (self.size, self.size):
            clip = TF.resize(clip, [self.size, self.size], antialias=True)
        return (clip.permute(1, 0, 2, 3).float() / 255 - self.mean) / self.std

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index % len(self.records)]
        seed = self._tuple_seed(index)
        rng = random.Random(seed)
        starts = tuple_starts(rec.num_frames, self.clip_len, self.interval, self.tuple_len, self.mode, rng)
        label = rng.randrange(NUM_PRETEXT)
        remote = None
        if label == 4:
            remote = remote_clip_start(
                rec.num_frames, starts[0], self.window, self.clip_len, rng, self.min_gap, remote_rule=self.remote_rule
            )
            if remote is None:
                label = rng.randrange(NUM_PRETEXT - 1)
        wanted = sorted(
            {s + t for s in [*starts, *([remote] if remote is not None else [])] for t in range(self.clip_len)}
        )
        frames = dict(zip(wanted, read_frames(self.root / rec.path, wanted).unbind(0), strict=True))
        clips = [self._clip(frames, s, seed, k) for k, s in enumerate(starts)]
        remote_clip = self._clip(frames, remote, seed, 3) if remote is not None else None
        clips[1], _ = apply_pretext(clips[1], label, rng, remote_clip)
        return {"input": torch.stack(clips), "label": label}


def _split_root(cfg: Config) -> Path:
    root = Path(cfg.data.root)
    return Path(cfg.data.annotation_dir) if cfg.data.annotation_dir else root / "ucfTrainTestlist"


def check_pcl_data(cfg: Config) -> None:
    """Settings of a PCL run, before any work: tuple shape, augmentation, where the split files are."""
    if cfg.data.tuple_len != 3:
        raise ActdistillError(f"data.tuple_len must be 3 for PCL (three clips per tuple), got {cfg.data.tuple_len}")
    augment = AugmentConfig.from_dict(cfg.data.augment or {"enabled": False}, "data.augment")
    if not augment.enabled and cfg.data.image_size % 2:
        raise ActdistillError(f"data.image_size must be even for the quadrant permutation, got {cfg.data.image_size}")
    if not _split_root(cfg).is_dir():
        raise ActdistillError(
            f"data.root {cfg.data.root} has no ucfTrainTestlist/ folder; point it at a UCF101-layout folder "
            "(docs/video_data.md) or set data.annotation_dir"
        )


def clip_side(cfg: Config) -> int:
    """Side of the square clips the network sees (the augmentation's crop, else `data.image_size`)."""
    augment = AugmentConfig.from_dict(cfg.data.augment or {"enabled": False}, "data.augment")
    return augment.crop if augment.enabled else cfg.data.image_size


def _records(cfg: Config, subset: str) -> list[VideoRecord]:
    entries = read_split(_split_root(cfg), cfg.data.split, subset)  # type: ignore[arg-type]
    return list(build_manifest(Path(cfg.data.root), entries, workers=max(1, cfg.data.num_workers), progress=False))


def build_pcl_data(cfg: Config, train_draws: bool = True) -> tuple[PCLTupleDataset, None, PCLTupleDataset]:
    """(train, None, test) PCL tuple datasets; `train_draws=False` gives the training videos with fixed draws (a
    validation split carved from them)."""
    augment = AugmentConfig.from_dict(cfg.data.augment or {"enabled": False}, "data.augment")
    common: dict[str, Any] = {
        "clip_len": cfg.data.clip_len,
        "interval": cfg.data.tuple_interval,
        "tuple_len": cfg.data.tuple_len,
        "mode": cfg.data.tuple_mode,
        "remote_rule": cfg.data.remote_rule,
        "min_gap": cfg.data.remote_min_gap,
        "seed": cfg.train.seed,
        "augment": build_pcl_augment(augment) if augment.enabled else None,
        "size": None if augment.enabled else cfg.data.image_size,
    }
    root = Path(cfg.data.root)
    train = PCLTupleDataset(root, _records(cfg, "train"), train=train_draws, **common)
    test = PCLTupleDataset(root, _records(cfg, "test"), train=False, repeats=cfg.data.val_repeats, **common)
    return train, None, test


@DATASETS.register("pcl_ucf101", task="pcl", paper="paper 3: PCL tuples of UCF101-layout videos (PCL's datasets)")
def _pcl_ucf101(cfg: Any, split: str, transform: Any) -> tuple[Dataset, list[str]]:
    """The registry entry: PCL tuples of one split (the engine builds them through `build_pcl_data`)."""
    train, _, test = build_pcl_data(cfg if isinstance(cfg, Config) else Config(data=cfg))
    return (train if split == "train" else test), list(PRETEXT_NAMES)
