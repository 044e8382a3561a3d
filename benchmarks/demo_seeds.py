"""Plain vs KD student on the demo data over several training seeds (same data, same teacher).

    actdistill demo --out runs/demo                                   # seed 0: data, teacher, both students
    python benchmarks/demo_seeds.py runs/demo --seeds 1 2 3 4 --parallel 2
    python benchmarks/demo_seeds.py runs/demo --seeds 1 2 3 4 --reuse --publish   # refresh the published figures

Re-trains the demo's `student` and `student_kd` runs with other `train.seed` values (one torch thread per process,
`--parallel` processes at once), then prints last-epoch top-1 / mAP per seed and as mean ± sample std over all
seeds, including the demo's own runs (its seed, from `demo.json`), and the KD gain per seed (paired: same seed).
Writes the summary to `<demo>/seeds/summary.json`; `--publish` also writes it in the format the demo report reads
(`actdistill/analysis/published/demo_seeds.json`).
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

PUBLISHED = Path(__file__).resolve().parents[1] / "actdistill" / "analysis" / "published" / "demo_seeds.json"
RUNS = ("student", "student_kd")


def train(config: Path, out: Path, seed: int, reuse: bool) -> float:
    """Run `actdistill train` on `config` with another seed; returns wall seconds (0 when reused)."""
    if reuse and (out / "results.json").is_file() and json.loads((out / "results.json").read_text())["seed"] == seed:
        return 0.0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "actdistill", "train", str(config), f"train.seed={seed}", f"train.out_dir={out}"]
    tick = time.perf_counter()
    subprocess.run([*cmd, "--overwrite"], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - tick


def machine() -> str:
    """CPU model, cores and torch's CPU capability, e.g. for the published figures."""
    import torch

    from actdistill.utils.runtime import cpu_model

    version = torch.__version__.split("+")[0]
    return f"{cpu_model()}, torch {version} CPU capability {torch.backends.cpu.get_cpu_capability()}"


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(demo_dir: Path, seeds: list[int]) -> dict:
    """Per-seed last-epoch figures (percent) of both students, their mean ± std, and the paired KD gains."""
    meta = json.loads((demo_dir / "demo.json").read_text()) if (demo_dir / "demo.json").is_file() else {}
    demo_seed = int(meta.get("seed", 0))
    teacher = json.loads((demo_dir / "teacher" / "results.json").read_text())
    per_seed: dict[str, list[dict]] = {}
    for run in RUNS:
        dirs = [demo_dir / run] + [demo_dir / "seeds" / f"{run}_seed{s}" for s in seeds]
        per_seed[run] = [json.loads((d / "results.json").read_text()) for d in dirs]
    all_seeds = [demo_seed, *seeds]
    rows = [
        {
            "run": "teacher",
            "model": f"{teacher['student']} (teacher)",
            "method": "vanilla",
            "seeds": [demo_seed],
            "top1": round(100 * teacher["last"]["top1"], 2),
            "mAP": round(100 * teacher["last"]["mAP"], 2),
        }
    ]
    for run in RUNS:
        results = per_seed[run]
        row = {
            "run": run,
            "model": f"{results[0]['student']}" + (" + KD" if run == "student_kd" else ""),
            "method": results[0]["method"]["name"],
            "seeds": all_seeds,
        }
        for key in ("top1", "mAP"):
            values = [100 * r["last"][key] for r in results]
            m, s = mean_std(values)
            row.update({key: round(m, 2), f"{key}_std": round(s, 2), f"{key}_per_seed": [round(v, 2) for v in values]})
            if run == "student_kd":
                gains = [100 * (k["last"][key] - p["last"][key]) for p, k in zip(per_seed["student"], results)]
                gm, gs = mean_std(gains)
                row.update(
                    {
                        f"gain_{key}": round(gm, 2),
                        f"gain_{key}_std": round(gs, 2),
                        f"gain_{key}_per_seed": [round(g, 2) for g in gains],
                    }
                )
        rows.append(row)
    return {
        "paper": "actdistill demo, measured (not from a paper)",
        "table": f"demo, {len(all_seeds)} training seeds",
        "dataset": "synthetic_demo",
        "units": "percent",
        "metrics": ["top1", "mAP"],
        "note": "last-epoch test figures of `actdistill demo` (synthetic stick figures); students re-trained with "
        "each seed on the same data and teacher; mean ± sample std (n − 1); gains paired by seed",
        "command": f"python benchmarks/demo_seeds.py <demo folder> --seeds {' '.join(map(str, seeds))}",
        "machine": machine(),
        "seeds": all_seeds,
        "design": meta.get("design"),
        "rows": rows,
    }


def print_summary(summary: dict) -> None:
    rows = {r["run"]: r for r in summary["rows"]}
    print(f"{'seed':>6} {'plain top-1':>12} {'KD top-1':>10} {'gain':>7} {'plain mAP':>10} {'KD mAP':>8} {'gain':>7}")
    plain, kd = rows["student"], rows["student_kd"]
    for i, seed in enumerate(summary["seeds"]):
        print(
            f"{seed:>6} {plain['top1_per_seed'][i]:>12.2f} {kd['top1_per_seed'][i]:>10.2f} "
            f"{kd['gain_top1_per_seed'][i]:>+7.2f} {plain['mAP_per_seed'][i]:>10.2f} {kd['mAP_per_seed'][i]:>8.2f} "
            f"{kd['gain_mAP_per_seed'][i]:>+7.2f}"
        )
    print(
        f"{'mean':>6} {plain['top1']:>6.2f} ± {plain['top1_std']:<4.2f} {kd['top1']:>5.2f} ± {kd['top1_std']:<4.2f} "
        f"{kd['gain_top1']:+.2f} ± {kd['gain_top1_std']:.2f}   {plain['mAP']:.2f} ± {plain['mAP_std']:.2f} "
        f"{kd['mAP']:.2f} ± {kd['mAP_std']:.2f} {kd['gain_mAP']:+.2f} ± {kd['gain_mAP_std']:.2f}"
    )
    t = rows["teacher"]
    print(f"teacher (seed {t['seeds'][0]}): top-1 {t['top1']:.2f}, mAP {t['mAP']:.2f}")
    for key in ("top1", "mAP"):
        gains = kd[f"gain_{key}_per_seed"]
        ok = all(g > 0 for g in gains) and kd[f"gain_{key}"] >= 2 * kd[f"gain_{key}_std"]
        print(f"KD gain {key}: positive in {sum(g > 0 for g in gains)}/{len(gains)} seeds; mean ≥ 2 std: {ok}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo_dir", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--reuse", action="store_true", help="keep seed runs whose results.json already exists")
    parser.add_argument("--publish", action="store_true", help=f"also write {PUBLISHED.name} for the demo report")
    args = parser.parse_args()

    jobs = [(run, seed) for seed in args.seeds for run in RUNS]
    with ThreadPoolExecutor(args.parallel) as pool:
        walls = list(pool.map(lambda j: train(args.demo_dir / j[0] / "config.yaml",
                                              args.demo_dir / "seeds" / f"{j[0]}_seed{j[1]}", j[1], args.reuse),
                              jobs))  # fmt: skip
    summary = summarise(args.demo_dir, args.seeds)
    summary["wall_s"] = {f"{run}_seed{seed}": round(w, 1) for (run, seed), w in zip(jobs, walls)}
    print_summary(summary)
    out = args.demo_dir / "seeds" / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"summary: {out}")
    if args.publish:
        published = {k: v for k, v in summary.items() if k != "wall_s"}
        PUBLISHED.write_text(json.dumps(published, indent=1, ensure_ascii=False) + "\n")
        print(f"published: {PUBLISHED}")
    print(json.dumps({"seeds": summary["seeds"], "rows": summary["rows"]}))


if __name__ == "__main__":
    main()
