"""`actdistill report`: aggregate run folders' `results.json` into `report.md` and a self-contained `report.html`.

Runs that share everything but the seed (dataset, student, teacher, method and its settings, epochs, input
shape) form one row, reported as mean ± sample standard deviation (n − 1) over seeds of the last-epoch metrics.
A distilled row shows its gain over the row of the same student and dataset trained with method `vanilla`.
Runs on generated data (a data root holding the `SYNTHETIC.json` marker of `actdistill.data.synthetic_image`) are
labelled "synthetic (... layout)", never by the real dataset's name. Published numbers for the same dataset
(`published.published_rows`) are shown in a separate, titled table that says they come from the papers.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actdistill.errors import ActdistillError

__all__ = [
    "RunGroup",
    "dataset_label",
    "group_runs",
    "html_figure",
    "html_page",
    "html_table",
    "markdown_table",
    "inline_html",
    "load_runs",
    "mean_std",
    "write_report",
]


@dataclass
class RunGroup:
    """Runs differing only in seed; metrics are fractions in [0, 1] from each run's last epoch."""

    label: str
    dataset: str
    student: str
    teacher: str | None
    method: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    baseline: RunGroup | None = None

    @property
    def dataset_label(self) -> str:
        """The dataset as shown in tables: "synthetic (<name> layout)" for generated data, else its name."""
        return dataset_label(self.runs[0]) if self.runs else self.dataset

    @property
    def synthetic(self) -> bool:
        """Whether the group's runs trained on generated (synthetic) data."""
        return any(r.get("synthetic") for r in self.runs)

    @property
    def method_name(self) -> str:
        """The distillation method's registry name ("vanilla" = no teacher)."""
        return str(self.method.get("name", "vanilla"))

    def values(self, key: str) -> list[float]:
        """Last-epoch `key` of every run in the group."""
        return [float(r.get("last", {}).get(key, math.nan)) for r in self.runs]

    def stat(self, key: str) -> tuple[float, float]:
        """(mean, sample std) of last-epoch `key` over the group's seeds."""
        return mean_std(self.values(key))

    def gain(self, key: str) -> float | None:
        """Mean `key` minus the vanilla baseline's mean, or None without a baseline."""
        return None if self.baseline is None else self.stat(key)[0] - self.baseline.stat(key)[0]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of `values`."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def load_runs(run_dirs: list[str | Path]) -> list[dict[str, Any]]:
    """Read each run folder's `results.json`; the folder is stored under the key `run_dir`."""
    if not run_dirs:
        raise ActdistillError("report needs at least one run folder (one holding results.json)")
    runs = []
    for d in run_dirs:
        path = Path(d) / "results.json"
        if not path.is_file():
            raise ActdistillError(f"{path} not found; pass run folders written by `actdistill train` (train.out_dir)")
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ActdistillError(f"{path} is not valid JSON ({exc.msg}); re-run or remove that run folder") from None
        missing = {"dataset", "student", "method", "last"} - set(results)
        if missing:
            raise ActdistillError(f"{path} lacks {sorted(missing)}; it was not written by `actdistill train`")
        results["run_dir"] = str(d)
        results.setdefault("synthetic", _synthetic_marker(Path(d)))
        runs.append(results)
    return runs


def _synthetic_marker(run_dir: Path) -> dict[str, Any] | None:
    """The `SYNTHETIC.json` marker of the run's `data.root` (from its config.yaml), or None."""
    import yaml

    from actdistill.data.synthetic_image import synthetic_info

    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        root = str((cfg.get("data") or {}).get("root") or "")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return synthetic_info(root) if root else None


def dataset_label(run: dict[str, Any]) -> str:
    """How a run's dataset is named in reports: `synthetic (stanford40 layout)` when it trained on generated data."""
    name = str(run.get("dataset", "?"))
    return f"synthetic ({name} layout)" if run.get("synthetic") else name


def _group_key(r: dict[str, Any]) -> str:
    keys = ("dataset", "student", "teacher", "method", "epochs", "input_shape")
    return json.dumps({k: r.get(k) for k in keys}, sort_keys=True)


def group_runs(runs: list[dict[str, Any]]) -> list[RunGroup]:
    """Group runs that share everything but the seed, in first-seen order, and link KD groups to their baseline."""
    groups: dict[str, RunGroup] = {}
    for r in runs:
        key = _group_key(r)
        if key not in groups:
            method = dict(r.get("method") or {"name": "vanilla"})
            name = str(method.get("name", "vanilla"))
            label = r["student"] if name == "vanilla" else f"{r['student']} + {name}"
            groups[key] = RunGroup(label, r["dataset"], r["student"], r.get("teacher"), method)
        groups[key].runs.append(r)
    out = list(groups.values())
    seen: dict[str, int] = {}
    for g in out:
        seen[g.label] = seen.get(g.label, 0) + 1
        if seen[g.label] > 1:
            g.label = f"{g.label} (setting {seen[g.label]})"
    for g in out:
        if g.method_name != "vanilla":
            g.baseline = next(
                (b for b in out if b.method_name == "vanilla" and (b.dataset, b.student) == (g.dataset, g.student)),
                None,
            )
    return out


def _pct(mean: float, std: float, n: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if n > 1 else f"{100 * mean:.2f}"


def _gain_text(g: float | None) -> str:
    return "" if g is None or not math.isfinite(g) else f"{100 * g:+.2f}"


def table_rows(groups: list[RunGroup]) -> list[list[str]]:
    """Cells of the Table-I-style comparison, one list per group (header excluded)."""
    rows = []
    for g in groups:
        seeds = ", ".join(str(r.get("seed", "?")) for r in g.runs)
        r0 = g.runs[0]
        rows.append(
            [
                g.label,
                g.dataset_label,
                f"{len(g.runs)} ({seeds})",
                f"{r0.get('params_m', math.nan):.2f}",
                f"{r0.get('gmacs', math.nan):.3f}",
                _pct(*g.stat("top1"), len(g.runs)),
                _pct(*g.stat("mAP"), len(g.runs)),
                _gain_text(g.gain("top1")),
                _gain_text(g.gain("mAP")),
            ]
        )
    return rows


TABLE_HEADER = [
    "Network",
    "Dataset",
    "Runs (seeds)",
    "Params (M)",
    "GMACs",
    "Top-1 (%)",
    "mAP (%)",
    "Δ top-1 vs no KD (points)",
    "Δ mAP vs no KD (points)",
]


def published_table(datasets: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the published results for `datasets` (each row's first cell names its source)."""
    from actdistill.analysis.published import published_rows

    rows = [r for d in dict.fromkeys(datasets) for r in published_rows(d)]
    metrics = list(dict.fromkeys(m for r in rows for m in r["metrics"]))
    names = {"top1": "Top-1", "top5": "Top-5"}
    header = ["Source", "Network", "Dataset", "Params (M)", "GFLOPs"] + [f"{names.get(m, m)} (%)" for m in metrics]
    body = []
    for r in rows:
        cells = [r["source"], r["model"], r["dataset"], _num(r.get("params_m")), _num(r.get("gflops"), 1)]
        body.append(cells + [_num(r.get(m)) for m in metrics])
    return header, body


def _num(v: Any, digits: int = 2) -> str:
    return "" if v is None else f"{float(v):.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]], text_cols: int = 3) -> str:
    """A Markdown table; the first `text_cols` columns left-aligned, the rest (numbers) right-aligned."""
    align = ["---"] * text_cols + ["---:"] * (len(header) - text_cols)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _mean_curve(g: RunGroup, key: str) -> list[float]:
    from actdistill.analysis.report import curve

    curves = [curve(r, key) for r in g.runs if r.get("history")]
    if not curves:
        return []
    n = max(len(c) for c in curves)
    arr = np.full((len(curves), n), np.nan)
    for i, c in enumerate(curves):
        arr[i, : len(c)] = c
    with np.errstate(all="ignore"):
        counts = np.isfinite(arr).sum(axis=0)
        mean = np.where(counts > 0, np.nansum(arr, axis=0) / np.maximum(counts, 1), np.nan)
    return [100 * v for v in mean]


def _seeds(n: int) -> str:
    return "1 seed" if n == 1 else f"mean of {n} seeds"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "run"


def per_class_gain(g: RunGroup) -> dict[str, float]:
    """Mean per-class AP of a KD group minus its baseline's, in points (classes both report)."""
    if g.baseline is None:
        return {}

    def mean_ap(group: RunGroup) -> dict[str, float]:
        maps = [r.get("per_class_ap") or {} for r in group.runs]
        names = set.intersection(*(set(m) for m in maps)) if maps else set()
        return {c: float(np.mean([m[c] for m in maps])) for c in names}

    kd, base = mean_ap(g), mean_ap(g.baseline)
    return {c: 100 * (kd[c] - base[c]) for c in sorted(set(kd) & set(base))}


def _plots(groups: list[RunGroup], out: Path) -> tuple[list[tuple[str, Path, str]], list[str]]:
    """Write the figures; returns (caption, path, alt) triples and extra Markdown lines (per-class lists)."""
    from actdistill.analysis.plots import plot_confusion_matrix, plot_curves, plot_per_class_bar

    figs: list[tuple[str, Path, str]] = []
    notes: list[str] = []
    for key, name in (("mAP", "test mAP"), ("top1", "test top-1 accuracy")):
        curves = {f"{g.label} ({g.dataset_label}, {_seeds(len(g.runs))})": _mean_curve(g, key) for g in groups}
        curves = {k: v for k, v in curves.items() if v}
        if curves:
            path = plot_curves(
                curves, out / f"curves_test_{key.lower()}.png", title=f"{name} per epoch", ylabel=f"{name} (%)"
            )
            figs.append((f"Training curves: {name} per epoch (mean over seeds)", path, f"{name} per epoch"))
    with_cm = [r for g in groups for r in g.runs if r.get("confusion_matrix") and r.get("class_names")]
    if with_cm:
        best = max(with_cm, key=lambda r: float(r["last"].get("mAP", -1.0)))
        name, seed, best_map = best.get("name", best["run_dir"]), best.get("seed", "?"), 100 * best["last"]["mAP"]
        title = f"Confusion matrix of the best run: {name} (seed {seed}, mAP {best_map:.2f} %)"
        path = plot_confusion_matrix(
            np.asarray(best["confusion_matrix"]), best["class_names"], out / "confusion_best.png", title=title
        )
        figs.append((title, path, "confusion matrix"))
    for g in groups:
        gains = per_class_gain(g)
        if not gains:
            continue
        path = plot_per_class_bar(
            gains, out / f"per_class_ap_gain_{_slug(g.label)}.png",
            title=f"Per-class AP change from distillation\n{g.label} vs {g.baseline.label}",
            ylabel="AP gain over the same student without KD (points)",
        )  # fmt: skip
        figs.append(
            (f"Per-class AP gain: {g.label} vs {g.baseline.label} ({g.dataset_label})", path, "per-class AP gain")
        )
        ranked = sorted(gains.items(), key=lambda kv: kv[1])
        best = ", ".join(f"{c} ({v:+.2f})" for c, v in ranked[::-1][:5] if v > 0) or "none"
        worst = ", ".join(f"{c} ({v:+.2f})" for c, v in ranked[:5] if v < 0) or "none"
        notes.append(f"* {g.label} vs {g.baseline.label}: gained most: {best}; lost most: {worst} (AP points).")
    return figs, notes


_CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;
padding:4px 8px}th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.published td{color:#555;background:#fafafa}figure{margin:1.5em 0}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:14px;color:#444}.tag{background:#fff3c4;border:1px solid #e0c060;border-radius:3px;padding:0 4px;
font-size:12px}"""


def html_table(header: list[str], rows: list[list[str]], cls: str = "", text_cols: int = 3) -> str:
    """An HTML table; cells from column `text_cols` on, and number-like cells, are right-aligned."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for r in rows:
        cells = "".join(
            f'<td class="n">{html.escape(c)}</td>' if k >= text_cols or re.fullmatch(r"[-+0-9. ±]+", c or "x") else
            f"<td>{html.escape(c)}</td>"
            for k, c in enumerate(r)
        )  # fmt: skip
        body.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def inline_html(text: str) -> str:
    """Escape `text` and render its inline Markdown: `code` and **bold**."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def html_figure(path: Path, caption: str, alt: str = "") -> str:
    """A figure with the PNG at `path` embedded as a data URI (the page stays one self-contained file)."""
    return (
        f'<figure><img src="{_data_uri(path)}" alt="{html.escape(alt or caption)}"><figcaption>'
        f"{inline_html(caption)}</figcaption></figure>"
    )


def html_page(title: str, body: list[str]) -> str:
    """A self-contained HTML page (inline CSS, no scripts or external links) around the `body` fragments."""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>"
    )


PUBLISHED_TITLE = "Published results (from the papers, not produced by this toolkit)"


def published_note(groups: list[RunGroup]) -> str:
    """The sentence under the published table: where the numbers come from and whether they compare with the runs."""
    note = "Numbers as printed in the papers (percent), on the real datasets, shown for reference."
    synthetic = sorted({g.dataset for g in groups if g.synthetic})
    if synthetic:
        note += (
            f" Rows labelled synthetic in the table above trained on generated stick figures written in the "
            f"{', '.join(synthetic)} folder layout, not on the real dataset: their numbers are not comparable with "
            "these."
        )
    return note


def write_report(run_dirs: list[str | Path], out: str | Path) -> dict[str, Path]:
    """Write `out/report.md`, `out/report.html` (self-contained) and the PNGs; returns their paths by name."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(load_runs(run_dirs))
    rows = table_rows(groups)
    pub_header, pub_rows = published_table([g.dataset for g in groups])
    figs, notes = _plots(groups, out)
    intro = (
        f"{sum(len(g.runs) for g in groups)} runs in {len(groups)} settings. Metrics are on the test split at the "
        "last epoch (as paper 1 reports them); with several seeds a cell is mean ± sample standard deviation "
        "(n − 1). Δ columns: mean of the distilled setting minus mean of the same student and dataset trained "
        "without a teacher (method vanilla), in percentage points."
    )
    md = ["# actdistill report", "", intro, "", markdown_table(TABLE_HEADER, rows), ""]
    if pub_rows:
        md += [f"## {PUBLISHED_TITLE}", "", published_note(groups), "", markdown_table(pub_header, pub_rows), ""]
    if notes:
        md += ["## Classes that gained or lost most from distillation", "", *notes, ""]
    md += [f"![{alt}]({p.name})\n\n*{cap}*\n" for cap, p, alt in figs]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md))
    body = [
        f"<h1>actdistill report</h1><p>{html.escape(intro)}</p>",
        "<h2>Your runs</h2>",
        html_table(TABLE_HEADER, rows),
    ]
    if pub_rows:
        body += [
            f'<h2>{html.escape(PUBLISHED_TITLE)} <span class="tag">published</span></h2>',
            f"<p>{html.escape(published_note(groups))}</p>",
            html_table(pub_header, pub_rows, "published"),
        ]
    if notes:
        items = "".join(f"<li>{html.escape(n[2:])}</li>" for n in notes)
        body.append(f"<h2>Classes that gained or lost most from distillation</h2><ul>{items}</ul>")
    body.append("<h2>Figures</h2>")
    body += [html_figure(p, cap, alt) for cap, p, alt in figs]
    page = html_page("actdistill report", body)
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return {"markdown": md_path, "html": html_path, **{p.stem: p for _, p, _ in figs}}


def cmd_report(args: argparse.Namespace) -> int:
    """CLI entry of `actdistill report`."""
    paths = write_report(args.run_dirs, args.out)
    print(paths["markdown"].read_text().split("\n\n")[2])
    print(f"\nreport: {paths['html']}  and {paths['markdown']}")
    return 0
