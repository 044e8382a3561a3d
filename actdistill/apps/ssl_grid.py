"""`actdistill ssl-grid`: paper 3's protocol (§3, Figs. 3-9) from one YAML file, every run through `fit`.

Runs, all PCL pre-training on the same data and settings (the file's `base` recipe, sections as `actdistill train`):
  1. baselines `base_<arch>`: every architecture with PCL alone (`method: pcl`); they are the teachers;
  2. same-architecture students `kd_<arch>_to_<arch>` (paper 3 Figs. 4-6): PCL + KD (`method: pcl_kd`) from that
     baseline's checkpoint;
  3. the cross-architecture grid `kd_<teacher>_to_<student>` (Figs. 7-9): every teacher × every student; its
     diagonal is step 2, trained once.
Every run's config is checked before any run trains. Each run is a normal run folder (checkpoints, metrics, resume);
a run whose `results.json` exists is reused and an interrupted one resumes, so an interrupted grid continues. The
report gives per run `epochs_to(threshold)`, `epochs_to(teacher's final accuracy)`, best and final 5-way pretext
validation accuracy (`report.md`, `summary.json`, `curves_*.png`); with `evaluation.enabled`, clip retrieval top-k
and a linear probe on each run's frozen features.

    name: ucf101_grid
    out_dir: runs/ssl/ucf101_grid
    synthetic: {num_classes: 8, ...}          # optional: write_synthetic_ucf101(base.data.root, ...) if missing
    architectures: {c3d: {name: c3d}, r3d: {name: r3d_10}, r21d: {name: r2plus1d_10, kwargs: {}}}
    base: {data: {name: pcl_ucf101, root: ..., clip_len: 16, ...}, student: {name: pcl}, method: {w_con: 0.5},
           optim: ..., sched: {name: plateau, ...}, train: {epochs: 100, ...}}
    student_epochs: 100                        # default: base.train.epochs
    kd: {kd_temperature: 4, kd_weight: 1}
    threshold: 0.85
    evaluation: {enabled: false, clips_per_video: 10, crop: 112, resize: [128, 171], batch_size: 8}
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from actdistill.analysis.plots import plot_curves
from actdistill.config import Config, config_from_dict, merge, parse_overrides
from actdistill.data.manifest import build_manifest
from actdistill.data.synthetic_video import write_synthetic_ucf101
from actdistill.data.ucf101 import read_split
from actdistill.engine.evaluate import load_predictor
from actdistill.engine.fit import check_config, fit
from actdistill.engine.tasks import task_for
from actdistill.errors import ActdistillError
from actdistill.models import create_model
from actdistill.models.pcl_net import NUM_PRETEXT, backbone_state
from actdistill.ssl.convergence import epochs_to
from actdistill.ssl.evaluate import evaluate_features
from actdistill.utils.checkpoint import save_weights
from actdistill.utils.files import confined

log = logging.getLogger("actdistill")

_KEYS = {"name", "out_dir", "synthetic", "architectures", "base", "student_epochs", "kd", "threshold", "evaluation"}
_ARCH_KEYS = {"name", "kwargs"}
_KD_KEYS = {"kd_temperature", "kd_weight"}
_EVAL_KEYS = {"enabled", "clips_per_video", "crop", "resize", "batch_size"}


@dataclass(frozen=True)
class GridRun:
    """One PCL run: `student` and `teacher` are architecture keys (`teacher=None`: a baseline)."""

    name: str
    student: str
    teacher: str | None
    group: str  # "baseline" | "same" | "cross"


def plan_runs(archs: list[str]) -> list[GridRun]:
    """Baselines first (they are the teachers), then every teacher × student pair (paper 3, §3)."""
    runs = [GridRun(f"base_{a}", a, None, "baseline") for a in archs]
    for t in archs:
        for s in archs:
            runs.append(GridRun(f"kd_{t}_to_{s}", s, t, "same" if s == t else "cross"))
    return runs


def select_runs(plan: list[GridRun], only: list[str] | None, where: str) -> list[GridRun]:
    """`only`: architecture keys (runs among those architectures) and/or run names (plus the teachers they need)."""
    if not only:
        return plan
    archs = {r.student for r in plan}
    names = {r.name for r in plan}
    unknown = [o for o in only if o not in archs and o not in names]
    if unknown:
        raise ActdistillError(
            f"{where}: --only {unknown} are neither architectures {sorted(archs)} nor runs {sorted(names)}"
        )
    keep_archs = {o for o in only if o in archs}
    wanted = {o for o in only if o in names}
    wanted |= {r.name for r in plan if r.student in keep_archs and (r.teacher is None or r.teacher in keep_archs)}
    wanted |= {f"base_{r.teacher}" for r in plan if r.name in wanted and r.teacher is not None}
    return [r for r in plan if r.name in wanted]


# --- loading and checking --------------------------------------------------------------------------------------


def load_grid(path: str | Path, out_dir: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a grid file, fill defaults and check its keys; `overrides` (`section.key=value`) apply to `base`."""
    path = Path(path)
    if not path.is_file():
        raise ActdistillError(f"grid file {path} not found; see configs/ssl/synth_grid.yaml for the format")
    spec = yaml.safe_load(path.read_text()) or {}
    where = str(path)
    _check(spec, _KEYS, where)
    for key in ("architectures", "base"):
        if not spec.get(key):
            raise ActdistillError(f"{where}: '{key}' is missing or empty; see configs/ssl/synth_grid.yaml")
    for key, arch in spec["architectures"].items():
        if not isinstance(arch, dict) or not arch.get("name"):
            raise ActdistillError(f"{where}: architectures.{key} needs a model `name:` (c3d, r3d_10, r2plus1d_10)")
        _check(arch, _ARCH_KEYS, f"{where}: architectures.{key}")
    spec["base"] = merge(spec["base"], parse_overrides(overrides or []))
    base = config_from_dict(spec["base"], f"{where}: base")
    spec.setdefault("student_epochs", base.train.epochs)
    spec["kd"] = {"kd_temperature": 4.0, "kd_weight": 1.0, **(spec.get("kd") or {})}
    _check(spec["kd"], _KD_KEYS, f"{where}: kd")
    spec["evaluation"] = {"enabled": False, **(spec.get("evaluation") or {})}
    _check(spec["evaluation"], _EVAL_KEYS, f"{where}: evaluation")
    spec.setdefault("threshold", 0.85)
    spec.setdefault("name", path.stem)
    spec.setdefault("out_dir", f"runs/ssl/{path.stem}")
    if out_dir:
        spec["out_dir"] = out_dir
    if not isinstance(spec["student_epochs"], int) or spec["student_epochs"] < 1:
        raise ActdistillError(f"{where}: student_epochs must be a positive integer, got {spec['student_epochs']!r}")
    if not 0 < spec["threshold"] <= 1:
        raise ActdistillError(f"{where}: threshold is an accuracy in (0, 1], got {spec['threshold']}")
    synth = spec.get("synthetic")
    if synth is not None:
        allowed = set(inspect.signature(write_synthetic_ucf101).parameters) - {"out_dir", "progress"}
        _check(synth, allowed, f"{where}: synthetic")
    spec["_where"] = where
    return spec


def _check(section: Any, allowed: set[str], where: str) -> None:
    if not isinstance(section, dict):
        raise ActdistillError(f"{where} must be a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ActdistillError(f"{where}: unknown keys {unknown}; valid keys are {sorted(allowed)}")


def run_config(spec: dict[str, Any], run: GridRun) -> Config:
    """The recipe of one grid run: `base` + the architecture, the method (pcl / pcl_kd) and its run folder."""
    out = confined(spec["out_dir"], run.name, what="grid run")
    arch = spec["architectures"][run.student]
    base_student = spec["base"].get("student") or {}
    kwargs = {
        **(base_student.get("kwargs") or {}),
        "backbone": arch["name"],
        "backbone_kwargs": arch.get("kwargs") or {},
    }
    raw = merge(spec["base"], {"name": f"{spec['name']}/{run.name}", "student": {"name": "pcl", "kwargs": kwargs}})
    raw = merge(raw, {"train": {"out_dir": str(out)}})
    if run.teacher is None:
        return config_from_dict(merge(raw, {"method": {"name": "pcl"}}), f"{spec['_where']}: {run.name}")
    teacher = confined(spec["out_dir"], f"base_{run.teacher}", what="grid run") / "checkpoints" / "last.pt"
    method = {**(spec["base"].get("method") or {}), "name": "pcl_kd", **spec["kd"]}
    raw = merge(raw, {"method": method, "teacher": {"name": "pcl", "checkpoint": str(teacher)}})
    raw = merge(raw, {"train": {"epochs": spec["student_epochs"]}})
    return config_from_dict(raw, f"{spec['_where']}: {run.name}")


def validate_grid(spec: dict[str, Any], runs: list[GridRun]) -> None:
    """Check every run's config before any trains: settings and methods (`check_config`), and every architecture
    built once on the meta device and run on one tuple of the recipe's clip size."""
    data_ready = spec.get("synthetic") is None  # else the data is written just before the first run
    configs = {run.name: run_config(spec, run) for run in runs}
    for cfg in configs.values():
        check_config(cfg, data_ready=data_ready)
    for run in runs:
        if run.teacher is None or run.student == run.teacher:
            _check_architecture(spec, run.student, configs[run.name])


def _check_architecture(spec: dict[str, Any], key: str, cfg: Config) -> None:
    arch = spec["architectures"][key]
    shape = task_for(cfg).input_shape(cfg)
    try:
        model = create_model("pcl", NUM_PRETEXT, **cfg.student.kwargs).to("meta").eval()
        with torch.no_grad():
            model(torch.empty(2, *shape[1:], device="meta"))
    except ActdistillError as exc:
        raise ActdistillError(f"{spec['_where']}: architectures.{key}: {exc}") from None
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ActdistillError(
            f"{spec['_where']}: architectures.{key} ({arch['name']}) cannot take clips {list(shape[2:])} "
            f"({str(exc).splitlines()[0][:160]}); C3D needs data.clip_len ≥ 8, or fix the model kwargs"
        ) from None


def ensure_data(spec: dict[str, Any]) -> Path:
    """The data root; with `synthetic:` and no split files there yet, write the synthetic set first."""
    root = Path(spec["base"]["data"]["root"])
    synth = spec.get("synthetic")
    if synth is not None and not (root / "ucfTrainTestlist").is_dir():
        log.info("ssl-grid: writing the synthetic video set to %s", root)
        write_synthetic_ucf101(root, **synth)
    return root


# --- running ---------------------------------------------------------------------------------------------------


def _train_one(spec: dict[str, Any], run: GridRun) -> dict[str, Any]:
    """Train (or resume) one run through `fit`; add the frozen-feature evaluation when asked."""
    cfg = run_config(spec, run)
    folder = Path(cfg.train.out_dir)
    resume = (folder / "checkpoints" / "last.pt").is_file()
    results = fit(cfg, resume=resume, overwrite=not resume)
    model = load_predictor(folder / "checkpoints" / "last.pt")
    save_weights(backbone_state(model), folder / "backbone.safetensors")  # type: ignore[arg-type]
    record: dict[str, Any] = {
        "name": run.name,
        "group": run.group,
        "student": run.student,
        "teacher": run.teacher,
        "model": spec["architectures"][run.student]["name"],
        "epochs": cfg.train.epochs,
        "val_acc": [h["val"]["pretext_acc"] for h in results["history"] if "val" in h],
        "train_acc": [h["train"].get("acc") for h in results["history"]],
        "train_loss": [h["train"]["loss"] for h in results["history"]],
        "val_loss": [h["val"]["pretext_loss"] for h in results["history"] if "val" in h],
        "wall_s": results["train_time_s"],
    }
    if spec["evaluation"].get("enabled"):
        record["evaluation"] = _evaluate(spec, cfg, model)
    (folder / "grid.json").write_text(json.dumps(record, indent=2))
    return record


def _evaluate(spec: dict[str, Any], cfg: Config, model: Any) -> dict[str, Any]:
    ev = spec["evaluation"]
    root = Path(cfg.data.root)
    split_dir = Path(cfg.data.annotation_dir) if cfg.data.annotation_dir else root / "ucfTrainTestlist"
    records = {s: list(build_manifest(root, read_split(split_dir, cfg.data.split, s), workers=1, progress=False))
               for s in ("train", "test")}  # fmt: skip
    return evaluate_features(
        model,
        root,
        records["train"],
        records["test"],
        clip_len=cfg.data.clip_len,
        clips_per_video=ev.get("clips_per_video", 10),
        crop=ev.get("crop", 112),
        resize=ev.get("resize", [128, 171]),
        batch_size=ev.get("batch_size", 8),
        device="cuda" if cfg.train.device in ("auto", "cuda") and _cuda() else "cpu",
    )


def _cuda() -> bool:
    return torch.cuda.is_available()


def run_grid(spec: dict[str, Any], only: list[str] | None = None) -> Path:
    """Check, train what is missing, and write the report; returns the path of `report.md`."""
    runs = select_runs(plan_runs(list(spec["architectures"])), only, spec["_where"])
    validate_grid(spec, runs)
    out_dir = Path(spec["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    ensure_data(spec)
    results: dict[str, dict[str, Any]] = {}
    for i, run in enumerate(runs, start=1):
        done = out_dir / run.name / "grid.json"
        if done.is_file():
            log.info("ssl-grid [%d/%d] %s: reusing %s", i, len(runs), run.name, done)
            results[run.name] = json.loads(done.read_text())
            continue
        log.info("ssl-grid [%d/%d] %s: training (teacher: %s)", i, len(runs), run.name, run.teacher or "none")
        results[run.name] = _train_one(spec, run)
    return write_report(spec, runs, results, out_dir)


# --- report ----------------------------------------------------------------------------------------------------


def summarize(spec: dict[str, Any], runs: list[GridRun], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per run: convergence statistics (paper 3, §4) against the threshold and the teacher's final accuracy."""
    tau = spec["threshold"]
    rows: dict[str, Any] = {}
    for run in runs:
        res = results[run.name]
        curve = res["val_acc"]
        row: dict[str, Any] = {
            "group": run.group,
            "student": run.student,
            "teacher": run.teacher,
            "epochs": len(curve),
            "best": max(curve),
            "final": curve[-1],
            "epochs_to_threshold": epochs_to(curve, tau),
            "wall_s": res.get("wall_s"),
        }
        if run.teacher is not None:
            t_res = results.get(f"base_{run.teacher}")
            if t_res is not None:
                t_final, t_epochs = t_res["val_acc"][-1], len(t_res["val_acc"])
                reached = epochs_to(curve, t_final)
                base = results.get(f"base_{run.student}")
                row.update(
                    teacher_final=t_final,
                    teacher_epochs=t_epochs,
                    epochs_to_teacher=reached,
                    # without a teacher: the same architecture's baseline against the same target
                    baseline_epochs_to_teacher=epochs_to(base["val_acc"], t_final) if base else None,
                    beats_teacher_in_half=reached is not None and reached <= 0.5 * t_epochs,
                )
            base = results.get(f"base_{run.student}")
            if base is not None:
                row["final_minus_baseline"] = curve[-1] - base["val_acc"][-1]
        if "evaluation" in res:
            row["evaluation"] = res["evaluation"]
        rows[run.name] = row
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if not math.isnan(value) else "—"
    return str(value)


def write_report(spec: dict[str, Any], runs: list[GridRun], results: dict[str, dict[str, Any]], out_dir: Path) -> Path:
    """Write `report.md`, `summary.json` and `curves_*.png` into `out_dir`; returns the report's path."""
    rows = summarize(spec, runs, results)
    tau = spec["threshold"]
    evaluated = any("evaluation" in r for r in rows.values())
    head = ["run", "group", "teacher", "student", "epochs", "best", "final", f"ep→{tau:g}", "T final", "ep→T final"]
    head += ["baseline ep→T final", "≤ ½ T epochs", "final − baseline", "time (s)"]
    if evaluated:
        head += ["R@1", "R@5", "probe"]
    lines = [
        f"# {spec['name']}: PCL baselines and PCL + KD students (paper 3, §3)",
        "",
        "Accuracy = 5-way pretext validation accuracy (chance 0.2). `ep→τ` = first epoch with accuracy ≥ τ "
        "(— = never); `T final` = the teacher baseline's final accuracy; `baseline ep→T final` = the student "
        "architecture trained without a teacher, against the same target; `final − baseline` = the student's final "
        "accuracy minus that baseline's.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, r in rows.items():
        cells = [name, r["group"], r["teacher"] or "—", r["student"], r["epochs"], r["best"], r["final"]]
        cells += [r["epochs_to_threshold"], r.get("teacher_final"), r.get("epochs_to_teacher")]
        wall = None if r["wall_s"] is None else round(r["wall_s"])
        cells += [r.get("baseline_epochs_to_teacher"), r.get("beats_teacher_in_half"), r.get("final_minus_baseline")]
        cells += [wall]
        if evaluated:
            ev = r.get("evaluation") or {}
            ret = ev.get("retrieval", {})
            cells += [ret.get("top1"), ret.get("top5"), (ev.get("linear_probe") or {}).get("test_acc")]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    plots = _plot(runs, results, out_dir, plot_curves)
    lines += ["", "Curves: " + ", ".join(f"`{p.name}`" for p in plots), ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    settings = {k: v for k, v in spec.items() if not k.startswith("_")}
    summary = {"settings": settings, "runs": rows, "curves": {n: results[n]["val_acc"] for n in rows}}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return report


def _plot(runs: list[GridRun], results: dict[str, dict[str, Any]], out_dir: Path, plot_curves: Any) -> list[Path]:
    """Fig. 3 (baselines), Figs. 4-9 style (per student: baseline + every teacher; per teacher: its students)."""
    ylabel = "pretext val accuracy"
    curves = {r.name: results[r.name]["val_acc"] for r in runs}
    plots = []
    baselines = {r.name: curves[r.name] for r in runs if r.teacher is None}
    if baselines:
        plots.append(plot_curves(baselines, out_dir / "curves_baselines.png", "PCL baselines", ylabel))
    for arch in dict.fromkeys(r.student for r in runs):
        group = {r.name: curves[r.name] for r in runs if r.student == arch}
        if len(group) > 1:
            plots.append(plot_curves(group, out_dir / f"curves_student_{arch}.png", f"student {arch}", ylabel))
    for arch in dict.fromkeys(r.teacher for r in runs if r.teacher):
        group = {f"base_{arch} (teacher)": curves[f"base_{arch}"]} if f"base_{arch}" in curves else {}
        group |= {r.name: curves[r.name] for r in runs if r.teacher == arch}
        plots.append(plot_curves(group, out_dir / f"curves_teacher_{arch}.png", f"teacher {arch}", ylabel))
    return plots


# --- fine-tuning a PCL backbone (PCL's ft_classify.py) through the engine ------------------------------------------


def finetune_config(
    backbone_file: str | Path,  # a grid run's backbone.safetensors
    arch: str,
    data_root: str | Path,
    out_dir: str | Path,
    *,
    backbone_kwargs: dict[str, Any] | None = None,
    residual: bool = True,
    epochs: int = 150,
    lr: float = 1e-3,
    batch_size: int = 8,
    clip_len: int = 16,
    image_size: int = 112,
    resize: int = 128,
    num_clips: int = 10,
    split: int = 1,
    device: str = "auto",
    seed: int = 632,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An engine recipe (`config_from_dict` mapping) fine-tuning a PCL backbone for action classification.

    Defaults are PCL's `ft_classify.py` (SGD lr 1e-3, batch 8, 150 epochs, 10 test clips per video);
    `overrides` is merged section by section over the result.
    """
    if num_clips > 1 and not residual:
        raise ActdistillError(
            f"fine-tuning {arch} with num_clips={num_clips} needs residual=True (the residual_input wrapper averages "
            "the clips); set num_clips=1 for a plain backbone"
        )
    kwargs = dict(backbone_kwargs or {})
    student = (
        {"name": "residual_input", "pretrained": str(backbone_file), "kwargs": {"backbone": arch, **kwargs}}
        if residual
        else {"name": arch, "pretrained": str(backbone_file), "kwargs": kwargs}
    )
    raw: dict[str, Any] = {
        "name": f"ft_{arch}",
        "data": {
            "name": "ucf101",
            "root": str(data_root),
            "split": split,
            "clip_len": clip_len,
            "image_size": image_size,
            "resize": resize,
            "num_clips": num_clips,
            "batch_size": batch_size,
            "num_workers": 0,
        },
        "student": student,
        "method": {"name": "vanilla"},
        "optim": {"name": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": 5e-4},
        "sched": {"name": "none"},  # PCL's ReduceLROnPlateau(patience 50) barely fires in 150 epochs
        "train": {
            "epochs": epochs,
            "device": device,
            "seed": seed,
            "out_dir": str(out_dir),
            "best_metric": "top1",
            "precision": "fp32",
            "progress": False,
            "tensorboard": False,
            "keep_last": 1,
        },
    }
    for section, values in (overrides or {}).items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    return raw


def finetune(raw: dict[str, Any], *, overwrite: bool = False) -> dict[str, Any]:
    """Run `finetune_config(...)`'s recipe with `fit`; returns fit's results."""
    return fit(config_from_dict(raw, where="ssl fine-tune recipe"), overwrite=overwrite)


# --- CLI -------------------------------------------------------------------------------------------------------


def cmd_ssl_grid(args: argparse.Namespace) -> int:
    spec = load_grid(args.config, args.out_dir, args.overrides)
    report = run_grid(spec, only=args.only)
    print(report.read_text())
    print(f"report: {report}")
    return 0
