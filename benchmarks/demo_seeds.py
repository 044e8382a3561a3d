"""Plain vs KD student on the demo data over several training seeds (same data, same teacher).

    actdistill demo --out runs/demo                       # seed 0: data, teacher, both students
    python benchmarks/demo_seeds.py runs/demo --seeds 1 2 --parallel 2

Re-trains the demo's `student` and `student_kd` runs with other `train.seed` values (one torch thread per
process, `--parallel` processes at once), then prints last-epoch top-1 / mAP as mean ± std over all seeds,
including the demo's own seed-0 runs, and the KD gain per seed.
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


def train(config: Path, out: Path, seed: int) -> float:
    """Run `actdistill train` on `config` with another seed; returns wall seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "actdistill", "train", str(config), f"train.seed={seed}", f"train.out_dir={out}"]
    tick = time.perf_counter()
    subprocess.run([*cmd, "--overwrite"], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo_dir", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()

    jobs = [(run, seed) for seed in args.seeds for run in ("student", "student_kd")]
    with ThreadPoolExecutor(args.parallel) as pool:
        walls = list(pool.map(lambda j: train(args.demo_dir / j[0] / "config.yaml",
                                              args.demo_dir / "seeds" / f"{j[0]}_seed{j[1]}", j[1]), jobs))  # fmt: skip
    rows: dict[str, list[dict]] = {"student": [], "student_kd": []}
    for run in rows:
        dirs = [args.demo_dir / run] + [args.demo_dir / "seeds" / f"{run}_seed{s}" for s in args.seeds]
        rows[run] = [json.loads((d / "results.json").read_text()) for d in dirs]
    seeds = [0, *args.seeds]
    summary: dict[str, dict[str, float]] = {}
    for run, results in rows.items():
        for key in ("top1", "mAP"):
            values = [100 * r["last"][key] for r in results]
            summary[f"{run}/{key}"] = {"mean": statistics.mean(values), "std": statistics.stdev(values)}
            print(f"{run:<11} {key:<5} " + "  ".join(f"{v:6.2f}" for v in values)
                  + f"   mean {statistics.mean(values):6.2f} ± {statistics.stdev(values):.2f}")  # fmt: skip
    for key in ("top1", "mAP"):
        gains = [100 * (k["last"][key] - p["last"][key]) for p, k in zip(rows["student"], rows["student_kd"])]
        summary[f"gain/{key}"] = {"mean": statistics.mean(gains), "std": statistics.stdev(gains)}
        print(f"KD gain     {key:<5} " + "  ".join(f"{g:+6.2f}" for g in gains)
              + f"   mean {statistics.mean(gains):+6.2f} ± {statistics.stdev(gains):.2f}")  # fmt: skip
    print(json.dumps({"seeds": seeds, "summary": summary, "wall_s": walls}))


if __name__ == "__main__":
    main()
