"""Untrimmed synthetic videos for temporal action detection, with THUMOS14-format annotations.

Layout written by `write_synthetic_detection(out)`:
  videos/video_validation_0000001.avi ...   untrimmed clips (val = the training subset, as in THUMOS14)
  videos/video_test_0000001.avi ...
  annotations/<Class>_val.txt, <Class>_test.txt, Ambiguous_val.txt, Ambiguous_test.txt   (`video start end`, s)
  annotations.json   the same in the ActionFormer layout (subset, duration, fps, annotations)
  classes.txt        the action classes, one a line (their order is the detector's class index)
  video_list.txt     `video subset frames fps duration` per video

Each video shows one scene (the `synthetic_video` figure renderer): 1-`max_segments` action segments of the chosen
classes separated by background, which is either an idle figure swaying in place or the empty scene. Some
segments show an action outside the class set and are annotated `Ambiguous` (THUMOS14's ignore label).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ImageDraw
from tqdm import tqdm

from actdistill.data.synthetic_video import _SS, HEAD_R, VIDEO_ACTIONS, _front, _group_style, encode_video, render_video
from actdistill.detect.annotations import write_thumos_annotations
from actdistill.errors import ActdistillError

DEFAULT_CLASSES = ("Wave", "Clap", "Jump", "SitDown")
AMBIGUOUS_ACTION = "Punch"
SUBSETS = (("val", "video_validation", "Validation"), ("test", "video_test", "Test"))

__all__ = ["DEFAULT_CLASSES", "plan_video", "render_untrimmed", "write_synthetic_detection"]


def plan_video(
    rng: np.random.Generator,
    classes: tuple[str, ...],
    fps: int,
    seconds: tuple[float, float],
    max_segments: int,
    segment_seconds: tuple[float, float],
    ambiguous_prob: float,
) -> tuple[int, list[tuple[int, int, str]]]:
    """Frame count and `(start_frame, end_frame_exclusive, label)` segments (label `Ambiguous` for ignored ones)."""
    n = int(round(rng.uniform(*seconds) * fps))
    k = int(rng.integers(1, max_segments + 1))
    lengths = [int(round(rng.uniform(*segment_seconds) * fps)) for _ in range(k)]
    min_gap = int(round(0.5 * fps))
    while k > 1 and sum(lengths) + (k + 1) * min_gap > n:
        lengths.pop()
        k -= 1
    free = n - sum(lengths) - (k + 1) * min_gap
    if free < 0:
        raise ActdistillError(f"a {n}-frame video cannot hold a {lengths[0]}-frame segment; raise the video length")
    gaps = min_gap + np.floor(rng.dirichlet(np.ones(k + 1)) * free).astype(int)
    segments, t = [], 0
    for i, length in enumerate(lengths):
        t += int(gaps[i])
        label = "Ambiguous" if rng.random() < ambiguous_prob else str(rng.choice(list(classes)))
        segments.append((t, t + length, label))
        t += length
    return n, segments


def _render_background(style: dict, rng: np.random.Generator, frames: int, size: int, figure: bool) -> np.ndarray:
    """`(T, H, W, 3)` uint8 background: an idle figure swaying its arms in place, or the empty scene."""
    S = size * _SS
    scale = style["height"] * S
    ground = style["ground"] * S
    width = max(0.065 * scale, 1.5 * _SS)
    x0 = rng.uniform(0.3 * scale, S - 0.3 * scale)
    period, phase, noise = rng.uniform(20, 40), rng.uniform(0, 2 * math.pi), rng.uniform(2, 6)
    out = np.empty((frames, size, size, 3), np.uint8)
    for k in range(frames):
        img = style["bg"].copy()
        if figure:
            draw = ImageDraw.Draw(img)
            sway = 4 * math.sin(2 * math.pi * k / period + phase)
            segs, head = _front([(10 + sway, 14.0), (10 - sway, 14.0)])

            def px(p: tuple[float, float]) -> tuple[float, float]:
                return (x0 + p[0] * scale, ground - p[1] * scale)

            for a, b in segs:
                draw.line([px(a), px(b)], fill=style["colour"], width=int(width), joint="curve")
            hx, hy = px(head)
            r = HEAD_R * scale
            draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=style["colour"])
        small = np.asarray(img.resize((size, size)), np.float32)
        out[k] = np.clip(small + rng.normal(0, noise, small.shape), 0, 255).astype(np.uint8)
    return out


def render_untrimmed(
    rng: np.random.Generator, frames: int, segments: list[tuple[int, int, str]], size: int
) -> np.ndarray:
    """`(frames, size, size, 3)` uint8: one scene, the planned action segments, background elsewhere."""
    style = _group_style(rng, size)
    idle = bool(rng.random() < 0.5)
    video = _render_background(style, rng, frames, size, idle)
    for start, end, label in segments:
        action = AMBIGUOUS_ACTION if label == "Ambiguous" else label
        video[start:end] = render_video(action, rng, end - start, size, style)
    return video


def write_synthetic_detection(
    out_dir: str | Path,
    *,
    num_val: int = 40,
    num_test: int = 20,
    classes: tuple[str, ...] | list[str] = DEFAULT_CLASSES,
    fps: int = 10,
    size: int = 32,
    seconds: tuple[float, float] = (8.0, 20.0),
    max_segments: int = 4,
    segment_seconds: tuple[float, float] = (1.5, 4.0),
    ambiguous_prob: float = 0.1,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Write the synthetic detection set of the module docstring; returns `out_dir`. Deterministic per seed."""
    classes = tuple(classes)
    bad = [c for c in classes if c not in VIDEO_ACTIONS or c == AMBIGUOUS_ACTION]
    if bad or not classes:
        allowed = [c for c in VIDEO_ACTIONS if c != AMBIGUOUS_ACTION]
        raise ActdistillError(f"synthetic detection classes must be among {', '.join(allowed)}; got {bad or 'none'}")
    if size % 2:
        raise ActdistillError(f"video size must be even (yuv420p), got {size}")
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    database: dict[str, Any] = {}
    listing: list[str] = []
    rows: dict[str, list[dict[str, Any]]] = {"val": [], "test": []}
    jobs = [(s, i) for s, count in zip(SUBSETS, (num_val, num_test)) for i in range(1, count + 1)]
    for (subset, prefix, json_subset), i in tqdm(jobs, desc="synthetic detection videos", disable=not progress):
        rng = np.random.default_rng([seed, 0 if subset == "val" else 1, i])
        frames, segments = plan_video(rng, classes, fps, seconds, max_segments, segment_seconds, ambiguous_prob)
        name = f"{prefix}_{i:07d}"
        encode_video(render_untrimmed(rng, frames, segments, size), out / "videos" / f"{name}.avi", fps=fps)
        anns = [{"segment": [s / fps, e / fps], "label": label} for s, e, label in segments]
        database[name] = {"subset": json_subset, "duration": frames / fps, "fps": fps, "annotations": anns}
        rows[subset] += [{"video": name, "start": s / fps, "end": e / fps, "label": label} for s, e, label in segments]
        listing.append(f"{name} {subset} {frames} {fps} {frames / fps:.2f}")
    for subset, subset_rows in rows.items():
        write_thumos_annotations(subset_rows, out / "annotations", subset, classes=(*classes, "Ambiguous"))
    (out / "annotations.json").write_text(json.dumps({"database": database}, indent=1))
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    (out / "video_list.txt").write_text("".join(f"{line}\n" for line in listing))
    return out
