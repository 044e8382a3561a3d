"""Image transforms: `(3, H, W)` uint8 in, `(3, size, size)` float32 normalised out (paper 1, §III-A)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from actdistill.errors import ActdistillError


class ImageTransform:
    """Paper-1 augmentation: train = RandomResizedCrop + horizontal flip, test = Resize((size, size)); normalise."""

    def __init__(
        self,
        train: bool,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        scale: tuple[float, float] = (0.08, 1.0),
        hflip: bool = True,
    ) -> None:
        if int(size) != size or size < 1:
            raise ActdistillError(f"image transform: size must be a positive integer, got {size!r}; fix data.size")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ActdistillError(f"image transform: need 3 means and 3 positive stds, got mean={mean}, std={std}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ActdistillError(f"image transform: crop scale must satisfy 0 < min <= max <= 1, got {scale}")
        self.train, self.size = train, int(size)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.scale = (float(scale[0]), float(scale[1]))
        if train:
            geometry = [v2.RandomResizedCrop(self.size, scale=self.scale, antialias=True)]
            if hflip:
                geometry.append(v2.RandomHorizontalFlip())
        else:
            geometry = [v2.Resize((self.size, self.size), antialias=True)]
        self._pipeline = v2.Compose(
            [v2.ToImage(), *geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        )

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """`(3, H, W)` uint8 tensor (or PIL image) → `(3, size, size)` float32, normalised with mean/std."""
        # Return a plain tensor: tv_tensors.Image subclasses leak into collate and model code otherwise.
        return self._pipeline(img).as_subclass(torch.Tensor)

    def __repr__(self) -> str:
        aug = f"RandomResizedCrop(scale={self.scale})+HFlip" if self.train else "Resize"
        mode = "train" if self.train else "test"
        return f"ImageTransform({mode}, size={self.size}, {aug}, mean={self.mean}, std={self.std})"


def build_image_transform(
    train: bool,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    scale: tuple[float, float] = (0.08, 1.0),
    hflip: bool = True,
) -> ImageTransform:
    """Paper-1 image transform: `(3, H, W)` uint8 → `(3, size, size)` float32 normalised by `mean`/`std` (0-1 units)."""
    return ImageTransform(train, size, mean, std, scale, hflip)
