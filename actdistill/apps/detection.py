"""`actdistill detect extract`: snippet features for temporal detection (docs/detection.md).

Training and evaluation of detectors are `actdistill train` / `actdistill eval` with a detection recipe
(configs/detection/); `actdistill detect train|eval` are the same commands.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import yaml

from actdistill.detect.features import extract_features, load_backbone
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
    torch.set_num_threads(args.threads) if args.threads else None
    model = load_backbone(args.backbone, args.num_classes, **_kwargs(args.model_kwargs))
    index = extract_features(
        model, args.videos, args.out, backbone=args.backbone, fps=args.fps, window=args.window,
        stride=args.stride, size=args.size, tap=args.tap, batch_size=args.batch_size, progress=True,
    )  # fmt: skip
    print(f"features of {len(index['videos'])} videos (dim {index['feature_dim']}) in {args.out}")
    return 0
