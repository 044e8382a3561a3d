"""PCL's per-clip train augmentation (PCL's released code, `train_vcp_contrast.py:L313-L332`).

Resize((128, 171)) → RandomCrop(112) → RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8) → RandomGrayscale(0.2)
→ RandomApply(GaussianBlur σ ∈ [0.1, 2], p=0.5) → RandomHorizontalFlip → ImageNet normalisation, on `(T, C, H, W)`
uint8 frames. One draw per clip, shared by all its frames (PCL reseeds per clip); `PCLTupleDataset` seeds every clip
of a tuple separately from (seed, epoch, index, clip), so the clips of one tuple get different draws.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from actdistill.data.video_transforms import (
    ColorJitter,
    HorizontalFlip,
    Params,
    RandomCrop,
    Resize,
    ToNormalizedClip,
    VideoCompose,
    VideoTransform,
)
from actdistill.errors import ActdistillError


class RandomGrayscale(VideoTransform):
    """With probability `p`, every frame of the clip becomes 3-channel grey (torchvision's luma weights)."""

    def __init__(self, p: float = 0.2) -> None:
        self.p = float(p)

    def sample_params(self, clip: Tensor, rng: torch.Generator | None = None) -> Params:
        return {"gray": bool(torch.rand((), generator=rng).item() < self.p)}

    def apply(self, clip: Tensor, params: Params) -> Tensor:
        return TF.rgb_to_grayscale(clip, num_output_channels=clip.shape[1]) if params["gray"] else clip


class RandomGaussianBlur(VideoTransform):
    """With probability `p`, blur every frame with one σ ~ U[σ_lo, σ_hi] (MoCo-v2 blur, as PCL).

    The kernel spans ±3σ (odd side, at most the frame's smaller odd side), close to PIL's `GaussianBlur(radius=σ)`.
    """

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0), p: float = 0.5) -> None:
        self.sigma, self.p = (float(sigma[0]), float(sigma[1])), float(p)

    def sample_params(self, clip: Tensor, rng: torch.Generator | None = None) -> Params:
        on = bool(torch.rand((), generator=rng).item() < self.p)
        lo, hi = self.sigma
        return {"blur": on, "sigma": lo + (hi - lo) * float(torch.rand((), generator=rng).item())}

    def apply(self, clip: Tensor, params: Params) -> Tensor:
        if not params["blur"]:
            return clip
        side = min(clip.shape[-2:])
        kernel = min(2 * math.ceil(3 * params["sigma"]) + 1, side if side % 2 else side - 1)
        return TF.gaussian_blur(clip, [kernel, kernel], [params["sigma"], params["sigma"]])


@dataclass
class AugmentConfig:
    """Settings of the PCL train augmentation; `enabled=False` gives plain `[0, 1]` → ImageNet normalisation.

    `resize`: `[height, width]` before cropping (PCL: 128×171) or None (keep the stored size); `crop`: square side
    (PCL: 112; must be even for the quadrant permutation); `jitter`: brightness, contrast, saturation, hue.
    """

    enabled: bool = True
    resize: list[int] | None = None
    crop: int = 112
    jitter: list[float] | None = None
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: list[float] | None = None
    flip_p: float = 0.5

    def __post_init__(self) -> None:
        self.resize = list(self.resize) if self.resize is not None else None
        self.jitter = list(self.jitter) if self.jitter is not None else [0.4, 0.4, 0.4, 0.1]
        self.blur_sigma = list(self.blur_sigma) if self.blur_sigma is not None else [0.1, 2.0]

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, where: str = "augment") -> AugmentConfig:
        """Build from a YAML mapping; unknown keys raise ActdistillError naming `where` and the valid keys."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ActdistillError(f"{where}: unknown augmentation keys {unknown}; valid keys are {sorted(known)}")
        cfg = cls(**values)
        cfg.check(where)
        return cfg

    def check(self, where: str = "augment") -> None:
        """Raise ActdistillError for settings the PCL pipeline cannot run with."""
        if self.crop <= 0 or self.crop % 2:
            raise ActdistillError(
                f"{where}: crop must be a positive even number (quadrant permutation), got {self.crop}"
            )
        if self.resize is not None and (len(self.resize) != 2 or min(self.resize) < self.crop):
            raise ActdistillError(
                f"{where}: resize must be [height, width] with both ≥ crop {self.crop}, got {self.resize}"
            )
        if len(self.jitter or []) != 4 or len(self.blur_sigma or []) != 2:
            raise ActdistillError(
                f"{where}: jitter needs 4 numbers and blur_sigma 2, got {self.jitter}, {self.blur_sigma}"
            )
        for name in ("jitter_p", "grayscale_p", "blur_p", "flip_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ActdistillError(f"{where}: {name} is a probability in [0, 1], got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_pcl_augment(cfg: AugmentConfig) -> VideoCompose:
    """The PCL train pipeline: `(T, C, H, W)` uint8 → `(C, T, crop, crop)` float32, ImageNet-normalised."""
    b, c, s, h = cfg.jitter or [0.4, 0.4, 0.4, 0.1]
    steps: list[VideoTransform] = [Resize(cfg.resize)] if cfg.resize else []
    steps += [
        RandomCrop(cfg.crop),
        ColorJitter(b, c, s, h, p=cfg.jitter_p),
        RandomGrayscale(cfg.grayscale_p),
        RandomGaussianBlur(tuple(cfg.blur_sigma or [0.1, 2.0]), p=cfg.blur_p),  # type: ignore[arg-type]
        HorizontalFlip(cfg.flip_p),
        ToNormalizedClip(),
    ]
    return VideoCompose(steps)


def clip_generator(base_seed: int, clip: int) -> torch.Generator:
    """A generator for clip `clip` of the tuple whose pretext draws use `base_seed` (independent streams per clip)."""
    return torch.Generator().manual_seed((base_seed * 7919 + clip + 1) % (2**63 - 1))
