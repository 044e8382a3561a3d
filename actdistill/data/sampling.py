"""Which frames a clip reads: pure functions of (num_frames, parameters, rng) → 0-based frame indices.

Randomness comes from `torch` (an explicit `torch.Generator`, or the global generator that `SeededView`
seeds per sample), so a sample's view depends only on (seed, epoch, index).
"""

from __future__ import annotations

from typing import Literal

import torch

Mode = Literal["train", "test"]


def _check(num_frames: int, clip_len: int, frame_interval: int) -> int:
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame to sample from (got num_frames={num_frames})")
    if clip_len < 1 or frame_interval < 1:
        raise ValueError(f"clip_len and frame_interval must be ≥ 1 (got {clip_len}, {frame_interval})")
    return (clip_len - 1) * frame_interval + 1


def _randint(high: int, rng: torch.Generator | None) -> int:
    """Uniform integer in [0, high]."""
    return int(torch.randint(high + 1, (1,), generator=rng).item())


def _clip(start: int, num_frames: int, clip_len: int, frame_interval: int) -> list[int]:
    # Loop padding (toolkit decision; paper 2 leaves it open): a video shorter than the span repeats cyclically.
    return [(start + k * frame_interval) % num_frames for k in range(clip_len)]


def dense_clip_indices(
    num_frames: int, clip_len: int, frame_interval: int = 1, mode: Mode = "train", rng: torch.Generator | None = None
) -> list[int]:
    """`clip_len` frames `frame_interval` apart; train: random start, test: centred start `(n − span + 1) // 2`.

    Paper 2 (Implementation Details): 64 consecutive frames; as the two-stream-pytorch loader its official code
    uses (datasets/ucf101.py), start ~ U[0, n − 64] in training, `(n − 64 + 1) // 2` at test.
    Videos shorter than the span `(clip_len − 1)·frame_interval + 1` start at 0 and loop.
    """
    span = _check(num_frames, clip_len, frame_interval)
    if num_frames < span:
        return _clip(0, num_frames, clip_len, frame_interval)
    start = _randint(num_frames - span, rng) if mode == "train" else (num_frames - span + 1) // 2
    return _clip(start, num_frames, clip_len, frame_interval)


def multi_view_indices(num_frames: int, clip_len: int, frame_interval: int = 1, num_clips: int = 1) -> list[list[int]]:
    """`num_clips` clips whose starts are centred in `num_clips` equal chunks of the valid start range (test views).

    With one clip this is `dense_clip_indices(..., mode="test")`. For videos shorter than the span the clips
    start `k·n / num_clips` frames in and loop, so the views still differ.
    """
    span = _check(num_frames, clip_len, frame_interval)
    if num_clips < 1:
        raise ValueError(f"num_clips must be ≥ 1 (got {num_clips})")
    if num_frames < span:
        starts = [k * num_frames // num_clips for k in range(num_clips)]
    else:
        valid = num_frames - span + 1
        starts = [int((k + 0.5) * valid / num_clips) for k in range(num_clips)]
    return [_clip(s, num_frames, clip_len, frame_interval) for s in starts]


def segment_indices(
    num_frames: int,
    num_segments: int,
    mode: Mode = "train",
    rng: torch.Generator | None = None,
    new_length: int = 1,
) -> list[int]:
    """TSN sampling (Wang et al., ECCV 2016): one snippet of `new_length` frames per equal segment.

    Train: a random snippet start inside each segment; test: the segment centre. Returns
    `num_segments · new_length` indices; snippets that would run past the end repeat the last frame.
    """
    _check(num_frames, 1, 1)
    if num_segments < 1 or new_length < 1:
        raise ValueError(f"num_segments and new_length must be ≥ 1 (got {num_segments}, {new_length})")
    usable = max(num_frames - new_length + 1, 1)
    if mode == "train":
        seg = usable // num_segments
        if seg > 0:
            starts = [k * seg + _randint(seg - 1, rng) for k in range(num_segments)]
        elif usable > num_segments:
            starts = sorted(torch.randperm(usable, generator=rng)[:num_segments].tolist())
        else:
            starts = [k * usable // num_segments for k in range(num_segments)]
    else:
        tick = usable / num_segments
        starts = [int(tick / 2 + tick * k) for k in range(num_segments)]
    return [min(s + j, num_frames - 1) for s in starts for j in range(new_length)]
