"""`actdistill analyze`: teacher–student representation similarity, agreement and calibration from checkpoints.

Each checkpoint's model is rebuilt, run in eval mode under `torch.no_grad()` over a bounded, evenly spaced subset
of the test split (deterministic test transform), and its per-stage maps are reduced per batch: global-average
pooled `(N, C)` and, for map-aligned CKA, average-pooled to the grids each teacher/student stage pair needs (each
side at most `align_size` cells). Nothing larger than those reductions is kept.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from actdistill.analysis.calibration import reliability_bins
from actdistill.analysis.similarity import linear_cka, prediction_agreement, similarity_matrix
from actdistill.data.build import build_split, build_transforms
from actdistill.engine.evaluate import checkpoint_config, load_predictor
from actdistill.errors import ActdistillError
from actdistill.models.class_remap import class_order
from actdistill.utils.checkpoint import load_checkpoint

__all__ = ["ModelFeatures", "analyze", "collect_features", "load_model", "sample_indices"]

log = logging.getLogger("actdistill")

Grid = tuple[int, ...]


@dataclass
class ModelFeatures:
    """Reduced outputs of one model over the analysis samples."""

    label: str
    checkpoint: str
    model_name: str
    method: str
    stage_names: list[str]
    pooled: list[Tensor]
    aligned: dict[tuple[int, Grid], Tensor]
    logits: Tensor
    labels: Tensor
    grids: list[Grid] = field(default_factory=list)


def load_model(path: str | Path, overrides: Sequence[str] = ()) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Rebuild what a checkpoint's run evaluated (its predictor, with loaded weights): `(model, config, ckpt)`."""
    ckpt = load_checkpoint(path)
    if "model" not in ckpt or "config" not in ckpt:
        raise ActdistillError(f"checkpoint {path} has no 'model'/'config' entries; pass a run's checkpoints/last.pt")
    return load_predictor(path, ckpt), checkpoint_config(path, ckpt, list(overrides)), ckpt


def sample_indices(n: int, max_samples: int) -> list[int]:
    """At most `max_samples` evenly spaced indices of `range(n)` (all of them when n is small enough)."""
    if max_samples <= 0 or max_samples >= n:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, max_samples)})


def _test_loader(model: nn.Module, cfg: Any, path: str | Path, indices: list[int] | None, max_samples: int):
    test, classes = build_split(cfg.data, "test", None)
    if len(classes) != getattr(model, "num_classes", len(classes)):
        raise ActdistillError(
            f"checkpoint {path} was trained for {model.num_classes} classes but {cfg.data.name} at {cfg.data.root} "
            f"has {len(classes)}; point data.root at the dataset it was trained on (--data data.root=...)"
        )
    saved = load_checkpoint(path).get("class_names")
    if saved and class_order(saved, list(classes), "checkpoint", str(path)) is not None:
        raise ActdistillError(
            f"checkpoint {path} lists its classes in another order than {cfg.data.name} at {cfg.data.root}; analysis "
            "compares features sample by sample, so use the dataset copy it was trained on (--data data.root=...)"
        )
    test.transform = build_transforms(cfg.data, model.pretrained_cfg.mean, model.pretrained_cfg.std)[1]
    if indices is None:
        indices = sample_indices(len(test), max_samples)
    elif max(indices, default=-1) >= len(test):
        raise ActdistillError(
            f"checkpoint {path}: its test split has {len(test)} samples, fewer than the teacher's; "
            "all models must be analysed on the same test split (set --data data.root=...)"
        )
    batch = cfg.data.eval_batch_size or cfg.data.batch_size
    loader = DataLoader(Subset(test, indices), batch_size=batch, shuffle=False, num_workers=0)
    return loader, indices, list(classes)


def _stage_grids(model: nn.Module, loader: DataLoader, device: torch.device) -> list[Grid]:
    batch = next(iter(loader))
    with torch.no_grad():
        feats = model.forward_features(batch["input"][:1].to(device))
    return [tuple(int(s) for s in f.shape[2:]) for f in feats]


def pair_grid(a: Grid, b: Grid, align_size: int) -> Grid:
    """Common grid of two stage maps for aligned CKA: per-axis minimum, capped at `align_size` cells per axis."""
    return tuple(min(p, q, align_size) for p, q in zip(a, b))


def collect_features(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    targets: dict[int, set[Grid]] | None = None,
) -> tuple[list[Tensor], dict[tuple[int, Grid], Tensor], Tensor, Tensor]:
    """Stream `loader` through `model`: pooled stage features, stage maps pooled to `targets[stage]` grids, logits.

    Returns `(pooled, aligned, logits, labels)`; `pooled[s]` is `(N, C_s)`, `aligned[(s, grid)]` is
    `(N, C_s·prod(grid))`, all float32 on CPU.
    """
    targets = targets or {}
    model.eval()
    pooled: list[list[Tensor]] = []
    aligned: dict[tuple[int, Grid], list[Tensor]] = {}
    logits, labels = [], []
    with torch.no_grad():
        for batch in loader:
            x = batch["input"].to(device)
            feats = model.forward_features(x)
            logits.append(model.forward_head(feats[-1]).float().cpu())
            labels.append(torch.as_tensor(batch["label"]).long().cpu())
            if not pooled:
                pooled = [[] for _ in feats]
            for s, f in enumerate(feats):
                f = f.float()
                pooled[s].append(f.mean(dim=tuple(range(2, f.ndim))).cpu())
                pool = F.adaptive_avg_pool2d if f.ndim == 4 else F.adaptive_avg_pool3d
                for grid in targets.get(s, ()):
                    aligned.setdefault((s, grid), []).append(pool(f, grid).flatten(1).cpu())
    return (
        [torch.cat(p) for p in pooled],
        {k: torch.cat(v) for k, v in aligned.items()},
        torch.cat(logits),
        torch.cat(labels),
    )


def _label(cfg: Any, path: str | Path, taken: set[str]) -> str:
    p = Path(path)
    base = p.parent.parent.name if p.parent.name == "checkpoints" else (cfg.name or p.stem)
    label, k = base, 2
    while label in taken:
        label, k = f"{base}-{k}", k + 1
    taken.add(label)
    return label


def _finite(m: np.ndarray) -> list[list[float | None]]:
    return [[None if not math.isfinite(v) else round(float(v), 6) for v in row] for row in m]


def _cka_aligned(t: ModelFeatures, s: ModelFeatures, align_size: int) -> np.ndarray:
    out = np.full((len(t.pooled), len(s.pooled)), np.nan)
    for i, gt in enumerate(t.grids):
        for j, gs in enumerate(s.grids):
            grid = pair_grid(gt, gs, align_size)
            out[i, j] = linear_cka(t.aligned[(i, grid)], s.aligned[(j, grid)])
    return out


def _calibration(mf: ModelFeatures) -> dict[str, Any]:
    bins = reliability_bins(mf.logits, mf.labels, from_logits=True)
    top1 = (mf.logits.argmax(1) == mf.labels).double().mean().item()
    return {"top1": top1, "ece": float(bins["ece"]), "bins": bins}


def _run_model(
    path: str | Path,
    overrides: Sequence[str],
    device: torch.device,
    max_samples: int,
    indices: list[int] | None,
    taken: set[str],
) -> tuple[nn.Module, DataLoader, ModelFeatures, list[int]]:
    model, cfg, ckpt = load_model(path, overrides)
    model.to(device)
    loader, indices, _ = _test_loader(model, cfg, path, indices, max_samples)
    names = [fi.name for fi in getattr(model, "feature_info", [])]
    grids = _stage_grids(model, loader, device)
    if len(names) != len(grids):
        names = [f"stage{k}" for k in range(len(grids))]
    method = str(ckpt["config"].get("method", {}).get("name", "vanilla"))
    mf = ModelFeatures(
        _label(cfg, path, taken), str(path), ckpt["model"]["name"], method, names, [], {}, torch.empty(0),
        torch.empty(0), grids,
    )  # fmt: skip
    return model, loader, mf, indices


def analyze(
    teacher: str | Path,
    students: Sequence[str | Path],
    out: str | Path,
    overrides: Sequence[str] = (),
    max_samples: int = 512,
    align_size: int = 7,
    device: str = "cpu",
) -> dict[str, Any]:
    """Compare every student checkpoint with the teacher checkpoint; writes `summary.json`, `analysis.md`, PNGs.

    `overrides` (`section.key=value`, e.g. `data.root=...`) apply to every checkpoint's config; all models are
    run on the same evenly spaced `max_samples` test samples. Returns the summary dict.
    """
    from actdistill.utils.runtime import resolve_device

    if not students:
        raise ActdistillError("analyze needs at least one --student checkpoint to compare with the teacher")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    taken: set[str] = set()
    t_model, t_loader, t_feat, indices = _run_model(teacher, overrides, dev, max_samples, None, taken)
    prepared = [_run_model(p, overrides, dev, max_samples, indices, taken) for p in students]
    if len(indices) < 4:
        raise ActdistillError(f"the test split has {len(indices)} samples; debiased CKA needs at least 4")
    t_targets: dict[int, set[Grid]] = {}
    s_targets: list[dict[int, set[Grid]]] = []
    for _, _, s_feat, _ in prepared:
        targets: dict[int, set[Grid]] = {}
        for i, gt in enumerate(t_feat.grids):
            for j, gs in enumerate(s_feat.grids):
                grid = pair_grid(gt, gs, align_size)
                t_targets.setdefault(i, set()).add(grid)
                targets.setdefault(j, set()).add(grid)
        s_targets.append(targets)
    log.info("analyze: %d test samples, teacher %s", len(indices), t_feat.label)
    t_feat.pooled, t_feat.aligned, t_feat.logits, t_feat.labels = collect_features(t_model, t_loader, dev, t_targets)
    del t_model
    for (model, loader, s_feat, _), targets in zip(prepared, s_targets):
        s_feat.pooled, s_feat.aligned, s_feat.logits, s_feat.labels = collect_features(model, loader, dev, targets)
    summary = _summarise([t_feat] + [p[2] for p in prepared], align_size, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False))
    (out / "analysis.md").write_text(analysis_markdown(summary))
    log.info("analysis written to %s", out / "analysis.md")
    return summary


def _to_last(m: np.ndarray) -> dict[str, Any]:
    row = m[-1]
    finite = row[np.isfinite(row)]
    if not finite.size:
        return {"mean": None, "max": None, "argmax_stage": None, "last_last": None}
    best = int(np.nanargmax(row))
    return {
        "mean": float(finite.mean()),
        "max": float(finite.max()),
        "argmax_stage": best,
        "last_last": None if not math.isfinite(row[-1]) else float(row[-1]),
    }


def _summarise(models: list[ModelFeatures], align_size: int, out: Path) -> dict[str, Any]:
    from actdistill.analysis.plots import plot_reliability_diagram, plot_similarity_comparison, plot_similarity_heatmap

    teacher, students = models[0], models[1:]
    calib = {m.label: _calibration(m) for m in models}
    for m in models:
        plot_reliability_diagram(
            calib[m.label]["bins"], out / f"reliability_{m.label}.png", title=f"Reliability diagram: {m.label}"
        )
    entries = []
    for s in students:
        mats = {
            "linear_cka": similarity_matrix(teacher.pooled, s.pooled, "linear_cka"),
            "debiased_cka": similarity_matrix(teacher.pooled, s.pooled, "debiased_cka"),
            "linear_cka_aligned": _cka_aligned(teacher, s, align_size),
            "cosine": similarity_matrix(teacher.pooled, s.pooled, "cosine", standardize=True),
            "euclidean": similarity_matrix(teacher.pooled, s.pooled, "euclidean"),
        }
        png = plot_similarity_heatmap(
            mats["linear_cka"], teacher.stage_names, s.stage_names, out / f"cka_{s.label}.png",
            title=f"Linear CKA (pooled): teacher {teacher.label} vs {s.label}",
        )  # fmt: skip
        png_aligned = plot_similarity_heatmap(
            mats["linear_cka_aligned"], teacher.stage_names, s.stage_names, out / f"cka_aligned_{s.label}.png",
            title=f"Linear CKA (map-aligned, ≤{align_size} cells/axis): {s.label}",
        )  # fmt: skip
        entries.append(
            {
                "label": s.label,
                "checkpoint": s.checkpoint,
                "model": s.model_name,
                "method": s.method,
                "stages": s.stage_names,
                "matrices": {k: _finite(v) for k, v in mats.items()},
                "cka_to_teacher_last": _to_last(mats["linear_cka"]),
                "debiased_cka_to_teacher_last": _to_last(mats["debiased_cka"]),
                "agreement": prediction_agreement(teacher.logits, s.logits),
                "top1": calib[s.label]["top1"],
                "ece": calib[s.label]["ece"],
                "plots": [png.name, png_aligned.name, f"reliability_{s.label}.png"],
            }
        )
    comparisons = []
    by_arch: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_arch.setdefault(e["model"], []).append(e)
    for arch, group in by_arch.items():
        if len(group) < 2:
            continue
        first = next((e for e in group if e["method"] == "vanilla"), group[0])
        ordered = [first] + [e for e in group if e is not first]
        png = plot_similarity_comparison(
            {f"{e['label']} ({e['method']})": np.array(e["matrices"]["linear_cka"], dtype=float) for e in ordered[:2]},
            teacher.stage_names, ordered[0]["stages"], out / f"cka_compare_{arch}.png",
            title=f"Linear CKA to teacher stages: {arch} students", difference=True,
        )  # fmt: skip
        comparisons.append({"model": arch, "students": [e["label"] for e in ordered], "plot": png.name})
    return {
        "num_samples": int(teacher.labels.numel()),
        "align_size": align_size,
        "teacher": {
            "label": teacher.label,
            "checkpoint": teacher.checkpoint,
            "model": teacher.model_name,
            "stages": teacher.stage_names,
            "top1": calib[teacher.label]["top1"],
            "ece": calib[teacher.label]["ece"],
            "plots": [f"reliability_{teacher.label}.png"],
        },
        "students": entries,
        "comparisons": comparisons,
    }


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.2f}" if pct else f"{v:.3f}"


def analysis_markdown(summary: dict[str, Any]) -> str:
    """`analysis.md` text from a summary dict: per-student table, comparisons of same-architecture students."""
    t = summary["teacher"]
    lines = [
        "# Teacher–student analysis",
        "",
        f"Teacher `{t['label']}` ({t['model']}); {summary['num_samples']} test samples (evenly spaced, test "
        f"transform, float32: top-1 can differ by a sample from a bf16 `actdistill eval`). "
        f"Teacher top-1 {_fmt(t['top1'], True)} %, ECE {_fmt(t['ece'], True)} %.",
        "",
        "CKA columns compare the teacher's last stage with every student stage (global-average-pooled features, "
        "linear CKA in [0, 1], higher = more similar). Agreement = fraction of test samples with the same top-1 "
        "class as the teacher; KL = mean KL(teacher ‖ student) of the softmax outputs, nats.",
        "",
        "| student | model | method | top-1 (%) | ECE (%) | agreement (%) | KL (nats) | CKA last–last | "
        "max CKA to teacher last | mean CKA to teacher last | debiased CKA last–last |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in summary["students"]:
        c, d = e["cka_to_teacher_last"], e["debiased_cka_to_teacher_last"]
        lines.append(
            f"| {e['label']} | {e['model']} | {e['method']} | {_fmt(e['top1'], True)} | {_fmt(e['ece'], True)} | "
            f"{_fmt(e['agreement']['top1_agreement'], True)} | {_fmt(e['agreement']['kl'])} | {_fmt(c['last_last'])} "
            f"| {_fmt(c['max'])} | {_fmt(c['mean'])} | {_fmt(d['last_last'])} |"
        )
    by_label = {e["label"]: e for e in summary["students"]}
    for comp in summary["comparisons"]:
        group = [by_label[k] for k in comp["students"]]
        base = group[0]
        lines += ["", f"## {comp['model']}: {base['label']} ({base['method']}) vs the others", ""]
        for e in group[1:]:
            dc = _diff(e["cka_to_teacher_last"]["last_last"], base["cka_to_teacher_last"]["last_last"])
            da = _diff(e["agreement"]["top1_agreement"], base["agreement"]["top1_agreement"])
            verdict = "closer to" if (dc or 0) > 0 else "not closer to"
            lines.append(
                f"* `{e['label']}` ({e['method']}): last-stage CKA to the teacher {_fmt(dc)} and top-1 agreement "
                f"{_fmt(None if da is None else 100 * da)} points relative to `{base['label']}`, i.e. its final "
                f"representation is {verdict} the teacher's on this sample."
            )
        lines += ["", f"![CKA comparison]({comp['plot']})"]
    for e in summary["students"]:
        lines += ["", f"## {e['label']}", ""] + [f"![{p}]({p})" for p in e["plots"]]
    lines += ["", f"![teacher reliability]({t['plots'][0]})", ""]
    return "\n".join(lines)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def cmd_analyze(args: argparse.Namespace) -> int:
    """CLI entry of `actdistill analyze`."""
    summary = analyze(
        args.teacher, args.student, args.out, overrides=args.data, max_samples=args.max_samples,
        align_size=args.align_size, device=args.device,
    )  # fmt: skip
    print(analysis_markdown(summary).split("\n\n")[3])
    print(f"\nanalysis: {Path(args.out) / 'analysis.md'}")
    return 0
