"""Training-step time in fp32 vs bf16 autocast, and KD step vs plain step, measured in one run.

    python benchmarks/bench_precision.py                      # demo models at 64 px, batch 32
    python benchmarks/bench_precision.py --teacher convnext_small --student pvt_v2_b2_li --size 224 --batch 16
    python benchmarks/bench_precision.py --teacher i3d --student top_i3d --size 112 --clip 16 --batch 8 --classes 101

Prints a table, what `train.precision=auto` decides for this pair on this CPU (the engine's probe: one KD step in
fp32 and in bf16, `resolve_precision`), and one JSON line. Ratios (bf16/fp32, KD/plain) are the numbers to quote;
absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from actdistill.distill.logit import KD, Vanilla
from actdistill.models import create_model
from actdistill.utils.runtime import autocast, cpu_bf16_support, resolve_precision


def step_time(method, batch, dtype, steps: int, warmup: int) -> float:
    """Median seconds per optimisation step of `method` on `batch` under autocast `dtype` (None = fp32)."""
    opt = torch.optim.AdamW(method.trainable_parameters(), lr=1e-4)
    method.train()
    times = []
    for i in range(warmup + steps):
        tick = time.perf_counter()
        with autocast(torch.device("cpu"), dtype):
            out = method(batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - tick)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="convnext_demo")
    parser.add_argument("--student", default="pvt_v2_demo")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--clip", type=int, default=0, help="video models: frames per clip (0: images)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    teacher = create_model(args.teacher, args.classes)
    student = create_model(args.student, args.classes)
    batch = {
        "input": torch.randn(args.batch, 3, *([args.clip] if args.clip else []), args.size, args.size),
        "label": torch.randint(0, args.classes, (args.batch,)),
    }
    rows = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        rows[f"plain/{name}"] = step_time(Vanilla(student), batch, dtype, args.steps, args.warmup)
        rows[f"kd/{name}"] = step_time(KD(student, teacher), batch, dtype, args.steps, args.warmup)
    ratios = {
        "plain bf16/fp32": rows["plain/bf16"] / rows["plain/fp32"],
        "kd bf16/fp32": rows["kd/bf16"] / rows["kd/fp32"],
        "kd/plain fp32": rows["kd/fp32"] / rows["plain/fp32"],
        "kd/plain bf16": rows["kd/bf16"] / rows["plain/bf16"],
    }
    kd = KD(student, teacher).train()

    def probe(dtype: torch.dtype | None) -> None:
        with autocast(torch.device("cpu"), dtype):
            loss = kd(batch).loss
        loss.backward()
        kd.zero_grad(set_to_none=True)

    auto = resolve_precision("auto", torch.device("cpu"), probe=probe)
    decision = {"cpu_bf16": cpu_bf16_support(), "auto": "bf16" if auto == torch.bfloat16 else "fp32"}
    print(f"{args.teacher} → {args.student}, {args.size}px, batch {args.batch}, {torch.get_num_threads()} threads")
    print(f"  CPU bf16: {decision['cpu_bf16']}; train.precision=auto → {decision['auto']}")
    for key, value in rows.items():
        print(f"  step {key:<12} {1000 * value:8.1f} ms")
    for key, value in ratios.items():
        print(f"  ratio {key:<16} {value:6.2f}")
    print(
        json.dumps(
            {
                "args": vars(args),
                "step_s": rows,
                "ratios": ratios,
                "precision": decision,
                "machine": platform.processor(),
            }
        )
    )


if __name__ == "__main__":
    main()
