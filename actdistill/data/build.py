"""Config → datasets and loaders. Augmentation randomness is a pure function of (seed, epoch, index)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from actdistill.config import DataConfig
from actdistill.data.collate import collate_skip_broken
from actdistill.registry import DATASETS


@dataclass
class DatasetBundle:
    """Train and test datasets with their class names."""

    train: Dataset
    test: Dataset
    classes: list[str]


class SeededView(Dataset):
    """Wraps a dataset so that sample `i` of epoch `e` is drawn with its own torch seed.

    Results then do not depend on the number of loader workers, and a run resumed at an epoch
    boundary replays exactly the views the uninterrupted run would have seen.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash((self.seed, self.epoch, index)) % 2**63)
            sample = self.dataset[index]
        if isinstance(sample, dict):
            sample["index"] = index  # positions in this view: memory-bank methods index by them
        return sample


def _limit(dataset: Dataset, n: int) -> Dataset:
    """The first `n` samples spread evenly over the dataset (keeps every class in small smoke runs)."""
    total = len(dataset)  # type: ignore[arg-type]
    if n <= 0 or n >= total:
        return dataset
    step = total / n
    return Subset(dataset, [int(i * step) for i in range(n)])


def build_datasets(
    cfg: DataConfig, train_transform: Callable | None, test_transform: Callable | None, seed: int = 0
) -> DatasetBundle:
    """Build the registered dataset `cfg.name` for both splits (the training split wrapped in `SeededView`)."""
    builder = DATASETS.get(cfg.name)
    train, classes = builder(cfg, "train", train_transform)
    test, _ = builder(cfg, "test", test_transform)
    return DatasetBundle(SeededView(_limit(train, cfg.limit_train), seed), _limit(test, cfg.limit_test), classes)


def make_loader(dataset: Dataset, cfg: DataConfig, *, train: bool, device: torch.device, generator=None) -> DataLoader:
    """A DataLoader tuned for the device: pinned memory on CUDA, prefetching workers, broken samples skipped."""
    batch_size = cfg.batch_size if train else (cfg.eval_batch_size or cfg.batch_size)
    workers = max(0, cfg.num_workers)
    n = len(dataset)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train and n > batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
        collate_fn=collate_skip_broken,
        generator=generator,
    )


@DATASETS.register("stanford40", task="image", paper="Stanford 40 Actions (Yao et al. 2011); paper 1")
def _stanford40(cfg: DataConfig, split: str, transform: Callable | None) -> tuple[Dataset, Sequence[str]]:
    from actdistill.data.stanford40 import Stanford40

    ds = Stanford40(cfg.root, split=split, transform=transform, crop_person=cfg.crop_person)
    return ds, list(ds.classes)
