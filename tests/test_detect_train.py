"""Tiny end-to-end detection through the one engine: synth → features → teacher → distilled student → eval.

Detection recipes (configs/detection/) train with `fit(load_config(recipe, overrides))` like every other task
(task `detection`, dataset `detection_features`) and are evaluated with `engine.evaluate.evaluate_checkpoint`.
"""

from __future__ import annotations

import json

import pytest
from conftest import TINY_RUN, detection_data_overrides

from actdistill.cli import main
from actdistill.config import load_config
from actdistill.engine.evaluate import evaluate_checkpoint, load_predictor
from actdistill.engine.fit import fit
from actdistill.errors import ActdistillError
from actdistill.eval.detection import THUMOS14_TIOU_THRESHOLDS
from actdistill.models.temporal_detector import TemporalDetector
from actdistill.utils.checkpoint import load_checkpoint


def _cfg(recipe: str | None, tiny_detection, out, **extra):
    """A recipe of configs/detection/ on the tiny feature set: 16-wide detectors (the recipe's preset and attention
    kept), 16-step crops, 2 epochs on CPU, a third of the training videos held out for model selection."""
    base = {
        "data.crop_len": 16,
        "data.batch_size": 2,
        "data.num_workers": 0,
        "data.val_fraction": 0.34,
        "train.epochs": 2,
        "train.eval_every": 1,
        "sched.warmup_epochs": 1,
        "train.out_dir": out,
        **extra,
    }
    overrides = [*detection_data_overrides(tiny_detection), *TINY_RUN[4:7], *(f"{k}={v}" for k, v in base.items())]
    cfg = load_config(recipe, overrides)
    # `student.kwargs={...}` on the command line replaces the recipe's whole mapping (B4), so set the width here.
    cfg.student.kwargs = {**cfg.student.kwargs, "embed_dim": 16}
    return cfg


def _lines(folder) -> list[dict]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def test_train_teacher_then_distil_student_and_eval(tiny_detection, tmp_path, capsys):
    _, synth = tiny_detection
    cfg = _cfg("configs/detection/synth_teacher.yaml", tiny_detection, tmp_path / "teacher")
    assert cfg.student.kwargs == {"preset": "large", "attention": True, "embed_dim": 16}  # merged over the recipe's
    result = fit(cfg)
    assert result["task"] == "detection" and result["selected_on"] == "val"
    assert set(result["map"]) == {f"{t:g}" for t in THUMOS14_TIOU_THRESHOLDS}
    assert 0.0 <= result["last"]["average_map"] <= 1.0
    lines = _lines(tmp_path / "teacher")
    assert [x["epoch"] for x in lines] == [1, 2]
    assert all("average_map" in x["test"] and "average_map" in x["val"] and "bg" in x["train"] for x in lines)
    for name in ("best.pt", "last.pt"):
        assert (tmp_path / "teacher" / "checkpoints" / name).is_file()
    assert not list((tmp_path / "teacher" / "checkpoints").glob(".*tmp"))
    last = tmp_path / "teacher" / "checkpoints" / "last.pt"
    teacher = load_predictor(last)
    assert isinstance(teacher, TemporalDetector) and teacher.config.attention and teacher.config.embed_dim == 16
    ckpt = load_checkpoint(last)
    assert ckpt["class_names"] == (synth / "classes.txt").read_text().split() and ckpt["task"] == "detection"
    assert "method_state" not in ckpt and "detector" not in ckpt  # one checkpoint format for every task
    with pytest.raises(ActdistillError, match="already holds a run"):
        fit(cfg)

    student_cfg = _cfg(
        "configs/detection/synth_student_att.yaml", tiny_detection, tmp_path / "student", **{"teacher.checkpoint": last}
    )
    student_result = fit(student_cfg)
    assert 0.0 <= student_result["last"]["average_map"] <= 1.0
    train = _lines(tmp_path / "student")[-1]["train"]
    assert train["loss"] == pytest.approx(sum(train[k] for k in ("cls", "reg", "bg", "att")), rel=1e-4)

    best = tmp_path / "student" / "checkpoints" / "best.pt"
    report = evaluate_checkpoint(best, ["eval.protocol=thumos14"])
    assert report["protocol"] == "thumos14" and set(report["map"]) == set(result["map"])
    assert report["num_samples"] == 2  # the test videos
    # Stand-alone evaluation scores the network training evaluated: last.pt gives the run's last test mAP.
    again = evaluate_checkpoint(tmp_path / "student" / "checkpoints" / "last.pt")
    assert again["average_map"] == pytest.approx(student_result["last"]["average_map"], abs=1e-9)
    out = tmp_path / "report.json"
    assert main(["detect", "eval", str(best), "--out", str(out)]) == 0
    assert "average_map" in capsys.readouterr().out and json.loads(out.read_text())["predictions"] is not None


def test_recipe_errors_name_the_problem(tiny_detection, tmp_path):
    with pytest.raises(ActdistillError, match="command line: unknown key 'train.epoch'"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ActdistillError, match="not found"):
        load_config("configs/detection/nope.yaml")
    cfg = _cfg("configs/detection/synth_student_kd.yaml", tiny_detection, tmp_path / "x", **{"teacher.checkpoint": ""})
    with pytest.raises(ActdistillError, match="needs a teacher"):
        fit(cfg)
    with pytest.raises(ActdistillError, match="'detection_kd' is a detection method"):
        image_run = [*TINY_RUN, "data.root=x", f"train.out_dir={tmp_path / 'y'}"]
        fit(load_config(None, [*image_run, "method.name=detection_kd"]))
    cfg = _cfg("configs/detection/synth_teacher.yaml", tiny_detection, tmp_path / "z", **{"method.name": "kd"})
    with pytest.raises(ActdistillError, match="'kd' is a classification method"):
        fit(cfg)
    cfg = _cfg("configs/detection/synth_teacher.yaml", tiny_detection, tmp_path / "w", **{"train.best_metric": "mAP"})
    with pytest.raises(ActdistillError, match="not a metric of the detection task"):
        fit(cfg)
    assert not list(tmp_path.glob("*/checkpoints/last.pt"))


def test_generative_teacher_then_generative_kd_student_run_both_stages(tiny_detection, tmp_path, caplog):
    one_epoch = {"train.epochs": 1, "sched.warmup_epochs": 0}
    recipe = "configs/detection/synth_teacher_gen.yaml"
    teacher_cfg = _cfg(recipe, tiny_detection, tmp_path / "gen_teacher", **one_epoch)
    fit(teacher_cfg)
    t_path = tmp_path / "gen_teacher" / "checkpoints" / "last.pt"
    assert "cvae" in load_checkpoint(t_path)["method"]["extras"]
    cfg = _cfg(
        "configs/detection/synth_student_gen.yaml", tiny_detection, tmp_path / "gen_student",
        **one_epoch, **{"teacher.checkpoint": t_path, "method.teacher_extras": t_path},
    )  # fmt: skip
    with caplog.at_level("WARNING"):
        result = fit(cfg)
    assert 0.0 <= result["last"]["average_map"] <= 1.0 and "no CVAE" not in caplog.text  # the teacher CVAE loaded
    train = _lines(tmp_path / "gen_student")[-1]["train"]
    stage1, stage2 = ("cvae_mse", "cvae_kld", "kd_gen"), ("cls", "reg", "bg", "recon", "att")
    assert {k for k in train if k.startswith("generative/")} == {f"generative/{k}" for k in ("loss", *stage1)}
    metrics = ("recon_raw", "recon_weight")  # logged, not optimised
    assert {k for k in train if k.startswith("attention/")} == {f"attention/{k}" for k in ("loss", *stage2, *metrics)}
    for stage, parts in (("generative", stage1), ("attention", stage2)):
        assert train[f"{stage}/loss"] == pytest.approx(sum(train[f"{stage}/{k}"] for k in parts), rel=1e-4)
    extras = load_checkpoint(tmp_path / "gen_student" / "checkpoints" / "last.pt")["method"]
    assert {"cvae", "teacher_cvae"} <= set(extras["extras"])
