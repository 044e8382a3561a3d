"""The task contract: what a kind of training run needs beyond the common engine.

A task says which batch keys its data yields (`actdistill.batch.TASK_KEYS`), which evaluator scores it and which
metric names exist (so `train.best_metric` is checked before the first batch), how its datasets and loaders are
built from the config, and what the student needs from the data (detection: the feature width). The engine
(`engine/build.py`, `engine/fit.py`) never branches on a task's name; it calls these methods.

Tasks: `classification` (images and videos: Stanford 40, UCF101, HMDB51, folders, lists), `pcl` (paper 3's
pretext-contrastive pre-training), `detection` (temporal action detection on snippet features). The dataset's
registry entry names its task (`task=` metadata).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from actdistill.batch import TASK_KEYS
from actdistill.config import Config
from actdistill.data.build import (
    SeededView,
    build_split,
    build_transforms,
    dataset_targets,
    limit,
    stratified_split,
)
from actdistill.data.collate import collate_skip_broken
from actdistill.detect.dataset import (
    build_detection_data,
    check_detection_data,
    collate_sequences,
    detection_classes,
    feature_stats,
    feature_width,
)
from actdistill.engine.evaluators import ClassificationEvaluator, DetectionEvaluator, PretextEvaluator
from actdistill.errors import ActdistillError
from actdistill.registry import DATASETS
from actdistill.ssl.dataset import PRETEXT_NAMES, build_pcl_data, check_pcl_data, clip_side

log = logging.getLogger("actdistill")


@dataclass
class TaskData:
    """A run's datasets: `train` (a `SeededView`), `val` (model selection, or None), `test` (reported)."""

    train: Dataset
    val: Dataset | None
    test: Dataset
    classes: list[str]
    collate: Callable = collate_skip_broken
    train_targets: list[int] | None = None  # class of every training sample (class-aware samplers, e.g. CRD)


class Task:
    """Base of the three tasks; subclasses fill in the class variables and `build_data`."""

    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    lower_is_better: ClassVar[tuple[str, ...]] = ()
    default_monitor: ClassVar[str] = ""  # the metric a plateau schedule watches by default
    default_best: ClassVar[str] = ""  # train.best_metric when the recipe leaves it empty

    @property
    def batch_keys(self) -> frozenset[str]:
        return TASK_KEYS[self.name]

    def check(self, cfg: Config) -> None:
        """Task-specific settings, before any work."""

    def class_names(self, cfg: Config) -> list[str]:
        raise NotImplementedError

    def student_kwargs(self, cfg: Config) -> dict[str, Any]:
        """Model options the data decides (detection: the feature width); merged under `student.kwargs`."""
        return {}

    def build_data(self, cfg: Config, student: nn.Module) -> TaskData:
        raise NotImplementedError

    def prepare_student(self, student: nn.Module, data: TaskData) -> None:
        """Fit data-dependent parts of a fresh student (detection: input statistics)."""

    def input_shape(self, cfg: Config) -> tuple[int, ...]:
        """One input (batch 1) for counting the student's MACs."""
        raise NotImplementedError

    def evaluator(self, cfg: Config, classes: list[str]) -> Callable[..., dict[str, Any]]:
        raise NotImplementedError


def _carve_val(cfg: Config, train: Dataset, val_source: Callable[[], Dataset]) -> tuple[Dataset, Dataset | None]:
    """Split `train` into (train, val) with `data.val_fraction` (stratified when targets are known, seeded)."""
    if cfg.data.val_fraction <= 0:
        return train, None
    targets = dataset_targets(train)
    if targets is None:
        g = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + 99991)
        order = torch.randperm(len(train), generator=g).tolist()  # type: ignore[arg-type]
        cut = max(1, round(cfg.data.val_fraction * len(order)))
        train_idx, val_idx = sorted(order[cut:]), sorted(order[:cut])
    else:
        train_idx, val_idx = stratified_split(targets, cfg.data.val_fraction, cfg.train.seed)
    return Subset(train, train_idx), Subset(val_source(), val_idx)


def check_class_coverage(cfg: Config, targets: list[int] | None, classes: list[str]) -> None:
    """Every class has a training sample, unless `data.allow_empty_classes` (then a warning)."""
    if not targets:  # no targets known, or an empty split (reported by the engine with its own message)
        return
    present = set(targets)
    empty = [c for i, c in enumerate(classes) if i not in present]
    if not empty:
        return
    msg = (
        f"dataset '{cfg.data.name}' at {cfg.data.root}: {len(empty)} class(es) have no training sample "
        f"({', '.join(empty[:5])}{', ...' if len(empty) > 5 else ''})"
    )
    if not cfg.data.allow_empty_classes:
        raise ActdistillError(f"{msg}; add their images or remove them, or set data.allow_empty_classes=true")
    log.warning("%s; their AP is undefined", msg)


class ClassificationTask(Task):
    """Images and videos with one class label each (papers 1 and 2)."""

    name = "classification"
    metrics = ClassificationEvaluator.metrics
    default_monitor = default_best = "mAP"

    def class_names(self, cfg: Config) -> list[str]:
        _, classes = build_split(cfg.data, "train", None)
        return list(classes)

    def build_data(self, cfg: Config, student: nn.Module) -> TaskData:
        mean, std = student.pretrained_cfg.mean, student.pretrained_cfg.std
        train_tf, test_tf = build_transforms(cfg.data, mean, std)
        train, classes = build_split(cfg.data, "train", train_tf)
        test, _ = build_split(cfg.data, "test", test_tf)
        train, test = limit(train, cfg.data.limit_train), limit(test, cfg.data.limit_test)
        check_class_coverage(cfg, dataset_targets(train), list(classes))
        train, val = _carve_val(
            cfg, train, lambda: limit(build_split(cfg.data, "train", test_tf)[0], cfg.data.limit_train)
        )
        targets = dataset_targets(train)
        return TaskData(SeededView(train, cfg.train.seed), val, test, list(classes), train_targets=targets)

    def input_shape(self, cfg: Config) -> tuple[int, ...]:
        size = cfg.data.image_size
        if DATASETS.meta(cfg.data.name).get("task") == "video":
            return (1, 2 if cfg.data.modality == "flow" else 3, cfg.data.clip_len, size, size)
        return (1, 3, size, size)

    def evaluator(self, cfg: Config, classes: list[str]) -> ClassificationEvaluator:
        return ClassificationEvaluator(classes, cfg.eval.temporal_pooling)


class PCLTask(Task):
    """Paper 3: PCL pre-training (pretext classification + contrastive), optionally with a teacher (PCL + KD)."""

    name = "pcl"
    metrics = PretextEvaluator.metrics
    lower_is_better = PretextEvaluator.lower_is_better
    default_monitor = "pretext_loss"
    default_best = "pretext_acc"

    def class_names(self, cfg: Config) -> list[str]:
        return list(PRETEXT_NAMES)

    def check(self, cfg: Config) -> None:
        check_pcl_data(cfg)

    def build_data(self, cfg: Config, student: nn.Module) -> TaskData:
        """PCL's validation split is the test videos' fixed tuples (as PCL's code), unless `data.val_fraction`."""
        train, _, test = build_pcl_data(cfg)
        if cfg.data.val_fraction > 0:
            train, val = _carve_val(cfg, train, lambda: build_pcl_data(cfg, train_draws=False)[0])
        else:
            val = test
        return TaskData(SeededView(train, cfg.train.seed), val, test, self.class_names(cfg))

    def input_shape(self, cfg: Config) -> tuple[int, ...]:
        side = clip_side(cfg)
        return (1, cfg.data.tuple_len, 3, cfg.data.clip_len, side, side)

    def evaluator(self, cfg: Config, classes: list[str]) -> PretextEvaluator:
        return PretextEvaluator()


class DetectionTask(Task):
    """Temporal action detection on per-video snippet features (THUMOS14 layout; paper 2's detection variant)."""

    name = "detection"
    metrics = ("average_map",)
    default_monitor = default_best = "average_map"

    def check(self, cfg: Config) -> None:
        check_detection_data(cfg)

    def class_names(self, cfg: Config) -> list[str]:
        return detection_classes(cfg)

    def student_kwargs(self, cfg: Config) -> dict[str, Any]:
        return {"in_channels": feature_width(cfg)}

    def build_data(self, cfg: Config, student: nn.Module) -> TaskData:
        train, test, classes = build_detection_data(cfg)
        train, val = _carve_val(cfg, train, lambda: build_detection_data(cfg, train_crops=False)[0])
        return TaskData(SeededView(train, cfg.train.seed), val, test, classes, collate=collate_sequences)

    def prepare_student(self, student: nn.Module, data: TaskData) -> None:
        student.set_input_stats(*feature_stats(data.train))  # type: ignore[operator]

    def input_shape(self, cfg: Config) -> tuple[int, ...]:
        return (1, feature_width(cfg), max(cfg.data.crop_len, 64))

    def evaluator(self, cfg: Config, classes: list[str]) -> DetectionEvaluator:
        return DetectionEvaluator(classes, cfg.eval)


TASKS: dict[str, type[Task]] = {"image": ClassificationTask, "video": ClassificationTask}
TASKS.update(pcl=PCLTask, detection=DetectionTask)


def task_for(cfg: Config) -> Task:
    """The task of the run's dataset (its registry entry's `task`)."""
    kind = str(DATASETS.meta(cfg.data.name).get("task", "image"))
    if kind not in TASKS:
        raise ActdistillError(f"dataset '{cfg.data.name}' declares an unknown task '{kind}'")
    return TASKS[kind]()
