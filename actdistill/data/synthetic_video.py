"""A learnable synthetic action-video set (moving stick figures) written in the real UCF101 layout.

`<out>/<Class>/v_<Class>_gGG_cCC.avi` plus `<out>/ucfTrainTestlist/` (`classInd.txt`, `trainlist0{1,2,3}.txt`,
`testlist0{1,2,3}.txt`, CRLF like the official files), so `actdistill.data.ucf101` and the `ucf101` dataset read it
unchanged. Clips of one group share background, actor colour and size (as in UCF101; here group g is the same scene
in every class, so scenes carry no label), and each test split holds whole groups: train and test never share a scene.

Three class pairs differ ONLY in motion: `StandUp` is `SitDown` played backwards, `RunLeft` is `RunRight` played
backwards (same frames, reversed order), and `WalkFast` is the `WalkSlow` gait cycle at 2.2× the speed (the same
pose distribution per frame). A model that averages per-frame predictions is at chance within these pairs; a
model of motion is not. Nuisances: position, size, colours, background, clutter, noise.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from actdistill.data.synthetic_image import write_synthetic_marker
from actdistill.errors import ActdistillError

logger = logging.getLogger("actdistill.data")

VIDEO_ACTIONS: dict[str, str] = {
    "SitDown": "stands, bends, ends seated on a chair",
    "StandUp": "SitDown played backwards",
    "RunRight": "running gait, moving right",
    "RunLeft": "RunRight played backwards (moves left, same frames)",
    "WalkSlow": "walking gait, either direction",
    "WalkFast": "the same gait 2.2× faster",
    "Wave": "one forearm swinging above the head",
    "Clap": "hands meeting in front of the chest",
    "Jump": "jumping in place, arms up when airborne",
    "Punch": "arms punching forward in turn",
}
# Pairs a per-frame (2D) model cannot separate: (a, b) have the same distribution of single frames.
MOTION_PAIRS = (("SitDown", "StandUp"), ("RunRight", "RunLeft"), ("WalkSlow", "WalkFast"))
_REVERSED = {"StandUp": "SitDown", "RunLeft": "RunRight"}
_FAST = 2.2
_SS = 2  # draw at 2× and box-filter down: anti-aliased strokes

THIGH, SHIN, TORSO, UPPER, FORE, HEAD_R = 0.25, 0.25, 0.3, 0.16, 0.15, 0.07
Pt = tuple[float, float]
Figure = tuple[list[tuple[Pt, Pt]], Pt]  # limb segments and head centre, figure units (y up, ground at 0)


def _dir(angle: float, sign: float) -> Pt:
    """Unit vector `angle` degrees away from straight down, towards `sign` (+1 forward/outward, −1 back/inward)."""
    r = math.radians(angle)
    return (sign * math.sin(r), -math.cos(r))


def _add(p: Pt, d: Pt, k: float) -> Pt:
    return (p[0] + k * d[0], p[1] + k * d[1])


def _side(lean: float, legs, arms, facing: int, lift: float = 0.0) -> Figure:
    """Side view. `legs`/`arms`: [(thigh, shin)] / [(upper, forearm)] absolute angles from straight down."""
    feet = []
    for thigh, shin in legs:
        knee = _add((0.0, 0.0), _dir(thigh, facing), THIGH)
        feet.append(_add(knee, _dir(shin, facing), SHIN))
    hip = (0.0, -min(f[1] for f in feet) + lift)  # the lower foot stands on the ground
    segs = []
    for thigh, shin in legs:
        knee = _add(hip, _dir(thigh, facing), THIGH)
        segs += [(hip, knee), (knee, _add(knee, _dir(shin, facing), SHIN))]
    up = (facing * math.sin(math.radians(lean)), math.cos(math.radians(lean)))
    neck = _add(hip, up, TORSO)
    shoulder = _add(neck, up, -0.03)
    segs.append((hip, neck))
    for upper, fore in arms:
        elbow = _add(shoulder, _dir(upper, facing), UPPER)
        segs += [(shoulder, elbow), (elbow, _add(elbow, _dir(fore, facing), FORE))]
    return segs, _add(neck, up, HEAD_R + 0.015)


def _front(arms, legs_out: float = 8.0, lift: float = 0.0, hands: list[Pt] | None = None) -> Figure:
    """Front view: `arms` = [(upper, forearm)] outward angles for the (right, left) arm; `hands` overrides forearms."""
    hip_y = (THIGH + SHIN) * math.cos(math.radians(legs_out)) + lift
    segs = []
    for s in (1, -1):
        hip = (0.04 * s, hip_y)
        segs.append((hip, _add(hip, _dir(legs_out, s), THIGH + SHIN)))
    neck = (0.0, hip_y + TORSO)
    segs.append(((0.0, hip_y), neck))
    for k, (s, (upper, fore)) in enumerate(zip((1, -1), arms)):
        shoulder = (0.07 * s, neck[1] - 0.03)
        elbow = _add(shoulder, _dir(upper, s), UPPER)
        hand = hands[k] if hands else _add(elbow, _dir(fore, s), FORE)
        segs += [(shoulder, elbow), (elbow, hand)]
    return segs, (0.0, neck[1] + HEAD_R + 0.015)


def _gait(phase: float, run: bool, facing: int) -> Figure:
    amp, knee0, knee, arm, elbow, lean = (40, 15, 75, 45, 90, 14) if run else (25, 5, 35, 20, 12, 3)
    legs, arms = [], []
    for ph in (phase, phase + math.pi):
        thigh = amp * math.sin(ph)
        legs.append((thigh, thigh - knee0 - knee * max(0.0, math.cos(ph))))  # the swinging leg bends
        upper = -arm * math.sin(ph)
        arms.append((upper, upper + elbow))
    return _side(lean, legs, arms, facing, lift=(0.03 if run else 0.01) * abs(math.cos(phase)))


def _poses(action: str, n: int, rng: np.random.Generator) -> tuple[list[Figure], np.ndarray, bool]:
    """Per-frame figures, per-frame x displacement (figure units) and whether a chair is drawn."""
    t = np.arange(n, dtype=np.float64)
    phase0 = rng.uniform(0, 2 * math.pi)
    dx = np.zeros(n)
    if action == "SitDown":
        start, dur = rng.uniform(0.05, 0.2) * n, rng.uniform(0.6, 0.75) * n
        p = np.clip((t - start) / dur, 0, 1)
        p = p * p * (3 - 2 * p)  # smoothstep
        figs = []
        for pk in p:
            lean, upper = 35 * math.sin(math.pi * pk), 15 + 40 * math.sin(math.pi * pk)
            legs = [(90 * pk, 0.0), (90 * pk + 4, 2.0)]
            figs.append(_side(lean, legs, [(upper, upper + 15), (upper - 6, upper + 10)], 1))
        dx = -THIGH * np.sin(np.radians(90 * p))  # the feet stay put while the hips travel back onto the seat
        return figs, dx, True
    if action in ("RunRight", "WalkSlow", "WalkFast"):
        run = action == "RunRight"
        period = rng.uniform(9, 12) if run else rng.uniform(14, 18) / (_FAST if action == "WalkFast" else 1)
        facing = 1 if run else int(rng.choice([-1, 1]))
        phases = phase0 + 2 * math.pi * t / period
        dx = facing * (0.35 if run else 0.2) * t / period  # distance per gait cycle × cycles
        return [_gait(float(ph), run, facing) for ph in phases], dx, False
    period = rng.uniform(8, 12)
    phases = phase0 + 2 * math.pi * t / period
    if action == "Wave":
        side = int(rng.choice([0, 1]))
        figs = []
        for ph in phases:
            arms = [(150.0, 150 + 35 * math.sin(ph)), (10.0, 10.0)]
            figs.append(_front(arms if side == 0 else arms[::-1]))
        return figs, dx, False
    if action == "Clap":
        figs = []
        for ph in phases:
            shoulder_y = (THIGH + SHIN) * math.cos(math.radians(8)) + TORSO - 0.03
            elbow_y = shoulder_y - UPPER * math.cos(math.radians(30))
            gap = 0.015 + 0.11 * (1 + math.cos(ph)) / 2
            figs.append(_front([(30.0, 0.0), (30.0, 0.0)], hands=[(gap, elbow_y + 0.1), (-gap, elbow_y + 0.1)]))
        return figs, dx, False
    if action == "Jump":
        figs = []
        for ti in t:
            air = abs(math.sin(math.pi * ti / period + phase0))
            figs.append(_front([(30 + 120 * air, 40 + 130 * air)] * 2, legs_out=5 + 12 * air, lift=0.18 * air))
        return figs, dx, False
    if action == "Punch":
        facing = int(rng.choice([-1, 1]))
        figs = []
        for ph in phases:
            ext = [max(0.0, math.sin(ph + k * math.pi)) ** 2 for k in (0, 1)]
            arms = [(60 + 30 * e, 150 - 60 * e) for e in ext]
            figs.append(_side(5, [(15, 5), (-15, -25)], arms, facing))
        return figs, dx, False
    raise ActdistillError(f"unknown synthetic action '{action}'; choose from {', '.join(VIDEO_ACTIONS)}")


def _lum(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _group_style(rng: np.random.Generator, size: int) -> dict:
    """What one group (actor and scene) shares: background, floor, clutter, figure colour and size."""
    S = size * _SS
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    w = np.linspace(0, 1, S)[:, None] if rng.random() < 0.5 else np.linspace(0, 1, S)[None, :]
    bg = (a[None, None] * (1 - w[..., None]) + b[None, None] * w[..., None]) * np.ones((S, S, 1))
    img = Image.fromarray(bg.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    ground = rng.uniform(0.8, 0.93)
    if rng.random() < 0.7:
        draw.rectangle([0, int(ground * S), S, S], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    for _ in range(int(rng.integers(0, 4))):
        x, y = rng.uniform(0, S, 2)
        w2, h2 = rng.uniform(0.05, 0.3, 2) * S
        draw.rectangle([x, y, x + w2, y + h2], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    mean = _lum(np.asarray(img).reshape(-1, 3).mean(0))
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    for _ in range(20):
        if abs(_lum(colour) - mean) > 70:
            break
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    chair = tuple(int(v) for v in rng.integers(0, 256, 3))
    return {"bg": img, "ground": ground, "colour": colour, "chair": chair, "height": rng.uniform(0.42, 0.62)}


def render_video(
    action: str, rng: np.random.Generator, frames: int = 32, size: int = 64, style: dict | None = None
) -> np.ndarray:
    """One clip of `action` as `(T, H, W, 3)` uint8; the reversed classes are their base class played backwards."""
    base = _REVERSED.get(action, action)
    style = style or _group_style(rng, size)
    S = size * _SS
    figs, dx, chair = _poses(base, frames, rng)
    scale = style["height"] * rng.uniform(0.92, 1.08) * S
    ground = style["ground"] * S + rng.uniform(-0.02, 0.02) * S
    width = max(0.065 * scale, 1.5 * _SS)
    # Figures stay in view: a path longer than the frame wraps around horizontally (long videos) instead.
    margin = 0.3 * scale
    lo, hi = margin - min(dx.min(), 0) * scale, S - margin - max(dx.max(), 0) * scale
    period = S + 2 * margin
    x0 = rng.uniform(lo, hi) if hi > lo else rng.uniform(0, period)
    noise = rng.uniform(2, 6)
    out = np.empty((frames, size, size, 3), np.uint8)
    for k, ((segs, head), shift) in enumerate(zip(figs, dx)):
        img = style["bg"].copy()
        draw = ImageDraw.Draw(img)
        ox = x0 + shift * scale if hi > lo else (x0 + shift * scale) % period - margin

        def px(p: Pt, ox: float = ox) -> Pt:
            return (ox + p[0] * scale, ground - p[1] * scale)

        if chair:
            seat_x = -THIGH - shift  # the seat stays where the hips end up
            c = style["chair"]
            for a, b in (((seat_x - 0.13, 0.22), (seat_x + 0.1, 0.22)), ((seat_x - 0.13, 0.22), (seat_x - 0.13, 0.6))):
                draw.line([px(a), px(b)], fill=c, width=int(width))
            for leg in (seat_x - 0.12, seat_x + 0.09):
                draw.line([px((leg, 0.22)), px((leg, 0.0))], fill=c, width=int(width * 0.7))
        for a, b in segs:
            draw.line([px(a), px(b)], fill=style["colour"], width=int(width), joint="curve")
        hx, hy = px(head)
        r = HEAD_R * scale
        draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=style["colour"])
        small = np.asarray(img.resize((size, size), Image.Resampling.BOX), np.float32)
        out[k] = np.clip(small + rng.normal(0, noise, small.shape), 0, 255).astype(np.uint8)
    return out[::-1].copy() if action in _REVERSED else out


def encode_video(frames: np.ndarray, path: str | Path, fps: int = 25, gop: int = 12) -> None:
    """Write `(T, H, W, 3)` uint8 frames as MPEG-4 Part 2 in AVI (like UCF101's xvid) or H.264 in MP4 (yuv420p)."""
    import av

    path = Path(path)
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
        raise ActdistillError(f"{path}: yuv420p needs even frame sizes, got {w}x{h}; use an even size")
    codec = "libx264" if path.suffix == ".mp4" else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        ctx = stream.codec_context
        ctx.width, ctx.height, ctx.pix_fmt, ctx.gop_size, ctx.thread_count = w, h, "yuv420p", gop, 1
        if codec == "mpeg4":
            ctx.bit_rate = max(400_000, 12 * w * h * fps // 10)
        else:
            ctx.options = {"crf": "18", "preset": "veryfast", "bf": "0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _split_groups(groups: int) -> list[set[int]]:
    """Test groups of splits 1-3: UCF101 holds out 7 of 25 groups per split (1-7, 8-14, 15-21), scaled down."""
    k = max(1, round(groups * 7 / 25))
    if 3 * k > groups:
        raise ActdistillError(f"need at least 3 groups for 3 group-disjoint splits, got groups={groups}")
    return [set(range(s * k + 1, (s + 1) * k + 1)) for s in range(3)]


def _write_clip(job: tuple) -> None:
    path, name, key, frames, size, fps, gop = job
    seed, label, group, clip = key
    # One scene per group, shared by every class: the background then carries no label information (with scenes
    # per class and group, small models memorise the few training backgrounds and stay at chance on new groups).
    style = _group_style(np.random.default_rng([seed, group, 0]), size)
    encode_video(
        render_video(name, np.random.default_rng([seed, label, group, clip]), frames, size, style), path, fps, gop
    )


def write_synthetic_ucf101(
    out_dir: str | Path,
    *,
    num_classes: int = 8,
    videos_per_class: int = 16,
    groups: int = 8,
    frames: int = 32,
    size: int = 64,
    fps: int = 25,
    seed: int = 0,
    fmt: str = "avi",
    gop: int = 12,
    progress: bool = False,
    classes: list[str] | None = None,
    workers: int = 1,
) -> Path:
    """Write the synthetic set (see module docstring) into `out_dir`; returns `out_dir`. Deterministic per seed.

    Default: 8 classes × 16 clips (8 groups of 2) × 32 frames of 64², split 1 = 96 train / 32 test clips.
    """
    names = classes or list(VIDEO_ACTIONS)[:num_classes]
    if not 1 <= len(names) <= len(VIDEO_ACTIONS) or any(n not in VIDEO_ACTIONS for n in names):
        raise ActdistillError(f"synthetic video has the classes {', '.join(VIDEO_ACTIONS)}; asked for {names}")
    if fmt not in ("avi", "mp4"):
        raise ActdistillError(f"fmt must be 'avi' or 'mp4', got {fmt!r}")
    if videos_per_class < groups:
        raise ActdistillError(f"videos_per_class ({videos_per_class}) must be ≥ groups ({groups})")
    out = Path(out_dir)
    tests = _split_groups(groups)
    rows: list[tuple[str, int, int]] = []
    jobs = []
    for label, name in enumerate(names):
        (out / name).mkdir(parents=True, exist_ok=True)
        counts: dict[int, int] = {}
        for v in range(videos_per_class):
            g = v * groups // videos_per_class + 1
            counts[g] = c = counts.get(g, 0) + 1
            rel = f"{name}/v_{name}_g{g:02d}_c{c:02d}.{fmt}"
            rows.append((rel, label, g))
            jobs.append((out / rel, name, (seed, label, g, c), frames, size, fps, gop))
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        results = pool.map(_write_clip, jobs) if pool else map(_write_clip, jobs)
        for _ in tqdm(results, total=len(jobs), desc="synthetic videos", disable=not progress):
            pass
    ann = out / "ucfTrainTestlist"
    ann.mkdir(exist_ok=True)
    crlf = "\r\n"
    (ann / "classInd.txt").write_bytes("".join(f"{i + 1} {n}{crlf}" for i, n in enumerate(names)).encode())
    for s, test in enumerate(tests, 1):
        train_rows = "".join(f"{rel} {lab + 1}{crlf}" for rel, lab, g in rows if g not in test)
        test_rows = "".join(f"{rel}{crlf}" for rel, _, g in rows if g in test)
        (ann / f"trainlist0{s}.txt").write_bytes(train_rows.encode())
        (ann / f"testlist0{s}.txt").write_bytes(test_rows.encode())
    write_synthetic_marker(
        out,
        generator="actdistill.data.synthetic_video",
        note="synthetic stick-figure videos",
        layout="ucf101",
        num_classes=len(names),
        videos_per_class=videos_per_class,
        frames=frames,
        size=size,
        seed=seed,
    )
    return out


def write_frame_folders(video_root: str | Path, out_root: str | Path, quality: int = 95, progress: bool = False) -> int:
    """Extract every video under `video_root` to `out_root/<same path without extension>/img_00001.jpg, ...`.

    Folders that already hold as many frames as the video are kept (resume). Returns the number of videos written.
    """
    import av

    from actdistill.data.decode import VIDEO_EXTENSIONS, count_folder_frames
    from actdistill.data.manifest import probe_video

    video_root, out_root = Path(video_root), Path(out_root)
    videos = sorted(p for p in video_root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
    written = 0
    for video in tqdm(videos, desc="frame folders", disable=not progress):
        folder = (out_root / video.relative_to(video_root)).with_suffix("")
        if folder.is_dir() and count_folder_frames(folder) >= probe_video(video)[0]:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        with av.open(str(video)) as container:
            for i, frame in enumerate(container.decode(video=0), 1):
                frame.to_image().save(folder / f"img_{i:05d}.jpg", quality=quality)
        written += 1
    return written
