"""Clip transforms on `(T, C, H, W)` uint8 frames: one random draw per clip, the same on every frame.

Every transform splits into `sample_params(clip, rng) -> dict` (JSON-friendly numbers) and a deterministic
`apply(clip, params)`; calling it draws and applies. Randomness comes from `torch` (the global generator, which
`SeededView` seeds per (seed, epoch, index), so a view is replayed by drawing again; or an explicit
`torch.Generator`). `ToNormalizedClip` is the one final step to `(C, T, H, W)` float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from actdistill.errors import ActdistillError

Params = dict[str, Any]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FLOW_MEAN = (0.5, 0.5)  # 8-bit TV-L1 flow, mean 0.5, std 0.226 (paper 2's official code, video_transforms.py)
FLOW_STD = (0.226, 0.226)
RGB_SCALES = (1.0, 0.875, 0.75, 0.66)  # TSN MultiScaleCrop ratios of paper 2's official code (video_transforms.py)
FLOW_SCALES = (1.0, 0.875, 0.75)


def _randint(high: int, rng: torch.Generator | None) -> int:
    """Uniform integer in [0, high]."""
    return int(torch.randint(high + 1, (1,), generator=rng).item())


def _uniform(lo: float, hi: float, rng: torch.Generator | None) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=rng).item())


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


class VideoTransform:
    """Base class: `sample_params` draws (nothing by default), `apply` is deterministic given the params."""

    def sample_params(self, clip: Tensor, rng: torch.Generator | None = None) -> Params:
        return {}

    def apply(self, clip: Tensor, params: Params) -> Tensor:
        raise NotImplementedError

    def __call__(self, clip: Tensor, rng: torch.Generator | None = None) -> Tensor:
        return self.apply(clip, self.sample_params(clip, rng))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class VideoCompose(VideoTransform):
    """Transforms in order, each drawing on the clip its predecessor produced; `apply(clip, {"steps": [...]})`
    applies given draws."""

    def __init__(self, transforms: Sequence[VideoTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, clip: Tensor, rng: torch.Generator | None = None) -> Tensor:
        for t in self.transforms:
            clip = t(clip, rng)
        return clip

    def apply(self, clip: Tensor, params: Params) -> Tensor:
        for t, p in zip(self.transforms, params["steps"], strict=True):
            clip = t.apply(clip, p)
        return clip


class ShortSideResize(VideoTransform):
    """Resize `(T, C, H, W)` so the short side is `size` (bilinear, antialiased), keeping the aspect ratio."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def apply(self, clip: Tensor, params: Params) -> Tensor:
        h, w = clip.shape[-2:]
        if min(h, w) == self.size:
            return clip
        scale = self.size / min(h, w)
        new = (self.size, max(1, round(w * scale))) if h <= w else (max(1, round(h * scale)), self.size)
        return TF.resize(clip, list(new), antialias=True)


class Resize(VideoTransform):
    """Resize `(T, C, H, W)` to a fixed `(height, width)` (e.g. PCL's 128×171)."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size)

    def apply(self, clip: Tensor, params: Params) -> Tensor:
        return clip if tuple(clip.shape[-2:]) == self.size else TF.resize(clip, list(self.size), antialias=True)


def _check_fits(clip: Tensor, size: tuple[int, int], name: str) -> None:
    if clip.shape[-2] < size[0] or clip.shape[-1] < size[1]:
        raise ActdistillError(
            f"{name}: frames {tuple(clip.shape[-2:])} are smaller than the crop {size}; "
            "resize first (data.resize / ShortSideResize) or lower data.image_size"
        )


class CenterCrop(VideoTransform):
    """The centre `size` crop of every frame."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size)

    def apply(self, clip: Tensor, params: Params) -> Tensor:
        _check_fits(clip, self.size, "CenterCrop")
        return TF.center_crop(clip, list(self.size))


class RandomCrop(VideoTransform):
    """One random `size` crop position per clip."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size)

    def sample_params(self, clip: Tensor, rng: torch.Generator | None = None) -> Params:
        _check_fits(clip, self.size, "RandomCrop")
        h, w = clip.shape[-2:]
        return {"top": _randint(h - self.size[0], rng), "left": _randint(w - self.size[1], rng)}

    def apply(self, clip: Tensor, params: Params) -> Tensor:
        top, left = params["top"], params["left"]
        return clip[..., top : top + self.size[0], left : left + self.size[1]]


class MultiScaleCrop(VideoTransform):
    """TSN multi-scale corner cropping (Wang et al., "Towards Good Practices for Very Deep Two-Stream ConvNets",
    2015; paper 2's code): crop sides from `scales × short side` (aspect distortion ≤ `max_distort` scale steps), at one
    of 5 (13 with `more_fix_crop`) fixed corner/centre offsets, then resize to `size`.

    `offsets_from="crop"` (default) spaces the offsets over `image − crop`; `"target"` reproduces paper 2's code,
    which spaces them over `image − size`, so large crops get cut at the frame border.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scales: Sequence[float] = RGB_SCALES,
        max_distort: int = 1,
        fix_crop: bool = True,
        more_fix_crop: bool = True,
        offsets_from: str = "crop",
    ) -> None:
        if offsets_from not in ("crop", "target"):
            raise ActdistillError(f"MultiScaleCrop offsets_from must be 'crop' or 'target', got {offsets_from!r}")
        self.size, self.scales, self.max_distort = _pair(size), tuple(scales), int(max_distort)
        self.fix_crop, self.more_fix_crop, self.offsets_from = fix_crop, more_fix_crop, offsets_from

    def _offsets(self, h_room: int, w_room: int) -> list[tuple[int, int]]:
        hs, ws = h_room // 4, w_room // 4
        grid = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]
        if self.more_fix_crop:
            grid += [(0, 2), (4, 2), (2, 0), (2, 4), (1, 1), (1, 3), (3, 1), (3, 3)]
        return [(i * hs, j * ws) for i, j in grid]

    def sample_params(self, clip: Tensor, rng: torch.Generator | None = None) -> Params:
        h, w = clip.shape[-2:]
        sides = [int(min(h, w) * s) for s in self.scales]
        pairs = [
            (sides[i], sides[j]) for i in range(len(sides)) for j in range(len(sides)) if abs(i - j) <= self.max_distort
        ]
        ch, cw = pairs[_randint(len(pairs) - 1, rng)]
        room = (h - ch, w - cw) if self.offsets_from == "crop" else (h - self.size[0], w - self.size[1])
        room = (max(room[0], 0), max(room[1], 0))
        if self.fix_crop:
            offsets = self._offsets(*room)
            top, left = offsets[_randint(len(offsets) - 1, rng)]
        else:
            top, left = _randint(room[0], rng), _randint(room[1], rng)
        return {"top": top, "left": left, "height": min(ch, h - top), "width": min(cw, w - left)}

    def apply(self, clip: Tensor, params: Params) -> Tensor:
        top, left, ch, cw = params["top"], params["left"], params["height"], params["width"]
        crop = clip[..., top : top + ch, left : left + cw]
        return crop if (ch, cw) == self.size else TF.resize(crop, list(self.size), antialias=True)


class HorizontalFlip(VideoTransform):
    """Mirror the whole clip with probability `p`. With `flow=True` the frames are 8-bit (x, y) flow: mirroring
    negates horizontal motion, which for flow quantised symmetrically around 127.5 is exactly `x → 255 − x`."""

    def __init__(self, p: float = 0.5, flow: bool = False) -> None:
        self.p, self.flow = float(p), flow

    def sample_params(self, clip: Tensor, rng: torch.Generator | None = None) -> Params:
        return {"flip": bool(torch.rand((), generator=rng).item() < self.p)}

    def apply(self, clip: Tensor, params: Params) -> Tensor:
        if not params["flip"]:
            return clip
        out = clip.flip(-1)  # a copy, so the x channel can be changed in place
        if self.flow:
            out[:, 0] = 255 - out[:, 0]
        return out


class ColorJitter(VideoTransform):
    """Brightness/contrast/saturation/hue factors and their order, drawn once per clip; applied with probability p."""

    def __init__(
        self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.1, p: float = 1.0
    ) -> None:
        self.brightness, self.contrast, self.saturation, self.hue, self.p = brightness, contrast, saturation, hue, p

    def sample_params(self, clip: Tensor, rng: torch.Generator | None = None) -> Params:
        on = bool(torch.rand((), generator=rng).item() < self.p)
        order = torch.randperm(4, generator=rng).tolist()
        factors = {
            name: _uniform(max(0.0, 1 - s), 1 + s, rng)
            for name, s in (
                ("brightness", self.brightness),
                ("contrast", self.contrast),
                ("saturation", self.saturation),
            )
        }
        factors["hue"] = _uniform(-self.hue, self.hue, rng)
        return {"apply": on, "order": order, **factors}

    def apply(self, clip: Tensor, params: Params) -> Tensor:
        if not params["apply"]:
            return clip
        ops = (
            (TF.adjust_brightness, "brightness"),
            (TF.adjust_contrast, "contrast"),
            (TF.adjust_saturation, "saturation"),
            (TF.adjust_hue, "hue"),
        )
        for k in params["order"]:
            fn, name = ops[k]
            clip = fn(clip, params[name])
        return clip


class ToNormalizedClip(VideoTransform):
    """`(T, C, H, W)` uint8 → `(C, T, H, W)` float32 `(x / 255 − mean) / std` (the one final conversion)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean, self.std = tuple(mean), tuple(std)

    def apply(self, clip: Tensor, params: Params) -> Tensor:
        if clip.shape[1] != len(self.mean):
            raise ActdistillError(
                f"ToNormalizedClip: clip has {clip.shape[1]} channels but mean/std have {len(self.mean)}; "
                "use the flow statistics for 2-channel flow (build_video_transform(flow=True))"
            )
        # One strided uint8 → float copy, then (x/255 − mean)/std as x·a − b in place: 2-3× faster than chained ops.
        x = clip.permute(1, 0, 2, 3).to(torch.float32, memory_format=torch.contiguous_format)
        mean, std = torch.tensor(self.mean), torch.tensor(self.std)
        return x.mul_((1 / (255 * std)).view(-1, 1, 1, 1)).sub_((mean / std).view(-1, 1, 1, 1))


def build_video_transform(
    train: bool,
    size: int = 224,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    scales: Sequence[float] | None = None,
    flow: bool = False,
    resize: int | None = None,
    color_jitter: bool = False,
    offsets_from: str = "crop",
    hflip: bool = True,
) -> VideoCompose:
    """Paper 2's pipeline (Implementation Details; official code's video_transforms.py): `(T, C, H, W)` uint8 →
    `(C, T, H, W)` float32 normalised.

    Train: [ShortSideResize(resize)] → MultiScaleCrop(size, scales) → HorizontalFlip(0.5) [→ ColorJitter];
    test: [ShortSideResize(resize)] → CenterCrop(size). RGB uses ImageNet statistics and scales
    (1, .875, .75, .66); flow uses mean 0.5 / std 0.226, scales (1, .875, .75) and x-negating flips.
    `hflip=False` drops the flip: it would swap classes that differ only in direction (e.g. running left/right).
    """
    mean = mean if mean is not None else (FLOW_MEAN if flow else IMAGENET_MEAN)
    std = std if std is not None else (FLOW_STD if flow else IMAGENET_STD)
    steps: list[VideoTransform] = [ShortSideResize(resize)] if resize else []
    if train:
        steps.append(MultiScaleCrop(size, scales or (FLOW_SCALES if flow else RGB_SCALES), offsets_from=offsets_from))
        if hflip:
            steps.append(HorizontalFlip(0.5, flow=flow))
        if color_jitter and not flow:
            steps.append(ColorJitter(p=0.8))
    else:
        steps.append(CenterCrop(size))
    steps.append(ToNormalizedClip(mean, std))
    return VideoCompose(steps)
