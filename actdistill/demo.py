"""`actdistill demo`: paper 1 end to end on built-in synthetic stick-figure images (Stanford 40 folder layout).

Generates the data, trains a small CNN teacher, trains the same small PVT-v2 student twice (plain and with paper 1's
logit KD, eq. 2), and writes `report.md` and a self-contained `report.html` with a Table-I-style table, the 5-seed
reference figures of the same design (`analysis/published/demo_seeds.json`), curves and a CKA analysis.

Sized for a 2-core CPU: the teacher trains first with all of torch's threads, then the two students side by side in
one-thread processes. `full=True` gives more data and longer schedules. BENCHMARKS.md ("Demo") has the measured
figures and the designs that were tried.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from actdistill.config import Config, DataConfig, ModelConfig, OptimConfig, SchedConfig, TrainConfig, config_from_dict
from actdistill.engine.fit import fit
from actdistill.errors import ActdistillError

log = logging.getLogger("actdistill")


@dataclass(frozen=True)
class DemoScale:
    """Data and schedule of the demo.

    The teacher trains on `teacher_per_class` images per class; both students on the same fixed, class-balanced
    subset of `student_per_class` of them (paper 1's teacher likewise starts from far more data than the students'
    fine-tuning set). The students' random crops are stronger (`student_scale_min` vs the teacher's `scale_min`): a
    crop that hides part of the figure is where the teacher's soft labels say more than the hard label (BENCHMARKS.md,
    "Demo designs"). Their learning rate is half the teacher's, with 3 warm-up epochs: at the teacher's 2e-3 the
    plain ViT stalled at chance for a whole run in some seeds. The test split has 500 images per class: with 100, the
    binomial noise of one evaluation (about ±1.5 points at 65 %) was a visible part of the seed-to-seed spread of KD's
    gain (BENCHMARKS.md, "Demo"). `eval_every`: test-set evaluations every N epochs (and at the last), to save time.
    """

    classes: int = 10
    teacher_per_class: int = 300
    student_per_class: int = 200
    test_per_class: int = 500
    image_size: int = 48
    teacher_epochs: int = 8
    student_epochs: int = 30
    batch_size: int = 32
    teacher_lr: float = 2e-3
    student_lr: float = 1e-3
    student_warmup_epochs: int = 3
    scale_min: float = 0.5
    student_scale_min: float = 0.25
    eval_every: int = 10


QUICK = DemoScale()
FULL = DemoScale(
    classes=12, teacher_per_class=600, student_per_class=250, image_size=64, teacher_epochs=15, student_epochs=60
)

# A tiny ConvNeXt trained from scratch stays at chance level within the demo's budget (BENCHMARKS.md), so the demo's
# CNN teacher is a small BatchNorm ResNet. The paper-1 recipes in configs/image use ConvNeXt-S as the paper does.
TEACHER_MODEL = "resnet_demo"
STUDENT_MODEL = "pvt_v2_demo"


def demo_design(scale: DemoScale) -> dict[str, Any]:
    """What identifies a demo design (its scale, models and KD settings): published 5-seed figures are per design."""
    return {"scale": asdict(scale), "teacher": TEACHER_MODEL, "student": STUDENT_MODEL, "method": "kd"}


def demo_configs(out: Path, scale: DemoScale, seed: int, overrides: dict[str, Any] | None = None) -> dict[str, Config]:
    """The three runs of the demo (teacher, student baseline, student + KD) as resolved configs."""
    data = DataConfig(
        name="stanford40",
        root=str(out / "data"),
        image_size=scale.image_size,
        batch_size=scale.batch_size,
        num_workers=0,
        scale_min=scale.scale_min,
    )

    def make(name: str, model: str, epochs: int, method: dict[str, Any], teacher: str = "") -> Config:
        is_teacher = name == "teacher"
        limit = 0 if is_teacher else scale.classes * scale.student_per_class
        # AdamW rather than paper 1's SGD(1e-3): the demo models start from random weights, not ImageNet ones.
        optim = OptimConfig(name="adamw", lr=scale.teacher_lr if is_teacher else scale.student_lr, weight_decay=0.05)
        warmup = min(epochs, 1 if is_teacher else scale.student_warmup_epochs)
        cfg = Config(
            name=name,
            data=replace(data, limit_train=limit, scale_min=scale.scale_min if is_teacher else scale.student_scale_min),
            student=ModelConfig(name=model),
            # The KD student's teacher runs one batch ahead in a second thread (teacher.prefetch): same numbers,
            # and the second core, idle once the plain student is done, takes the teacher's forwards.
            teacher=ModelConfig(checkpoint=teacher, prefetch=bool(teacher)),
            method=method,
            optim=optim,
            sched=SchedConfig(name="cosine", warmup_epochs=warmup),
            # fp32: bf16 autocast makes these ~1 M-parameter models slower on CPU, not faster (BENCHMARKS.md).
            train=TrainConfig(
                epochs=epochs,
                seed=seed,
                out_dir=str(out / name),
                best_metric="mAP",
                progress=False,
                precision="fp32",
                eval_every=min(scale.eval_every, epochs),
                keep_last=1,
            ),
        )
        return config_from_dict({**cfg.to_dict(), **(overrides or {}).get(name, {})}, where=f"demo/{name}")

    teacher_ckpt = str(out / "teacher" / "checkpoints" / "last.pt")
    return {
        "teacher": make("teacher", TEACHER_MODEL, scale.teacher_epochs, {"name": "vanilla"}),
        "student": make("student", STUDENT_MODEL, scale.student_epochs, {"name": "vanilla"}),
        "student_kd": make("student_kd", STUDENT_MODEL, scale.student_epochs, {"name": "kd"}, teacher_ckpt),
    }


def exit_when_orphaned(parent: int, poll_s: float = 1.0) -> threading.Thread:
    """Start a daemon thread that ends this process once `parent` is gone (killed by a signal it did not handle).

    A spawned worker otherwise trains on, and writes into the demo folder, after the demo itself was stopped.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    thread = threading.Thread(target=watch, name="actdistill-orphan-watch", daemon=True)
    thread.start()
    return thread


def _fit_in_worker(name: str, raw: dict[str, Any], level: int, parent: int) -> dict[str, Any]:
    """Train one demo run in a one-thread worker process (log lines prefixed with the run's name)."""
    import torch

    exit_when_orphaned(parent)

    import actdistill.data.build  # noqa: F401  (a spawned process registers datasets, methods and models anew)
    import actdistill.distill  # noqa: F401
    import actdistill.models  # noqa: F401

    torch.set_num_threads(1)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"%(asctime)s actdistill[{name}]: %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("actdistill")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    return fit(config_from_dict(raw, where=f"demo/{name}"), overwrite=True)


def run_jobs(configs: dict[str, Config], workers: int = 2) -> dict[str, dict[str, Any]]:
    """Train the teacher here (all of torch's threads), then the two students, `workers` one-thread processes at once.

    The KD student needs the teacher's checkpoint; the students are independent, and two one-thread processes use
    two cores better than one two-thread process for these small models. `workers=1` trains everything here.
    """
    results: dict[str, dict[str, Any]] = {}
    for name, cfg in configs.items():
        if name == "teacher" or workers <= 1:
            log.info("=== demo: training %s (%s, method %s) ===", name, cfg.student.name, cfg.method["name"])
            results[name] = fit(cfg, overwrite=True)
    students = {name: cfg for name, cfg in configs.items() if name not in results}
    if students:
        level = log.getEffectiveLevel()
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {}
            for name, cfg in students.items():
                log.info("=== demo: training %s (%s, method %s) ===", name, cfg.student.name, cfg.method["name"])
                futures[name] = pool.submit(_fit_in_worker, name, cfg.to_dict(), level, os.getpid())
            results.update({name: future.result() for name, future in futures.items()})
    return {name: results[name] for name in configs}


def run_demo(
    out: str | Path = "runs/demo",
    *,
    seed: int = 0,
    full: bool = False,
    scale: DemoScale | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Run the whole demo into `out`; returns the three runs' results and the report path.

    `scale` overrides the quick/full presets; `workers` is the number of students trained at once after the teacher
    (default 2, each in a one-thread process; 1 trains everything in this process, with torch's own thread count).
    The worker processes are spawned: a script that calls this with workers > 1 needs `if __name__ == "__main__":`.
    """
    from actdistill.analysis.demo_report import write_demo_report
    from actdistill.data.synthetic_image import write_synthetic_stanford40

    out = Path(out)
    scale = scale or (FULL if full else QUICK)
    workers = 2 if workers is None else workers
    started = time.perf_counter()
    data_root = out / "data"
    spec = dict(
        num_classes=scale.classes,
        train_per_class=scale.teacher_per_class,
        test_per_class=scale.test_per_class,
        image_size=scale.image_size,
        seed=seed,
        difficulty="easy",
    )
    stamp = data_root / "demo_data.json"
    if not stamp.is_file() or json.loads(stamp.read_text()) != spec:
        if data_root.exists() and any(data_root.iterdir()):
            # Never delete data this command did not write (a demo of another scale or seed, or the user's own).
            raise ActdistillError(
                f"demo: {data_root} already holds a dataset that is not this demo's ({stamp.name} differs or is "
                "missing); choose another --out, or remove that folder yourself"
            )
        log.info("writing the synthetic dataset (stick figures, Stanford 40 layout) to %s", data_root)
        write_synthetic_stanford40(data_root, workers=max(1, min(workers, os.cpu_count() or 1)), **spec)
        stamp.write_text(json.dumps(spec))
    design = demo_design(scale)
    (out / "demo.json").write_text(json.dumps({"seed": seed, "design": design}, indent=1))
    results = run_jobs(demo_configs(out, scale, seed), workers=workers)
    report = write_demo_report(out, results, wall_time_s=time.perf_counter() - started, seed=seed, design=design)
    return {"results": results, "report": report, "wall_time_s": time.perf_counter() - started}
