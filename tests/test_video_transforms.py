"""Clip transforms: one draw per clip, deterministic replay, TSN multi-scale crops, flow flips, final layout."""

from __future__ import annotations

import pytest
import torch

from actdistill.data.video_transforms import (
    FLOW_MEAN,
    FLOW_STD,
    CenterCrop,
    ColorJitter,
    HorizontalFlip,
    MultiScaleCrop,
    RandomCrop,
    ShortSideResize,
    ToNormalizedClip,
    build_video_transform,
)
from actdistill.errors import ActdistillError


def _still_clip(t: int = 6, c: int = 3, h: int = 40, w: int = 52) -> torch.Tensor:
    """A clip whose frames are all the same random image."""
    frame = torch.randint(0, 256, (1, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return frame.repeat(t, 1, 1, 1)


@pytest.mark.parametrize("flow", [False, True])
def test_train_transform_draws_once_per_clip(flow):
    clip = _still_clip(c=2 if flow else 3)
    tf = build_video_transform(True, 32, flow=flow, color_jitter=True)
    for seed in range(10):
        torch.manual_seed(seed)
        out = tf(clip)
        assert out.shape == (2 if flow else 3, 6, 32, 32) and out.dtype == torch.float32
        # Identical frames in → identical frames out: the same crop, flip and colour change on every frame.
        assert all(torch.equal(out[:, 0], out[:, t]) for t in range(1, 6))


def test_replay_is_deterministic():
    clip = torch.randint(0, 256, (4, 3, 40, 52), dtype=torch.uint8)
    tf = build_video_transform(True, 32, color_jitter=True)
    params: dict = {"steps": []}
    x = clip
    for step in tf.transforms:  # draw each step's parameters on the clip it will see, then apply them all at once
        drawn = step.sample_params(x, torch.Generator().manual_seed(3))
        params["steps"].append(drawn)
        x = step.apply(x, drawn)
    assert torch.equal(tf.apply(clip, params), x)
    torch.manual_seed(1)
    a = tf(clip)
    torch.manual_seed(1)
    assert torch.equal(tf(clip), a)  # the view is a function of the torch seed (SeededView)


def test_multiscale_crop_sizes_and_offsets():
    clip = _still_clip(t=1, h=240, w=320)
    msc = MultiScaleCrop(224, scales=(1.0, 0.875, 0.75, 0.66), max_distort=1)
    g = torch.Generator().manual_seed(0)
    sides = {240, 210, 180, 158}
    seen = set()
    for _ in range(300):
        p = msc.sample_params(clip, g)
        assert p["height"] in sides and p["width"] in sides
        order = sorted(sides, reverse=True)
        assert abs(order.index(p["height"]) - order.index(p["width"])) <= 1  # aspect distortion ≤ 1 scale step
        # Offsets lie on the 5×5 quarter grid of the room left by the crop (TSN corner cropping).
        assert p["top"] % ((240 - p["height"]) // 4 or 1) == 0 and p["left"] % ((320 - p["width"]) // 4) == 0
        assert p["top"] + p["height"] <= 240 and p["left"] + p["width"] <= 320
        seen.add((p["height"], p["width"]))
    assert len(seen) == 10  # 4 + 3 + 3 admissible (h, w) pairs
    assert msc(clip).shape == (1, 3, 224, 224)


def test_multiscale_crop_faithful_offsets_cut_at_border():
    clip = _still_clip(t=1, h=240, w=320)
    msc = MultiScaleCrop(224, scales=(1.0,), offsets_from="target")  # paper 2's code: room = image − 224
    g = torch.Generator().manual_seed(0)
    tops = {msc.sample_params(clip, g)["top"] for _ in range(200)}
    assert tops == {0, 4, 8, 12, 16}
    p = msc.sample_params(clip, g)
    assert p["height"] == 240 - p["top"]  # a 240-row crop starting at row 16 is cut to 224 rows


def test_flow_flip_negates_x():
    flow = torch.randint(0, 256, (3, 2, 8, 10), dtype=torch.uint8)
    out = HorizontalFlip(p=1.0, flow=True)(flow)
    assert torch.equal(out[:, 0], 255 - flow[:, 0].flip(-1))
    assert torch.equal(out[:, 1], flow[:, 1].flip(-1))
    # 255 − q is exactly the quantisation of −f: (f + b)·255/2b ↦ (−f + b)·255/2b.
    b, f = 20.0, torch.tensor([-20.0, -5.0, 0.0, 7.5, 20.0])
    q = (f + b) * 255 / (2 * b)
    assert torch.allclose(255 - q, (-f + b) * 255 / (2 * b))
    rgb = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    assert torch.equal(HorizontalFlip(p=1.0)(rgb), rgb.flip(-1))
    assert torch.equal(HorizontalFlip(p=0.0)(rgb), rgb)


def test_crops_and_resize():
    clip = torch.arange(2 * 3 * 6 * 8, dtype=torch.uint8).view(2, 3, 6, 8)
    assert torch.equal(CenterCrop(4)(clip), clip[..., 1:5, 2:6])
    rc = RandomCrop((3, 5))
    p = rc.sample_params(clip, torch.Generator().manual_seed(0))
    out = rc(clip, torch.Generator().manual_seed(0))  # the same draw from the same generator state
    assert torch.equal(out, clip[..., p["top"] : p["top"] + 3, p["left"] : p["left"] + 5])
    assert ShortSideResize(3)(clip).shape == (2, 3, 3, 4)
    with pytest.raises(ActdistillError, match="smaller than the crop"):
        CenterCrop(10)(clip)


def test_color_jitter_same_for_all_frames():
    clip = _still_clip()
    cj = ColorJitter(0.4, 0.4, 0.4, 0.1)
    torch.manual_seed(0)
    out = cj(clip)
    assert not torch.equal(out, clip)
    assert all(torch.equal(out[0], out[t]) for t in range(6))


def test_to_normalized_clip_layout_and_values():
    clip = torch.full((5, 2, 4, 4), 255, dtype=torch.uint8)
    clip[:, 1] = 0
    out = ToNormalizedClip(FLOW_MEAN, FLOW_STD)(clip)
    assert out.shape == (2, 5, 4, 4) and out.dtype == torch.float32
    assert torch.allclose(out[0], torch.tensor((1 - 0.5) / 0.226)) and torch.allclose(
        out[1], torch.tensor(-0.5 / 0.226)
    )
    with pytest.raises(ActdistillError, match="channels"):
        ToNormalizedClip()(clip)  # ImageNet statistics on a 2-channel flow clip


def test_test_transform_is_deterministic():
    clip = torch.randint(0, 256, (4, 3, 40, 52), dtype=torch.uint8)
    tf = build_video_transform(False, 32, resize=36)
    assert torch.equal(tf(clip), tf(clip))
    assert tf(clip).shape == (3, 4, 32, 32)
