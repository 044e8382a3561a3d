"""`actdistill report` from hand-written results.json fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actdistill.analysis.html_report import group_runs, load_runs, mean_std, write_report
from actdistill.errors import ActdistillError

CLASSES = ["applauding", "jumping", "running"]


def _results(name: str, student: str, method: str, seed: int, top1: float, mAP: float, ap: list[float]) -> dict:
    history = [
        {
            "epoch": e,
            "lr": 0.001,
            "train": {"loss": 1.0 / e, "acc": 0.3 * e},
            "test": {"top1": top1 * e / 3, "mAP": mAP * e / 3},
        }
        for e in (1, 2, 3)
    ]
    return {
        "name": name,
        "dataset": "stanford40",
        "student": student,
        "teacher": "from checkpoint" if method != "vanilla" else None,
        "method": {"name": method, **({"temperature": 4.0} if method == "kd" else {})},
        "params_m": 3.5 if student == "pvt_v2_demo" else 12.0,
        "gmacs": 0.1,
        "input_shape": [1, 3, 32, 32],
        "epochs": 3,
        "seed": seed,
        "best": {"epoch": 3, "value": mAP, "metrics": {"top1": top1, "mAP": mAP}},
        "last": {"top1": top1, "top5": 1.0, "mean_class_accuracy": top1, "mAP": mAP},
        "per_class_ap": dict(zip(CLASSES, ap)),
        "confusion_matrix": [[3, 1, 0], [0, 4, 0], [1, 0, 3]],
        "class_names": CLASSES,
        "history": history,
    }


RUNS = {
    "teacher": _results("teacher", "convnext_demo", "vanilla", 0, 0.90, 0.92, [0.9, 0.9, 0.9]),
    "plain_s0": _results("plain", "pvt_v2_demo", "vanilla", 0, 0.60, 0.70, [0.5, 0.8, 0.6]),
    "plain_s1": _results("plain", "pvt_v2_demo", "vanilla", 1, 0.64, 0.74, [0.7, 0.8, 0.6]),
    "kd_s0": _results("kd", "pvt_v2_demo", "kd", 0, 0.70, 0.80, [0.9, 0.7, 0.6]),
    "kd_s1": _results("kd", "pvt_v2_demo", "kd", 1, 0.76, 0.82, [0.9, 0.7, 0.8]),
}


@pytest.fixture
def run_dirs(tmp_path: Path) -> list[Path]:
    dirs = []
    for key, res in RUNS.items():
        d = tmp_path / "runs" / key
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(res))
        dirs.append(d)
    return dirs


def test_groups_mean_std_and_gain(run_dirs: list[Path]) -> None:
    groups = group_runs(load_runs(run_dirs))
    assert [g.label for g in groups] == ["convnext_demo", "pvt_v2_demo", "pvt_v2_demo + kd"]
    plain, kd = groups[1], groups[2]
    # by hand: top-1 0.70, 0.76 -> mean 0.73, sample std |0.76-0.70|/sqrt(2) = 0.0424264
    assert kd.stat("top1") == pytest.approx((0.73, 0.06 / 2**0.5))
    assert plain.stat("mAP") == pytest.approx((0.72, 0.04 / 2**0.5))
    assert kd.baseline is plain and groups[0].baseline is None
    assert kd.gain("top1") == pytest.approx(0.73 - 0.62)
    assert kd.gain("mAP") == pytest.approx(0.81 - 0.72)
    assert mean_std([0.5]) == (0.5, 0.0)


def test_report_html_is_self_contained(run_dirs: list[Path], tmp_path: Path) -> None:
    paths = write_report(run_dirs, tmp_path / "report")
    page = paths["html"].read_text()
    md = paths["markdown"].read_text()
    for text in (page, md):
        assert "73.00 ± 4.24" in text  # KD top-1 mean ± std in percent
        assert "+11.00" in text and "+9.00" in text  # gains over the vanilla rows, points
        assert "Δ top-1 vs no KD" in text
    figures = [p for k, p in paths.items() if k not in ("markdown", "html")]
    assert {"curves_test_map", "curves_test_top1", "confusion_best"} <= set(paths)
    assert any(k.startswith("per_class_ap_gain") for k in paths)
    assert page.count('<img src="data:image/png;base64,') == len(figures) >= 4
    assert 'src="http' not in page and "<link" not in page and "<script" not in page
    # per-class AP gain of KD over plain: applauding +30, jumping -10, running 0 points
    assert "applauding (+30.00)" in md and "jumping (-10.00)" in md


def test_published_rows_shown_for_stanford40(run_dirs: list[Path], tmp_path: Path) -> None:
    page = write_report(run_dirs, tmp_path / "r")["html"].read_text()
    assert "published: paper 1, Table I" in page
    assert "89.08" in page and "PVT-v2 + KD" in page
    assert 'class="published"' in page


def test_missing_results_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(ActdistillError, match="results.json"):
        write_report([tmp_path / "nope"], tmp_path / "r")


def test_cli_registers_report_and_analyze(run_dirs: list[Path], tmp_path: Path) -> None:
    from actdistill.cli import main, parse

    argv = ["report", *map(str, run_dirs), "--out", str(tmp_path / "cli")]
    assert parse(argv).handler == "actdistill.analysis.html_report:cmd_report"
    assert main(argv) == 0 and (tmp_path / "cli" / "report.html").is_file()
    args = parse(["analyze", "--teacher", "t.pt", "--student", "a.pt", "--student", "b.pt", "--out", "o"])
    assert args.handler == "actdistill.analysis.analyze:cmd_analyze"
    assert args.student == ["a.pt", "b.pt"] and args.max_samples == 512 and args.data == []
