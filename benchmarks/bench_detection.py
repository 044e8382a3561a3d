"""Issue #8 benchmark: temporal detection and its distillation on the synthetic detection set, CPU, 1 thread.

synth (40 val / 20 test untrimmed videos, 32², 10 fps) → a small I3D (channel_scale 0.25) trained for a few hundred
steps on 16-frame windows of the *val* videos (labels: the action at the window centre, or background) → features
(window 16, stride 4) → large teacher detector (with attention head) → small students: plain, logit KD, feature KD,
attention KD (paper 2, eq. 11), paper 2's two-stage generative KD (same teacher; its CVAE is trained in stage 1 from the
teacher's features, since the teacher is a plain attention detector) → mAP at tIoU 0.1..0.5 on the test videos,
ActivityNet protocol (soft-NMS) and the THUMOS14 kit (hard NMS). Students are run with several seeds; the table
gives mean ± std.

    OMP_NUM_THREADS=1 python benchmarks/bench_detection.py --out runs/bench_detection
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from actdistill.config import load_config
from actdistill.data.decode import read_frames
from actdistill.detect.annotations import load_annotations
from actdistill.detect.features import extract_features, load_backbone
from actdistill.detect.synthetic import write_synthetic_detection
from actdistill.engine.evaluate import evaluate_checkpoint
from actdistill.engine.fit import fit
from actdistill.models import create_model
from actdistill.utils.checkpoint import atomic_save

STUDENTS = {
    "student": "synth_student.yaml",
    "student + logit KD": "synth_student_kd.yaml",
    "student + feature KD": "synth_student_feat.yaml",
    "student + attention KD": "synth_student_att.yaml",
    "student + generative KD": "synth_student_gen.yaml",
}


def train_backbone(synth: Path, out: Path, steps: int, window: int, seed: int) -> Path:
    """Train a small I3D on labelled windows of the val (training) videos; save it as an actdistill checkpoint."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    classes = (synth / "classes.txt").read_text().split()
    rows = load_annotations(synth / "annotations", "val")
    videos, labels = [], []
    for line in (synth / "video_list.txt").read_text().splitlines():
        name, subset, frames, fps, _ = line.split()
        if subset != "val":
            continue
        clip = read_frames(synth / "videos" / f"{name}.avi", range(int(frames))).contiguous()  # (T, C, H, W)
        y = np.full(int(frames), len(classes))  # background = last class
        for r in rows:
            if r["video"] == name:
                s, e = int(round(r["start"] * float(fps))), int(round(r["end"] * float(fps)))
                y[s:e] = classes.index(r["label"]) if r["label"] in classes else -1  # -1: Ambiguous, not sampled
        videos.append(clip)
        labels.append(y)
    kwargs = {"channel_scale": 0.25}
    model = create_model("i3d", len(classes) + 1, **kwargs)
    cfg = model.pretrained_cfg
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    model.train()
    for step in range(steps):
        clips, targets = [], []
        while len(clips) < 16:
            v = int(rng.integers(len(videos)))
            c = int(rng.integers(len(labels[v])))
            if labels[v][c] < 0:
                continue
            idx = np.clip(np.arange(window) - window // 2 + c, 0, len(labels[v]) - 1)
            clips.append(videos[v][idx])
            targets.append(int(labels[v][c]))
        x = torch.stack(clips).float().div(255).permute(0, 2, 1, 3, 4)  # (B, C, T, H, W)
        loss = F.cross_entropy(model((x - mean) / std).mean(-1), torch.tensor(targets))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  backbone step {step} loss {loss.item():.3f}", flush=True)
    path = out / "backbone.pt"
    atomic_save(
        {"student": model.state_dict(), "model": {"name": "i3d", "num_classes": len(classes) + 1, "kwargs": kwargs}},
        path,
    )
    return path


def run(recipe: str, data: dict[str, str], out_dir: Path, extra: list[str]) -> dict:
    """Train and score one recipe, or reuse the scores of a finished run (`bench.json`), so a rerun resumes."""
    done = out_dir / "bench.json"
    if done.exists():
        return json.loads(done.read_text())
    result = _train_and_score(recipe, data, out_dir, extra)
    done.write_text(json.dumps(result))
    return result


def _train_and_score(recipe: str, data: dict[str, str], out_dir: Path, extra: list[str]) -> dict:
    overrides = [f"data.{k}={v}" for k, v in data.items()] + [f"train.out_dir={out_dir}", *extra]
    cfg = load_config(Path("configs/detection") / recipe, overrides)
    start = time.time()
    fit(cfg, overwrite=True)
    last = out_dir / "checkpoints" / "last.pt"
    anet = evaluate_checkpoint(last)  # the recipe's protocol: ActivityNet, soft-NMS
    kit = evaluate_checkpoint(last, ["eval.protocol=thumos14", "eval.nms=hard"])
    return {
        "anet": {"map": anet["map"], "average_map": anet["average_map"]},
        "kit": kit["map"] | {"avg": kit["average_map"]},
        "time_s": time.time() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_detection")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="student seeds (default: 0 1 2)")
    parser.add_argument("--backbone-steps", type=int, default=300, help="0: randomly initialised backbone")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    synth = write_synthetic_detection(out / "synth", num_val=40, num_test=20, size=32, seed=0)
    print(f"synth {time.time() - t0:.0f}s", flush=True)
    if args.backbone_steps:
        trained = out / "backbone.pt"
        backbone = str(trained if trained.exists() else train_backbone(synth, out, args.backbone_steps, 16, 0))
        model = load_backbone(backbone)
    else:
        backbone, model = "i3d", load_backbone("i3d", 5, channel_scale=0.25)
    print(f"backbone {time.time() - t0:.0f}s", flush=True)
    extract_features(
        model, synth / "videos", out / "features", backbone=backbone, size=32, window=16, stride=4, progress=False
    )
    print(f"features {time.time() - t0:.0f}s", flush=True)
    data = {"root": out / "features", "annotations": synth / "annotations", "classes": synth / "classes.txt"}
    common = [f"train.epochs={args.epochs}", f"train.eval_every={args.epochs}"]
    results = {"teacher": [run("synth_teacher.yaml", data, out / "teacher", common)]}
    print(f"teacher {results['teacher'][0]['anet']['average_map']:.3f} ({time.time() - t0:.0f}s)", flush=True)
    teacher_ckpt = out / "teacher" / "checkpoints" / "last.pt"
    for name, recipe in STUDENTS.items():
        results[name] = []
        for seed in args.seeds:
            extra = [*common, f"train.seed={seed}"]
            if "KD" in name:
                extra.append(f"teacher.checkpoint={teacher_ckpt}")
            if "generative" in name:
                extra.append(f"method.teacher_extras={teacher_ckpt}")
            results[name].append(run(recipe, data, out / recipe.removesuffix(".yaml") / f"seed{seed}", extra))
            print(
                f"{name} seed {seed}: {results[name][-1]['anet']['average_map']:.3f} ({time.time() - t0:.0f}s)",
                flush=True,
            )
    (out / "results.json").write_text(json.dumps(results, indent=1))
    lines = [
        "| model | protocol | mAP@0.1 | 0.2 | 0.3 | 0.4 | 0.5 | avg | runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        for proto in ("anet", "kit"):
            cols = []
            for key in ("0.1", "0.2", "0.3", "0.4", "0.5", "avg"):
                if proto == "anet":
                    vals = [100 * (r["anet"]["average_map"] if key == "avg" else r["anet"]["map"][key]) for r in runs]
                else:
                    vals = [100 * r["kit"][key] for r in runs]
                spread = f" ± {statistics.stdev(vals):.1f}" if len(vals) > 1 else ""
                cols.append(f"{statistics.mean(vals):.1f}{spread}")
            label = "ActivityNet, soft-NMS" if proto == "anet" else "THUMOS14 kit, hard NMS"
            lines.append(f"| {name} | {label} | " + " | ".join(cols) + f" | {len(runs)} |")
    table = "\n".join(lines)
    (out / "results.md").write_text(table + f"\n\ntotal wall time {time.time() - t0:.0f}s\n")
    print(table)
    print(f"total wall time {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
