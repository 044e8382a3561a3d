"""Video loading throughput: actdistill's clip loader vs a naive decode-everything PyAV loader, and the decode ceiling.

Generates a synthetic UCF101-layout set (default 24 videos of 150 frames at 256², MPEG-4 in AVI, keyframe every
12 frames), then measures
  1. raw PyAV decoding (frames/s, the ceiling), with and without RGB conversion;
  2. `read_frames` with the `seek` and `sequential` strategies on random 16- and 64-frame clips;
  3. DataLoader clips/s for 16×112² and 64×224² training clips with 1 and 2 workers, ours vs naive.
Prints a table and the same numbers as JSON.

    python benchmarks/bench_video_loader.py [--videos 24] [--frames 150] [--size 256] [--json out.json]

`--paper-scale` instead measures the training loader at paper 2's input (64-frame clips, 224² crops of 320×240
UCF101-like XVID AVIs with packed B-frames, `benchmarks/bench_decoders.py`) against the raw decode + RGB-convert
rate of the same clips: `read_frames` alone in 2 processes vs the DataLoader with 2 workers (decode, MultiScaleCrop,
flip, normalisation, collation, hand-over to the main process), measured alternately over `--rounds` rounds; the
target is loader ≥ 80 % of raw. A per-stage breakdown (one process) shows where a worker's time goes.

    python benchmarks/bench_video_loader.py --paper-scale [--videos 24] [--clips 96] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
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
    VideoTransform,
)
from actdistill.utils.runtime import cpu_model


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
    ap.add_argument("--paper-scale", action="store_true", help="64×224² loader vs raw decode+convert (see top)")
    ap.add_argument("--rounds", type=int, default=3, help="--paper-scale: alternating raw/loader rounds")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.paper_scale:
        res = paper_scale(args)
        print(json.dumps(res, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
        return

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


# ---------------------------------------------------------------------------------------------------- paper scale


def _read_clip(job: tuple[str, list[int]]) -> int:
    """Decode + RGB-convert one clip (the raw work of a loader worker, without transforms or hand-over)."""
    return int(read_frames(job[0], job[1]).shape[0])


def _cpu_s() -> float:
    """CPU seconds of this process plus its reaped children (loader workers and pool processes, once joined)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def _measured(fn, clips: int) -> tuple[float, float]:
    """`(clips/s wall, CPU ms per clip over all processes)` of `fn()`, which returns its wall rate."""
    c0 = _cpu_s()
    rate = fn()
    return rate, 1000 * (_cpu_s() - c0) / clips


def _raw_rate(jobs: list[tuple[str, list[int]]], processes: int) -> float:
    """Clips/s of `read_frames` alone over `jobs` in `processes` worker processes (pool start-up excluded)."""
    with mp.get_context("fork").Pool(processes) as pool:
        pool.map(_read_clip, jobs[:processes])  # start the workers and import PyAV in each
        t0 = time.perf_counter()
        pool.map(_read_clip, jobs, chunksize=1)
        return len(jobs) / (time.perf_counter() - t0)


def _stage_breakdown(dataset: VideoClipDataset, n: int, batch: int) -> dict[str, float]:
    """Per-clip ms of each stage in one process: decode+convert, transform, collation, move to shared memory."""
    from actdistill.data.collate import collate_skip_broken

    gen = torch.Generator().manual_seed(1)
    spent = {"decode_convert": 0.0, "transform": 0.0, "collate": 0.0, "to_shared_memory": 0.0}
    samples = []
    for i in torch.randint(len(dataset), (n,), generator=gen).tolist():
        rec = dataset.records[i]
        idx = dense_clip_indices(rec.num_frames, dataset.clip_len, 1, "train", gen)
        t0 = time.process_time()
        frames = read_frames(dataset.root / rec.path, idx)
        t1 = time.process_time()
        clip = dataset.transform(frames)
        t2 = time.process_time()
        spent["decode_convert"] += t1 - t0
        spent["transform"] += t2 - t1
        samples.append({"input": clip, "label": rec.label, "index": i})
        if len(samples) == batch:
            t0 = time.process_time()
            out = collate_skip_broken(samples)
            t1 = time.process_time()
            out["input"].share_memory_()  # what a worker's collate does (it allocates in shared memory directly)
            spent["to_shared_memory"] += time.process_time() - t1
            spent["collate"] += t1 - t0
            samples = []
    return {k: 1000 * v / n for k, v in spent.items()}


class ToUint8Clip(VideoTransform):
    """`(T, C, H, W)` uint8 → `(C, T, H, W)` uint8 contiguous: the clip handed over as bytes, normalised later on the
    training device (`(x.float() / 255 − mean) / std`, microseconds on a GPU). A quarter of float32's memory traffic
    through collation and shared memory."""

    def apply(self, clip: torch.Tensor, params: dict) -> torch.Tensor:
        return clip.permute(1, 0, 2, 3).contiguous()


def paper_scale(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_decoders import scene, write_video

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data or tmp) / "ucf_like_320x240"
        root.mkdir(parents=True, exist_ok=True)
        videos = max(4, args.videos)
        entries = []
        for k in range(videos):
            rel = f"c{k % 4}/v_{k:03d}.avi"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.is_file():
                write_video(path, scene(180, seed=k), "mpeg4", gop=250, bf=2)  # UCF101-like: XVID, packed B-frames
            entries.append((rel, k % 4))
        records = build_manifest(root, entries, progress=False)
        transform = _transform(64, 224)
        dataset = VideoClipDataset(records, root, clip_len=64, transform=transform, mode="train")
        as_uint8 = VideoCompose([MultiScaleCrop(224), HorizontalFlip(), ToUint8Clip()])
        dataset_u8 = VideoClipDataset(records, root, clip_len=64, transform=as_uint8, mode="train")
        gen = torch.Generator().manual_seed(0)
        clips = max(8, args.clips // 2)  # 64-frame clips: half the 16-frame count, as in the default mode
        jobs = [
            (str(root / r.path), dense_clip_indices(r.num_frames, 64, 1, "train", gen))
            for r in (records[i] for i in torch.randint(len(records), (clips,), generator=gen).tolist())
        ]
        runs: dict[str, list[tuple[float, float]]] = {"raw": [], "float32": [], "uint8": []}
        for _ in range(args.rounds):  # alternate, so load changes hit all alike
            runs["raw"].append(_measured(lambda: _raw_rate(jobs, 2), clips))
            runs["float32"].append(_measured(lambda: loader_rate(dataset, 2, 8, clips), clips + 8))
            runs["uint8"].append(_measured(lambda: loader_rate(dataset_u8, 2, 8, clips), clips + 8))
        raw, loader, loader_u8 = ([r[0] for r in runs[k]] for k in ("raw", "float32", "uint8"))
        ratios = [b / a for a, b in zip(raw, loader)]
        ratios_u8 = [b / a for a, b in zip(raw, loader_u8)]
        cpu = {k: statistics.median(r[1] for r in v) for k, v in runs.items()}
        res = {
            "setup": {
                "videos": videos, "clip": "64×224² (MultiScaleCrop, flip, normalise) from 320×240 XVID AVI, B-frames",
                "clips_per_round": clips, "rounds": args.rounds, "workers": 2, "batch": 8,
                "cpu": cpu_model(), "capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": 1,
                "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", ""),
            },
            "raw_decode_convert_2proc_clips_per_s": raw,
            "loader_2workers_clips_per_s": loader,
            "loader_over_raw": ratios,
            "loader_over_raw_median": statistics.median(ratios),
            "cpu_ms_per_clip_all_processes": cpu,
            "loader_over_raw_by_cpu": {k: cpu["raw"] / cpu[k] for k in ("float32", "uint8")},
            "loader_uint8_2workers_clips_per_s": loader_u8,
            "loader_uint8_over_raw": ratios_u8,
            "loader_uint8_over_raw_median": statistics.median(ratios_u8),
            "stage_ms_per_clip_one_process": _stage_breakdown(dataset, min(clips, 24), 8),
            "stage_ms_per_clip_one_process_uint8": _stage_breakdown(dataset_u8, min(clips, 24), 8),
        }  # fmt: skip
    print(f"\n64×224² clips/s (THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', '')!r})")
    print("  raw decode+convert (2 proc)   loader float32 (2 workers)  loader/raw   loader uint8   uint8/raw")
    for a, b, r, c, r8 in zip(raw, loader, ratios, loader_u8, ratios_u8):
        print(f"  {a:>27.2f} {b:>28.2f} {100 * r:>10.0f}% {c:>14.2f} {100 * r8:>10.0f}%")
    by_cpu = res["loader_over_raw_by_cpu"]
    print(
        f"CPU ms per clip, all processes: raw {cpu['raw']:.1f}, loader float32 {cpu['float32']:.1f} "
        f"({100 * by_cpu['float32']:.0f}% of raw rate), loader uint8 {cpu['uint8']:.1f} ({100 * by_cpu['uint8']:.0f}%)"
    )
    for key in ("", "_uint8"):
        stages = res["stage_ms_per_clip_one_process" + key]
        text = ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
        print(f"per-clip CPU ms in one process{key.replace('_', ', ')}: {text}")
    return res


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
