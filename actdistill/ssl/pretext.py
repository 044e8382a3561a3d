"""PCL (VCP) tuple sampling and the five pretext transforms (paper 3 §3 "PCL framework"; PCL's datasets/ucf101.py).

Pure functions: every random choice comes from the `random.Random` passed in, so a seeded caller is reproducible.
Clips are `(C, T, H, W)` tensors; batches of clips are `(B, C, T, H, W)`.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor

NUM_PRETEXT = 5
"""Pretext labels: 0 identity, 1 rotation, 2 quadrant permutation, 3 temporal adjacent shuffle, 4 remote clip."""

REMOTE_RULES = ("both_sides", "either_side")

QUADRANT_ORDER = (3, 2, 1, 0)
"""PCL's `preprocess` (train_vcp_contrast.py): quadrants [A,B;C,D] (row-major) become [D,C;B,A]."""


def tuple_stride(clip_len: int, interval: int, tuple_len: int, mode: str) -> int:
    """Frames between consecutive clip starts (PCL's datasets/ucf101.py).

    `faithful`: PCL's quirk `tuple_len + interval` (= 11 for 16/8/3, so clips overlap); `clean`: `clip_len + interval`.
    """
    if mode == "faithful":
        return tuple_len + interval
    if mode == "clean":
        return clip_len + interval
    raise ValueError(f"mode must be 'faithful' or 'clean', got {mode!r}")


def tuple_total(clip_len: int = 16, interval: int = 8, tuple_len: int = 3) -> int:
    """Frames a video needs for one tuple window: `clip_len·tuple_len + interval·(tuple_len−1)` (64 for 16/8/3)."""
    return clip_len * tuple_len + interval * (tuple_len - 1)


def tuple_starts(
    num_frames: int,
    clip_len: int = 16,
    interval: int = 8,
    tuple_len: int = 3,
    mode: str = "faithful",
    rng: random.Random | None = None,
) -> list[int]:
    """Start frame of each of the `tuple_len` clips (PCL's datasets/ucf101.py).

    The tuple window start `s ~ U[0, num_frames − tuple_total]` (PCL requires `tuple_total` frames even in faithful
    mode, where the clips span less); clip i starts at `s + i·stride` with `stride` from `tuple_stride`.
    Raises `ValueError` when the video is shorter than `tuple_total`.
    """
    rng = rng or random.Random()
    total = tuple_total(clip_len, interval, tuple_len)
    if num_frames < total:
        raise ValueError(f"video has {num_frames} frames; a {clip_len}/{interval}/{tuple_len} tuple needs {total}")
    stride = tuple_stride(clip_len, interval, tuple_len, mode)
    s = rng.randint(0, num_frames - total)
    return [s + i * stride for i in range(tuple_len)]


REMOTE_RULES = ("both_sides", "either_side")
"""`remote_clip_start` rules: PCL's released code (`both_sides`, default) and the looser rule (`either_side`)."""


def remote_clip_start(
    num_frames: int,
    tuple_start: int,
    tuple_span: int,
    clip_len: int = 16,
    rng: random.Random | None = None,
    min_gap: int = 16,
    remote_rule: str = "both_sides",
) -> int | None:
    """Start of a clip at least `min_gap` frames away from the window `[tuple_start, tuple_start + tuple_span)`.

    A remote clip lies wholly before (`start + clip_len + min_gap ≤ tuple_start`) or wholly after
    (`start ≥ tuple_start + tuple_span + min_gap`) the window. Returns None when the rule finds no room (the caller
    then redraws the pretext label from 0-3).

    * `remote_rule="both_sides"` (default; PCL's released code, datasets/ucf101.py `load4clips`): the remote clip
      is used only when there is room on *both* sides of the window. Then, as PCL does, one start is drawn
      uniformly on each side (`rng.randint` before, then after) and a fair coin (`rng.randint(0, 1)`) picks the
      side, whatever the room on each. The label-4 share of a 186-frame video with 16/8/3 tuples is 0.2·59/123 ≈
      0.096 (0.053 at 150 frames).
    * `remote_rule="either_side"`: room on one side suffices; the start is uniform over all valid starts of both
      sides (so the side is chosen in proportion to its room). Label-4 share 0.2 for every video of ≥ 127 frames.
    """
    if remote_rule not in REMOTE_RULES:
        raise ValueError(f"remote_rule must be one of {REMOTE_RULES}, got {remote_rule!r}")
    rng = rng or random.Random()
    last_before = tuple_start - clip_len - min_gap  # latest start of a clip ending min_gap before the window
    first_after = tuple_start + tuple_span + min_gap
    last_after = num_frames - clip_len
    if remote_rule == "both_sides":
        if last_before < 0 or last_after < first_after:
            return None
        starts = [rng.randint(0, last_before), rng.randint(first_after, last_after)]
        return starts[rng.randint(0, 1)]
    candidates = list(range(0, last_before + 1)) + list(range(first_after, last_after + 1))
    if not candidates:
        return None
    return rng.choice(candidates)


def rotate(clip: Tensor, k: int) -> Tensor:
    """Rotate every frame of `(C, T, H, W)` by k·90° counter-clockwise over (H, W) (`torch.rot90`, dims (-2, -1))."""
    return torch.rot90(clip, k, dims=(-2, -1))


def permute_quadrants(clip: Tensor) -> Tensor:
    """Swap the four spatial quadrants of `(..., H, W)` to [D,C;B,A] (PCL's code, label 2); an involution.

    H and W must be even. Quadrants: A top-left, B top-right, C bottom-left, D bottom-right.
    """
    h, w = clip.shape[-2], clip.shape[-1]
    if h % 2 or w % 2:
        raise ValueError(f"quadrant permutation needs even H, W; got {h}x{w}")
    hh, hw = h // 2, w // 2
    quads = [clip[..., :hh, :hw], clip[..., :hh, hw:], clip[..., hh:, :hw], clip[..., hh:, hw:]]
    q = [quads[i] for i in QUADRANT_ORDER]
    return torch.cat([torch.cat([q[0], q[1]], dim=-1), torch.cat([q[2], q[3]], dim=-1)], dim=-2)


def shuffle_chunks(clip: Tensor, i: int, j: int, num_chunks: int = 4) -> Tensor:
    """Swap temporal chunks i and j of `(C, T, H, W)` (T split into `num_chunks` chunks of T/num_chunks frames)."""
    t = clip.shape[1]
    if t % num_chunks:
        raise ValueError(f"T={t} is not divisible into {num_chunks} chunks")
    n = t // num_chunks
    chunks = list(clip.split(n, dim=1))
    chunks[i], chunks[j] = chunks[j], chunks[i]
    return torch.cat(chunks, dim=1)


def apply_pretext(
    clip: Tensor, label: int, rng: random.Random | None = None, remote: Tensor | None = None
) -> tuple[Tensor, dict[str, int]]:
    """Apply pretext transform `label` to the middle clip `(C, T, H, W)` (PCL's `preprocess`).

    Returns the transformed clip and the random parameters used, so each transform can be inverted:
    0 identity `{}`; 1 `rot90` by `k ∈ {1,2,3}` quarter turns over (H, W) `{"k": k}`; 2 quadrants → [D,C;B,A] `{}`;
    3 swap two distinct of 4 temporal chunks `{"i": i, "j": j}` (i < j); 4 the `remote` clip `{}` (required).
    """
    rng = rng or random.Random()
    if label == 0:
        return clip, {}
    if label == 1:
        k = rng.randint(1, 3)
        return rotate(clip, k), {"k": k}
    if label == 2:
        return permute_quadrants(clip), {}
    if label == 3:
        i, j = sorted(rng.sample(range(4), 2))
        return shuffle_chunks(clip, i, j), {"i": i, "j": j}
    if label == 4:
        if remote is None:
            raise ValueError("label 4 needs the remote clip")
        if remote.shape != clip.shape:
            raise ValueError(f"remote clip {tuple(remote.shape)} differs from clip {tuple(clip.shape)}")
        return remote, {}
    raise ValueError(f"pretext label must be in 0..{NUM_PRETEXT - 1}, got {label}")
