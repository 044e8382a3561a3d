"""Accuracy on the motion-only class pairs of the synthetic video set (`synthetic_video.MOTION_PAIRS`).

A per-frame model is at chance *within* each pair (both classes have the same distribution of single frames), so
the 2-way accuracy "argmax over the pair's two logits, on the test clips of those two classes" measures what a
model learned about motion. Runs do not save per-sample logits, so `run_motion_pairs` rebuilds the model from a
run's checkpoint and predicts the test split again (the same transform and clip as `actdistill eval`).

    actdistill motion-pairs RUN_DIR [RUN_DIR ...] [--checkpoint last|best] [data.root=...]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actdistill.data.synthetic_video import MOTION_PAIRS
from actdistill.errors import ActdistillError


def motion_pair_accuracy(
    logits: Any,
    labels: Any,
    class_names: Sequence[str],
    pairs: Sequence[tuple[str, str]] = MOTION_PAIRS,
) -> dict[str, Any]:
    """Per-pair 2-way accuracy and its mean, plus K-way top-1 on the pairs' clips; `logits` (N, K), `labels` (N,).

    Pairs with a class missing from `class_names` are skipped; a pair without test clips has accuracy NaN.
    Ties between the two logits go to the pair's first class (as `argmax` does).
    """
    lg = np.asarray(torch.as_tensor(logits, dtype=torch.float32))
    lb = np.asarray(torch.as_tensor(labels)).astype(np.int64)
    if lg.ndim != 2 or lb.shape != (lg.shape[0],):
        raise ActdistillError(f"need logits (N, K) and labels (N,), got {lg.shape} and {lb.shape}")
    if lg.shape[1] != len(class_names):
        raise ActdistillError(f"logits have {lg.shape[1]} classes but {len(class_names)} class names were given")
    index = {name: k for k, name in enumerate(class_names)}
    out: dict[str, Any] = {"pairs": {}}
    used: list[int] = []
    for a, b in pairs:
        if a not in index or b not in index:
            continue
        ia, ib = index[a], index[b]
        mask = (lb == ia) | (lb == ib)
        pred = np.where(lg[mask, ia] >= lg[mask, ib], ia, ib)
        n = int(mask.sum())
        acc = float((pred == lb[mask]).mean()) if n else float("nan")
        out["pairs"][f"{a}/{b}"] = {"accuracy": acc, "n": n}
        used += [ia, ib]
    accs = [p["accuracy"] for p in out["pairs"].values()]
    out["mean_pair_accuracy"] = float(np.mean(accs)) if accs else float("nan")
    in_pairs = np.isin(lb, used)
    out["motion_top1"] = float((lg[in_pairs].argmax(1) == lb[in_pairs]).mean()) if in_pairs.any() else float("nan")
    out["motion_n"] = int(in_pairs.sum())
    out["top1"] = float((lg.argmax(1) == lb).mean()) if len(lb) else float("nan")
    out["n"] = int(len(lb))
    return out


def _checkpoint_path(run: str | Path, which: str) -> Path:
    run = Path(run)
    return run if run.is_file() else run / "checkpoints" / f"{which}.pt"


@torch.no_grad()
def predict_test_split(
    run: str | Path, overrides: Sequence[str] = (), which: str = "last"
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Test-split logits `(N, K)`, labels `(N,)` and class names of a run dir's `checkpoints/<which>.pt` (or a file)."""
    from actdistill.config import config_from_dict, merge, parse_overrides
    from actdistill.data.build import DATASETS, build_transforms, make_loader
    from actdistill.models import create_model
    from actdistill.utils.checkpoint import load_checkpoint

    path = _checkpoint_path(run, which)
    ckpt = load_checkpoint(path)
    cfg = config_from_dict(merge(ckpt["config"], parse_overrides(list(overrides))), where=str(path))
    spec = ckpt["model"]
    test, classes = DATASETS.get(cfg.data.name)(cfg.data, "test", None)
    if len(classes) != spec["num_classes"]:
        raise ActdistillError(
            f"{path} was trained for {spec['num_classes']} classes but {cfg.data.root} has {len(classes)}"
        )
    model = create_model(spec["name"], spec["num_classes"], pretrained=False, **spec.get("kwargs", {}))
    model.load_state_dict(ckpt["student"])
    model.eval()
    test.transform = build_transforms(cfg.data, model.pretrained_cfg.mean, model.pretrained_cfg.std)[1]
    logits, labels = [], []
    for batch in make_loader(test, cfg.data, train=False, device=torch.device("cpu")):
        if "input" not in batch:
            continue
        x = batch["input"]
        out = model(x.flatten(0, 1)).unflatten(0, x.shape[:2]).mean(1) if x.dim() == 6 else model(x)
        logits.append(out.mean(-1) if out.dim() == 3 else out)  # per-step heads (B, K, T')
        labels.append(batch["label"])
    if not logits:
        raise ActdistillError(f"no test clips could be read for {path}")
    return torch.cat(logits).float(), torch.cat(labels), list(classes)


def run_motion_pairs(run: str | Path, overrides: Sequence[str] = (), which: str = "last") -> dict[str, Any]:
    """`motion_pair_accuracy` of a run's checkpoint on its test split (see `predict_test_split`)."""
    logits, labels, classes = predict_test_split(run, overrides, which)
    return {"run": str(run), "checkpoint": which, **motion_pair_accuracy(logits, labels, classes)}


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """Markdown table: one row per result of `run_motion_pairs`."""
    pairs = list(results[0]["pairs"]) if results else []
    head = ["run", "top-1", "motion-class top-1", *pairs, "mean pair acc."]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r["run"], f"{r['top1']:.3f}", f"{r['motion_top1']:.3f}"]
        cells += [f"{r['pairs'][p]['accuracy']:.3f}" for p in pairs] + [f"{r['mean_pair_accuracy']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cmd_motion_pairs(args: argparse.Namespace) -> int:
    """Print the Markdown table of `run_motion_pairs` for each run."""
    overrides = [r for r in args.runs if "=" in r]
    runs = [r for r in args.runs if "=" not in r]
    results = [run_motion_pairs(r, overrides, args.checkpoint) for r in runs]
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0
