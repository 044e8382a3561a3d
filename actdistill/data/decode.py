"""The only media-decoding code: chosen frames of a video file or a frame folder → `(T, C, H, W)` uint8.

Video files are read with PyAV; frame folders use the two-stream / mmaction2 layouts: RGB `img_00001.jpg`, ...
(1-based), optical flow `flow_x_00001.jpg` + `flow_y_00001.jpg` or `x_00001.jpg` + `y_00001.jpg` (8-bit grey).
Frame indices are 0-based everywhere in the API, may repeat (loop padding) and may come in any order.

PyAV is the only video backend on purpose: torchcodec 0.17 and decord2 3.4 were at most 1.35× faster per 64-frame
clip than this module, and torchcodec returned the previous frame on XVID AVIs with packed B-frames (UCF101's and
HMDB51's format); benchmarks/bench_decoders.py, BENCHMARKS.md "Video decoders".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from actdistill.errors import ActdistillError

logger = logging.getLogger("actdistill.data")

Modality = Literal["rgb", "flow"]
Strategy = Literal["seek", "sequential"]

RGB_TEMPLATE = "img_{:05d}.jpg"
FLOW_TEMPLATES = (("flow_x_{:05d}.jpg", "flow_y_{:05d}.jpg"), ("x_{:05d}.jpg", "y_{:05d}.jpg"))
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")

# A header frame count a few frames above what the file actually decodes to is common in UCF101/HMDB51 AVIs;
# indices that fall at most this far past the last decodable frame repeat that frame instead of failing.
TAIL_TOLERANCE = 8
# Default strategy: seeking to the keyframe before the clip beat decoding from the start for 16- and 64-frame clips
# of 150-frame videos (2-3× faster; benchmarks/bench_video_loader.py, docs/video_data.md).
DEFAULT_STRATEGY = "seek"


class VideoDecodeError(ActdistillError):
    """A video or frame folder that cannot be read at the requested indices (corrupt, truncated, missing)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


class _Unreliable(Exception):
    """Timestamps after a seek do not map to frame numbers; decode from the start instead."""


def read_frames(
    path: str | Path, indices: Sequence[int], *, modality: Modality = "rgb", strategy: Strategy = DEFAULT_STRATEGY
) -> Tensor:
    """Frames `indices` (0-based) of a video or frame folder as `(T, C, H, W)` uint8; C = 3 (RGB) or 2 (flow x, y).

    `strategy="seek"` jumps to the keyframe before the first index when the file's timestamps allow it (not in
    AVIs with B-frames), "sequential" decodes from frame 0; both stop at the last index. The tensor has
    channels-last strides (a view of the decoded `(T, H, W, C)` array); call `.contiguous()` if you need to.
    """
    path = Path(path)
    idx = [int(i) for i in indices]
    if not idx:
        raise ValueError("read_frames needs at least one frame index")
    if min(idx) < 0:
        raise VideoDecodeError(path, f"negative frame index {min(idx)} requested")
    if path.is_dir():
        return _read_folder(path, idx, modality)
    if modality == "flow":
        raise VideoDecodeError(path, "flow must be read from a frame folder (flow_x_00001.jpg ...); run extract_flow")
    if not path.is_file():
        raise VideoDecodeError(path, "file not found")
    return _read_video(path, idx, strategy)


# ---------------------------------------------------------------------------------------------------- frame folders


def flow_template(folder: Path) -> tuple[str, str] | None:
    """The (x, y) file-name templates used in `folder`, or None when it holds no flow images."""
    for tx, ty in FLOW_TEMPLATES:
        if (folder / tx.format(1)).is_file() and (folder / ty.format(1)).is_file():
            return tx, ty
    return None


def count_folder_frames(folder: str | Path, modality: Modality = "rgb") -> int:
    """Number of frames in a frame folder: `img_*.jpg` files, or complete (x, y) flow pairs."""
    folder = Path(folder)
    if modality == "rgb":
        return len(list(folder.glob("img_*.jpg")))
    tpl = flow_template(folder)
    if tpl is None:
        return 0
    prefix_x, prefix_y = (t.split("{")[0] for t in tpl)
    return min(len(list(folder.glob(prefix_x + "[0-9]*.jpg"))), len(list(folder.glob(prefix_y + "[0-9]*.jpg"))))


def _decode_jpeg(file: Path, gray: bool) -> np.ndarray:
    """One JPEG as `(H, W)` (gray) or `(H, W, 3)` uint8 (PIL: torchvision's image decoders are deprecated)."""
    from PIL import Image

    try:
        with Image.open(file) as img:
            return np.asarray(img.convert("L" if gray else "RGB"))
    except OSError as exc:
        raise VideoDecodeError(file, f"cannot decode image ({exc})") from None


def _read_folder(folder: Path, idx: list[int], modality: Modality) -> Tensor:
    if modality == "rgb":
        templates: tuple[str, ...] = (RGB_TEMPLATE,)
    else:
        tpl = flow_template(folder)
        if tpl is None:
            raise VideoDecodeError(folder, "no flow images (expected flow_x_00001.jpg/flow_y_00001.jpg or x_/y_)")
        templates = tpl
    decoded: dict[int, np.ndarray] = {}
    for i in sorted(set(idx)):
        planes = []
        for tpl_name in templates:
            file = folder / tpl_name.format(i + 1)
            if not file.is_file():
                raise VideoDecodeError(folder, f"frame {file.name} missing (index {i})")
            planes.append(_decode_jpeg(file, gray=modality == "flow"))
        decoded[i] = planes[0] if modality == "rgb" else np.stack(planes, axis=-1)
    return _to_tensor(folder, [decoded[i] for i in idx])


def _to_tensor(path: Path, frames: list[np.ndarray]) -> Tensor:
    """`T × (H, W, C)` arrays → `(T, C, H, W)` uint8. The memory stays channels-last as decoded: no copy, and
    torch's uint8 antialiased resize is about twice as fast on it (benchmarks/bench_video_loader.py)."""
    try:
        stacked = np.stack(frames)
    except ValueError:
        raise VideoDecodeError(path, f"frames have different sizes {sorted({f.shape for f in frames})}") from None
    return torch.from_numpy(stacked).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------------- video files


def _open(path: Path):
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        reason = "empty file" if path.stat().st_size == 0 else f"cannot open ({type(exc).__name__}: {exc})"
        raise VideoDecodeError(path, reason) from None
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "no video stream")
    return container


def _seekable(container, stream) -> bool:
    # AVI stores no presentation timestamps: with B-frames (packed xvid/divx, common in UCF101/HMDB51) the ones
    # FFmpeg guesses are out of order, so only decoding from the start numbers the frames correctly.
    if "avi" in container.format.name and stream.codec_context.has_b_frames:
        return False
    return stream.average_rate is not None and stream.time_base is not None


def _read_video(path: Path, idx: list[int], strategy: Strategy) -> Tensor:
    import av

    wanted = set(idx)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        first = min(wanted)
        got: dict[int, np.ndarray] | None = None
        if strategy == "seek" and first > 0 and _seekable(container, stream):
            try:
                got = _decode_after_seek(container, stream, wanted)
            except _Unreliable:
                logger.debug("%s: timestamps unreliable after seek; decoding from the start", path)
                container.close()
                container = _open(path)
                stream = container.streams.video[0]
        if got is None:
            got = _decode_from_start(path, container, stream, wanted)
    except av.FFmpegError as exc:
        raise VideoDecodeError(path, f"decoding failed ({type(exc).__name__}: {exc})") from None
    finally:
        container.close()
    return _to_tensor(path, [got[i] for i in idx])


class _RGB:
    """Frames → `(H, W, 3)` uint8 RGB through one reused `VideoReformatter` (one swscale context per video).

    `frame.reformat(...)` builds a new swscale context on every call; for 320×240 MPEG-4 that set-up cost as much
    as the conversion itself: 128 frames decoded + converted took 51-57 ms of CPU with it, 28 ms with one reused
    reformatter (benchmarks/bench_decoders.py, BENCHMARKS.md "video decoders").
    """

    def __init__(self) -> None:
        from av.video.reformatter import VideoReformatter

        self.reformatter = VideoReformatter()

    def __call__(self, frame) -> np.ndarray:
        return self.reformatter.reformat(frame, format="rgb24").to_ndarray()


def _decode_after_seek(container, stream, wanted: set[int]) -> dict[int, np.ndarray]:
    """Seek to the keyframe before the first wanted frame; number frames by their timestamps."""
    fps = Fraction(stream.average_rate)
    tb = Fraction(stream.time_base)
    start = stream.start_time or 0
    first, last = min(wanted), max(wanted)
    container.seek(start + int(first / fps / tb), stream=stream, backward=True)
    rgb = _RGB()
    got: dict[int, np.ndarray] = {}
    prev = None
    for frame in container.decode(stream):
        if frame.pts is None:
            raise _Unreliable
        i = round((frame.pts - start) * tb * fps)
        # The first frame must be at or before the target, and numbering must then advance by exactly one.
        if (prev is None and i > first) or (prev is not None and i != prev + 1):
            raise _Unreliable
        prev = i
        if i in wanted:
            got[i] = rgb(frame)
        if i >= last:
            return got
    raise _Unreliable  # stream ended early: let the sequential path apply the truncation rules


def _decode_from_start(path: Path, container, stream, wanted: set[int]) -> dict[int, np.ndarray]:
    """Decode from frame 0, counting frames, up to the last wanted index."""
    import av

    last = max(wanted)
    rgb = _RGB()
    got: dict[int, np.ndarray] = {}
    n, last_frame, error = 0, None, ""
    try:
        for frame in container.decode(stream):
            if n in wanted:
                got[n] = rgb(frame)
            last_frame, n = frame, n + 1
            if n > last:
                return got
    except av.FFmpegError as exc:
        error = f" ({type(exc).__name__}: {exc})"
    if n == 0:
        raise VideoDecodeError(path, f"no frame could be decoded{error}")
    missing = sorted(wanted - set(got))
    if missing[-1] >= n + TAIL_TOLERANCE:
        raise VideoDecodeError(
            path, f"only {n} frames decodable but frame {missing[-1]} requested (truncated or corrupt){error}"
        )
    tail = rgb(last_frame)
    for i in missing:
        got[i] = tail
    return got
