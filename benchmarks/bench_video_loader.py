"""Video loading throughput: actdistill's clip loader vs a naive decode-everything PyAV loader, and the decode ceiling.

Generates a synthetic UCF101-layout set (default 24 videos of 150 frames at 256², MPEG-4 in AVI, keyframe every
12 frames), then measures
  1. raw PyAV decoding (frames/s, the ceiling), with and without RGB conversion;
  2. `read_frames` with the `seek` and `sequential` strategies on random 16- and 64-frame clips;
  3. DataLoader clips/s for 16×112² and 64×224² training clips with 1 and 2 workers, ours vs naive.
Prints a table and the same numbers as JSON.

    python benchmarks/bench_video_loader.py [--videos 24] [--frames 150] [--size 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from actdistill.data.decode import read_frames
from actdistill.data.manifest import build_manifest
from actdistill.data.sampling import dense_clip_indices
from actdistill.data.synthetic_video import write_synthetic_ucf101
from actdistill.data.ucf101 import read_split
from actdistill.data.video_dataset import VideoClipDataset
from actdistill.data.video_transforms import (
    HorizontalFlip,
    MultiScaleCrop,
    RandomCrop,
    ShortSideResize,
    ToNormalizedClip,
    VideoCompose,
)


def _transform(clip_len: int, size: int) -> VideoCompose:
    if size <= 128:
        return VideoCompose([ShortSideResize(128), RandomCrop(size), HorizontalFlip(), ToNormalizedClip()])
    return VideoCompose([MultiScaleCrop(size), HorizontalFlip(), ToNormalizedClip()])


class NaiveDataset(Dataset):
    """The common baseline: decode every frame of the video with PyAV, then index the clip."""

    def __init__(self, records, root: Path, clip_len: int, transform) -> None:
        self.records, self.root, self.clip_len, self.transform = records, root, clip_len, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        with av.open(str(self.root / rec.path)) as c:
            frames = np.stack([f.reformat(format="rgb24").to_ndarray() for f in c.decode(video=0)])
        idx = dense_clip_indices(len(frames), self.clip_len, 1, "train")
        clip = torch.from_numpy(frames[idx]).permute(0, 3, 1, 2)
        return {"input": self.transform(clip), "label": rec.label, "index": i}


def raw_decode(paths: list[Path]) -> dict[str, float]:
    """Frames/s for decoding only, and for decoding + RGB conversion (single process)."""
    out = {}
    for name, convert in (("decode_only", False), ("decode_rgb", True)):
        n, t0 = 0, time.perf_counter()
        for p in paths:
            with av.open(str(p)) as c:
                for f in c.decode(video=0):
                    if convert:
                        f.reformat(format="rgb24").to_ndarray()
                    n += 1
        out[name] = n / (time.perf_counter() - t0)
    return out


def strategies(paths: list[Path], num_frames: int, clip_len: int, reps: int) -> dict[str, float]:
    """Clips/s of `read_frames` per strategy on the same random clips (interleaved, so load drifts hit all alike);
    checks that every strategy returns the same frames."""
    gen = torch.Generator().manual_seed(0)
    clips = [(p, dense_clip_indices(num_frames, clip_len, 1, "train", gen)) for _ in range(reps) for p in paths]
    names = ("sequential", "seek")
    spent = dict.fromkeys(names, 0.0)
    for p, idx in clips:
        ref = None
        for strategy in names:
            t0 = time.perf_counter()
            got = read_frames(p, idx, strategy=strategy)
            spent[strategy] += time.perf_counter() - t0
            if ref is not None and not torch.equal(ref, got):
                raise SystemExit(f"{p}: strategy {strategy} returned different frames than sequential")
            ref = got
    return {k: len(clips) / v for k, v in spent.items()}


def loader_rate(dataset: Dataset, workers: int, batch: int, clips: int) -> float:
    """Clips/s from the first batch on (worker start-up excluded), over `clips` clips after it."""
    gen = torch.Generator().manual_seed(0)
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=clips + batch, generator=gen)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, prefetch_factor=2)
    it = iter(loader)
    next(it)
    n, t0 = 0, time.perf_counter()
    for b in it:
        n += len(b["label"])
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--fmt", default="avi", choices=["avi", "mp4"])
    ap.add_argument(
        "--clips", type=int, default=96, help="16-frame clips timed per loader configuration (64-frame: half)"
    )
    ap.add_argument("--data", default="", help="reuse/generate the synthetic set here (default: a temp dir)")
    ap.add_argument("--json", default="", help="also write the results to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data or tmp) / "synth_bench"
        per_class = max(3, args.videos // 8)
        if not (root / "ucfTrainTestlist").is_dir():
            t0 = time.perf_counter()
            write_synthetic_ucf101(root, num_classes=8, videos_per_class=per_class, groups=3, frames=args.frames,
                                   size=args.size, fmt=args.fmt, workers=2)  # fmt: skip
            print(f"generated {8 * per_class} videos in {time.perf_counter() - t0:.1f} s")
        entries = read_split(root / "ucfTrainTestlist", 1, "train") + read_split(root / "ucfTrainTestlist", 1, "test")
        records = build_manifest(root, entries, progress=False)
        paths = [root / r.path for r in records]
        res: dict = {
            "setup": {
                "videos": len(records),
                "frames": args.frames,
                "size": args.size,
                "codec": "mpeg4/avi gop 12" if args.fmt == "avi" else "h264/mp4",
                "cpu": platform.processor() or platform.machine(),
                "torch_threads": 1,
            }
        }
        res["raw_pyav_frames_per_s"] = raw_decode(paths)
        res["read_frames_clips_per_s"] = {f"{n}_frames": strategies(paths, args.frames, n, reps=3) for n in (16, 64)}
        res["loader_clips_per_s"] = {}
        for clip_len, size in ((16, 112), (64, 224)):
            tf = _transform(clip_len, size)
            ours = VideoClipDataset(records, root, clip_len=clip_len, transform=tf, mode="train")
            naive = NaiveDataset(records, root, clip_len, tf)
            for workers in (1, 2):
                key = f"{clip_len}x{size}_w{workers}"
                n = args.clips if clip_len == 16 else args.clips // 2
                res["loader_clips_per_s"][key] = {
                    "actdistill": loader_rate(ours, workers, 8, n),
                    "naive_decode_all": loader_rate(naive, workers, 8, n),
                }
    print_table(res)
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


def print_table(res: dict) -> None:
    raw = res["raw_pyav_frames_per_s"]
    print(f"\nraw PyAV: {raw['decode_only']:.0f} frames/s decode only, {raw['decode_rgb']:.0f} with RGB conversion")
    print("\nread_frames clips/s   sequential     seek")
    for k, v in res["read_frames_clips_per_s"].items():
        print(f"  {k:<18} {v['sequential']:>10.1f} {v['seek']:>8.1f}")
    print("\nDataLoader clips/s    actdistill    naive   speed-up")
    for k, v in res["loader_clips_per_s"].items():
        a, b = v["actdistill"], v["naive_decode_all"]
        print(f"  {k:<18} {a:>10.1f} {b:>8.1f} {a / b:>9.2f}x")


if __name__ == "__main__":
    main()
