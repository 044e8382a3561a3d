"""Tiny end-to-end detection: synth → features → teacher → distilled student → eval (metrics, checkpoints, CLI)."""

from __future__ import annotations

import json

import pytest
import torch
from actdistill.detect.train import evaluate_checkpoint, load_detector, load_recipe, train_detection

from actdistill.cli import main
from actdistill.detect.features import extract_features, load_backbone
from actdistill.detect.synthetic import write_synthetic_detection
from actdistill.errors import ActdistillError
from actdistill.eval.detection import THUMOS14_TIOU_THRESHOLDS
from actdistill.utils.checkpoint import load_checkpoint

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    synth = write_synthetic_detection(
        root / "synth", num_val=3, num_test=2, size=16, seconds=(4.0, 6.0), segment_seconds=(1.0, 2.0), seed=1
    )
    model = load_backbone("i3d", 5, channel_scale=0.0625)
    extract_features(
        model, synth / "videos", root / "feats", backbone="i3d", size=16, window=8, stride=2, progress=False
    )
    return root, synth


def _overrides(root, synth, out, **extra) -> list[str]:
    base = {
        "data.features": root / "feats",
        "data.annotations": synth / "annotations",
        "data.classes": synth / "classes.txt",
        "data.crop_len": 16,
        "data.batch_size": 2,
        "model.embed_dim": 16,
        "train.epochs": 2,
        "train.eval_every": 1,
        "train.out_dir": root / out,
        **extra,
    }
    return [f"{k}={v}" for k, v in base.items()]


def test_train_teacher_then_distil_student_and_eval(data, capsys):
    root, synth = data
    cfg = load_recipe("configs/detection/synth_teacher.yaml", _overrides(root, synth, "teacher"))
    result = train_detection(cfg)
    assert set(result["map"]) == {f"{t:g}" for t in THUMOS14_TIOU_THRESHOLDS}
    assert 0.0 <= result["average_map"] <= 1.0
    lines = [json.loads(x) for x in (root / "teacher" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2] and all("average_map" in x and "bg" in x for x in lines)
    for name in ("best.pt", "last.pt"):
        assert (root / "teacher" / "checkpoints" / name).is_file()
    assert not list((root / "teacher" / "checkpoints").glob(".*tmp"))
    teacher, ckpt = load_detector(root / "teacher" / "checkpoints" / "last.pt")
    assert ckpt["classes"] == (synth / "classes.txt").read_text().split() and teacher.config.attention
    with pytest.raises(ActdistillError, match="already holds a run"):
        train_detection(cfg)

    student_cfg = load_recipe(
        "configs/detection/synth_student_att.yaml",
        _overrides(root, synth, "student", **{"teacher.checkpoint": root / "teacher" / "checkpoints" / "last.pt"}),
    )
    student_result = train_detection(student_cfg)
    assert 0.0 <= student_result["average_map"] <= 1.0
    line = json.loads((root / "student" / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["loss"] == pytest.approx(sum(line[k] for k in ("cls", "reg", "bg", "att")), rel=1e-4)

    report = evaluate_checkpoint(root / "student" / "checkpoints" / "best.pt", ["eval.protocol=thumos14"])
    assert report["protocol"] == "thumos14" and set(report["map"]) == set(result["map"])
    out = root / "report.json"
    assert main(["detect", "eval", str(root / "student" / "checkpoints" / "best.pt"), "--out", str(out)]) == 0
    assert "mAP" in capsys.readouterr().out and json.loads(out.read_text())["predictions"] is not None


def test_recipe_errors_name_the_problem(data):
    root, synth = data
    with pytest.raises(ActdistillError, match="unknown key"):
        load_recipe(None, ["train.epoch=3"])
    with pytest.raises(ActdistillError, match="not found"):
        load_recipe("configs/detection/nope.yaml")
    cfg = load_recipe(
        "configs/detection/synth_student_kd.yaml", _overrides(root, synth, "x", **{"teacher.checkpoint": ""})
    )
    with pytest.raises(ActdistillError, match="needs a teacher"):
        train_detection(cfg)


def test_generative_teacher_then_generative_kd_student_run_both_stages(data, caplog):
    root, synth = data
    teacher_cfg = load_recipe(
        "configs/detection/synth_teacher_gen.yaml", _overrides(root, synth, "gen_teacher", **{"train.epochs": 1})
    )
    train_detection(teacher_cfg)
    t_path = root / "gen_teacher" / "checkpoints" / "last.pt"
    assert "cvae" in load_checkpoint(t_path)["method_state"]["extras"]
    cfg = load_recipe(
        "configs/detection/synth_student_gen.yaml",
        _overrides(root, synth, "gen_student", **{"train.epochs": 1, "teacher.checkpoint": t_path}),
    )
    with caplog.at_level("WARNING"):
        result = train_detection(cfg)
    assert 0.0 <= result["average_map"] <= 1.0 and "no CVAE" not in caplog.text  # the teacher CVAE was loaded
    line = json.loads((root / "gen_student" / "metrics.jsonl").read_text().splitlines()[-1])
    stage1, stage2 = ("cvae_mse", "cvae_kld", "kd_gen"), ("cls", "reg", "bg", "recon", "att")
    assert {k for k in line if k.startswith("generative/")} == {f"generative/{k}" for k in ("loss", *stage1)}
    assert {k for k in line if k.startswith("attention/")} == {f"attention/{k}" for k in ("loss", *stage2)}
    for stage, parts in (("generative", stage1), ("attention", stage2)):
        assert line[f"{stage}/loss"] == pytest.approx(sum(line[f"{stage}/{k}"] for k in parts), rel=1e-4)
    extras = load_checkpoint(root / "gen_student" / "checkpoints" / "last.pt")["method_state"]
    assert {"cvae", "teacher_cvae"} <= set(extras["extras"])
