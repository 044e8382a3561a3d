"""`actdistill detect extract | train | eval` (docs/detection.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from actdistill.errors import ActdistillError


def _kwargs(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ActdistillError(f"--model-kwargs entry '{item}' must look like key=value (e.g. channel_scale=0.25)")
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def cmd_extract(args: argparse.Namespace) -> int:
    import torch

    from actdistill.detect.features import extract_features, load_backbone

    torch.set_num_threads(args.threads) if args.threads else None
    model = load_backbone(args.backbone, args.num_classes, **_kwargs(args.model_kwargs))
    index = extract_features(
        model, args.videos, args.out, backbone=args.backbone, fps=args.fps, window=args.window,
        stride=args.stride, size=args.size, tap=args.tap, batch_size=args.batch_size, progress=True,
    )  # fmt: skip
    print(f"features of {len(index['videos'])} videos (dim {index['feature_dim']}) in {args.out}")
    return 0


def _print_result(result: dict[str, Any]) -> None:
    maps = result["map"]
    print("tIoU   " + "  ".join(f"{t:>5}" for t in maps) + "    avg")
    print("mAP    " + "  ".join(f"{100 * v:5.1f}" for v in maps.values()) + f"  {100 * result['average_map']:5.1f}")


def cmd_train(args: argparse.Namespace) -> int:
    from actdistill.config import split_recipe_args
    from actdistill.detect.train import load_recipe, train_detection

    config, overrides = split_recipe_args(args.config, args.overrides)
    cfg = load_recipe(config, overrides)
    result = train_detection(cfg, overwrite=args.overwrite)
    _print_result(result)
    print(f"run written to {cfg['train']['out_dir']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from actdistill.detect.train import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.overrides)
    print(f"protocol {result['protocol']}")
    _print_result(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f"report written to {args.out}")
    return 0


def add_cli(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("detect", help="temporal action detection: features, detector training, evaluation")
    dsub = p.add_subparsers(dest="detect_command", required=True, metavar="DETECT_COMMAND")
    e = dsub.add_parser(
        "extract",
        help="run a video backbone over sliding windows; one (T, C) .npy per video",
        description="Feature i is the pooled last forward_features map of the --window-frame clip centred on frame "
        "i*stride + stride/2 at --fps; videos whose .npy exists are skipped (resume).",
    )
    e.add_argument("--backbone", required=True, help="an actdistill checkpoint (.pt) or a model name (e.g. i3d)")
    e.add_argument("--videos", required=True, help="folder of videos or frame folders")
    e.add_argument("--out", required=True, help="output folder (features.json + <video>.npy)")
    e.add_argument("--window", type=int, default=16, help="frames per clip (default: 16)")
    e.add_argument("--stride", type=int, default=4, help="frames between clips (default: 4)")
    e.add_argument("--fps", type=float, default=10.0, help="frame rate videos are resampled to (default: 10)")
    e.add_argument("--size", type=int, default=112, help="frame side fed to the backbone (default: 112)")
    e.add_argument("--tap", type=int, default=-1, help="forward_features entry to pool (default: -1, the last)")
    e.add_argument("--batch-size", type=int, default=16, help="clips per forward pass (default: 16)")
    e.add_argument("--num-classes", type=int, default=400, help="head size for a model name (unused by features)")
    e.add_argument("--model-kwargs", nargs="*", default=[], help="model options, e.g. channel_scale=0.25")
    e.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    e.set_defaults(func=cmd_extract)
    t = dsub.add_parser("train", help="train a detector (optionally distilled) from a recipe in configs/detection/")
    t.add_argument("config", nargs="?", help="detection recipe YAML")
    t.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.epochs=5")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in train.out_dir")
    t.set_defaults(func=cmd_train)
    v = dsub.add_parser("eval", help="mAP at tIoU 0.1..0.5 of a detection checkpoint on its test subset")
    v.add_argument("checkpoint", help="checkpoints/best.pt or last.pt of a detect train run")
    v.add_argument("overrides", nargs="*", help="overrides, e.g. eval.protocol=activitynet eval.nms=hard")
    v.add_argument("--out", help="write the JSON report (per-class AP, predictions) here")
    v.set_defaults(func=cmd_eval)
    return p
