"""`actdistill cache build|info`: store a teacher's outputs for the training views of a recipe (distill/cache.py).

The output folder is written through `<out>.partial` and renamed when complete. An existing `--out` is replaced
only when it is a teacher cache and `overwrite` is given; a non-empty folder that is not a cache is refused, so
pointing `--out` at a dataset or a run folder deletes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from actdistill.config import Config, check_values
from actdistill.data.collate import collate_skip_broken
from actdistill.distill.cache import (
    TeacherCache,
    cache_key,
    estimate_bytes,
    is_cache,
    map_shapes_of,
    pooled_dim,
    write_cache,
)
from actdistill.engine.build import build_method, teacher_for_student, teacher_taps
from actdistill.engine.fit import check_config
from actdistill.errors import ActdistillError
from actdistill.models import create_model
from actdistill.utils.files import check_free_space, human_bytes
from actdistill.utils.runtime import resolve_device, resolve_precision

log = logging.getLogger("actdistill")


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an `--out` that holds anything but a cache, and an existing cache unless `overwrite`."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ActdistillError(f"cache build: --out {out} is a file; give a folder path")
    if is_cache(out):
        if not overwrite:
            raise ActdistillError(f"cache build: {out} already holds a teacher cache; pass --overwrite to replace it")
        return
    if any(out.iterdir()):
        raise ActdistillError(
            f"cache build: --out {out} is not empty and is not a teacher cache; choose a new folder (nothing was "
            "written or deleted)"
        )


def build_teacher_cache(
    cfg: Config,
    out: str | Path,
    *,
    epochs: int,
    topk: int = 0,
    batch_size: int = 0,
    device: str = "",
    features: str | None = None,
    maps_dtype: str = "float16",
    overwrite: bool = False,
) -> Path:
    """Run the recipe's teacher over `epochs` epochs of its training views and write the cache to `out`.

    The views are the ones `actdistill train` with the same recipe draws (same seed, transforms, normalisation and
    validation split), so a run with `teacher.cache=out` replays them without the teacher. `topk=0` stores all
    class logits (exact); `features` (a teacher layer) also stores that layer's globally pooled output (`rkd`, `crd`).
    The teacher feature maps the recipe's method reads (FitNet, AT, MGD, SimKD, paper 2's attention distillation)
    are stored too, in `maps_dtype` (float16, or int8 with per-channel scales).
    """
    out = Path(out)
    if epochs < 1:
        raise ActdistillError(f"cache build: --epochs must be at least 1, got {epochs}")
    check_values(cfg)
    check_output(out, overwrite)
    task = check_config(cfg)
    dev = resolve_device(device or cfg.train.device)
    classes = task.class_names(cfg)
    extra = task.student_kwargs(cfg)
    student = create_model(cfg.student.name, len(classes), pretrained=False, **{**extra, **cfg.student.kwargs})
    mean, std = student.pretrained_cfg.mean, student.pretrained_cfg.std
    data = task.build_data(cfg, student)
    view = data.train
    teacher = teacher_for_student(cfg.teacher, student, classes, extra)[0].to(dev)
    method = build_method(cfg.method, student, teacher, num_data=len(view), train_targets=data.train_targets)  # type: ignore[arg-type]
    taps = teacher_taps(method)
    del student, method
    k = len(classes) if topk <= 0 else min(topk, len(classes))
    dim = pooled_dim(teacher, features) if features is not None else 0
    shapes = map_shapes_of(teacher, view, taps, dev) if taps else []
    size = estimate_bytes(epochs, len(view), k, len(classes), dim, shapes, maps_dtype)  # type: ignore[arg-type]
    print(
        f"cache build: {epochs} epochs × {len(view)} views, top-{k} of {len(classes)} logits"  # type: ignore[arg-type]
        + (f", pooled {dim}-d features of layer {features}" if features is not None else "")
        + (f", {maps_dtype} teacher maps {[str(t) for t in taps]} {shapes}" if taps else "")
        + f" → about {human_bytes(size)} in {out}",
        flush=True,
    )
    check_free_space(out.parent if not out.exists() else out, size, "cache build")
    key = cache_key(dataclasses.asdict(cfg.data), dataclasses.asdict(cfg.teacher), cfg.train.seed, mean, std)
    loader = DataLoader(
        view,
        batch_size=batch_size or cfg.data.eval_batch_size or cfg.data.batch_size,
        shuffle=False,
        num_workers=max(0, cfg.data.num_workers),
        pin_memory=dev.type == "cuda",
        collate_fn=collate_skip_broken,
    )
    extra_meta = {"recipe": cfg.name, "teacher_checkpoint": cfg.teacher.checkpoint, "class_names": classes}
    return write_cache(
        out,
        teacher,
        view,
        loader,
        epochs=epochs,
        topk=k,
        num_classes=len(classes),
        key=key,
        device=dev,
        amp_dtype=resolve_precision(cfg.train.precision, dev),
        extra_meta=extra_meta,
        feature_layer=features,
        map_taps=taps,
        map_dtype=maps_dtype,
    )


def cache_info(path: str | Path) -> dict[str, Any]:
    """A cache's settings (without the class list) and its size on disk; opening it verifies its files."""
    cache = TeacherCache(path)
    size = sum(f.stat().st_size for f in Path(path).iterdir())
    return {**{k: v for k, v in cache.meta.items() if k not in ("class_names", "files")}, "size": human_bytes(size)}
