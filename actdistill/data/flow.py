"""Optical flow extraction into the two-stream frame-folder layout: `flow_x_00001.jpg`, `flow_y_00001.jpg`, ...

Flow `k` (1-based) is the motion from frame `k` to frame `k + 1`, so a video of N frames gives N − 1 flow pairs.
Each component is clipped to ±`bound` pixels and quantised to 8 bits as `(clip(f, −b, b) + b) · 255 / (2b)`
(the convention of Simonyan & Zisserman 2014 and of the TV-L1 flow used by paper 2, Implementation Details), so
127.5 is zero motion and a horizontal mirror maps x to 255 − x. OpenCV is an optional dependency:
TV-L1 (Zach et al. 2007) needs `opencv-contrib-python-headless`; plain OpenCV gives Farneback (2003).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from actdistill.data.decode import RGB_TEMPLATE, VIDEO_EXTENSIONS, VideoDecodeError
from actdistill.errors import ActdistillError

logger = logging.getLogger("actdistill.data")
DONE_MARKER = ".flow_complete.json"
INSTALL_HINT = "pip install opencv-contrib-python-headless (or the package's [flow] extra)"


def quantize_flow(flow: np.ndarray, bound: float = 20.0) -> np.ndarray:
    """`(..., 2)` float flow in pixels → uint8 in [0, 255] with `(clip(f, −bound, bound) + bound) · 255 / (2·bound)`."""
    q = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2 * bound))
    return np.round(q).astype(np.uint8)


def flow_backend(method: str = "tvl1") -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A function `(prev_gray, next_gray) -> (H, W, 2)` float32 flow; TV-L1 falls back to Farneback without contrib."""
    if method not in ("tvl1", "farneback"):
        raise ActdistillError(f"flow method must be 'tvl1' or 'farneback', got {method!r}")
    try:
        import cv2
    except ImportError:
        raise ActdistillError(f"optical flow extraction needs OpenCV, which is not installed: {INSTALL_HINT}") from None
    if method == "tvl1":
        if hasattr(cv2, "optflow"):
            tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
            return lambda a, b: tvl1.calc(a, b, None)
        logger.warning(
            "cv2.optflow (opencv-contrib) is missing, so TV-L1 is unavailable; using Farneback. %s", INSTALL_HINT
        )

    def farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        # OpenCV's documented example parameters: pyramid scale 0.5, 3 levels, window 15, 3 iterations, poly_n 5, σ 1.2.
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)

    return farneback


def _gray_frames(source: Path) -> list[np.ndarray]:
    """All frames of a video file or RGB frame folder as `(H, W)` uint8 luma."""
    if source.is_dir():
        files = sorted(source.glob(RGB_TEMPLATE.split("{")[0] + "*.jpg"))
        return [np.asarray(Image.open(f).convert("L")) for f in files]
    import av

    try:
        with av.open(str(source)) as container:
            return [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]
    except (av.FFmpegError, OSError) as exc:
        raise VideoDecodeError(source, f"cannot decode ({type(exc).__name__}: {exc})") from None


def extract_flow(
    video_path: str | Path, out_dir: str | Path, method: str = "tvl1", bound: float = 20.0, quality: int = 95
) -> int:
    """Write `flow_x_%05d.jpg`/`flow_y_%05d.jpg` (N − 1 pairs for N frames) for one video or RGB frame folder.

    Returns the number of flow pairs; a completion marker makes `extract_flow_tree` skip the folder next time.
    """
    source, out = Path(video_path), Path(out_dir)
    calc = flow_backend(method)
    frames = _gray_frames(source)
    if len(frames) < 2:
        raise VideoDecodeError(source, f"needs at least 2 frames for optical flow, found {len(frames)}")
    out.mkdir(parents=True, exist_ok=True)
    for k in range(1, len(frames)):
        q = quantize_flow(calc(frames[k - 1], frames[k]), bound)
        Image.fromarray(q[..., 0]).save(out / f"flow_x_{k:05d}.jpg", quality=quality)
        Image.fromarray(q[..., 1]).save(out / f"flow_y_{k:05d}.jpg", quality=quality)
    marker = {"source": str(source), "method": method, "bound": bound, "frames": len(frames), "pairs": len(frames) - 1}
    (out / DONE_MARKER).write_text(json.dumps(marker))
    return len(frames) - 1


def _job(args: tuple[Path, Path, str, float]) -> tuple[str, str]:
    source, out, method, bound = args
    try:
        extract_flow(source, out, method, bound)
    except VideoDecodeError as exc:
        return str(source), exc.reason
    return str(source), ""


def extract_flow_tree(
    video_root: str | Path,
    out_root: str | Path,
    method: str = "tvl1",
    bound: float = 20.0,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, int]:
    """Flow for every video (or RGB frame folder) under `video_root` into `out_root/<same path, no extension>/`.

    Resumable: folders holding a completion marker are skipped. Returns counts `{"done", "skipped", "failed"}`;
    failed videos are named in a warning.
    """
    flow_backend(method)  # fail fast, before walking the tree
    root, out_root = Path(video_root), Path(out_root)
    sources = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    sources += sorted(p for p in root.rglob("*") if p.is_dir() and (p / RGB_TEMPLATE.format(1)).is_file())
    if not sources:
        raise ActdistillError(f"no videos or img_00001.jpg frame folders under {root}; point video_root at the dataset")
    jobs, skipped = [], 0
    for src in sources:
        out = (out_root / src.relative_to(root)).with_suffix("") if src.is_file() else out_root / src.relative_to(root)
        if (out / DONE_MARKER).is_file():
            skipped += 1
        else:
            jobs.append((src, out, method, bound))
    with ProcessPoolExecutor(workers) if workers > 1 else _Serial() as pool:
        results = list(tqdm(pool.map(_job, jobs), total=len(jobs), desc="optical flow", disable=not progress))
    failed = [(src, why) for src, why in results if why]
    if failed:
        names = ", ".join(f"{s} ({w})" for s, w in failed[:5])
        logger.warning("optical flow failed for %d of %d videos: %s", len(failed), len(sources), names)
    return {"done": len(jobs) - len(failed), "skipped": skipped, "failed": len(failed)}


class _Serial:
    """A stand-in for an executor that runs jobs in this process (workers = 1)."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn, items):
        return map(fn, items)
