"""Analysis figures: similarity heatmaps, training curves, confusion matrix, reliability diagram, per-class bars.

Every function takes plain data (numpy arrays, dicts, lists) and an output path, writes a PNG at 120 dpi and
returns the path as a `Path`. Figures are drawn with the object-oriented API on an Agg canvas, so importing this
module neither needs a display nor changes pyplot's global backend or state.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

__all__ = [
    "DPI",
    "plot_confusion_matrix",
    "plot_curves",
    "plot_per_class_bar",
    "plot_reliability_diagram",
    "plot_similarity_comparison",
    "plot_similarity_heatmap",
]

DPI = 120
_CELL_IN = 0.85  # inches per heatmap cell: room for a two-decimal annotation at 9 pt
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_POS_COLOUR, _NEG_COLOUR = "#2a7fb8", "#d1495b"


def _new_figure(width: float, height: float, **kwargs) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    return out


def _check_matrix(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], what: str) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"{what} must be a 2-D matrix, got shape {m.shape}")
    if len(rows) != m.shape[0] or len(cols) != m.shape[1]:
        raise ValueError(
            f"{what} has shape {m.shape} but got {len(rows)} row names and {len(cols)} column names; "
            "give one name per row and per column"
        )
    return m


def _text_colour(rgba: tuple[float, ...]) -> str:
    luminance = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
    return "white" if luminance < 0.5 else "black"


def _draw_heatmap(
    ax: Axes,
    m: np.ndarray,
    row_names: Sequence[str],
    col_names: Sequence[str],
    norm: Normalize,
    cmap: str,
    fmt: str,
    annotate: bool = True,
    fontsize: float = 9,
):
    masked = np.ma.masked_invalid(m)
    colormap = matplotlib.colormaps[cmap].with_extremes(bad="#d9d9d9")
    image = ax.imshow(masked, cmap=colormap, norm=norm, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(m.shape[1]), labels=list(col_names), rotation=30, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(m.shape[0]), labels=list(row_names))
    ax.set_xticks(np.arange(m.shape[1] + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(m.shape[0] + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.0)
    ax.tick_params(which="minor", length=0)
    if annotate:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                v = m[i, j]
                if math.isnan(v):
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=fontsize, color="#555555")
                else:
                    colour = _text_colour(image.cmap(norm(v)))
                    ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=fontsize, color=colour)
    return image


def _limits(values: np.ndarray, vmin: float | None, vmax: float | None) -> Normalize:
    finite = values[np.isfinite(values)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if hi <= lo:
        hi = lo + 1e-6
    return Normalize(vmin=lo, vmax=hi)


def plot_similarity_heatmap(
    matrix: np.ndarray,
    teacher_stage_names: Sequence[str],
    student_stage_names: Sequence[str],
    path: str | os.PathLike,
    title: str,
    metric_label: str = "linear CKA",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
) -> Path:
    """Heatmap of a `(S_t, S_s)` teacher×student stage-similarity matrix (`similarity_matrix`), values in cells.

    Rows are teacher stages, columns student stages; NaN cells (undefined pairs) are grey and read "n/a".
    `vmin`/`vmax` fix the colour scale (None = data range, e.g. for Euclidean distances).
    """
    m = _check_matrix(matrix, teacher_stage_names, student_stage_names, "similarity matrix")
    fig = _new_figure(max(4.5, _CELL_IN * m.shape[1] + 3.0), max(3.5, _CELL_IN * m.shape[0] + 2.0))
    ax = fig.add_subplot()
    norm = _limits(m, vmin, vmax)
    image = _draw_heatmap(ax, m, teacher_stage_names, student_stage_names, norm, "viridis", ".2f")
    fig.colorbar(image, ax=ax, label=metric_label)
    ax.set_xlabel("student stage")
    ax.set_ylabel("teacher stage")
    ax.set_title(title)
    return _save(fig, path)


def plot_similarity_comparison(
    matrices: Mapping[str, np.ndarray],
    teacher_stage_names: Sequence[str],
    student_stage_names: Sequence[str],
    path: str | os.PathLike,
    title: str = "Teacher–student representation similarity",
    metric_label: str = "linear CKA",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    difference: bool = False,
) -> Path:
    """Side-by-side `(S_t, S_s)` heatmaps, one per named matrix (e.g. "student (plain)", "student (KD)"), shared scale.

    With `difference=True` and exactly two matrices, a third panel shows second − first on a diverging scale.
    """
    if not matrices:
        raise ValueError("matrices is empty; give at least one named (S_t, S_s) matrix")
    if difference and len(matrices) != 2:
        raise ValueError(f"difference=True needs exactly two matrices, got {len(matrices)}: {list(matrices)}")
    named = {
        name: _check_matrix(m, teacher_stage_names, student_stage_names, f"matrix {name!r}")
        for name, m in matrices.items()
    }
    s_t, s_s = len(teacher_stage_names), len(student_stage_names)
    panels = len(named) + int(difference)
    panel_w = max(2.8, _CELL_IN * s_s + 0.8)
    fig = _new_figure(panels * panel_w + 1.8 + 1.2 * int(difference), max(3.5, _CELL_IN * s_t + 2.3))
    axes = fig.subplots(1, panels, sharey=True, squeeze=False)[0]
    norm = _limits(np.concatenate([m.ravel() for m in named.values()]), vmin, vmax)
    image = None
    for ax, (name, m) in zip(axes, named.items()):
        image = _draw_heatmap(ax, m, teacher_stage_names, student_stage_names, norm, "viridis", ".2f")
        ax.set_title(name)
        ax.set_xlabel("student stage")
    axes[0].set_ylabel("teacher stage")
    fig.colorbar(image, ax=list(axes[: len(named)]), label=metric_label)
    if difference:
        first, second = list(named)
        delta = named[second] - named[first]
        finite = np.abs(delta[np.isfinite(delta)])
        span = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        diff_norm = Normalize(vmin=-span, vmax=span)
        diff_image = _draw_heatmap(
            axes[-1], delta, teacher_stage_names, student_stage_names, diff_norm, "RdBu_r", "+.2f"
        )
        axes[-1].set_title(f"{second} − {first}")
        axes[-1].set_xlabel("student stage")
        fig.colorbar(diff_image, ax=axes[-1], label=f"Δ {metric_label}")
    fig.suptitle(title)
    return _save(fig, path)


def plot_curves(
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    title: str,
    ylabel: str,
    xlabel: str = "epoch",
) -> Path:
    """Several named series against epochs 1..len (e.g. test mAP of student vs student+KD, paper 1 figs. 2–3).

    Series may have different lengths. NaN entries (epochs that were not evaluated, `train.eval_every`) are skipped
    and the line joins the evaluated epochs. Put the unit in `ylabel`, e.g. "test mAP (%)".
    """
    if not curves:
        raise ValueError("curves is empty; give at least one named series")
    fig = _new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    for k, (name, values) in enumerate(curves.items()):
        ys = np.asarray(values, dtype=np.float64)
        if ys.ndim != 1 or ys.size == 0:
            raise ValueError(f"series {name!r} must be a non-empty 1-D list of numbers, got shape {ys.shape}")
        xs = np.arange(1, ys.size + 1)
        seen = np.isfinite(ys)
        ax.plot(xs[seen], ys[seen], marker=_MARKERS[k % len(_MARKERS)], markersize=4, linewidth=1.6, label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="best", frameon=True)
    return _save(fig, path)


def plot_confusion_matrix(
    cm: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    normalize: bool = True,
    title: str = "Confusion matrix",
) -> Path:
    """`(K, K)` confusion matrix (rows = true class, columns = predicted); `normalize` divides each row by its total.

    Cells are annotated when K ≤ 15; with more classes (Stanford 40: K = 40) read values from the colour bar.
    """
    m = _check_matrix(cm, class_names, class_names, "confusion matrix")
    if m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square (K, K), got shape {m.shape}")
    k = m.shape[0]
    if normalize:
        totals = m.sum(axis=1, keepdims=True)
        m = np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)
        norm, label, fmt = Normalize(0.0, 1.0), "fraction of true-class samples", ".2f"
    else:
        norm, label, fmt = Normalize(0.0, max(float(m.max()), 1.0)), "samples (count)", ".0f"
    side = max(5.0, 0.3 * k + 2.5)
    fig = _new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    image = _draw_heatmap(
        ax, m, class_names, class_names, norm, "Blues", fmt, annotate=k <= 15, fontsize=8 if k > 8 else 9
    )
    ax.grid(False, which="minor")
    ax.set_xticks(range(k), labels=list(class_names), rotation=90 if k > 12 else 45, ha="right", rotation_mode="anchor")
    fig.colorbar(image, ax=ax, label=label, shrink=0.8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return _save(fig, path)


def plot_reliability_diagram(
    bins: Mapping[str, object], path: str | os.PathLike, title: str = "Reliability diagram"
) -> Path:
    """Reliability diagram (Guo et al. ICML-17, fig. 1) from `calibration.reliability_bins`: accuracy vs confidence.

    Top: per-bin accuracy, the gap to the bin's mean confidence and the diagonal of perfect calibration, with the
    ECE; bottom: samples per bin.
    """
    missing = {"edges", "counts", "accuracy", "confidence"} - set(bins)
    if missing:
        raise ValueError(f"bins is missing {sorted(missing)}; pass the dict returned by reliability_bins")
    edges = np.asarray(bins["edges"], dtype=np.float64)
    counts = np.asarray(bins["counts"], dtype=np.float64)
    acc = np.asarray(bins["accuracy"], dtype=np.float64)
    conf = np.asarray(bins["confidence"], dtype=np.float64)
    if not (len(edges) == len(counts) + 1 == len(acc) + 1 == len(conf) + 1):
        raise ValueError(
            f"inconsistent bins: {len(edges)} edges, {len(counts)} counts, {len(acc)} accuracies, "
            f"{len(conf)} confidences (need B+1 edges and B of each)"
        )
    left, width = edges[:-1], np.diff(edges)
    full = counts > 0
    fig = _new_figure(6.0, 6.5)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(
        left[full],
        acc[full],
        width=width[full],
        align="edge",
        color=_POS_COLOUR,
        edgecolor="black",
        linewidth=0.6,
        label="accuracy",
    )
    gap = conf[full] - acc[full]
    top.bar(
        left[full],
        gap,
        bottom=acc[full],
        width=width[full],
        align="edge",
        color=_NEG_COLOUR,
        alpha=0.35,
        edgecolor=_NEG_COLOUR,
        hatch="//",
        linewidth=0.6,
        label="gap to mean confidence",
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1.2, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy (fraction correct)")
    top.grid(True, alpha=0.3)
    top.legend(loc="upper left")
    if "ece" in bins:
        n = int(bins.get("n", counts.sum()))
        top.text(
            0.97,
            0.04,
            f"ECE = {100 * float(bins['ece']):.2f} %\nN = {n}",
            transform=top.transAxes,
            ha="right",
            va="bottom",
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9},
        )
    top.set_title(title)
    bottom.bar(left, counts, width=width, align="edge", color="#7f7f7f", edgecolor="black", linewidth=0.4)
    bottom.set_xlabel("confidence (max softmax probability)")
    bottom.set_ylabel("samples (count)")
    bottom.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_per_class_bar(values: Mapping[str, float], path: str | os.PathLike, title: str, ylabel: str) -> Path:
    """Horizontal bars of one value per class (e.g. per-class AP gain from KD), sorted, largest on top.

    `ylabel` labels the value axis (horizontal here; include the unit, e.g. "AP gain (points)"). Bars ≥ 0 are
    blue, bars < 0 red.
    """
    if not values:
        raise ValueError("values is empty; give one number per class")
    items = sorted(values.items(), key=lambda kv: kv[1])
    names = [name for name, _ in items]
    vals = np.asarray([v for _, v in items], dtype=np.float64)
    colours = [_POS_COLOUR if v >= 0 else _NEG_COLOUR for v in vals]
    fig = _new_figure(7.5, max(3.0, 0.27 * len(names) + 1.6))
    ax = fig.add_subplot()
    ax.barh(range(len(names)), vals, color=colours, edgecolor="black", linewidth=0.4)
    ax.set_yticks(range(len(names)), labels=names, fontsize=8 if len(names) > 20 else 9)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_xlabel(ylabel)
    ax.set_ylabel("class")
    ax.set_title(title)
    ax.legend(
        handles=[Patch(color=_POS_COLOUR, label="≥ 0"), Patch(color=_NEG_COLOUR, label="< 0")],
        loc="lower right",
    )
    return _save(fig, path)
