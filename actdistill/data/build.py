"""Config → datasets and loaders. Augmentation randomness is a pure function of (seed, epoch, index)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, Subset

from actdistill.config import DataConfig
from actdistill.data.collate import collate_skip_broken
from actdistill.errors import ActdistillError
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
            # The CPU generator only (transforms draw from it): torch.manual_seed would also queue a seed for every
            # accelerator, which fork_rng(devices=[]) does not restore, and costs ~1.4 ms a sample (stack captures).
            torch.default_generator.manual_seed(hash((self.seed, self.epoch, index)) % 2**63)
            sample = self.dataset[index]
        if isinstance(sample, dict):
            sample["index"] = index  # positions in this view: memory-bank methods index by them
        return sample


def dataset_targets(dataset: Dataset) -> list[int] | None:
    """Class index of every sample, read without decoding (`targets` of the dataset, through `Subset`s); or None."""
    if isinstance(dataset, Subset):
        inner = dataset_targets(dataset.dataset)
        return None if inner is None else [inner[i] for i in dataset.indices]
    targets = getattr(dataset, "targets", None)
    return None if targets is None else [int(t) for t in targets]


def stratified_split(targets: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) positions: per class, a seeded `fraction` (at least one sample when the class has two) for val."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + 99991)
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(int(t), []).append(i)
    val: list[int] = []
    for label in sorted(by_class):
        members = by_class[label]
        take = min(max(round(fraction * len(members)), 1), len(members) - 1) if len(members) > 1 else 0
        order = torch.randperm(len(members), generator=g).tolist()
        val += [members[j] for j in order[:take]]
    chosen = set(val)
    return [i for i in range(len(targets)) if i not in chosen], sorted(val)


def limit(dataset: Dataset, n: int) -> Dataset:
    """The first `n` samples spread evenly over the dataset (keeps every class in small smoke runs)."""
    total = len(dataset)  # type: ignore[arg-type]
    if n <= 0 or n >= total:
        return dataset
    step = total / n
    return Subset(dataset, [int(i * step) for i in range(n)])


def build_split(cfg: DataConfig, split: str, transform: Callable | None) -> tuple[Dataset, Sequence[str]]:
    """One split of the registered dataset `cfg.name`; an unreadable file or folder is a one-line error."""
    try:
        return DATASETS.get(cfg.name)(cfg, split, transform)
    except PermissionError as exc:
        raise ActdistillError(
            f"{exc.filename or cfg.root}: permission denied; make the dataset readable by this user "
            f"(e.g. chmod -R a+rX {cfg.root}) or set data.root to a readable copy"
        ) from None


def build_datasets(
    cfg: DataConfig, train_transform: Callable | None, test_transform: Callable | None, seed: int = 0
) -> DatasetBundle:
    """Build the registered dataset `cfg.name` for both splits (the training split wrapped in `SeededView`)."""
    train, classes = build_split(cfg, "train", train_transform)
    test, _ = build_split(cfg, "test", test_transform)
    return DatasetBundle(SeededView(limit(train, cfg.limit_train), seed), limit(test, cfg.limit_test), classes)


class EpochBatchSampler(Sampler[list[int]]):
    """Training batches of one epoch: a pure function of (seed, epoch), sharded over `world` processes.

    The epoch's permutation is cut into global batches of `batch_size × world`; process `rank` takes the `rank`-th
    contiguous slice of each, so `world` processes together see exactly the batches of one process with the global
    batch size. The last incomplete global batch is dropped unless it is the only one (then it is split evenly).
    `resume_at(k)` makes the next pass start at batch k without loading the skipped samples.
    """

    def __init__(self, size: int, batch_size: int, *, seed: int = 0, rank: int = 0, world: int = 1) -> None:
        self.size, self.batch_size, self.seed, self.rank, self.world = size, batch_size, seed, rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, batch: int) -> None:
        """Skip the first `batch` batches of the next pass only."""
        self.start = batch

    def _global_batches(self) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch * 7919 + 17) % 2**63)
        order = torch.randperm(self.size, generator=g)
        batches = [b for b in order.split(self.batch_size * self.world) if len(b)]
        if len(batches) > 1 and len(batches[-1]) < self.batch_size * self.world:
            batches.pop()
        return batches

    def __iter__(self):
        start, self.start = self.start, 0
        for batch in self._global_batches()[start:]:
            yield batch.tensor_split(self.world)[self.rank].tolist()

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.batch_size * self.world)
        return full or int(rest > 0)


def shard_range(size: int, rank: int, world: int) -> range:
    """Contiguous block `rank` of `world` near-equal blocks of range(size): no sample twice, none padded."""
    per, extra = divmod(size, world)
    lo = rank * per + min(rank, extra)
    return range(lo, lo + per + (rank < extra))


def make_loader(
    dataset: Dataset,
    cfg: DataConfig,
    *,
    train: bool,
    device: torch.device,
    generator: torch.Generator | None = None,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
    collate: Callable = collate_skip_broken,
) -> DataLoader:
    """A DataLoader tuned for the device: pinned memory on CUDA, prefetching workers, broken samples skipped.

    Training batches come from an `EpochBatchSampler` (call `loader.batch_sampler.set_epoch(e)` each epoch);
    test batches cover this process's contiguous shard of the test set, in order.
    """
    workers = max(0, cfg.num_workers)
    n = len(dataset)  # type: ignore[arg-type]
    if train:
        batches: Sampler = EpochBatchSampler(n, cfg.batch_size, seed=seed, rank=rank, world=world)
    else:
        batches = BatchSampler(shard_range(n, rank, world), cfg.eval_batch_size or cfg.batch_size, drop_last=False)
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
        collate_fn=collate,
        generator=generator,
    )


def dataset_task(name: str) -> str:
    """`image` or `video`, from the dataset's registry metadata."""
    return str(DATASETS.meta(name).get("task", "image"))


def build_transforms(cfg: DataConfig, mean, std) -> tuple[Callable, Callable]:
    """Train and test transforms for the dataset's task, normalised with the model's mean/std."""
    if dataset_task(cfg.name) == "video":
        from actdistill.data.video_transforms import build_video_transform

        flow = cfg.modality == "flow"
        kwargs = {
            "size": cfg.image_size,
            "flow": flow,
            "resize": cfg.resize or None,
            "hflip": cfg.hflip,
            "offsets_from": cfg.multiscale_offsets,
        }
        if not flow:
            kwargs.update(mean=mean, std=std)
        return build_video_transform(True, **kwargs), build_video_transform(False, **kwargs)
    from actdistill.data.transforms import build_image_transform

    train = build_image_transform(True, cfg.image_size, mean, std, scale=(cfg.scale_min, 1.0), hflip=cfg.hflip)
    return train, build_image_transform(False, cfg.image_size, mean, std)
