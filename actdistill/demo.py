"""`actdistill demo`: paper 1 end to end on the built-in synthetic Stanford-40-layout data.

Generates the data, trains a small ConvNeXt teacher, trains the same small PVT-v2 student twice (plain
and with KD, paper 1 eq. 2), and writes `report.md` with a Table-I-style table and mAP curves.
Sized to finish in a few minutes on a 2-core CPU; `full=True` gives longer schedules and more data.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from actdistill.config import Config, DataConfig, ModelConfig, OptimConfig, SchedConfig, TrainConfig, config_from_dict
from actdistill.engine.fit import fit

log = logging.getLogger("actdistill")


@dataclass(frozen=True)
class DemoScale:
    """Data and schedule sizes of the demo.

    The teacher trains on `teacher_per_class` images per class, the students on a fixed, class-balanced subset of
    `student_per_class` of them: paper 1's teacher likewise starts from far more data (ImageNet pre-training),
    which a from-scratch CPU demo cannot have.
    """

    classes: int = 10
    teacher_per_class: int = 300
    student_per_class: int = 60
    test_per_class: int = 30
    image_size: int = 64
    teacher_epochs: int = 8
    student_epochs: int = 30
    batch_size: int = 32


QUICK = DemoScale()
FULL = DemoScale(
    classes=12, teacher_per_class=600, student_per_class=150, test_per_class=60, teacher_epochs=20, student_epochs=60
)

# A tiny ConvNeXt trained from scratch stays at chance level within the demo's budget (BENCHMARKS.md), so the demo's
# CNN teacher is a small BatchNorm ResNet. The paper-1 recipes in configs/image use ConvNeXt-S as the paper does.
TEACHER_MODEL = "resnet_demo"
STUDENT_MODEL = "pvt_v2_demo"


def demo_configs(out: Path, scale: DemoScale, seed: int, overrides: dict[str, Any] | None = None) -> dict[str, Config]:
    """The three runs of the demo (teacher, student baseline, student + KD) as resolved configs."""
    data = DataConfig(
        name="stanford40",
        root=str(out / "data"),
        image_size=scale.image_size,
        batch_size=scale.batch_size,
        num_workers=0,
        scale_min=0.5,
    )
    # AdamW rather than paper 1's SGD(1e-3): the demo models start from random weights, not ImageNet ones.
    optim = OptimConfig(name="adamw", lr=2e-3, weight_decay=0.05)

    def make(name: str, model: str, epochs: int, method: dict[str, Any], teacher: str = "") -> Config:
        limit = 0 if name == "teacher" else scale.classes * scale.student_per_class
        cfg = Config(
            name=name,
            data=replace(data, limit_train=limit),
            student=ModelConfig(name=model),
            teacher=ModelConfig(checkpoint=teacher),
            method=method,
            optim=optim,
            sched=SchedConfig(name="cosine", warmup_epochs=1),
            # fp32: bf16 autocast makes these ~1 M-parameter models slower on CPU, not faster (BENCHMARKS.md).
            train=TrainConfig(
                epochs=epochs, seed=seed, out_dir=str(out / name), best_metric="mAP", progress=False, precision="fp32"
            ),
        )
        return config_from_dict({**cfg.to_dict(), **(overrides or {}).get(name, {})}, where=f"demo/{name}")

    teacher_ckpt = str(out / "teacher" / "checkpoints" / "last.pt")
    return {
        "teacher": make("teacher", TEACHER_MODEL, scale.teacher_epochs, {"name": "vanilla"}),
        "student": make("student", STUDENT_MODEL, scale.student_epochs, {"name": "vanilla"}),
        "student_kd": make("student_kd", STUDENT_MODEL, scale.student_epochs, {"name": "kd"}, teacher_ckpt),
    }


def run_demo(out: str | Path = "runs/demo", *, seed: int = 0, full: bool = False) -> dict[str, Any]:
    """Run the whole demo into `out`; returns the three runs' results and the report path."""
    from actdistill.analysis.demo_report import write_demo_report
    from actdistill.data.synthetic_image import write_synthetic_stanford40

    out = Path(out)
    scale = FULL if full else QUICK
    started = time.perf_counter()
    data_root = out / "data"
    if not (data_root / "ImageSplits" / "actions.txt").exists():
        log.info("writing the synthetic Stanford 40 dataset to %s", data_root)
        write_synthetic_stanford40(
            data_root,
            num_classes=scale.classes,
            train_per_class=scale.teacher_per_class,
            test_per_class=scale.test_per_class,
            image_size=scale.image_size,
            seed=seed,
            difficulty="easy",
        )
    results = {}
    for name, cfg in demo_configs(out, scale, seed).items():
        log.info("=== demo: training %s (%s, method %s) ===", name, cfg.student.name, cfg.method["name"])
        results[name] = fit(cfg, overwrite=True)
    report = write_demo_report(out, results, wall_time_s=time.perf_counter() - started)
    return {"results": results, "report": report, "wall_time_s": time.perf_counter() - started}
