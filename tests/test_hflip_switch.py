"""`data.hflip=false` removes training flips (classes such as RunLeft/RunRight differ only in direction)."""

import pytest
import torch

from actdistill.data.transforms import build_image_transform
from actdistill.data.video_transforms import build_video_transform


def _left_darker(x: torch.Tensor) -> bool:
    w = x.shape[-1]
    return bool(x[..., : w // 2].mean() < x[..., w // 2 :].mean())


@pytest.mark.parametrize("hflip", [True, False])
def test_image_flip_switch(hflip):
    img = torch.zeros(3, 32, 32, dtype=torch.uint8)
    img[..., 16:] = 255
    tf = build_image_transform(True, 32, (0.5,) * 3, (0.25,) * 3, scale=(1.0, 1.0), hflip=hflip)
    outcomes = set()
    for seed in range(20):
        torch.manual_seed(seed)
        outcomes.add(_left_darker(tf(img)))
    assert outcomes == ({True, False} if hflip else {True})


@pytest.mark.parametrize("hflip", [True, False])
def test_video_flip_switch(hflip):
    clip = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)  # (T, C, H, W)
    clip[..., 16:] = 255
    tf = build_video_transform(True, 32, scales=(1.0,), hflip=hflip)
    outcomes = set()
    for seed in range(20):
        torch.manual_seed(seed)
        outcomes.add(_left_darker(tf(clip)))
    assert outcomes == ({True, False} if hflip else {True})
