"""`actdistill ssl-grid`: paper 3's protocol (§3, Figs. 3-9) from one YAML file, resumable, with a convergence report.

Runs, all PCL pre-training on the same data and hyper-parameters:
  1. baselines `base_<arch>`: every architecture with PCL alone; they are the teachers;
  2. same-architecture students `kd_<arch>_to_<arch>` (paper 3 Figs. 4-6): PCL + KD from that baseline;
  3. the cross-architecture grid `kd_<teacher>_to_<student>` (Figs. 7-9): every teacher × every student; its
     diagonal is step 2, trained once.
Every run's settings are checked (models built, one dummy forward, data root, keys) before any run trains. A run
whose `results.json` exists is reused, so an interrupted grid resumes. The report gives per run `epochs_to(0.85)`,
`epochs_to(teacher's final accuracy)`, best and final 5-way pretext validation accuracy (`report.md`,
`summary.json`, `curves_*.png`).

    name: ucf101_grid
    out_dir: runs/ssl/ucf101_grid
    data: {root: data/UCF-101, split: 1}      # synthetic: {...} writes write_synthetic_ucf101(root, ...) if missing
    architectures: {c3d: {name: c3d}, r3d: {name: r3d_10}, r21d: {name: r2plus1d_10, kwargs: {}}}
    pcl: {epochs: 100, clip_len: 16, interval: 8, batch_size: 16, lr: 0.01, ...}   # train_pcl keywords
    student_epochs: 100                        # default: pcl.epochs
    augment: {enabled: true, resize: [128, 171], crop: 112}                          # ssl/augment.py
    kd: {temperature: 4, weight: 1}
    threshold: 0.85
    evaluation: {enabled: false, clips_per_video: 10, crop: 112, resize: [128, 171]}   # retrieval + linear probe
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from actdistill.errors import ActdistillError
from actdistill.ssl.augment import AugmentConfig
from actdistill.ssl.convergence import epochs_to
from actdistill.ssl.pcl import PCLNet
from actdistill.ssl.pretext import NUM_PRETEXT, tuple_total
from actdistill.ssl.train import PCLRun, _records, train_pcl

log = logging.getLogger("actdistill")

_KEYS = {
    "name",
    "out_dir",
    "data",
    "architectures",
    "pcl",
    "student_epochs",
    "augment",
    "kd",
    "threshold",
    "evaluation",
}
_DATA_KEYS = {"root", "split", "synthetic"}
_ARCH_KEYS = {"name", "kwargs"}
_KD_KEYS = {"temperature", "weight"}
_EVAL_KEYS = {"enabled", "clips_per_video", "crop", "resize", "batch_size"}
# train_pcl keywords the grid sets itself (per run) rather than the `pcl:` section.
_GRID_OWNED = {"student_backbone_name", "data_root", "teacher", "backbone_kwargs", "augment", "on_epoch", "split"}
_GRID_OWNED |= {"kd_temperature", "kd_weight"}
_PCL_KEYS = set(inspect.signature(train_pcl).parameters) - _GRID_OWNED


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


def load_grid(path: str | Path, out_dir: str | None = None) -> dict[str, Any]:
    """Read a grid file, fill defaults and check keys and value ranges (models are checked by `validate_grid`)."""
    path = Path(path)
    if not path.is_file():
        raise ActdistillError(f"grid file {path} not found; see configs/ssl/synth_grid.yaml for the format")
    spec = yaml.safe_load(path.read_text()) or {}
    where = str(path)
    _check(spec, _KEYS, where)
    for key in ("data", "architectures"):
        if not spec.get(key):
            raise ActdistillError(f"{where}: '{key}' is missing or empty; see configs/ssl/synth_grid.yaml")
    _check(spec["data"], _DATA_KEYS, f"{where}: data")
    if not spec["data"].get("root"):
        raise ActdistillError(f"{where}: data.root is missing; give the UCF101-layout folder")
    for key, arch in spec["architectures"].items():
        if not isinstance(arch, dict) or not arch.get("name"):
            raise ActdistillError(f"{where}: architectures.{key} needs a model `name:` (c3d, r3d_10, r2plus1d_10)")
        _check(arch, _ARCH_KEYS, f"{where}: architectures.{key}")
    spec["pcl"] = dict(spec.get("pcl") or {})
    _check(spec["pcl"], _PCL_KEYS, f"{where}: pcl")
    spec["pcl"].setdefault("epochs", 100)
    spec.setdefault("student_epochs", spec["pcl"]["epochs"])
    spec["kd"] = {"temperature": 4.0, "weight": 1.0, **(spec.get("kd") or {})}
    _check(spec["kd"], _KD_KEYS, f"{where}: kd")
    spec["evaluation"] = {"enabled": False, **(spec.get("evaluation") or {})}
    _check(spec["evaluation"], _EVAL_KEYS, f"{where}: evaluation")
    spec["augment"] = AugmentConfig.from_dict(spec.get("augment") or {"enabled": False}, f"{where}: augment").to_dict()
    spec.setdefault("threshold", 0.85)
    spec.setdefault("name", path.stem)
    spec.setdefault("out_dir", f"runs/ssl/{path.stem}")
    if out_dir:
        spec["out_dir"] = out_dir
    spec["_where"] = where
    _check_values(spec, where)
    return spec


def _check(section: Any, allowed: set[str], where: str) -> None:
    if not isinstance(section, dict):
        raise ActdistillError(f"{where} must be a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ActdistillError(f"{where}: unknown keys {unknown}; valid keys are {sorted(allowed)}")


def _check_values(spec: dict[str, Any], where: str) -> None:
    pcl = spec["pcl"]
    for key in ("epochs",):
        if not isinstance(pcl[key], int) or pcl[key] < 1:
            raise ActdistillError(f"{where}: pcl.{key} must be a positive integer, got {pcl[key]!r}")
    if not isinstance(spec["student_epochs"], int) or spec["student_epochs"] < 1:
        raise ActdistillError(f"{where}: student_epochs must be a positive integer, got {spec['student_epochs']!r}")
    if pcl.get("contrast", "bank") not in ("bank", "in_batch"):
        raise ActdistillError(f"{where}: pcl.contrast must be 'bank' or 'in_batch', got {pcl['contrast']!r}")
    if pcl.get("mode", "faithful") not in ("faithful", "clean"):
        raise ActdistillError(f"{where}: pcl.mode must be 'faithful' or 'clean', got {pcl['mode']!r}")
    if pcl.get("head", "mlp") not in ("mlp", "linear"):
        raise ActdistillError(f"{where}: pcl.head must be 'mlp' or 'linear', got {pcl['head']!r}")
    if pcl.get("batch_size", 16) < 2 and pcl.get("contrast") == "in_batch":
        raise ActdistillError(f"{where}: pcl.contrast: in_batch needs pcl.batch_size ≥ 2")
    if not spec["kd"]["temperature"] > 0 or spec["kd"]["weight"] < 0:
        raise ActdistillError(f"{where}: kd.temperature must be > 0 and kd.weight ≥ 0, got {spec['kd']}")
    if not 0 < spec["threshold"] <= 1:
        raise ActdistillError(f"{where}: threshold is an accuracy in (0, 1], got {spec['threshold']}")
    synth = spec["data"].get("synthetic")
    if synth is not None:
        from actdistill.data.synthetic_video import write_synthetic_ucf101

        allowed = set(inspect.signature(write_synthetic_ucf101).parameters) - {"out_dir", "progress"}
        _check(synth, allowed, f"{where}: data.synthetic")
        size, aug = synth.get("size", 64), spec["augment"]
        if aug["enabled"] and not aug["resize"] and size < aug["crop"]:
            raise ActdistillError(
                f"{where}: data.synthetic.size {size} is smaller than augment.crop {aug['crop']}; lower the crop, "
                "raise the size or set augment.resize"
            )
        if not aug["enabled"] and size % 2:
            raise ActdistillError(f"{where}: data.synthetic.size must be even (quadrant permutation), got {size}")
        window = tuple_total(pcl.get("clip_len", 16), pcl.get("interval", 8))
        if synth.get("frames", 32) < window:
            raise ActdistillError(
                f"{where}: data.synthetic.frames {synth.get('frames', 32)} is shorter than the tuple window {window} "
                "(clip_len·3 + interval·2); raise frames or lower pcl.clip_len / pcl.interval"
            )


def _input_side(spec: dict[str, Any]) -> int:
    if spec["augment"]["enabled"]:
        return spec["augment"]["crop"]
    synth = spec["data"].get("synthetic")
    return int(synth.get("size", 64)) if synth else 112


def validate_grid(spec: dict[str, Any], runs: list[GridRun]) -> None:
    """Check every run's settings before any trains: data, models (built once, one dummy forward), out_dir."""
    where = spec["_where"]
    root = Path(spec["data"]["root"])
    if not spec["data"].get("synthetic") and not (root / "ucfTrainTestlist").is_dir():
        raise ActdistillError(
            f"{where}: data.root {root} has no ucfTrainTestlist/ folder; point it at UCF101 (docs/video_data.md) "
            "or add data.synthetic: {...} to generate the synthetic set there"
        )
    clip_len, side = spec["pcl"].get("clip_len", 16), _input_side(spec)
    for key in sorted({r.student for r in runs} | {r.teacher for r in runs if r.teacher}):
        arch = spec["architectures"][key]
        try:
            model = _new_pcl(spec, key)
            with torch.no_grad():
                model.eval().embed(torch.zeros(1, 3, clip_len, side, side))
        except ActdistillError as exc:
            raise ActdistillError(f"{where}: architectures.{key}: {exc}") from None
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ActdistillError(
                f"{where}: architectures.{key} ({arch['name']}) cannot take {clip_len}×{side}² clips ({exc}); "
                "C3D needs pcl.clip_len ≥ 8 and every model needs crops ≥ 16 px, or fix the model kwargs"
            ) from None
    Path(spec["out_dir"]).mkdir(parents=True, exist_ok=True)


def _new_pcl(spec: dict[str, Any], key: str) -> PCLNet:
    from actdistill.models import create_model

    arch = spec["architectures"][key]
    backbone = create_model(arch["name"], NUM_PRETEXT, **(arch.get("kwargs") or {}))
    return PCLNet(backbone, head=spec["pcl"].get("head", "mlp"))


def ensure_data(spec: dict[str, Any]) -> Path:
    """The data root; with `data.synthetic` and no split files there yet, write the synthetic set first."""
    root = Path(spec["data"]["root"])
    synth = spec["data"].get("synthetic")
    if synth is not None and not (root / "ucfTrainTestlist").is_dir():
        from actdistill.data.synthetic_video import write_synthetic_ucf101

        log.info("ssl-grid: writing the synthetic video set to %s", root)
        write_synthetic_ucf101(root, **synth)
    return root


# --- running ---------------------------------------------------------------------------------------------------


def _load_teacher(spec: dict[str, Any], key: str, out_dir: Path) -> PCLNet:
    path = out_dir / f"base_{key}" / "pcl.pt"
    if not path.is_file():
        raise ActdistillError(f"teacher checkpoint {path} is missing; delete {path.parent} and rerun to retrain it")
    model = _new_pcl(spec, key)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def _train_one(spec: dict[str, Any], run: GridRun, root: Path, out_dir: Path) -> dict[str, Any]:
    from actdistill.ssl.evaluate import export_backbone

    run_dir = out_dir / run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    pcl = {k: v for k, v in spec["pcl"].items() if k != "epochs"}
    epochs = spec["pcl"]["epochs"] if run.teacher is None else spec["student_epochs"]
    teacher = _load_teacher(spec, run.teacher, out_dir) if run.teacher else None
    arch = spec["architectures"][run.student]
    started = time.perf_counter()
    result: PCLRun = train_pcl(
        arch["name"],
        root,
        epochs,
        teacher,
        split=spec["data"].get("split", 1),
        kd_temperature=spec["kd"]["temperature"],
        kd_weight=spec["kd"]["weight"],
        backbone_kwargs=arch.get("kwargs") or {},
        augment=spec["augment"],
        **pcl,
    )
    wall = time.perf_counter() - started
    torch.save(result.model.state_dict(), run_dir / "pcl.pt")
    export_backbone(result.model, run_dir / "backbone.pth")
    record: dict[str, Any] = {
        "name": run.name,
        "group": run.group,
        "student": run.student,
        "teacher": run.teacher,
        "model": arch["name"],
        "epochs": epochs,
        "val_acc": result.val_acc,
        "train_acc": result.train_acc,
        "train_loss": result.train_loss,
        "val_loss": result.val_loss,
        "wall_s": round(wall, 1),
    }
    if spec["evaluation"].get("enabled"):
        record["evaluation"] = _evaluate(spec, result.model, root)
    tmp = run_dir / "results.json.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(run_dir / "results.json")  # written last: its presence marks a finished run
    return record


def _evaluate(spec: dict[str, Any], model: PCLNet, root: Path) -> dict[str, Any]:
    from actdistill.ssl.evaluate import evaluate_features

    ev = spec["evaluation"]
    split = spec["data"].get("split", 1)
    device = spec["pcl"].get("device", "cpu")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return evaluate_features(
        model,
        root,
        _records(root, "train", split),
        _records(root, "test", split),
        clip_len=spec["pcl"].get("clip_len", 16),
        clips_per_video=ev.get("clips_per_video", 10),
        crop=ev.get("crop", 112),
        resize=ev.get("resize", [128, 171]),
        batch_size=ev.get("batch_size", 8),
        device=device,
    )


def run_grid(spec: dict[str, Any], only: list[str] | None = None) -> Path:
    """Check, train what is missing, and write the report; returns the path of `report.md`."""
    runs = select_runs(plan_runs(list(spec["architectures"])), only, spec["_where"])
    validate_grid(spec, runs)
    out_dir = Path(spec["out_dir"])
    root = ensure_data(spec)
    results: dict[str, dict[str, Any]] = {}
    for i, run in enumerate(runs, start=1):
        done = out_dir / run.name / "results.json"
        if done.is_file():
            log.info("ssl-grid [%d/%d] %s: reusing %s", i, len(runs), run.name, done)
            results[run.name] = json.loads(done.read_text())
            continue
        log.info("ssl-grid [%d/%d] %s: training (teacher: %s)", i, len(runs), run.name, run.teacher or "none")
        results[run.name] = _train_one(spec, run, root, out_dir)
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
    from actdistill.analysis.plots import plot_curves

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


# --- CLI -------------------------------------------------------------------------------------------------------


def cmd_ssl_grid(args: argparse.Namespace) -> int:
    spec = load_grid(args.config, args.out_dir)
    report = run_grid(spec, only=args.only)
    print(report.read_text())
    print(f"report: {report}")
    return 0


def add_cli(sub: Any) -> argparse.ArgumentParser:
    """Add `ssl-grid` to the argparse subparsers `sub`."""
    p = sub.add_parser(
        "ssl-grid",
        help="paper 3: PCL baselines, same- and cross-architecture PCL+KD students, convergence report",
        description="Run a PCL grid file (configs/ssl/ucf101_grid.yaml, configs/ssl/synth_grid.yaml): train the "
        "baselines, then every teacher × student PCL+KD run; write report.md, summary.json and curves. Finished "
        "runs are reused.",
    )
    p.add_argument("config", help="grid YAML (configs/ssl/synth_grid.yaml)")
    p.add_argument("--out-dir", help="override the file's out_dir")
    p.add_argument("--only", nargs="+", help="only these architecture keys and/or run names (teachers follow)")
    p.set_defaults(func=cmd_ssl_grid)
    return p
