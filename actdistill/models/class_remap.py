"""Reorder a classifier's outputs by class name, for a checkpoint trained with the same classes in another order."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from actdistill.errors import ActdistillError


def class_order(source: Sequence[str], target: Sequence[str], what: str, where: str) -> list[int] | None:
    """Indices `order` with `target[j] == source[order[j]]`; None when the lists are equal.

    `source`: the classes a model predicts (its checkpoint's), `target`: the dataset's. A different set of names is
    an error naming the classes that differ.
    """
    source, target = [str(c) for c in source], [str(c) for c in target]
    if source == target:
        return None
    if sorted(source) != sorted(target):
        only_model = sorted(set(source) - set(target))[:5]
        only_data = sorted(set(target) - set(source))[:5]
        raise ActdistillError(
            f"{what} {where} predicts other classes than the dataset: only in the {what}: {only_model or 'none'}, "
            f"only in the dataset: {only_data or 'none'}; point data.root at the dataset it was trained on"
        )
    return [source.index(name) for name in target]


class ClassRemap(nn.Module):
    """Wraps `model` so its class axis (dim 1 of `(B, K)` or `(B, K, T)` outputs) follows the dataset's order."""

    def __init__(self, model: nn.Module, order: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("order", torch.as_tensor(list(order), dtype=torch.long), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).index_select(1, self.order)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        return self.model.forward_features(x)

    def forward_head(self, feature: Tensor) -> Tensor:
        return self.model.forward_head(feature).index_select(1, self.order)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)
