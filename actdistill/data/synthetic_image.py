"""A learnable synthetic still-image action dataset (stick figures), written in the official Stanford 40 layout."""

from __future__ import annotations

import io
import json
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from actdistill.errors import ActdistillError

SYNTH_ACTIONS: list[tuple[str, str]] = [
    ("applauding", "both hands together in front of the chest; no object"),
    ("waving_hands", "one arm raised, forearm angled up, hand above the head; no object"),
    ("pointing", "one arm stretched straight out at shoulder height, hand below the head; no object"),
    ("phoning", "one hand at the side of the head holding a small dark phone"),
    ("texting_message", "both hands in front of the waist holding the same small dark phone, head bowed"),
    ("jumping", "both arms up, knees bent, feet off the ground with a gap above the shadow"),
    ("kicking_ball", "one leg swung forward with a ball just in front of the foot, arms out for balance"),
    ("holding_an_umbrella", "one hand above the shoulder holding a shaft with a canopy over the head"),
    ("reading", "both hands in front of the chest holding an open light book, head bowed"),
    ("running", "torso leaning forward, legs spread wide, arms swinging opposite to the legs"),
    ("drinking", "one hand at the mouth holding a tilted bright cup, head tilted back"),
    ("carrying_box", "both arms forward and low holding a large box in front of the hips"),
]

# Which class owns each object: distractors lying around are always objects of *other* classes.
_OBJECT_OF = {
    "phoning": "phone",
    "texting_message": "phone",
    "kicking_ball": "ball",
    "holding_an_umbrella": "umbrella",
    "reading": "book",
    "drinking": "cup",
    "carrying_box": "box",
}
_OBJECTS = ("ball", "phone", "book", "cup", "box", "umbrella")
_SPLIT_ID = {"train": 0, "test": 1}
# Nuisance strengths, tuned so a small BN CNN trained from scratch on 10 x 60 images at 64 px reaches ~45-60 % test
# accuracy (chance 10 %): scale = person height / image height, width = stroke / person height, contrast = minimum
# luminance gap between figure and mean background, noise = Gaussian sigma range, counts as [low, high).
_NUISANCE = dict(
    scale=(0.45, 0.8), width=(0.06, 0.09), floor=0.7, contrast=80, noise=(2, 6), clutter=(0, 3), distract=(1, 3)
)
# "easy": larger figures, little clutter and noise; what the CPU demo uses so that small models trained from scratch
# in a few minutes separate the classes (standard is for realistic difficulty).
_NUISANCE_EASY = dict(
    scale=(0.7, 0.9), width=(0.07, 0.09), floor=0.5, contrast=100, noise=(1, 3), clutter=(0, 2), distract=(0, 2)
)
DIFFICULTIES = {"standard": _NUISANCE, "easy": _NUISANCE_EASY}
# On-disk layouts `write_synthetic_stanford40` can write; image_folder is torchvision's ImageFolder (train/, val/).
LAYOUTS = ("stanford40", "image_folder")
_FOLDER_OF_SPLIT = {"train": "train", "test": "val"}
_SS = 2  # supersampling factor: draw at 2x and box-filter down for anti-aliased strokes

# Skeleton in figure units: y up, feet at 0, head top at 1.
_HEAD_R, _HEAD_Y, _NECK_Y, _SHOULDER_DY, _SHOULDER_X, _PELVIS_Y, _HIP_X = 0.075, 0.925, 0.85, 0.05, 0.05, 0.47, 0.035
_UPPER, _FORE, _THIGH, _SHIN = 0.16, 0.15, 0.24, 0.23

Point = tuple[float, float]
Prim = tuple  # ("line", pts, width_units|None, colour|None) / ("poly", pts, fill) / ("ellipse", centre, rx, ry, fill)


def _step(p: Point, theta: float, length: float) -> Point:
    """Move from p by `length` in direction `theta` degrees (0 = straight down, +90 = forward)."""
    t = math.radians(theta)
    return (p[0] + length * math.sin(t), p[1] - length * math.cos(t))


def _ik(root: Point, target: Point, l1: float, l2: float) -> tuple[Point, Point]:
    """Two-link inverse kinematics: (elbow, hand) reaching `target`, elbow on the lower side."""
    dx, dy = target[0] - root[0], target[1] - root[1]
    d = min(max(math.hypot(dx, dy), abs(l1 - l2) + 1e-3), l1 + l2 - 1e-3)
    base = math.atan2(dy, dx)
    a = math.acos((l1 * l1 + d * d - l2 * l2) / (2 * l1 * d))
    elbows = [(root[0] + l1 * math.cos(base + s * a), root[1] + l1 * math.sin(base + s * a)) for s in (1, -1)]
    elbow = min(elbows, key=lambda e: e[1])
    hand = (root[0] + d * math.cos(base), root[1] + d * math.sin(base))
    return elbow, hand


def _rot(pts: list[Point], angle: float, centre: Point) -> list[Point]:
    """Rotate points by `angle` degrees (counter-clockwise, y up) about `centre`."""
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return [
        (centre[0] + c * (x - centre[0]) - s * (y - centre[1]), centre[1] + s * (x - centre[0]) + c * (y - centre[1]))
        for x, y in pts
    ]


def _rect(cx: float, cy: float, w: float, h: float, angle: float = 0.0) -> list[Point]:
    pts = [(cx - w / 2, cy - h / 2), (cx + w / 2, cy - h / 2), (cx + w / 2, cy + h / 2), (cx - w / 2, cy + h / 2)]
    return _rot(pts, angle, (cx, cy))


def _bright(rng: np.random.Generator, lo: int = 140) -> tuple[int, int, int]:
    c = rng.integers(0, 256, 3)
    c[rng.integers(3)] = rng.integers(lo + 60, 256)
    return tuple(int(v) for v in np.maximum(c, lo // 2))


def _object(kind: str, rng: np.random.Generator, at: Point, unit: float, angle: float = 0.0) -> list[Prim]:
    """Primitives of an object centred at `at`; `unit` is the object size scale (1 = held size)."""
    x, y = at
    if kind == "ball":
        r = unit * rng.uniform(0.07, 0.09)
        return [("ellipse", at, r, r, _bright(rng, 100))]
    if kind == "phone":
        g = int(rng.integers(0, 60))
        return [("poly", _rect(x, y, 0.05 * unit, 0.11 * unit, angle), (g, g, g + int(rng.integers(0, 30))))]
    if kind == "cup":
        w, h = 0.075 * unit, 0.1 * unit
        pts = [(x - w / 2, y + h / 2), (x + w / 2, y + h / 2), (x + w / 3, y - h / 2), (x - w / 3, y - h / 2)]
        return [("poly", _rot(pts, angle, at), _bright(rng, 150))]
    if kind == "box":
        w, h = unit * rng.uniform(0.26, 0.34), unit * rng.uniform(0.18, 0.25)
        col = (int(rng.integers(120, 210)), int(rng.integers(75, 140)), int(rng.integers(30, 90)))
        tape = _rot([(x - w / 2, y + h * 0.1), (x + w / 2, y + h * 0.1)], angle, at)
        return [("poly", _rect(x, y, w, h, angle), col), ("line", tape, 0.012 * unit, (230, 210, 150))]
    if kind == "book":
        w, h, g = unit * rng.uniform(0.11, 0.14), unit * rng.uniform(0.15, 0.19), int(rng.integers(205, 256))
        prims: list[Prim] = []
        for side in (-1, 1):  # two pages meeting at the spine, slightly opened into a V
            page = [(x, y), (x + side * w, y + 0.015 * unit), (x + side * w, y + h), (x, y + h - 0.015 * unit)]
            prims.append(("poly", _rot(page, angle, at), (g, g, g - int(rng.integers(0, 40)))))
        prims.append(("line", _rot([(x, y), (x, y + h - 0.015 * unit)], angle, at), 0.008 * unit, (60, 40, 30)))
        return prims
    # umbrella: a semi-elliptic canopy on a shaft whose handle is at `at`
    half_w, ch, top = unit * rng.uniform(0.22, 0.3), unit * rng.uniform(0.1, 0.15), unit * rng.uniform(0.15, 0.22)
    arc = [(x + half_w * math.cos(t), y + top + ch * math.sin(t)) for t in np.linspace(0, math.pi, 13)]
    shaft = [(x, y - 0.03 * unit), (x, y + top + ch)]
    return [("poly", _rot(arc, angle, at), _bright(rng, 120)), ("line", _rot(shaft, angle, at), 0.012 * unit, None)]


def _pose(action: str, rng: np.random.Generator) -> tuple[dict[str, Point], list[Prim], float]:
    """Joints (figure units), held-object primitives and jump height for one drawn instance of `action`."""
    u, n = rng.uniform, rng.normal
    lean, head_shift, lift = 0.0, (0.0, 0.0), 0.0
    arm_a = arm_b = leg_a = leg_b = None  # (theta_upper, theta_lower) or a target for IK
    targets: dict[str, Point] = {}
    props: list[tuple[str, str, float]] = []  # (object kind, joint it is held at, angle in degrees)
    if action == "applauding":
        c = (u(0.08, 0.15), u(0.55, 0.67))
        targets = {"a": (c[0] + 0.008, c[1]), "b": (c[0] - 0.008, c[1])}
    elif action == "waving_hands":
        arm_a = (u(115, 150), u(160, 205))
    elif action == "pointing":
        t = u(76, 100)
        arm_a = (t, t + n(0, 4))
    elif action == "phoning":
        targets = {"a": (u(0.055, 0.085), u(0.87, 0.92))}
        props = [("phone", "hand_a", n(0, 12))]
    elif action == "texting_message":
        c = (u(0.1, 0.15), u(0.5, 0.58))
        targets, head_shift = {"a": (c[0] + 0.01, c[1]), "b": (c[0] - 0.01, c[1])}, (0.02, -0.012)
        props = [("phone", "hand_a", 90 + n(0, 15))]
    elif action == "jumping":
        arm_a, arm_b = (u(130, 165), u(140, 180)), (-u(130, 165), -u(140, 180))
        leg_a, leg_b = (u(25, 50), -u(10, 40)), (u(10, 35), -u(20, 50))
        lift = u(0.12, 0.25)
    elif action == "kicking_ball":
        arm_a, arm_b = (-u(20, 55), -u(10, 50)), (u(30, 70), u(40, 90))
        t = u(45, 75)
        leg_a, leg_b = (t, t + u(0, 25)), (-u(0, 12), n(0, 3))
        props = [("ball", "foot_a", 0.0)]
    elif action == "holding_an_umbrella":
        targets = {"a": (u(0.07, 0.14), u(0.93, 1.02))}
        props = [("umbrella", "hand_a", n(0, 6))]
    elif action == "reading":
        c = (u(0.12, 0.18), u(0.58, 0.68))
        targets, head_shift = {"a": (c[0] + 0.01, c[1]), "b": (c[0] - 0.01, c[1])}, (0.02, -0.012)
        props = [("book", "hands", n(0, 10))]
    elif action == "running":
        lean = u(8, 20)
        t = u(35, 60)
        leg_a, leg_b = (t, t - u(20, 50)), (-u(20, 40), -u(70, 110))
        arm_a, arm_b = (-u(25, 50), -u(0, 40)), (u(20, 55), u(90, 130))
    elif action == "drinking":
        targets, head_shift = {"a": (u(0.06, 0.09), u(0.85, 0.89))}, (-0.01, 0.005)
        props = [("cup", "hand_a", u(20, 50))]
    elif action == "carrying_box":
        c = (u(0.14, 0.2), u(0.42, 0.52))
        targets, lean = {"a": (c[0] + 0.01, c[1]), "b": (c[0] - 0.01, c[1])}, -u(0, 8)
        props = [("box", "hands", n(0, 4))]
    else:  # pragma: no cover - SYNTH_ACTIONS and this table are kept in step
        raise KeyError(action)

    def relaxed(side: int) -> tuple[float, float]:
        t = side * u(4, 25)
        return (t, t + side * u(-5, 20))

    def standing(side: int) -> tuple[float, float]:
        t = side * u(3, 12)
        return (t, t + n(0, 3))

    pelvis = (0.0, _PELVIS_Y)
    neck = _step(pelvis, 180 - lean, _NECK_Y - _PELVIS_Y)
    shoulder = _step(pelvis, 180 - lean, _NECK_Y - _PELVIS_Y - _SHOULDER_DY)
    j: dict[str, Point] = {"pelvis": pelvis, "neck": neck}
    hx, hy = _step(pelvis, 180 - lean, _HEAD_Y - _PELVIS_Y)
    j["head"] = (hx + head_shift[0], hy + head_shift[1])
    for side, name, arm, leg in ((1, "a", arm_a, leg_a), (-1, "b", arm_b, leg_b)):
        sh = (shoulder[0] + side * _SHOULDER_X, shoulder[1])
        hip = (side * _HIP_X, _PELVIS_Y)
        j["shoulder_" + name], j["hip_" + name] = sh, hip
        if name in targets:
            tx, ty = targets[name]
            j["elbow_" + name], j["hand_" + name] = _ik(sh, (tx + n(0, 0.008), ty + n(0, 0.008)), _UPPER, _FORE)
        else:
            t1, t2 = arm or relaxed(side)
            j["elbow_" + name] = _step(sh, t1 + n(0, 4), _UPPER)
            j["hand_" + name] = _step(j["elbow_" + name], t2 + n(0, 4), _FORE)
        t1, t2 = leg or standing(side)
        j["knee_" + name] = _step(hip, t1 + n(0, 3), _THIGH)
        j["foot_" + name] = _step(j["knee_" + name], t2 + n(0, 3), _SHIN)
    ground = min(j["foot_a"][1], j["foot_b"][1])
    j = {k: (x, y - ground + lift) for k, (x, y) in j.items()}

    prims: list[Prim] = []
    for kind, anchor, angle in props:
        if anchor == "hands":
            at = ((j["hand_a"][0] + j["hand_b"][0]) / 2, (j["hand_a"][1] + j["hand_b"][1]) / 2)
            at = (at[0], at[1] - 0.06) if kind == "box" else (at[0] + 0.01, at[1] - 0.05)
        elif kind == "ball":  # just in front of the kicking foot
            at = (j[anchor][0] + 0.085, j[anchor][1] + 0.01)
        else:
            at = j[anchor]
        prims += _object(kind, rng, at, 1.0, angle)
    return j, prims, lift


_BONES = [("neck", "pelvis"), ("shoulder_b", "shoulder_a"), ("hip_b", "hip_a")]
_LIMBS = [("shoulder_a", "elbow_a", "hand_a"), ("shoulder_b", "elbow_b", "hand_b")]
_LIMBS += [("hip_a", "knee_a", "foot_a"), ("hip_b", "knee_b", "foot_b")]


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A (h, w, 3) float32 linear colour gradient in a random direction between two random colours."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    a = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * math.cos(a) + yy * math.sin(a)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    return (c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]).astype(np.float32)


def _lum(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def render_image(
    action: str, rng: np.random.Generator, size: int, clean: bool = False, difficulty: str = "standard"
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Draw one `(size, size, 3)` uint8 image of `action` and its person box (xmin, ymin, xmax, ymax), max exclusive.

    `clean=True` draws only the figure on a flat grey background (used by tests to check the box is tight);
    `difficulty` picks the nuisance strengths (`DIFFICULTIES`).
    """
    K = DIFFICULTIES[difficulty]
    joints, props, lift = _pose(action, rng)
    if rng.random() < 0.5:  # mirror: the figure faces left
        joints = {k: (-x, y) for k, (x, y) in joints.items()}
        props = [_mirror(p) for p in props]
    xs = [p[0] for p in joints.values()]
    ys = [p[1] for p in joints.values()] + [joints["head"][1] + _HEAD_R]
    person = (min(xs + [joints["head"][0] - _HEAD_R]), min(ys), max(xs + [joints["head"][0] + _HEAD_R]), max(ys))
    allpts = [q for p in props for q in _prim_points(p)] + [(person[0], person[1]), (person[2], person[3])]
    full = (min(q[0] for q in allpts), min(q[1] for q in allpts), max(q[0] for q in allpts), max(q[1] for q in allpts))
    full = (full[0], min(full[1], 0.0), full[2], full[3])  # the shadow at y=0 must fit too

    S = size * _SS
    scale = rng.uniform(*K["scale"]) * S / (person[3] - person[1])
    span = max(full[2] - full[0], full[3] - full[1]) * scale
    if span > 0.98 * S:
        scale *= 0.98 * S / span
    ox = rng.uniform(-full[0] * scale, S - full[2] * scale)
    oy = rng.uniform(full[3] * scale, S + full[1] * scale)  # pixel row of figure y=0 (the ground)

    def px(p: Point) -> tuple[float, float]:
        return (ox + p[0] * scale, oy - p[1] * scale)

    width = max(rng.uniform(*K["width"]) * (person[3] - person[1]) * scale, 1.3 * _SS)
    if clean:
        canvas = np.full((S, S, 3), 128, np.float32)
        fig_col = (int(rng.integers(0, 60)),) * 3
    else:
        canvas = _gradient(rng, S, S)
        if rng.random() < K["floor"]:  # a floor whose edge is the ground line under the figure
            canvas[int(oy) :] = canvas[int(oy) :] * 0.4 + rng.uniform(0, 255, 3) * 0.6
        bg = _lum(canvas.reshape(-1, 3).mean(0))
        for _ in range(10):
            fig_col = tuple(int(v) for v in rng.integers(0, 256, 3))
            if abs(_lum(fig_col) - bg) > K["contrast"]:
                break
    img = Image.fromarray(canvas.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    if not clean:
        _clutter(draw, rng, S, K)
        _distractors(draw, rng, action, S, scale, oy, K, (px((person[0], 0))[0], px((person[2], 0))[0]))
        sw, sh = 0.22 * (person[3] - person[1]) * scale, 0.035 * (person[3] - person[1]) * scale
        cx = ox + (joints["foot_a"][0] + joints["foot_b"][0]) / 2 * scale
        shade = tuple(int(v * 0.45) for v in canvas[min(int(oy), S - 1), min(max(int(cx), 0), S - 1)])
        draw.ellipse([cx - sw, oy - sh, cx + sw, oy + sh], fill=shade)
    # The figure is also drawn on a mask: the XML box is the true extent of the drawn strokes.
    mask = Image.new("L", (S, S), 0)
    filled = rng.random() < 0.6
    for d, col in ((draw, fig_col), (ImageDraw.Draw(mask), 255)):
        _draw_figure(d, joints, px, round(width), _HEAD_R * scale, col, filled)
    if not clean:
        for prim in props:
            _draw_prim(draw, prim, px, scale)
    out = np.asarray(img.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    if not clean:
        out = out + rng.normal(0, rng.uniform(*K["noise"]), out.shape)
    ys, xs = np.nonzero(np.asarray(mask))
    box = (int(xs.min()) // _SS, int(ys.min()) // _SS, -(-(int(xs.max()) + 1) // _SS), -(-(int(ys.max()) + 1) // _SS))
    return np.clip(out, 0, 255).astype(np.uint8), box


def _draw_figure(draw: ImageDraw.ImageDraw, joints, px, width: int, r: float, col, filled: bool) -> None:
    """Stick figure: torso, shoulder and hip bars, limbs with rounded joints, head circle of radius `r` px."""
    for a, b in _BONES:
        draw.line([px(joints[a]), px(joints[b])], fill=col, width=width)
    for limb in _LIMBS:
        draw.line([px(joints[k]) for k in limb], fill=col, width=width, joint="curve")
    hx, hy = px(joints["head"])
    draw.ellipse(
        [hx - r, hy - r, hx + r, hy + r], fill=col if filled else None, outline=col, width=max(1, round(width * 0.8))
    )


def _prim_points(p: Prim) -> list[Point]:
    if p[0] == "ellipse":
        (x, y), rx, ry = p[1], p[2], p[3]
        return [(x - rx, y - ry), (x + rx, y + ry)]
    return list(p[1])


def _mirror(p: Prim) -> Prim:
    if p[0] == "ellipse":
        return (p[0], (-p[1][0], p[1][1]), *p[2:])
    return (p[0], [(-x, y) for x, y in p[1]], *p[2:])


def _draw_prim(draw: ImageDraw.ImageDraw, p: Prim, px, scale: float) -> None:
    if p[0] == "ellipse":
        (x, y), rx, ry = px(p[1]), p[2] * scale, p[3] * scale
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=p[4], outline=(30, 30, 30))
    elif p[0] == "poly":
        draw.polygon([px(q) for q in p[1]], fill=p[2])
    else:
        draw.line([px(q) for q in p[1]], fill=p[3] or (35, 35, 35), width=max(1, round(p[2] * scale)))


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, S: int, K: dict = _NUISANCE) -> None:
    """Random rectangles, ellipses and limb-like lines behind the figure."""
    for _ in range(int(rng.integers(*K["clutter"]))):
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        x, y = rng.uniform(0, S, 2)
        w, h = rng.uniform(0.05, 0.4, 2) * S
        kind = rng.integers(3)
        if kind == 0:
            draw.rectangle([x, y, x + w, y + h], fill=col)
        elif kind == 1:
            draw.ellipse([x, y, x + w, y + h], fill=col)
        else:
            draw.line([(x, y), (x + w * rng.choice([-1, 1]), y + h)], fill=col, width=int(rng.integers(1, 4) * _SS))


def _distractors(
    draw, rng: np.random.Generator, action: str, S: int, scale: float, ground: float, K: dict, span
) -> None:
    """1-2 objects of other classes lying on the floor, away from the figure's horizontal extent."""
    pool = [o for o in _OBJECTS if o != _OBJECT_OF.get(action)]
    for _ in range(int(rng.integers(*K["distract"]))):
        kind = pool[int(rng.integers(len(pool)))]
        for _try in range(8):
            x = rng.uniform(0, S)
            if x < span[0] - 0.1 * scale or x > span[1] + 0.1 * scale:
                break
        y = ground + rng.uniform(-0.02, 0.12) * S
        unit = rng.uniform(0.8, 1.2)
        lying = {"phone": 90.0, "book": rng.uniform(-20, 20), "umbrella": rng.choice([-80.0, 80.0])}
        angle = float(lying.get(kind, rng.uniform(-10, 10)))
        # objects are built in figure units around the origin, then placed at pixel (x, y)
        prims = _object(kind, rng, (0.0, 0.0), unit, angle)
        lift = max(-q[1] for p in prims for q in _prim_points(p))
        for p in prims:
            _draw_prim(draw, p, lambda q, x=x, y=y, lift=lift: (x + q[0] * scale, y - (q[1] + lift) * scale), scale)


def _image_job(job: tuple[int, str, int, int, int, int, str]) -> tuple[bytes, tuple[int, int, int, int]]:
    """Render and JPEG-encode one image; seeded only by (seed, split, class, index) so output is order-free."""
    seed, split, cls, idx, size, quality, difficulty = job
    rng = np.random.default_rng([seed, _SPLIT_ID[split], cls, idx])
    arr, box = render_image(SYNTH_ACTIONS[cls][0], rng, size, difficulty=difficulty)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue(), box


def _xml(name: str, action: str, box: tuple[int, int, int, int], size: int) -> str:
    xmin, ymin, xmax, ymax = box
    return (
        f"<annotation>\n\t<filename>{name}</filename>\n\t<folder>Stanford40</folder>\n\t<object>\n"
        f"\t\t<name>{action}</name>\n\t\t<bndbox>\n\t\t\t<xmax>{xmax}</xmax>\n\t\t\t<xmin>{xmin}</xmin>\n"
        f"\t\t\t<ymax>{ymax}</ymax>\n\t\t\t<ymin>{ymin}</ymin>\n\t\t</bndbox>\n\t\t<action>{action}</action>\n"
        f"\t</object>\n\t<size>\n\t\t<depth>3</depth>\n\t\t<height>{size}</height>\n\t\t<width>{size}</width>\n"
        "\t</size>\n</annotation>\n"
    )


def write_synthetic_stanford40(
    out_dir: str | Path,
    *,
    num_classes: int = 10,
    train_per_class: int = 60,
    test_per_class: int = 30,
    image_size: int = 64,
    seed: int = 0,
    workers: int = 1,
    difficulty: str = "standard",
    layout: str = "stanford40",
) -> Path:
    """Write a stick-figure action dataset in the Stanford 40 layout (JPEGImages/, ImageSplits/, XMLAnnotations/).

    `layout="image_folder"` writes the same images in torchvision's ImageFolder layout instead:
    `train/<action>/<action>_NNN.jpg` and `val/<action>/...` (no person boxes); read it with `data.name=image_folder`.

    `difficulty`: "standard" (realistic nuisance) or "easy" (larger figures, less clutter; used by the CPU demo).
    """
    if layout not in LAYOUTS:
        raise ActdistillError(f"synthetic image data: layout must be one of {', '.join(LAYOUTS)}, got '{layout}'")
    if difficulty not in DIFFICULTIES:
        raise ActdistillError(f"synthetic image data: difficulty must be one of {', '.join(DIFFICULTIES)}")
    if not 1 <= num_classes <= len(SYNTH_ACTIONS):
        raise ActdistillError(f"synthetic image data: num_classes={num_classes}; choose 1..{len(SYNTH_ACTIONS)}")
    if train_per_class < 1 or test_per_class < 1 or image_size < 16:
        raise ActdistillError(
            "synthetic image data: need train_per_class >= 1, test_per_class >= 1 and image_size >= 16, got "
            f"{train_per_class}, {test_per_class}, {image_size}"
        )
    root = Path(out_dir)
    folders = ("JPEGImages", "ImageSplits", "XMLAnnotations") if layout == "stanford40" else ("train", "val")
    dirs = {d: root / d for d in folders}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    jobs = [
        (seed, split, cls, start + i, image_size, 90, difficulty)
        for cls in range(num_classes)
        for split, start, count in (("train", 0, train_per_class), ("test", train_per_class, test_per_class))
        for i in range(count)
    ]
    lists: dict[str, list[str]] = {"train": [], "test": []}
    per_action: dict[tuple[str, str], list[str]] = {}
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        rendered = (
            pool.map(_image_job, jobs, chunksize=max(1, len(jobs) // (4 * workers))) if pool else map(_image_job, jobs)
        )
        for (_, split, cls, idx, size, _, _), (data, box) in zip(jobs, rendered):
            action = SYNTH_ACTIONS[cls][0]
            name = f"{action}_{idx + 1:03d}.jpg"
            if layout == "image_folder":  # class folders; the held-out images go to val/
                (root / _FOLDER_OF_SPLIT[split] / action).mkdir(exist_ok=True)
                (root / _FOLDER_OF_SPLIT[split] / action / name).write_bytes(data)
                continue
            (dirs["JPEGImages"] / name).write_bytes(data)
            (dirs["XMLAnnotations"] / f"{name[:-4]}.xml").write_text(_xml(name, action, box, size), newline="\n")
            lists[split].append(name)
            per_action.setdefault((action, split), []).append(name)
    finally:
        if pool is not None:
            pool.shutdown()
    if layout == "image_folder":
        return root
    splits = dirs["ImageSplits"]
    for split, names in lists.items():
        (splits / f"{split}.txt").write_text("".join(f"{n}\n" for n in names), newline="\n")
    for (action, split), names in per_action.items():
        (splits / f"{action}_{split}.txt").write_text("".join(f"{n}\n" for n in names), newline="\n")
    total = train_per_class + test_per_class
    rows = "".join(f"{a}\t{total}\n" for a, _ in SYNTH_ACTIONS[:num_classes])
    (splits / "actions.txt").write_text("action_name\tnumber_of_images\n" + rows, newline="\n")
    write_synthetic_marker(
        root,
        layout="stanford40",
        num_classes=num_classes,
        train_per_class=train_per_class,
        test_per_class=test_per_class,
        image_size=image_size,
        seed=seed,
        difficulty=difficulty,
    )
    return root


SYNTHETIC_MARKER = "SYNTHETIC.json"


def write_synthetic_marker(root: str | Path, **info: object) -> Path:
    """Write `root/SYNTHETIC.json`: says the folder holds generated stick figures, not the real dataset.

    Reports read it (`synthetic_info`) to label results as synthetic rather than by the layout's dataset name.
    """
    path = Path(root) / SYNTHETIC_MARKER
    body = {"generator": "actdistill.data.synthetic_image", "note": "synthetic stick-figure images", **info}
    path.write_text(json.dumps(body, indent=1) + "\n", newline="\n")
    return path


def synthetic_info(root: str | Path) -> dict | None:
    """The marker written with a synthetic dataset under `root`, or None for real (or unmarked) data."""
    path = Path(root) / SYNTHETIC_MARKER
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None
