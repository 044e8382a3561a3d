"""Shared test set-up: one torch thread per test process, tiny data sets, tiny students and toy batches per task, and
a way to drive the engine's training loop on in-memory batches.

Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two threads per process
made 3-D convolutions 10-300x slower (oversubscription); one thread keeps the suite fast and steady.

Per task (the engine's three tasks; `actdistill.batch.TASK_KEYS`), this file gives tiny data, one-epoch run
overrides (`TINY_RUN`, `TINY_PCL_RUN`, `TINY_DETECTION_RUN`) and, for the tasks whose networks are not plain
classifiers, a tiny student and teacher and a batch holding every key that task's data yields, so contract tests
can be parametrised over the registries' names (classification pairs: tests/test_methods.py `PAIRS`):
  * pcl: `pcl_pair()` (`PCLNet`s around 1/16-width R3D-10 / R(2+1)D-10) and `pcl_batch()` (4-frame 16² tuples);
  * detection: `detector_pair()` (`TemporalDetector`s) and `detection_batch()` (6-channel, 24-step features).
`engine_run(method, batches)` builds a `Run` around a method and a list of batches, so `train_epoch(run)` runs
`engine.loop.train_one_epoch` (stages, optimisers, frozen halves) without data sets or a run folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from actdistill.data.synthetic_image import write_synthetic_stanford40

torch.set_num_threads(1)

# Overrides for a one-epoch CPU run of the tiny ViT student on `tiny_stanford40` (append data.root, out_dir, ...).
TINY_RUN = [
    "data.image_size=32",
    "data.num_workers=0",
    "train.epochs=1",
    "train.progress=false",
    "train.tensorboard=false",
    "train.precision=fp32",
    "train.device=cpu",
    "student.name=pvt_v2_demo",
]

# The same for a PCL run (task `pcl`) on `tiny_ucf`: 1/16-width R3D-10 PCL networks, 4-frame tuples of the stored
# 32² frames (without `data.augment` the clips keep the videos' size, so image_size says that size).
TINY_PCL_RUN = [
    "data.name=pcl_ucf101",
    "data.clip_len=4",
    "data.tuple_interval=2",
    "data.remote_min_gap=2",
    "data.image_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "student.name=pcl",
    "student.kwargs={backbone: r3d_10, backbone_kwargs: {channel_scale: 0.0625}}",
    "method.name=pcl",
    "method.k=8",
    "sched.name=none",
    *TINY_RUN[2:7],
]

# The same for a detection run (task `detection`) on `tiny_detection`: 16-wide small detectors, 16-step crops.
TINY_DETECTION_RUN = [
    "data.name=detection_features",
    "data.crop_len=16",
    "data.batch_size=2",
    "data.num_workers=0",
    "student.name=temporal_detector",
    "student.kwargs={preset: small, attention: true, embed_dim: 16}",
    "method.name=detection",
    "method.bg_weight=1.0",
    "optim.name=adamw",
    "sched.name=none",
    *TINY_RUN[2:7],
]


# --- tiny data sets (session-wide, read-only: a test that damages data copies it first) -------------------------


@pytest.fixture(scope="session")
def tiny_stanford40(tmp_path_factory):
    """A 3-class, 8+4 images per class, 32 px synthetic Stanford 40 tree shared read-only by the tests."""
    root = tmp_path_factory.mktemp("synth") / "stanford40"
    return write_synthetic_stanford40(root, num_classes=3, train_per_class=8, test_per_class=4, image_size=32, seed=0)


@pytest.fixture(scope="session")
def tiny_ucf(tmp_path_factory):
    """A 3-class UCF101-layout video set: 4 videos per class (split 1: 9 train / 3 test), 24 frames of 32²."""
    from actdistill.data.synthetic_video import write_synthetic_ucf101

    root = tmp_path_factory.mktemp("synth_video") / "UCF"
    return write_synthetic_ucf101(root, num_classes=3, videos_per_class=4, groups=4, frames=24, size=32)


@pytest.fixture(scope="session")
def tiny_detection(tmp_path_factory):
    """Synthetic untrimmed videos (3 val / 2 test, 16²) and their snippet features from a 1/16-width I3D.

    Returns `(features, synth)`: the feature folder (`data.root`) and the synthetic set (annotations, classes.txt).
    """
    from actdistill.detect.features import extract_features, load_backbone
    from actdistill.detect.synthetic import write_synthetic_detection

    root = tmp_path_factory.mktemp("synth_detection")
    synth = write_synthetic_detection(
        root / "synth", num_val=3, num_test=2, size=16, seconds=(4.0, 6.0), segment_seconds=(1.0, 2.0), seed=1
    )
    model = load_backbone("i3d", 5, channel_scale=0.0625)
    extract_features(
        model, synth / "videos", root / "feats", backbone="i3d", size=16, window=8, stride=2, progress=False
    )
    return root / "feats", synth


def detection_data_overrides(tiny_detection: tuple[Path, Path]) -> list[str]:
    """`data.*` overrides pointing a detection run at `tiny_detection`."""
    feats, synth = tiny_detection
    return [f"data.root={feats}", f"data.annotations={synth / 'annotations'}", f"data.classes={synth / 'classes.txt'}"]


# --- tiny students and teachers, and batches with every key of their task ----------------------------------------


def pcl_net(backbone: str = "r3d_10", **kwargs: Any) -> torch.nn.Module:
    """A `pcl` model (PCLNet) around a 1/16-width backbone (feature width 32)."""
    from actdistill.models import create_model

    return create_model("pcl", 5, backbone=backbone, backbone_kwargs={"channel_scale": 0.0625}, **kwargs)


def pcl_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    """(student, teacher): PCL networks around R3D-10 and R(2+1)D-10 (a linear projection head)."""
    return pcl_net("r3d_10"), pcl_net("r2plus1d_10", head="linear")


def pcl_batch(n: int = 4, frames: int = 4, size: int = 16, seed: int = 0) -> dict[str, Any]:
    """PCL tuples `(B, 3, C, T, H, W)`, pretext labels 0-4 and training-set indices (the memory banks' rows)."""
    g = torch.Generator().manual_seed(seed)
    return {"input": torch.randn(n, 3, 3, frames, size, size, generator=g), "label": torch.arange(n) % 5,
            "index": torch.arange(n)}  # fmt: skip


def detector_pair(attention: bool = False, same: bool = False, channels: int = 6, num_classes: int = 2):
    """(student, teacher): a small (16-wide) and a large (32-wide) temporal detector over `channels`-d features;
    `same=True`: the student is a copy of the teacher."""
    import copy

    from actdistill.models.temporal_detector import build_detector

    teacher = build_detector("large", channels, num_classes, attention=attention, embed_dim=32)
    student = copy.deepcopy(teacher) if same else build_detector("small", channels, num_classes, attention=attention,
                                                                  embed_dim=16)  # fmt: skip
    return student, teacher


def detection_batch(channels: int = 6, length: int = 24, seed: int = 0) -> dict[str, Any]:
    """Two padded feature sequences (the second 20 steps long) with one segment each, and every detection key."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[1, 20:] = False
    return {
        "input": torch.randn(2, channels, length, generator=g),
        "mask": mask,
        "segments": [torch.tensor([[3.0, 9.0]]), torch.tensor([[10.0, 16.0]])],
        "labels": [torch.tensor([0]), torch.tensor([1])],
        "video": ["v0", "v1"],
        "offset": torch.zeros(2, dtype=torch.long),
        "index": torch.arange(2),
    }


# --- the engine's loop on in-memory batches ------------------------------------------------------------------------


def engine_run(
    method: torch.nn.Module,
    batches: list[dict[str, Any]],
    *,
    lr: float = 0.1,
    optim: dict[str, Any] | None = None,
    replicas: Any = None,
    find_unused: bool = False,
    **train: Any,
):
    """A `Run` around `method` whose training loader is `batches`: one optimiser per stage (SGD at `lr`, or `optim`
    fields, plus the stage's own settings, as `engine.build.build_run`), constant LR, CPU, fp32. `train`:
    `TrainConfig` fields; `replicas`: a (distributed) `Replicas`, wrapped here (single process by default)."""
    from actdistill.config import Config, OptimConfig, SchedConfig
    from actdistill.engine.build import Run
    from actdistill.engine.distributed import Replicas
    from actdistill.engine.optim import Schedule, build_optimizer

    cfg = Config(optim=OptimConfig(lr=lr, weight_decay=0.0, **(optim or {})), sched=SchedConfig(name="none"))
    cfg.train = dataclasses.replace(cfg.train, progress=False, device="cpu", precision="fp32", **train)
    device = torch.device("cpu")
    replicas = replicas or Replicas(None, device)
    ctx = replicas.ctx
    replicas.wrap(method, find_unused=find_unused)
    optimizers, schedules = {}, {}
    for stage in method.stages():
        optim_cfg = dataclasses.replace(cfg.optim, **(getattr(stage, "optim", None) or {}))
        optimizers[stage.name] = build_optimizer(stage.parameters(), optim_cfg)
        schedules[stage.name] = Schedule(optimizers[stage.name], cfg.sched, 1, len(batches))
    return Run(
        cfg=cfg, task=None, ctx=ctx, device=device, amp_dtype=None, folder=Path("."), student=method.student,
        teacher=method.teacher, method=method, data=None, train_loader=list(batches), eval_loaders={},
        optimizers=optimizers, schedules=schedules, scalers={}, replicas=replicas, evaluator=None, model_spec={},
        predictor_spec={}, selection="none",
    )  # fmt: skip


def train_epoch(run: Any, epoch: int = 1) -> dict[str, Any]:
    """`engine.loop.train_one_epoch` of `run` (no stop signal, no checkpoints): the epoch's averaged statistics."""
    from actdistill.engine.loop import EpochState, train_one_epoch

    return train_one_epoch(run, epoch, EpochState(), lambda: 0, lambda state, name: None)
