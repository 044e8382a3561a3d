"""Boundary consistency learning: AFSD's triplet self-supervised term (Lin et al. CVPR-21), adapted to feature crops.

AFSD (Lin et al. CVPR-21), boundary consistency learning: a piece of background is spliced into a ground-truth
action, and the detector's features at the two boundaries the splice creates (the end of the action's left part and
the start of its right part) are pulled together while pushed away from the start of the background piece (a triplet
margin loss on boundary max-pooled features). Paper 2's detection code trains its students with this term.

Here the sequences are `(C, T)` snippet features (one step per feature), so every coordinate below is a step index:
a segment is `(first, last)`, both inclusive, of `last − first + 1` steps.

  * `draw_splice` picks, with the torch RNG (the one `SeededView` seeds per (seed, epoch, index), so the draw is
    reproducible and resumable), an action of the crop longer than `2·th` steps, a cut `t` at least `th` steps from
    both of its ends, and a `th`-step piece `[b, b + th)` of a background run (steps that overlap no annotation)
    longer than `th`; `th` is the ceiling of the video's shortest action, in steps (AFSD's per-video threshold).
  * `Splice.apply` moves that piece to the cut and shifts the steps in between, so the length stays; `Splice.segments`
    gives the three segments of the result: 0 the left part of the action (ending at the cut), 1 its right part
    (starting after the piece), 2 the inserted piece.
  * `boundary_regions` / `boundary_max_pool`: AFSD's boundary max pooling; the start region of a segment is
    `[first − max(L/10, 1), first + max(L/4, 1)]`, the end region `[last − max(L/4, 1), last + max(L/10, 1)]`
    (rounded with `torch.round`, half to even; mapped to a pyramid level by `floor(x / stride)`, clamped to the valid
    steps); the first half of the channels is max-pooled over the start region, the second half over the end region.
  * `triplet_terms`: per sample, `Σ_l w_l · triplet(anchor = end half of segment 0, positive = start half of segment 1,
    negative = start half of segment 2)` with `torch.nn.TripletMarginLoss` defaults (margin 1, p = 2) and AFSD's
    level weights (1, 0.1, 0.1) on the three finest pyramid levels (AFSD uses three maps: its frame-level map and
    two maps of its first pyramid level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# AFSD (Lin et al. CVPR-21), boundary consistency learning: weights of its three feature maps, finest first.
LEVEL_WEIGHTS = (1.0, 0.1, 0.1)

__all__ = [
    "LEVEL_WEIGHTS",
    "Splice",
    "boundary_max_pool",
    "boundary_regions",
    "draw_splice",
    "splice_threshold",
    "triplet_terms",
]


def _randint(n: int) -> int:
    """Uniform in [0, n) from the torch RNG (seeded per sample by `SeededView`)."""
    return int(torch.randint(0, n, ()))


def splice_threshold(segments: np.ndarray) -> int:
    """AFSD's `th`: the ceiling of the shortest action length (level-0 grid units = steps), at least 1."""
    if len(segments) == 0:
        return 1
    return max(1, math.ceil(float(np.min(segments[:, 1] - segments[:, 0])) - 1e-9))


@dataclass(frozen=True)
class Splice:
    """A background piece `[b, b + th)` moved to the cut `t` of the action whose steps are `first..last`."""

    first: int
    last: int
    t: int
    b: int
    th: int

    @property
    def action_first(self) -> bool:
        """The action lies before the background piece."""
        return self.t < self.b

    def apply(self, x: Tensor) -> Tensor:
        """`x` `(C, T)` with the piece moved to the cut and the steps in between shifted (length unchanged)."""
        t, b, th = self.t, self.b, self.th
        y = x.clone()
        if self.action_first:  # [t, t+th) ← piece, [t+th, b+th) ← old [t, b)
            y[:, t : t + th] = x[:, b : b + th]
            y[:, t + th : b + th] = x[:, t:b]
        else:  # mirror: [b, t−th) ← old [b+th, t), [t−th, t) ← piece
            y[:, b : t - th] = x[:, b + th : t]
            y[:, t - th : t] = x[:, b : b + th]
        return y

    def segments(self) -> Tensor:
        """`(3, 2)` int64 inclusive steps of the result: left part of the action, right part, inserted piece."""
        t, th = self.t, self.th
        if self.action_first:
            rows = [[self.first, t - 1], [t + th, self.last + th], [t, t + th - 1]]
        else:
            rows = [[self.first - th, t - th - 1], [t, self.last], [t - th, t - 1]]
        return torch.tensor(rows, dtype=torch.long)


def _background_runs(occupied: np.ndarray, length: int) -> list[tuple[int, int]]:
    """Maximal runs `(first, last)` of steps whose cell `[p − ½, p + ½]` overlaps no segment `[s, e]` of `occupied`."""
    free = np.ones(length, dtype=bool)
    for s, e in occupied:
        lo, hi = math.floor(s - 0.5) + 1, math.ceil(e + 0.5) - 1  # steps p with p + ½ > s and p − ½ < e
        free[max(lo, 0) : max(min(hi, length - 1) + 1, 0)] = False
    runs, start = [], None
    for p in range(length + 1):
        if p < length and free[p]:
            start = p if start is None else start
        elif start is not None:
            runs.append((start, p - 1))
            start = None
    return runs


def draw_splice(segments: np.ndarray, length: int, th: int, occupied: np.ndarray | None = None) -> Splice | None:
    """A random splice for a `length`-step sequence with ground truth `segments` `(N, 2)` (grid coordinates), or None.

    `occupied` `(M, 2)`: further annotations no background piece may touch (e.g. THUMOS14's Ambiguous ones). AFSD
    tries once per sample: None when no action is longer than `2·th` or no background run is longer than `th`.
    """
    segs = np.clip(np.asarray(segments, dtype=np.float64).reshape(-1, 2), 0, length - 1)
    # an action longer than 2·th has at least 2·th steps (ceil(s)..floor(e)), so a cut always exists
    actions = [(math.ceil(s), math.floor(e)) for s, e in segs if e - s > 2 * th]
    if not actions:
        return None
    first, last = actions[_randint(len(actions))]
    t = first + th + _randint(last - first + 2 - 2 * th)  # t in [first + th, last − th + 1]: both parts ≥ th steps
    others = np.zeros((0, 2)) if occupied is None else np.asarray(occupied, dtype=np.float64).reshape(-1, 2)
    runs = [(a, z) for a, z in _background_runs(np.concatenate([segs, others]), length) if z - a + 1 > th]
    if not runs:
        return None
    a, z = runs[_randint(len(runs))]
    b = a + _randint(z - a + 2 - th)  # the piece [b, b + th) inside the run
    return Splice(first, last, t, b, th)


def boundary_regions(segments: Tensor, stride: int, lengths: Tensor) -> Tensor:
    """`(B, K, 4)` int64 `[start_lo, start_hi, end_lo, end_hi]` (inclusive) on a level of `stride` for inclusive
    step segments `(B, K, 2)`; `lengths` `(B,)`: valid steps of each sample on that level (AFSD's regions)."""
    seg = segments.to(torch.float64)
    first, last = seg[..., 0], seg[..., 1]
    size = last - first + 1
    inner, outer = (size / 4).clamp_min(1.0), (size / 10).clamp_min(1.0)
    level0 = torch.stack([first - outer, first + inner, last - inner, last + outer], dim=-1).round()
    top = (lengths.to(seg.device).long() - 1).clamp_min(0)[:, None, None]
    return torch.minimum(torch.floor(level0 / stride).long().clamp_min(0), top)


def boundary_max_pool(feat: Tensor, regions: Tensor) -> Tensor:
    """AFSD's boundary max pooling: `feat` `(B, C, T)`, `regions` `(B, K, 4)` → `(B, C, K)`; channels `[:C//2]` are
    max-pooled over the start region, the rest over the end region."""
    half, pos = feat.shape[1] // 2, torch.arange(feat.shape[2], device=feat.device)

    def pool(x: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
        inside = (pos >= lo[..., None]) & (pos <= hi[..., None])  # (B, K, T)
        return x[:, :, None, :].masked_fill(~inside[:, None], float("-inf")).amax(dim=-1)

    r = regions.to(feat.device)
    return torch.cat([pool(feat[:, :half], r[..., 0], r[..., 1]), pool(feat[:, half:], r[..., 2], r[..., 3])], dim=1)


def triplet_terms(feats: list[Tensor], masks: list[Tensor], strides: list[int], segments: Tensor) -> Tensor:
    """Per-sample `(B,)` `Σ_l w_l · TripletMarginLoss()(anchor, positive, negative)` over the three finest levels.

    `feats` / `masks` / `strides`: the detector's pyramid (`feats` `(B, D, T_l)`); `segments` `(B, 3, 2)` inclusive
    steps of `Splice.segments`. Anchor = end half at segment 0, positive = start half at segment 1, negative = start
    half at segment 2 (AFSD (Lin et al. CVPR-21), boundary consistency learning).
    """
    total = feats[0].new_zeros(feats[0].shape[0], dtype=torch.float32)
    for weight, feat, mask, stride in zip(LEVEL_WEIGHTS, feats, masks, strides):
        pooled = boundary_max_pool(feat.float(), boundary_regions(segments, stride, mask.sum(dim=1)))
        half = pooled.shape[1] // 2
        anchor, positive, negative = pooled[:, half : 2 * half, 0], pooled[:, :half, 1], pooled[:, :half, 2]
        total = total + weight * F.triplet_margin_loss(anchor, positive, negative, reduction="none")
    return total
