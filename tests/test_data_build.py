"""Augmentation is a pure function of (seed, epoch, index): independent of workers, replayable on resume."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from actdistill.data.build import SeededView, limit
from actdistill.data.collate import collate_skip_broken


class RandomViews(Dataset):
    """Each sample is a random draw, as a random crop would be."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> dict:
        return {"input": torch.rand(3), "label": i % 2, "index": 100 + i}


def test_same_epoch_same_view_other_epoch_other_view():
    view = SeededView(RandomViews(), seed=3)
    view.set_epoch(1)
    a = view[2]["input"]
    torch.rand(10)  # global RNG use in between must not matter
    assert torch.equal(a, view[2]["input"])
    view.set_epoch(2)
    assert not torch.equal(a, view[2]["input"])
    assert view[2]["index"] == 2  # indices are positions in the view (memory banks rely on it)


def test_views_do_not_depend_on_worker_count():
    view = SeededView(RandomViews(), seed=0)
    view.set_epoch(4)
    batches = []
    for workers in (0, 2):
        loader = DataLoader(view, batch_size=3, num_workers=workers, collate_fn=collate_skip_broken)
        batches.append(torch.cat([b["input"] for b in loader]))
    assert torch.equal(batches[0], batches[1])


def test_global_rng_untouched_by_sampling():
    view = SeededView(RandomViews(), seed=0)
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    view[0]
    assert torch.equal(torch.rand(2), expected)


def test_limit_spreads_over_the_dataset():
    subset = limit(RandomViews(), 3)
    assert list(subset.indices) == [0, 2, 4]
    assert limit(RandomViews(), 0) is not subset and len(limit(RandomViews(), 0)) == 6
