"""`actdistill cache build|info`: store a teacher's outputs for the training views of a recipe (distill/cache.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from actdistill.config import Config, load_config, split_recipe_args
from actdistill.errors import ActdistillError

log = logging.getLogger("actdistill")


def build_teacher_cache(
    cfg: Config,
    out: str | Path,
    *,
    epochs: int,
    topk: int = 0,
    batch_size: int = 0,
    device: str = "",
    features: str | None = None,
) -> Path:
    """Run the recipe's teacher over `epochs` epochs of its training views and write the cache to `out`.

    The views are the ones `actdistill train` with the same recipe draws (same seed, transforms and normalisation),
    so a run with `teacher.cache=out` replays them without the teacher. `topk=0` stores all class logits (exact);
    `features` (a teacher layer: stage index or name) also stores that layer's globally pooled output (`rkd`, `crd`).
    """
    from actdistill.data.build import build_datasets, build_transforms
    from actdistill.data.collate import collate_skip_broken
    from actdistill.distill.cache import cache_key, estimate_bytes, human_bytes, pooled_dim, write_cache
    from actdistill.engine.fit import _class_names, teacher_for_student
    from actdistill.engine.runtime import resolve_device, resolve_precision
    from actdistill.models import create_model

    if epochs < 1:
        raise ActdistillError(f"cache build: --epochs must be at least 1, got {epochs}")
    dev = resolve_device(device or cfg.train.device)
    classes = _class_names(cfg)
    student = create_model(cfg.student.name, len(classes), pretrained=False, **cfg.student.kwargs)
    mean, std = student.pretrained_cfg.mean, student.pretrained_cfg.std
    train_tf, test_tf = build_transforms(cfg.data, mean, std)
    view = build_datasets(cfg.data, train_tf, test_tf, seed=cfg.train.seed).train
    teacher = teacher_for_student(cfg.teacher, student, len(classes)).to(dev)
    del student
    k = len(classes) if topk <= 0 else min(topk, len(classes))
    dim = pooled_dim(teacher, features) if features is not None else 0
    size = estimate_bytes(epochs, len(view), k, len(classes), dim)  # type: ignore[arg-type]
    print(
        f"cache build: {epochs} epochs × {len(view)} views, top-{k} of {len(classes)} logits"  # type: ignore[arg-type]
        + (f", pooled {dim}-d features of layer {features}" if features is not None else "")
        + f" → about {human_bytes(size)} in {out}",
        flush=True,
    )
    key = cache_key(dataclasses.asdict(cfg.data), dataclasses.asdict(cfg.teacher), cfg.train.seed, mean, std)

    def loader_for(dataset: Any) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size or cfg.data.eval_batch_size or cfg.data.batch_size,
            shuffle=False,
            num_workers=max(0, cfg.data.num_workers),
            pin_memory=dev.type == "cuda",
            collate_fn=collate_skip_broken,
        )

    extra = {"recipe": cfg.name, "teacher_checkpoint": cfg.teacher.checkpoint, "class_names": classes}
    return write_cache(
        out,
        teacher,
        view,
        loader_for,
        epochs=epochs,
        topk=k,
        num_classes=len(classes),
        key=key,
        device=dev,
        amp_dtype=resolve_precision(cfg.train.precision, dev),
        extra_meta=extra,
        feature_layer=features,
    )


def cmd_cache_build(args: argparse.Namespace) -> int:
    cfg = load_config(*split_recipe_args(args.config, args.overrides))
    out = args.out or cfg.teacher.cache
    if not out:
        raise ActdistillError("cache build: give --out PATH (or set teacher.cache in the recipe)")
    path = build_teacher_cache(
        cfg, out, epochs=args.epochs, topk=args.topk, batch_size=args.batch_size, features=args.features
    )
    print(f"wrote {path}; train with the same recipe and overrides plus teacher.cache={path}")
    return 0


def cmd_cache_info(args: argparse.Namespace) -> int:
    from actdistill.distill.cache import TeacherCache, human_bytes

    cache = TeacherCache(args.path)
    size = sum(f.stat().st_size for f in Path(args.path).iterdir())
    meta = {k: v for k, v in cache.meta.items() if k != "class_names"}
    print(json.dumps({**meta, "size": human_bytes(size)}, indent=1))
    return 0


def add_cli(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("cache", help="teacher-output cache: build once, then distil without running the teacher")
    csub = p.add_subparsers(dest="cache_command", required=True)
    b = csub.add_parser("build", help="run the recipe's teacher over E epochs of training views and store its logits")
    b.add_argument("config", nargs="?", help="recipe YAML (the same one you will train with)")
    b.add_argument("overrides", nargs="*", help="section.key=value overrides, as for train")
    b.add_argument("--out", default="", help="cache folder (default: the recipe's teacher.cache)")
    b.add_argument("--epochs", type=int, default=10, help="epochs of augmented views to store (default: 10)")
    b.add_argument("--topk", type=int, default=0, help="logits kept per view; 0 = all classes, exact (default: 0)")
    b.add_argument("--batch-size", type=int, default=0, help="teacher batch (default: data.batch_size)")
    b.add_argument("--features", help="also store this teacher layer's pooled output, e.g. -1 (for rkd, crd)")
    b.set_defaults(func=cmd_cache_build)
    i = csub.add_parser("info", help="print a cache's settings and size")
    i.add_argument("path")
    i.set_defaults(func=cmd_cache_info)
    return p
