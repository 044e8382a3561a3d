"""Bad inputs: per-sample damage is skipped and counted; anything else fails early with one line (docs/errors.md)."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import shutil

import pytest
import torch
from conftest import TINY_RUN

from actdistill.cli import main
from actdistill.models import create_model

GARBAGE = b"this is not a checkpoint\n" * 100  # fixed bytes: random ones fail with varying exception types

COMMON = [*TINY_RUN, "data.batch_size=4"]
# The exception class torch's weights-only unpickler raises on garbage depends on the torch version (UnpicklingError,
# IndexError, ...): the line names it, says the file is corrupt, and nothing else.
_CORRUPT = re.compile(
    r"actdistill: error: checkpoint \S+ could not be read \(\w+\); it is corrupt or not a PyTorch file"
)


@pytest.fixture(scope="module")
def pristine(tiny_stanford40):
    return tiny_stanford40


@pytest.fixture
def data_root(pristine, tmp_path):
    """A private copy that a test may damage."""
    return shutil.copytree(pristine, tmp_path / "data")


def _error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit code 2 and exactly one error line on stderr (besides log lines); return it."""
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("actdistill: error:")]
    assert len(lines) == 1, lines
    return lines[0]


def _train(root, out, *extra: str) -> list[str]:
    return ["train", f"data.root={root}", *COMMON, f"train.out_dir={out}", *extra]


def test_corrupt_jpeg_is_skipped_and_counted(data_root, tmp_path, caplog):
    train_img = data_root / "JPEGImages" / (data_root / "ImageSplits" / "train.txt").read_text().split()[0]
    test_img = data_root / "JPEGImages" / (data_root / "ImageSplits" / "test.txt").read_text().split()[0]
    train_img.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    test_img.write_bytes(b"")
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert main(_train(data_root, out)) == 0
    history = json.loads((out / "results.json").read_text())["history"]
    assert history[0]["train"]["skipped"] == 1 and history[0]["test"]["skipped"] == 1
    assert f"skipping unreadable image {train_img}" in caplog.text
    assert f"skipping unreadable image {test_img}" in caplog.text
    assert "epoch 1: skipped 1 unreadable samples" in caplog.text


def test_missing_split_file(data_root, tmp_path, capsys):
    (data_root / "ImageSplits" / "test.txt").unlink()
    assert _error(capsys, _train(data_root, tmp_path / "run")) == (
        f"actdistill: error: {data_root}/ImageSplits/test.txt not found: a Stanford 40 root must contain JPEGImages/ "
        "and ImageSplits/ (train.txt, test.txt, actions.txt); set data.root to that folder"
    )


def test_empty_dataset(data_root, tmp_path, capsys):
    (data_root / "ImageSplits" / "train.txt").write_text("")
    assert _error(capsys, _train(data_root, tmp_path / "run")) == (
        f"actdistill: error: dataset 'stanford40' at {data_root} has an empty train or test split "
        "(0 train / 12 test samples); check data.root and the split files"
    )


def test_split_line_with_an_unknown_action_names_file_and_line(data_root, tmp_path, capsys):
    split = data_root / "ImageSplits" / "train.txt"
    lines = split.read_text().splitlines()
    lines.insert(2, "flying_001.jpg")
    split.write_text("\n".join(lines) + "\n")
    line = _error(capsys, _train(data_root, tmp_path / "run"))
    assert line.startswith(
        f"actdistill: error: {split}:3: action 'flying' of flying_001.jpg is not in ImageSplits/actions.txt."
    )
    assert line.endswith("Add it there or remove the line.")


def test_resume_from_a_garbage_checkpoint(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(GARBAGE)
    line = _error(capsys, [*_train(data_root, out), "--resume"])
    assert _CORRUPT.fullmatch(line) and f"checkpoint {out}/checkpoints/last.pt could not be read (" in line, line


def test_resume_from_another_runs_checkpoint(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train(data_root, out, "student.name=convnext_demo")) == 0
    capsys.readouterr()
    assert _error(capsys, [*_train(data_root, out), "--resume"]) == (
        f"actdistill: error: {out}/checkpoints/last.pt holds a 'convnext_demo' student but student.name is "
        "'pvt_v2_demo'; resume with the run's own config (its config.yaml) or choose another train.out_dir"
    )
    torch.save({"student": create_model("pvt_v2_demo", 3).state_dict()}, out / "checkpoints" / "last.pt")
    assert _error(capsys, [*_train(data_root, out), "--resume"]) == (
        f"actdistill: error: {out}/checkpoints/last.pt is not a training checkpoint (no optimizers, schedulers, "
        "epoch, rng, history, best); start without --resume or use --overwrite"
    )


def test_teacher_checkpoint_that_is_not_a_checkpoint(data_root, tmp_path, capsys):
    junk = tmp_path / "teacher.pt"
    junk.write_bytes(GARBAGE)
    kd = ["method.name=kd", f"teacher.checkpoint={junk}"]
    line = _error(capsys, _train(data_root, tmp_path / "run", *kd))
    assert _CORRUPT.fullmatch(line) and f"checkpoint {junk} could not be read (" in line, line
    torch.save(create_model("convnext_demo", 3).state_dict(), junk)  # plain weights, not an actdistill run
    assert _error(capsys, _train(data_root, tmp_path / "run", *kd)) == (
        f"actdistill: error: checkpoint {junk} is not an actdistill checkpoint (no 'student' entry); "
        "to start from plain weights use student.pretrained=PATH instead"
    )


def test_teacher_checkpoint_of_another_architecture(data_root, tmp_path, capsys):
    path = tmp_path / "teacher.pt"
    spec = {"name": "pvt_v2_demo", "num_classes": 3, "kwargs": {}}
    torch.save({"student": create_model("pvt_v2_demo", 3).state_dict(), "model": spec}, path)
    kd = ["method.name=kd", f"teacher.checkpoint={path}"]
    assert _error(capsys, _train(data_root, tmp_path / "run", *kd, "teacher.name=convnext_demo")) == (
        f"actdistill: error: teacher.checkpoint {path} holds a 'pvt_v2_demo' model but teacher.name is "
        "'convnext_demo'; fix teacher.name or leave it empty"
    )
    spec["name"] = "convnext_demo"  # a file whose label lies about its weights
    torch.save({"student": create_model("pvt_v2_demo", 3).state_dict(), "model": spec}, path)
    line = _error(capsys, _train(data_root, tmp_path / "run", *kd))
    assert line.startswith(f"actdistill: error: teacher.checkpoint {path} does not fit a 'convnext_demo' model (")
    assert line.endswith("point it at a run trained with that architecture or fix teacher.name / teacher.kwargs")


def _permission_message(root) -> str:
    return (
        f"actdistill: error: {root}/ImageSplits/actions.txt: permission denied; make the dataset readable by this "
        f"user (e.g. chmod -R a+rX {root}) or set data.root to a readable copy"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their mode; see the simulated test below")
def test_data_folder_without_permission(data_root, tmp_path, capsys):
    data_root.chmod(0)
    try:
        assert _error(capsys, _train(data_root, tmp_path / "run")) == _permission_message(data_root)
    finally:
        data_root.chmod(0o755)


def test_data_folder_without_permission_simulated(data_root, tmp_path, capsys, monkeypatch):
    """What a non-root user meets after `chmod 000 data_root`: any look inside raises PermissionError."""
    stat = pathlib.Path.stat

    def denied(self, *args, **kwargs):
        if data_root in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return stat(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "stat", denied)
    assert _error(capsys, _train(data_root, tmp_path / "run")) == _permission_message(data_root)
