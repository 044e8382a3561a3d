"""Forward and training-step time per clip of the video teacher (I3D) and each student, as ratios to I3D.

    python benchmarks/bench_video_models.py                    # 16×112² clips, batch 2, 101 classes
    python benchmarks/bench_video_models.py --frames 64 --size 224 --batch 1

All models are timed in one run on the same input. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from actdistill.models import create_model
from actdistill.utils.flops import count

MODELS = ("i3d", "top_i3d", "bottom_i3d", "i2d", "c3d", "r3d_10", "r2plus1d_10", "r3d_18", "mc3_18", "r2plus1d_18")


def median_time(fn, repeats: int, warmup: int) -> float:
    """Median wall seconds of `fn()` over `repeats` calls after `warmup` calls."""
    times = []
    for i in range(warmup + repeats):
        tick = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - tick)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()

    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size)
    y = torch.randint(0, args.classes, (args.batch,))
    rows = {}
    for name in args.models:
        model = create_model(name, args.classes)
        gmacs = count(model, (1, 3, args.frames, args.size, args.size)).gmacs
        model.eval()
        with torch.inference_mode():
            fwd = median_time(lambda m=model: m(x), args.repeats, args.warmup)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step(m=model, o=opt) -> None:
            logits = m(x)
            logits = logits.mean(-1) if logits.dim() == 3 else logits
            o.zero_grad(set_to_none=True)
            F.cross_entropy(logits, y).backward()
            o.step()

        train = median_time(step, args.repeats, args.warmup)
        rows[name] = {"gmacs": gmacs, "forward_ms_per_clip": 1000 * fwd / args.batch,
                      "train_ms_per_clip": 1000 * train / args.batch}  # fmt: skip
        print(f"{name:<12} {gmacs:8.2f} GMACs  forward {rows[name]['forward_ms_per_clip']:8.1f} ms/clip  "
              f"train step {rows[name]['train_ms_per_clip']:8.1f} ms/clip", flush=True)  # fmt: skip
    ref = rows.get("i3d")
    if ref:
        print(f"\nratios to i3d ({args.frames}×{args.size}², batch {args.batch}, {torch.get_num_threads()} threads)")
        for name, r in rows.items():
            r["forward_vs_i3d"] = r["forward_ms_per_clip"] / ref["forward_ms_per_clip"]
            r["train_vs_i3d"] = r["train_ms_per_clip"] / ref["train_ms_per_clip"]
            r["gmacs_vs_i3d"] = r["gmacs"] / ref["gmacs"]
            print(f"  {name:<12} GMACs {r['gmacs_vs_i3d']:5.2f}  forward {r['forward_vs_i3d']:5.2f}  "
                  f"train {r['train_vs_i3d']:5.2f}")  # fmt: skip
    print(json.dumps({"args": vars(args), "rows": rows}))


if __name__ == "__main__":
    main()
