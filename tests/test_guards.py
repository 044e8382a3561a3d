"""Guards that stop a run early with one line: non-finite loss, teacher/student mismatches, unknown config keys."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from conftest import TINY_RUN

import actdistill.engine.build as build_module
from actdistill.cli import main
from actdistill.distill.logit import Vanilla
from actdistill.models import create_model
from actdistill.models.renormalize import Renormalize
from actdistill.utils.checkpoint import load_checkpoint

COMMON = [*TINY_RUN, "data.batch_size=8"]


@pytest.fixture(scope="module")
def data_root(tiny_stanford40):
    return tiny_stanford40


def _error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit code 2 and exactly one error line on stderr (besides log lines); return it."""
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("actdistill: error:")]
    assert len(lines) == 1, lines
    return lines[0]


def test_nonfinite_loss_stops_with_step_parts_and_checkpoint(data_root, tmp_path, capsys, monkeypatch):
    original = Vanilla.forward
    calls = []

    def nan_from_second_step(self, batch):
        out = original(self, batch)
        calls.append(1)
        if len(calls) >= 2:
            out.parts["ce"] = out.parts["ce"] * float("nan")
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(Vanilla, "forward", nan_from_second_step)
    out = tmp_path / "run"
    line = _error(capsys, ["train", f"data.root={data_root}", *COMMON, f"train.out_dir={out}"])
    saved = out / "checkpoints" / "nonfinite.pt"
    assert line == (
        "actdistill: error: non-finite loss at epoch 1, stage 'main', step 1 (optimizer step 1): ce=nan; "
        f"state before the step saved to {saved}. Lower optim.lr, set train.grad_clip, or try train.precision=fp32"
    )
    ckpt = load_checkpoint(saved)  # usable for inspection: the weights before the bad step, all finite
    assert all(torch.isfinite(v).all() for v in ckpt["student"].values() if v.is_floating_point())


def _teacher_file(path, name: str, num_classes: int, recorded_name: str | None = None):
    model = create_model(name, num_classes)
    spec = {"name": recorded_name or name, "num_classes": num_classes, "kwargs": {}}
    torch.save({"student": model.state_dict(), "model": spec}, path)
    return path


def test_teacher_with_other_class_count_is_refused_before_training(data_root, tmp_path, capsys):
    teacher = _teacher_file(tmp_path / "t4.pt", "convnext_demo", 4)
    out = tmp_path / "run"
    line = _error(
        capsys,
        [
            "train",
            f"data.root={data_root}",
            *COMMON,
            "method.name=kd",
            f"teacher.checkpoint={teacher}",
            f"train.out_dir={out}",
        ],
    )
    assert line == (
        f"actdistill: error: teacher.checkpoint {teacher} predicts 4 classes but the dataset has 3; "
        "train the teacher on the same dataset (same class list)"
    )
    assert not (out / "checkpoints" / "last.pt").exists() and not (out / "metrics.jsonl").exists()


def test_teacher_with_other_normalisation_gets_renormalised_input(data_root, tmp_path, monkeypatch, caplog):
    seen = {}
    load, build = build_module.load_teacher, build_module.build_method

    def other_stats_teacher(cfg, classes, extra_kwargs):
        teacher, spec = load(cfg, classes, extra_kwargs)
        teacher.pretrained_cfg = dataclasses.replace(teacher.pretrained_cfg, mean=(0.5, 0.5, 0.5), std=(0.25,) * 3)
        return teacher, spec

    def spy(method_cfg, student, teacher, **kwargs):
        seen["teacher"] = teacher
        return build(method_cfg, student, teacher, **kwargs)

    monkeypatch.setattr(build_module, "load_teacher", other_stats_teacher)
    monkeypatch.setattr(build_module, "build_method", spy)
    overrides = [f"data.root={data_root}", *COMMON, "method.name=kd", "teacher.name=convnext_demo"]
    with caplog.at_level(logging.INFO, logger="actdistill"):
        assert main(["train", *overrides, f"train.out_dir={tmp_path / 'run'}"]) == 0
    assert "teacher expects mean/std (0.5, 0.5, 0.5)/(0.25, 0.25, 0.25); re-normalising its input" in caplog.text
    wrapped = seen["teacher"]
    assert isinstance(wrapped, Renormalize)
    raw = torch.rand(2, 3, 32, 32)  # an image in [0, 1]
    mean_s, std_s = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225])
    as_student = (raw - mean_s) / std_s.view(1, 3, 1, 1)
    as_teacher = (raw - 0.5) / 0.25
    with torch.no_grad():
        torch.testing.assert_close(wrapped(as_student), wrapped.model(as_teacher), rtol=1e-4, atol=1e-5)


def test_unknown_config_key_through_the_cli_suggests_the_right_one(data_root, tmp_path, capsys):
    line = _error(capsys, ["train", f"data.root={data_root}", "train.epoch=3", f"train.out_dir={tmp_path}"])
    assert line.startswith("actdistill: error: command line: unknown key 'train.epoch'. Did you mean: epochs")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data:\n  batch_sise: 8\n")
    line = _error(capsys, ["train", str(recipe)])
    assert line.startswith(f"actdistill: error: {recipe}: unknown key 'data.batch_sise'. Did you mean: batch_size")
    line = _error(capsys, ["train", f"data.root={data_root}", *COMMON, "method.name=kd", "method.temprature=2"])
    assert "method 'kd' has no hyper-parameter 'temprature'. Did you mean: temperature?" in line


def test_bad_accumulation_and_save_settings(data_root, tmp_path, capsys):
    base = ["train", f"data.root={data_root}", *COMMON, f"train.out_dir={tmp_path}"]
    assert _error(capsys, [*base, "train.accumulate_steps=0"]).endswith(
        " train.accumulate_steps must be at least 1; got 0"
    )
    assert _error(capsys, [*base, "train.save_every_steps=-1"]).endswith(
        " train.save_every_steps must be at least 0; got -1"
    )
    assert not (tmp_path / "checkpoints").exists()  # refused before any work
