"""Feed a teacher that expects other mean/std than the student's input normalisation."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Renormalize(nn.Module):
    """Wraps `model`: x normalised with (mean_in, std_in) is re-normalised to (mean_out, std_out) first."""

    def __init__(self, model: nn.Module, mean_in, std_in, mean_out, std_out) -> None:
        super().__init__()
        self.model = model
        scale = torch.tensor(std_in) / torch.tensor(std_out)
        shift = (torch.tensor(mean_in) - torch.tensor(mean_out)) / torch.tensor(std_out)
        self.register_buffer("scale", scale.view(1, -1, *([1] * 2)), persistent=False)
        self.register_buffer("shift", shift.view(1, -1, *([1] * 2)), persistent=False)

    def _renorm(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)  # (B, C, H, W) or (B, C, T, H, W)
        return x * self.scale.view(shape) + self.shift.view(shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self._renorm(x))

    def forward_features(self, x: Tensor) -> list[Tensor]:
        return self.model.forward_features(self._renorm(x))

    def forward_head(self, feature: Tensor) -> Tensor:
        return self.model.forward_head(feature)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)
