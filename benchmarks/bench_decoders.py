"""Video decoders for training clips: PyAV (actdistill's backend) vs torchcodec vs decord2, speed and frame accuracy.

Generates UCF101-like test videos with PyAV (320×240, 25 fps, 180 frames ≈ UCF101's mean length):
  avi_xvid_bframes  MPEG-4 Part 2 in AVI, fourcc XVID, packed B-frames, keyframe interval 250 (one keyframe per
                    clip, as in most UCF101/HMDB51 files)
  avi_xvid_gop12    MPEG-4 Part 2 in AVI, no B-frames, a keyframe every 12 frames (seekable AVI)
  mp4_h264          H.264 in MP4, x264 defaults (B-frames, keyint 250, scene-cut keyframes)
plus the real sample /work/shared/data/sample_videos/mmaction2_test.avi when present. Each decoder reads random
64- and 16-frame clips (consecutive frames, random start: the training sampler's pattern), the decoders taking
turns on each clip so load changes hit all alike; every clip is checked against a full sequential PyAV decode
(frame-exact, or the offset of the nearest reference frame when not). Also: all frames decoded + converted
(frames/s), the ceiling of each decoder. Times are process CPU time (all threads, robust to other processes on
a shared machine) and wall time; one decoding thread per decoder (2 loader workers on 2 cores).

    python benchmarks/bench_decoders.py [--videos 4] [--clips 12] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch

from actdistill.data import decode
from actdistill.data.decode import read_frames
from actdistill.utils.runtime import cpu_model

SAMPLE = Path("/work/shared/data/sample_videos/mmaction2_test.avi")
FORMATS = {
    "avi_xvid_bframes": {"codec": "mpeg4", "suffix": ".avi", "gop": 250, "bf": 2},
    "avi_xvid_gop12": {"codec": "mpeg4", "suffix": ".avi", "gop": 12, "bf": 0},
    "mp4_h264": {"codec": "libx264", "suffix": ".mp4", "gop": 250, "bf": 3},
}


def scene(frames: int, seed: int, h: int = 240, w: int = 320) -> np.ndarray:
    """`(T, H, W, 3)` uint8: a smooth background with sensor noise and three moving discs (compresses like video)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 6, 3)
    bg = np.stack([np.sin(xx / 37 + phase[0]), np.cos(yy / 23 + phase[1]), np.sin((xx + yy) / 51 + phase[2])], -1)
    bg = bg * 60 + 120
    out = []
    for t in range(frames):
        f = bg + rng.normal(0, 4, (h, w, 3))
        for k in range(3):
            cx, cy = (40 + 3 * t * (k + 1) + 80 * k) % w, h / 2 + h / 4 * np.sin(t / 9 + k)
            f[(xx - cx) ** 2 + (yy - cy) ** 2 < 900] = [200 - 60 * k, 50 + 70 * k, 90]
        out.append(np.clip(f, 0, 255).astype(np.uint8))
    return np.stack(out)


def write_video(path: Path, frames: np.ndarray, codec: str, gop: int, bf: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        ctx = stream.codec_context
        ctx.width, ctx.height, ctx.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        ctx.gop_size, ctx.max_b_frames, ctx.thread_count = gop, bf, 1
        if codec == "mpeg4":
            ctx.codec_tag, ctx.bit_rate = "XVID", 800_000  # UCF101's files: xvid at ~300-900 kb/s
        else:
            ctx.options = {"preset": "medium", "crf": "20"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# ---------------------------------------------------------------------------------------------------- decoders


class _PerFrameReformat:
    """actdistill's RGB conversion before the fix: `frame.reformat()` (a new swscale context per frame)."""

    def __call__(self, frame) -> np.ndarray:
        return frame.reformat(format="rgb24").to_ndarray()


def pyav_before(path: Path, idx: list[int]) -> np.ndarray:
    fixed = decode._RGB
    decode._RGB = _PerFrameReformat  # type: ignore[assignment,misc]
    try:
        return read_frames(path, idx).permute(0, 2, 3, 1).numpy()
    finally:
        decode._RGB = fixed  # type: ignore[misc]


def pyav(path: Path, idx: list[int]) -> np.ndarray:
    return read_frames(path, idx).permute(0, 2, 3, 1).numpy()


def torchcodec_exact(path: Path, idx: list[int]) -> np.ndarray:
    from torchcodec.decoders import VideoDecoder

    dec = VideoDecoder(str(path), dimension_order="NHWC", num_ffmpeg_threads=1, seek_mode="exact")
    return dec.get_frames_at(indices=idx).data.numpy()


def torchcodec_approx(path: Path, idx: list[int]) -> np.ndarray:
    from torchcodec.decoders import VideoDecoder

    dec = VideoDecoder(str(path), dimension_order="NHWC", num_ffmpeg_threads=1, seek_mode="approximate")
    return dec.get_frames_at(indices=idx).data.numpy()


def decord2(path: Path, idx: list[int]) -> np.ndarray:
    import decord

    return decord.VideoReader(str(path), num_threads=1).get_batch(idx).asnumpy()


def available(probe: Path) -> tuple[dict[str, Callable], dict[str, str]]:
    """Decoders that import and decode `probe` here, and why the others do not."""
    fns: dict[str, Callable] = {"pyav_before_fix": pyav_before, "pyav": pyav}
    missing: dict[str, str] = {}
    for name, fn in (("torchcodec", torchcodec_exact), ("torchcodec_approx", torchcodec_approx), ("decord2", decord2)):
        try:
            fn(probe, [0])
            fns[name] = fn
        except Exception as exc:  # noqa: BLE001 - import errors, missing FFmpeg libraries, ...
            missing[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return fns, missing


def versions() -> dict[str, str]:
    out = {"av": f"{av.__version__} (bundled FFmpeg {av.ffmpeg_version_info})", "torch": torch.__version__}
    try:
        import torchcodec

        out["torchcodec"] = f"{torchcodec.__version__} (system FFmpeg shared libraries)"
    except Exception as exc:  # noqa: BLE001
        out["torchcodec"] = f"not importable: {type(exc).__name__}"
    try:
        import decord

        out["decord2"] = f"{decord.__version__} (bundled FFmpeg)"
    except Exception as exc:  # noqa: BLE001
        out["decord2"] = f"not importable: {type(exc).__name__}"
    return out


# ---------------------------------------------------------------------------------------------------- measurement


def reference(path: Path) -> np.ndarray:
    """Every frame, decoded in order from the start with PyAV (frame i = the i-th frame the decoder outputs)."""
    return read_frames(path, list(range(_count(path))), strategy="sequential").permute(0, 2, 3, 1).numpy()


def _count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def _offset(ref: np.ndarray, frame: np.ndarray, i: int) -> int:
    """Offset of the reference frame nearest to `frame` from the requested index `i`."""
    lo, hi = max(0, i - 8), min(len(ref), i + 9)
    diffs = np.abs(ref[lo:hi].astype(np.int16) - frame.astype(np.int16)).mean(axis=(1, 2, 3))
    return int(lo + diffs.argmin() - i)


def time_clips(fns: dict[str, Callable], videos: list[Path], clip_len: int, clips: int, seed: int) -> dict:
    """Per decoder: median CPU / wall ms per clip, clips/s (CPU), and frame accuracy against the reference."""
    rng = np.random.default_rng(seed)
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    exact, failed = dict.fromkeys(fns, 0), dict.fromkeys(fns, 0)
    offsets: dict[str, set[int]] = {k: set() for k in fns}
    for v in videos:
        ref = reference(v)
        for _ in range(clips):
            start = int(rng.integers(0, len(ref) - clip_len + 1))
            idx = list(range(start, start + clip_len))
            for name in rng.permutation(list(fns)):  # a new order per clip: no decoder always runs first
                c0, w0 = time.process_time(), time.perf_counter()
                try:
                    got = fns[name](v, idx)
                except Exception:  # noqa: BLE001 - counted: a decoder that fails on valid clips is not usable
                    failed[name] += 1
                    continue
                cpu[name].append(time.process_time() - c0)
                wall[name].append(time.perf_counter() - w0)
                if got.shape == ref[idx].shape and np.array_equal(got, ref[idx]):
                    exact[name] += 1
                else:
                    offsets[name].update(_offset(ref, got[k], idx[k]) for k in range(0, clip_len, 8))
    n = len(videos) * clips
    nan = float("nan")
    return {
        name: {
            "cpu_ms": 1000 * statistics.median(cpu[name]) if cpu[name] else nan,
            "wall_ms": 1000 * statistics.median(wall[name]) if wall[name] else nan,
            "clips_per_cpu_s": 1 / statistics.median(cpu[name]) if cpu[name] else nan,
            "frame_exact_clips": f"{exact[name]}/{n}",
            "failed_clips": failed[name],
            "frame_offsets_seen": sorted(offsets[name]),
        }
        for name in fns
    }


def full_decode(fns: dict[str, Callable], videos: list[Path], reps: int = 3) -> dict[str, float]:
    """Frames/s (CPU time) decoding + converting every frame of each video, decoders interleaved (all but the last
    frame: torchcodec cannot return the last frame of packed-B-frame AVIs); NaN for a decoder that fails."""
    counts = {v: _count(v) - 1 for v in videos}
    spent = dict.fromkeys(fns, 0.0)
    for _ in range(reps):
        for v in videos:
            idx = list(range(counts[v]))
            for name, fn in fns.items():
                c0 = time.process_time()
                try:
                    fn(v, idx)
                except Exception:  # noqa: BLE001
                    spent[name] = float("nan")
                spent[name] += time.process_time() - c0
    total = reps * sum(counts.values())
    return {name: total / s for name, s in spent.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=4, help="videos per format (default: 4)")
    ap.add_argument("--frames", type=int, default=180, help="frames per video (default: 180)")
    ap.add_argument("--clips", type=int, default=12, help="clips per video and clip length (default: 12)")
    ap.add_argument("--data", default="", help="keep the generated videos here (default: a temp dir)")
    ap.add_argument("--json", default="", help="also write the results to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    res: dict = {
        "setup": {
            "cpu": cpu_model(), "capability": torch.backends.cpu.get_cpu_capability(),
            "python": platform.python_version(), "versions": versions(), "videos_per_format": args.videos,
            "frames": args.frames, "clips_per_video": args.clips,
            "time": "process CPU time (all threads); wall time alongside",
        },
        "formats": {},
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data or tmp)
        root.mkdir(parents=True, exist_ok=True)
        sets: dict[str, list[Path]] = {}
        for name, spec in FORMATS.items():
            sets[name] = []
            for k in range(args.videos):
                path = root / f"{name}_{k}{spec['suffix']}"
                if not path.is_file():
                    write_video(path, scene(args.frames, seed=k), spec["codec"], spec["gop"], spec["bf"])
                sets[name].append(path)
        if SAMPLE.is_file():
            sets["real_sample_avi"] = [SAMPLE]
        fns, res["setup"]["unavailable"] = available(sets["mp4_h264"][0])
        for name, videos in sets.items():
            clips = args.clips * (args.videos if name == "real_sample_avi" else 1)
            entry = {"file_info": _info(videos[0])}
            for clip_len in (64, 16):
                entry[f"{clip_len}_frames"] = time_clips(fns, videos, clip_len, clips, seed=clip_len)
            entry["full_decode_frames_per_cpu_s"] = full_decode(fns, videos)
            res["formats"][name] = entry
            print_format(name, entry)
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


def _info(path: Path) -> dict:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        keys = sum(p.is_keyframe for p in c.demux(s))
        return {
            "container": c.format.name, "codec": s.codec_context.name, "fourcc": s.codec_context.codec_tag,
            "size": f"{s.codec_context.width}x{s.codec_context.height}", "b_frames": bool(s.codec_context.has_b_frames),
            "keyframes": keys, "frames": s.frames,
        }  # fmt: skip


def print_format(name: str, entry: dict) -> None:
    print(f"\n{name}: {entry['file_info']}")
    base = entry["64_frames"]["pyav"]["cpu_ms"]
    head = f"{'64f cpu ms':>10} {'wall ms':>8} {'vs pyav':>8} {'16f cpu ms':>10} {'exact 64f':>10}  all frames/s"
    print(f"  {'decoder':<18} {head}")
    for dec, r in entry["64_frames"].items():
        r16 = entry["16_frames"][dec]
        off = f" off {r['frame_offsets_seen']}" if r["frame_offsets_seen"] else ""
        off += f" FAILED {r['failed_clips']} clips" if r["failed_clips"] else ""
        print(
            f"  {dec:<18} {r['cpu_ms']:10.1f} {r['wall_ms']:8.1f} {base / r['cpu_ms']:7.2f}x {r16['cpu_ms']:10.1f} "
            f"{r['frame_exact_clips']:>10}  {entry['full_decode_frames_per_cpu_s'][dec]:8.0f}{off}"
        )


if __name__ == "__main__":
    main()
