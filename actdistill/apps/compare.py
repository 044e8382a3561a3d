"""`actdistill compare`: train one student per method with identical data and schedule; write a Table-1 report.

Paper 2's Table 1 compares KD methods for a Top-I3D student of an I3D teacher on UCF101 and HMDB51. A comparison
file names a base recipe, the datasets, runs to prepare once per dataset (the teachers), the methods and the seeds:

    name: table1
    out_dir: runs/compare/table1
    seeds: [0]
    datasets:                 # label → data-section overrides; `synthetic:` writes the data when it is missing
      synthetic: {root: runs/compare/synth_video, synthetic: {kind: video, classes: 8, train_per_class: 16}}
    prepare:                  # label → sections merged over `base` (trained once per dataset, before the methods)
      teacher: {student: {name: i3d}, method: {name: vanilla}}
    base: {data: ..., student: ..., teacher: {checkpoint: "{teacher}"}, optim: ..., sched: ..., train: ...}
    methods:                  # each: sections merged over `base`; `label` names the row (default: method name)
      - {method: {name: vanilla}}
      - {method: {name: kd, temperature: 4}}

`"{label}"` anywhere in a string is replaced by the prepared run's `checkpoints/last.pt` and `"{label.weights}"` by
its plain weights `student_last.safetensors` (to start another prepared run from it). Runs live in
`<out_dir>/<dataset>/<label>` (prepared) and `<out_dir>/<dataset>/<label>_seed<s>` (methods); every run's config is
checked before the first one trains; a run whose `results.json` exists is reused, so an interrupted comparison
continues where it stopped. The report (`report.md`, `summary.json`, one curves PNG per dataset) gives top-1 and top-5
as mean ± std over seeds and each model's GMACs.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from actdistill.analysis.plots import plot_curves
from actdistill.analysis.report import curve
from actdistill.config import config_from_dict, merge, parse_overrides
from actdistill.data.synthetic_video import write_synthetic_ucf101
from actdistill.engine.fit import check_config, fit
from actdistill.errors import ActdistillError
from actdistill.utils.files import confined, safe_name

log = logging.getLogger("actdistill")
_KEYS = {"name", "out_dir", "seeds", "datasets", "prepare", "base", "methods"}
# --quick: a first try in minutes; every run is cut to this (and written beside, not over, the full runs).
QUICK = {"train": {"epochs": 1}, "data": {"limit_train": 64, "limit_test": 32}}


def route_overrides(items: list[str]) -> dict[str, list[str]]:
    """`section.key=value` → every run; `prepare.section.key=value` → prepared runs only; `methods.…` → method rows."""
    routed: dict[str, list[str]] = {"all": [], "prepare": [], "methods": []}
    for item in items:
        target, _, rest = item.partition(".")
        if target in ("prepare", "methods") and "=" in rest:
            routed[target].append(rest)
        else:
            routed["all"].append(item)
    return routed


def load_comparison(
    path: str | Path, overrides: list[str] | None = None, *, out_dir: str | None = None, quick: bool = False
) -> dict[str, Any]:
    """Read and check a comparison file; `overrides` (see `route_overrides`) apply on top of every run's sections.

    `"{out_dir}"` in any string is the comparison's output folder (so `--out-dir` moves the data it writes too).
    """
    path = Path(path)
    if not path.is_file():
        raise ActdistillError(f"comparison file {path} not found; see configs/video/table1.yaml for the format")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - _KEYS
    if unknown:
        raise ActdistillError(f"{path}: unknown keys {sorted(unknown)}; a comparison file has {sorted(_KEYS)}")
    for key in ("base", "methods", "datasets"):
        if not spec.get(key):
            raise ActdistillError(f"{path}: '{key}' is missing or empty")
    labels = [_label(m) for m in spec["methods"]]
    for label in [*labels, *(spec.get("prepare") or {}), *spec["datasets"]]:
        safe_name(str(label), f"{path}: label")
    if len(set(labels)) != len(labels):
        raise ActdistillError(f"{path}: method rows need distinct labels, got {labels}; add `label:` to repeats")
    spec.setdefault("seeds", [0])
    spec.setdefault("prepare", {})
    spec.setdefault("name", path.stem)
    spec.setdefault("out_dir", f"runs/compare/{path.stem}")
    if out_dir:
        spec["out_dir"] = out_dir
    if quick:
        spec["out_dir"] = str(spec["out_dir"]).rstrip("/") + "-quick"
        spec["seeds"] = spec["seeds"][:1]
    routed = route_overrides(overrides or [])
    quick_raw = QUICK if quick else {}
    spec["overrides"] = {k: parse_overrides(v) for k, v in routed.items()}
    spec["overrides"]["all"] = merge(quick_raw, spec["overrides"]["all"])
    spec["where"] = str(path)
    return _with_out_dir(spec, str(spec["out_dir"]))


def _with_out_dir(value: Any, out_dir: str) -> Any:
    if isinstance(value, str):
        return value.replace("{out_dir}", out_dir)
    if isinstance(value, dict):
        return {k: _with_out_dir(v, out_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_out_dir(v, out_dir) for v in value]
    return value


def _label(entry: dict[str, Any]) -> str:
    return str(entry.get("label") or entry.get("method", {}).get("name", "vanilla"))


def _substitute(value: Any, paths: dict[str, str]) -> Any:
    """Replace `"{label}"` with a prepared run's `checkpoints/last.pt` and `"{label.weights}"` with its plain
    `student_last.safetensors` (for `student.pretrained`), recursively."""
    if isinstance(value, str):
        for label, path in paths.items():
            weights = str(Path(path).parent.parent / "student_last.safetensors")
            value = value.replace("{" + label + ".weights}", weights).replace("{" + label + "}", path)
        return value
    if isinstance(value, dict):
        return {k: _substitute(v, paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, paths) for v in value]
    return value


def _run(raw: dict[str, Any], out: Path, where: str) -> dict[str, Any]:
    """Train one run unless `out/results.json` exists; returns its results."""
    done = out / "results.json"
    if done.exists():
        log.info("compare: reusing %s", out)
        return json.loads(done.read_text())
    return fit(config_from_dict(raw, where=where), overwrite=True)


def _ensure_data(data: dict[str, Any]) -> dict[str, Any]:
    """Write the synthetic dataset a `synthetic:` entry describes when its root does not exist yet."""
    data = dict(data)
    synth = data.pop("synthetic", None)
    if synth and not (Path(data["root"]) / "ucfTrainTestlist").exists():
        kind = synth.get("kind", "video")
        if kind != "video":
            raise ActdistillError(f"compare: synthetic kind '{kind}' is not supported; use kind: video")
        kwargs = {k: v for k, v in synth.items() if k != "kind"}
        kwargs["num_classes"] = kwargs.pop("classes", 8)
        kwargs["videos_per_class"] = kwargs.pop("train_per_class", 16)
        log.info("compare: writing synthetic videos to %s", data["root"])
        write_synthetic_ucf101(data["root"], progress=True, **kwargs)
    return data


def plan(spec: dict[str, Any], only: list[str] | None = None) -> list[tuple[str, str, Path, dict[str, Any]]]:
    """Every run of the comparison in order, `(dataset, label, run_dir, raw config)`, each config already checked.

    Checking all of them before training anything means a typo in the last method fails in seconds, not hours.
    """
    out_root = Path(spec["out_dir"])
    rows = [_label(m) for m in spec["methods"]]
    unknown = [o for o in only or [] if o not in rows]
    if unknown:
        raise ActdistillError(f"compare: --methods {unknown} are not method rows of {spec['where']}; rows: {rows}")
    methods = [m for m in spec["methods"] if not only or _label(m) in only]
    overrides = spec["overrides"]
    runs = []
    for dataset, data_overrides in spec["datasets"].items():
        data = {k: v for k, v in (data_overrides or {}).items() if k != "synthetic"}
        base = merge(spec["base"], {"data": data})
        prepared = {
            label: str(confined(out_root, dataset, label, what="compare label") / "checkpoints" / "last.pt")
            for label in spec["prepare"]
        }
        jobs = [(label, sections, [None], "prepare") for label, sections in spec["prepare"].items()]
        jobs += [(_label(m), {k: v for k, v in m.items() if k != "label"}, spec["seeds"], "methods") for m in methods]
        for label, sections, seeds, group in jobs:
            for seed in seeds:
                name = label if seed is None else f"{label}_seed{seed}"
                run_dir = confined(out_root, dataset, name, what="compare label")
                raw = _substitute(merge(base, sections), prepared)
                raw = merge(merge(raw, overrides["all"]), overrides[group])
                raw = merge(raw, {"name": f"{spec['name']}/{dataset}/{label}", "train": {"out_dir": str(run_dir)}})
                if seed is not None:
                    raw = merge(raw, {"train": {"seed": seed}})
                where = f"{spec['name']}: {dataset}/{run_dir.name}"
                check_config(config_from_dict(raw, where=where))
                runs.append((dataset, label, run_dir, raw))
    return runs


def compare(spec: dict[str, Any], *, only: list[str] | None = None) -> Path:
    """Run the comparison `spec` (from `load_comparison`); returns the report path."""
    runs = plan(spec, only)
    started = time.perf_counter()
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for data_overrides in spec["datasets"].values():
        _ensure_data(data_overrides or {})
    for dataset, label, run_dir, raw in runs:
        log.info("=== compare: %s / %s ===", dataset, run_dir.name)
        results.setdefault(dataset, {}).setdefault(label, []).append(_run(raw, run_dir, f"{spec['name']}: {run_dir}"))
    return write_comparison_report(spec, results, Path(spec["out_dir"]), time.perf_counter() - started)


def _stat(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def summarise(results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per dataset and row: top-1 / top-5 (%) mean and std over seeds, GMACs, parameters, seeds."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for dataset, runs in results.items():
        summary[dataset] = {}
        for label, seeds in runs.items():
            row: dict[str, Any] = {
                "seeds": len(seeds),
                "gmacs": seeds[0].get("gmacs"),
                "params_m": seeds[0].get("params_m"),
            }
            for key in ("top1", "top5"):
                values = [100 * r["last"][key] for r in seeds]
                row[key], row[f"{key}_std"] = _stat(values)
                row[f"{key}_values"] = values
            summary[dataset][label] = row
    return summary


def _cell(row: dict[str, Any], key: str) -> str:
    std = row[f"{key}_std"]
    return f"{row[key]:.2f}" + ("" if math.isnan(std) else f" ± {std:.2f}")


def write_comparison_report(spec: dict[str, Any], results: dict[str, Any], out: Path, wall_s: float) -> Path:
    """`report.md` (Table-1 style), `summary.json` and `curves_<dataset>.png` (test top-1 per epoch) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(results)
    datasets = list(summary)
    labels = list(next(iter(summary.values())))
    head = "| model / method | GMACs | " + " | ".join(f"{d} top-1 (%) | {d} top-5 (%)" for d in datasets) + " |"
    lines = [
        f"# {spec['name']}: methods compared",
        "",
        f"Same data, student, schedule and seeds {spec['seeds']} for every method; last-epoch test accuracy, mean ± "
        f"std over seeds where there are several. Wall time {wall_s / 60:.1f} min (reused runs count as 0).",
        "",
        head,
        "|---|---:|" + "---:|---:|" * len(datasets),
    ]
    for label in labels:
        first = summary[datasets[0]][label]
        gmacs = f"{first['gmacs']:.3f}" if first.get("gmacs") is not None else "–"
        cells = " | ".join(f"{_cell(summary[d][label], 'top1')} | {_cell(summary[d][label], 'top5')}" for d in datasets)
        lines.append(f"| {label} | {gmacs} | {cells} |")
    reference = "vanilla" if "vanilla" in labels else None
    if reference:
        lines += ["", f"Change in top-1 against `{reference}` (points):", ""]
        for d in datasets:
            base = summary[d][reference]["top1"]
            gains = [
                f"{label} {summary[d][label]['top1'] - base:+.2f}"
                for label in labels
                if label not in (reference, *spec["prepare"])
            ]
            lines.append(f"* {d}: " + ", ".join(gains))
    for d in datasets:
        curves = {label: [100 * v for v in curve(runs[0], "top1")] for label, runs in results[d].items()}
        plot_curves(curves, out / f"curves_{d}.png", f"{spec['name']}: {d}", "test top-1 (%)")
        lines += ["", f"![test top-1 per epoch, {d}](curves_{d}.png)"]
    (out / "summary.json").write_text(
        json.dumps({"name": spec["name"], "seeds": spec["seeds"], "summary": summary}, indent=1)
    )
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
