"""Every distillation method on the demo data: accuracy and mAP over seeds, and step time relative to `vanilla`.

    actdistill demo --out runs/demo                                # data + teacher (and the demo's own pair)
    python benchmarks/bench_methods.py runs/demo --seeds 0 1 2 --parallel 1
    python benchmarks/bench_methods.py runs/demo --step-time-only  # on an otherwise idle machine

Training: `actdistill train configs/demo/<method>.yaml` per method and seed (one torch thread per process,
`--parallel` processes at once) into `<demo>/methods/<method>_seed<s>`; a finished run (results.json present) is
reused, so an interrupted benchmark continues where it stopped. Accuracy and mAP are the last epoch's on the test
split, reported as mean ± sample std over seeds.

Step time: measured in this process, one method after another on the same fixed batches (one thread, fp32, the
recipe's batch size and image size), as the median CPU time of this thread over `--steps` optimiser steps after
`--warmup` steps: forward of student and teacher, the method's loss, backward and AdamW step. The ratio to
`vanilla` is the cost of the method.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "demo"


def train(recipe: Path, demo: Path, seed: int) -> Path:
    """Run one recipe with one seed unless its results already exist; returns the run directory."""
    out = demo / "methods" / f"{recipe.stem}_seed{seed}"
    if (out / "results.json").exists():
        return out
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "actdistill", "train", str(recipe), f"data.root={demo / 'data'}",
           f"teacher.checkpoint={demo / 'teacher' / 'checkpoints' / 'last.pt'}", f"train.seed={seed}",
           f"train.out_dir={out}", "train.progress=false", "train.tensorboard=false", "--overwrite"]  # fmt: skip
    tick = time.perf_counter()
    log = out.with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as stream:
        subprocess.run(cmd, check=True, env=env, stdout=stream, stderr=subprocess.STDOUT)
    print(f"{recipe.stem} seed {seed}: {time.perf_counter() - tick:.0f} s", flush=True)
    return out


def step_times(recipes: list[Path], demo: Path, steps: int, warmup: int) -> dict[str, float]:
    """Median seconds per optimiser step of each recipe's method, measured back to back in this process.

    Methods that read teacher feature maps are also timed with the maps (and logits) already in the batch, as a
    teacher cache (`actdistill cache build`) delivers them: the `<method>+cache` rows.
    """
    import torch

    from actdistill.config import load_config
    from actdistill.distill.taps import run_model
    from actdistill.engine.build import build_method, load_teacher, teacher_taps
    from actdistill.models.factory import create_model
    from actdistill.utils.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    teacher_ckpt = demo / "teacher" / "checkpoints" / "last.pt"
    classes = list(load_checkpoint(teacher_ckpt)["class_names"])
    result = {}
    for recipe in recipes:
        cfg = load_config(recipe, [f"teacher.checkpoint={teacher_ckpt}"])
        torch.manual_seed(0)
        student = create_model(cfg.student.name, len(classes))
        uses_teacher = cfg.teacher.checkpoint and recipe.stem != "vanilla"
        teacher = load_teacher(cfg.teacher, classes, {})[0] if uses_teacher else None
        batch_size, size = cfg.data.batch_size, cfg.data.image_size
        distiller = build_method(cfg.method, student, teacher, num_data=cfg.data.limit_train).train()
        optimizer = torch.optim.AdamW(list(distiller.trainable_parameters()), lr=cfg.optim.lr)
        gen = torch.Generator().manual_seed(0)
        batches = [
            {"input": torch.randn(batch_size, 3, size, size, generator=gen),
             "label": torch.randint(0, len(classes), (batch_size,), generator=gen),
             "index": torch.randperm(cfg.data.limit_train, generator=gen)[:batch_size]}
            for _ in range(4)
        ]  # fmt: skip
        variants = {recipe.stem: batches}
        taps = teacher_taps(distiller)
        if taps:
            cached = []
            for batch in batches:
                with torch.no_grad():
                    run = run_model(teacher, batch["input"], taps)
                maps = {str(t): run.get(t).clone() for t in taps}
                cached.append({**batch, "teacher_logits": run.logits.clone(), "teacher_maps": maps})
            variants[f"{recipe.stem}+cache"] = cached
        for name, data in variants.items():
            times = []
            for i in range(warmup + steps):
                # CPU time of this thread: with one torch thread the step computes here, so other processes on the
                # machine barely move it (wall-clock time would count their share of the cores too).
                tick = time.thread_time()
                out = distiller(data[i % len(data)])
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                optimizer.step()
                if i >= warmup:
                    times.append(time.thread_time() - tick)
            result[name] = statistics.median(times)
            print(f"{name:<14} {1000 * result[name]:7.1f} ms/step", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo_dir", type=Path)
    parser.add_argument("--methods", nargs="+", help="recipe names in configs/demo (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--step-time-only", action="store_true")
    parser.add_argument("--skip-step-time", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    names = args.methods or sorted(p.stem for p in RECIPES.glob("*.yaml"))
    names = ["vanilla"] + [n for n in names if n != "vanilla"]  # the reference of every ratio comes first
    recipes = [RECIPES / f"{n}.yaml" for n in names]

    summary: dict[str, dict[str, float]] = {}
    if not args.step_time_only:
        jobs = [(recipe, seed) for seed in args.seeds for recipe in recipes]
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(lambda job: train(job[0], args.demo_dir, job[1]), jobs))
        for recipe in recipes:
            runs = [args.demo_dir / "methods" / f"{recipe.stem}_seed{s}" / "results.json" for s in args.seeds]
            last = [json.loads(r.read_text())["last"] for r in runs]
            row = {}
            for key in ("top1", "mAP"):
                values = [100 * m[key] for m in last]
                row[key], row[f"{key}_std"] = statistics.mean(values), statistics.stdev(values)
                row[f"{key}_seeds"] = values  # type: ignore[assignment]
            summary[recipe.stem] = row
    if not args.skip_step_time:
        times = step_times(recipes, args.demo_dir, args.steps, args.warmup)
        for name, seconds in times.items():
            summary.setdefault(name, {}).update(step_ms=1000 * seconds, step_ratio=seconds / times["vanilla"])

    print("| method | top-1 (%) | mAP (%) | step time (ms) | step / vanilla |")
    print("|---|---:|---:|---:|---:|")
    for name, row in summary.items():
        acc = f"{row['top1']:.2f} ± {row['top1_std']:.2f}" if "top1" in row else "–"
        map_ = f"{row['mAP']:.2f} ± {row['mAP_std']:.2f}" if "mAP" in row else "–"
        step = f"{row['step_ms']:.1f} | {row['step_ratio']:.2f}×" if "step_ms" in row else "– | –"
        print(f"| `{name}` | {acc} | {map_} | {step} |")
    print(json.dumps({"seeds": args.seeds, "summary": summary}))


if __name__ == "__main__":
    main()
