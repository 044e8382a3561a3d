"""Mid-epoch resume: a run killed (SIGKILL) or interrupted (SIGINT) mid-epoch ends with the uninterrupted weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from actdistill.cli import main
from actdistill.config import load_config
from actdistill.data.synthetic_image import write_synthetic_stanford40
from actdistill.engine.fit import fit
from actdistill.utils.checkpoint import load_checkpoint, load_weights

# 24 samples in batches of 2: 12 optimizer steps per epoch, so a kill lands well inside an epoch.
COMMON = [
    "data.image_size=32",
    "data.batch_size=2",
    "data.num_workers=0",
    "train.epochs=2",
    "train.progress=false",
    "train.tensorboard=false",
    "train.precision=fp32",
    "train.device=cpu",
    "optim.name=adamw",
    "optim.lr=0.002",
    "sched.name=step",
    "sched.step_size=1",
    "sched.gamma=0.5",
    "student.name=pvt_v2_demo",
    "student.kwargs={drop_path_rate: 0.2}",  # random in training: the resumed RNG state matters
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "stanford40"
    return write_synthetic_stanford40(root, num_classes=3, train_per_class=8, test_per_class=4, image_size=32, seed=0)


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory):
    """The uninterrupted run's final student weights and results."""
    out = tmp_path_factory.mktemp("ref") / "run"
    results = fit(load_config(None, [f"data.root={data_root}", *COMMON, f"train.out_dir={out}"]))
    return load_weights(out / "student_last.safetensors"), results


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")  # same thread count as this process: same floats
    return subprocess.Popen(
        [sys.executable, "-m", "actdistill", "train", *args], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "the training process ended before writing a checkpoint"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.005)


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(data_root, reference, tmp_path, capsys):
    out = tmp_path / "run"
    args = [f"data.root={data_root}", *COMMON, f"train.out_dir={out}", "train.save_every_steps=1"]
    proc = _start(args, tmp_path / "killed.log")
    last = out / "checkpoints" / "last.pt"
    _wait_for(last, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    position = load_checkpoint(last)["position"]
    assert position is not None and position["epoch"] == 1 and 0 < position["batch"] < 12, position
    assert main(["train", *args, "data.batch_size=4", "--resume"]) == 2  # the rest of the epoch needs batches of 2
    err = capsys.readouterr().err
    assert f"{last} was saved mid-epoch with global batch 2 (accumulate_steps 1); resume with the same" in err
    _check_resumed(args, out, reference)


def _check_resumed(args: list[str], out: Path, reference: tuple[dict, dict]) -> None:
    assert main(["train", *args, "--resume"]) == 0
    assert _same_weights(load_weights(out / "student_last.safetensors"), reference[0])
    resumed = json.loads((out / "results.json").read_text())
    assert [h["train"]["loss"] for h in resumed["history"]] == [h["train"]["loss"] for h in reference[1]["history"]]


def test_sigint_saves_a_checkpoint_that_resumes(data_root, reference, tmp_path, capsys):
    out = tmp_path / "run"
    args = [f"data.root={data_root}", *COMMON, f"train.out_dir={out}", "train.save_every_steps=5"]
    log = tmp_path / "interrupted.log"
    proc = _start(args, log)
    last = out / "checkpoints" / "last.pt"
    _wait_for(last, proc)  # the training loop (and its signal handler) is running
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    text = log.read_text()
    assert f"actdistill: interrupted: saved {last}; continue with --resume" in text, text[-2000:]
    position = load_checkpoint(last)["position"]
    assert position is not None and (position["epoch"], position["batch"]) >= (1, 5), position  # mid-epoch
    _check_resumed(args, out, reference)
