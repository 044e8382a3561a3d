"""`actdistill compare`: one student per method, identical settings, a Table-1 report with honest statistics."""

import json
import statistics
from pathlib import Path

import pytest
import yaml
from conftest import TINY_RUN

import actdistill.apps.compare as compare_mod
from actdistill.cli import main
from actdistill.config import parse_overrides
from actdistill.errors import ActdistillError

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "video"


def _spec_file(tmp_path, root, **changes):
    base = parse_overrides([*TINY_RUN, f"data.root={root}", "data.batch_size=8"])
    base["teacher"] = {"checkpoint": "{teacher}"}
    spec = {
        "name": "tiny",
        "out_dir": str(tmp_path / "out"),
        "seeds": [0, 1],
        "datasets": {"synth40": {"root": str(root)}},
        "prepare": {"teacher": {"student": {"name": "resnet_demo"}, "teacher": {"checkpoint": ""}}},
        "base": base,
        "methods": [{"method": {"name": "vanilla"}}, {"label": "kd_t4", "method": {"name": "kd", "temperature": 4}}],
        **changes,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_compare_trains_every_method_and_reports_seed_statistics(tiny_stanford40, tmp_path, capsys):
    path = _spec_file(tmp_path, tiny_stanford40)
    assert main(["compare", str(path)]) == 0
    out = tmp_path / "out"
    teacher_cfg = yaml.safe_load((out / "synth40" / "kd_t4_seed1" / "config.yaml").read_text())
    assert teacher_cfg["teacher"]["checkpoint"] == str(out / "synth40" / "teacher" / "checkpoints" / "last.pt")
    assert teacher_cfg["method"] == {"name": "kd", "temperature": 4} and teacher_cfg["train"]["seed"] == 1
    summary = json.loads((out / "summary.json").read_text())["summary"]["synth40"]
    assert list(summary) == ["teacher", "vanilla", "kd_t4"]
    top1 = [100 * json.loads((out / "synth40" / f"kd_t4_seed{s}" / "results.json").read_text())["last"]["top1"]
            for s in (0, 1)]  # fmt: skip
    assert summary["kd_t4"]["top1"] == pytest.approx(statistics.mean(top1))
    assert summary["kd_t4"]["top1_std"] == pytest.approx(statistics.stdev(top1))
    report = (out / "report.md").read_text()
    assert "| kd_t4 |" in report and "synth40 top-1 (%)" in report and (out / "curves_synth40.png").stat().st_size > 0
    assert "kd_t4" in capsys.readouterr().out


def test_compare_reuses_finished_runs(tiny_stanford40, tmp_path, monkeypatch):
    path = _spec_file(tmp_path, tiny_stanford40, seeds=[0], methods=[{"method": {"name": "vanilla"}}])
    spec = compare_mod.load_comparison(path)
    compare_mod.compare(spec)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(compare_mod, "fit", no_training)
    assert compare_mod.compare(spec).exists()


def test_every_run_is_checked_before_training(tiny_stanford40, tmp_path, monkeypatch):
    bad = [{"method": {"name": "vanilla"}}, {"method": {"name": "kd", "temprature": 4}}]
    spec = compare_mod.load_comparison(_spec_file(tmp_path, tiny_stanford40, methods=bad))
    monkeypatch.setattr(compare_mod, "fit", lambda *a, **k: pytest.fail("trained before checking"))
    with pytest.raises(ActdistillError, match="no hyper-parameter 'temprature'.*temperature"):
        compare_mod.compare(spec)
    with pytest.raises(ActdistillError, match="unknown keys \\['method'\\]"):
        compare_mod.load_comparison(_spec_file(tmp_path, tiny_stanford40, method={"name": "kd"}))


@pytest.mark.parametrize("name", ["table1.yaml", "table1_ucf101_hmdb51.yaml"])
def test_shipped_comparisons_plan(name):
    spec = compare_mod.load_comparison(CONFIGS / name)
    runs = compare_mod.plan(spec)
    labels = {label for _, label, _, _ in runs}
    assert {"vanilla", "kd", "ctkd", "fn", "mgd", "simkd", "at", "collab", "generative"} <= labels
    for *_, raw in runs:  # paper 2's CVAE is sized for the clip the data section gives
        if raw["method"]["name"] in ("generative", "generative_teacher"):
            data = {**raw["data"]}
            assert list(raw["method"]["input_size"]) == [data["clip_len"], data["image_size"], data["image_size"]]


def test_placeholders_name_checkpoints_and_plain_weights():
    paths = {"teacher": "runs/x/teacher/checkpoints/last.pt"}
    raw = {
        "teacher": {"checkpoint": "{teacher}"},
        "student": {"pretrained": "{teacher.weights}"},
        "n": [1, "{teacher}"],
    }
    assert compare_mod._substitute(raw, paths) == {
        "teacher": {"checkpoint": "runs/x/teacher/checkpoints/last.pt"},
        "student": {"pretrained": "runs/x/teacher/student_last.safetensors"},
        "n": [1, "runs/x/teacher/checkpoints/last.pt"],
    }
