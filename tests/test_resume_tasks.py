"""Issue 15: a PCL + KD run and a generative detection-KD run killed (SIGKILL) mid-epoch resume bitwise.

As tests/test_resume_kill.py does for classification: the run writes `checkpoints/last.pt` after every optimiser
step (`train.save_every_steps=1`) and is killed with SIGKILL in the middle of an epoch; `--resume` then finishes it,
and the student weights (`student_last.safetensors`) and every epoch's training losses equal those of the
uninterrupted run bit for bit. To kill at a known place rather than whenever a poll loop notices the file, the
child process stops itself (SIGSTOP) right after its N-th mid-epoch checkpoint; the test then sends SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from test_engine_tasks_ddp import (
    REPO,
    child_env,
    detection_overrides,
    pcl_overrides,
    write_detection_data,
    write_pcl_data,
)

from actdistill.cli import main
from actdistill.config import load_config
from actdistill.engine.fit import fit
from actdistill.utils.checkpoint import load_checkpoint, load_weights

# `actdistill train ARGS` that stops itself (SIGSTOP) after its STOP_AFTER-th mid-epoch checkpoint.
STOPPING_TRAIN = textwrap.dedent(
    """
    import os, signal, sys
    from actdistill.engine import checkpoint

    stop_after, saved = int(os.environ["STOP_AFTER"]), [0]
    save_position = checkpoint.Checkpointer.save_position

    def save_then_stop(self, *args, **kwargs):
        path = save_position(self, *args, **kwargs)
        saved[0] += 1
        if saved[0] == stop_after:
            os.kill(os.getpid(), signal.SIGSTOP)
        return path

    checkpoint.Checkpointer.save_position = save_then_stop
    from actdistill.cli import main
    sys.exit(main(["train", *sys.argv[1:]]))
    """
)


def kill_after_saves(args: list[str], saves: int, log: Path) -> dict:
    """Run `actdistill train ARGS` in a child, SIGKILL it once it has written `saves` mid-epoch checkpoints;
    returns the `position` of the `last.pt` it left."""
    env = {**child_env(), "STOP_AFTER": str(saves)}
    with log.open("w") as stream:
        proc = subprocess.Popen([sys.executable, "-c", STOPPING_TRAIN, *args], env=env, stdout=stream,
                                stderr=subprocess.STDOUT, cwd=REPO)  # fmt: skip
    deadline = time.monotonic() + 300
    while True:  # until the child stops itself (or ends, or takes too long)
        pid, status = os.waitpid(proc.pid, os.WNOHANG | os.WUNTRACED)
        if pid and os.WIFSTOPPED(status):
            break
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            pytest.fail(f"the run ended before its checkpoint {saves}: {log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"the run did not reach its checkpoint {saves} in 300 s: {log.read_text()[-3000:]}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    out = next(a.split("=", 1)[1] for a in args if a.startswith("train.out_dir="))
    return load_checkpoint(Path(out) / "checkpoints" / "last.pt")["position"]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def resume_and_compare(args: list[str], out: Path, reference: Path) -> None:
    """`actdistill train ARGS --resume` finishes the run; its weights and losses equal the reference run's."""
    assert main(["train", *args, "--resume"]) == 0
    assert same_weights(
        load_weights(out / "student_last.safetensors"), load_weights(reference / "student_last.safetensors")
    )
    resumed = json.loads((out / "results.json").read_text())["history"]
    expected = json.loads((reference / "results.json").read_text())["history"]
    assert len(resumed) == len(expected)
    for got, want in zip(resumed, expected):
        losses = {k: v for k, v in want["train"].items() if not k.endswith("time_s")}
        assert {k: got["train"][k] for k in losses} == losses, got["epoch"]
        assert got.get("test") == want.get("test")


def test_pcl_kd_killed_mid_epoch_resumes_bitwise(tmp_path):
    root = write_pcl_data(tmp_path / "UCF")
    base = [*pcl_overrides(root), "data.batch_size=4"]
    fit(load_config(None, [*base, "train.epochs=1", f"train.out_dir={tmp_path / 'teacher'}"]))
    kd = [
        *base,
        "method.name=pcl_kd",
        "method.contrast=bank",
        f"teacher.checkpoint={tmp_path / 'teacher/checkpoints/last.pt'}",
    ]
    fit(load_config(None, [*kd, f"train.out_dir={tmp_path / 'reference'}"]))  # 24 tuples: 6 steps per epoch
    out = tmp_path / "run"
    args = [*kd, f"train.out_dir={out}", "train.save_every_steps=1"]
    position = kill_after_saves(args, 3, tmp_path / "killed.log")
    assert (position["epoch"], position["stage"], position["batch"]) == (1, 0, 3), position
    resume_and_compare(args, out, tmp_path / "reference")


def test_generative_detection_kd_killed_mid_epoch_resumes_bitwise(tmp_path):
    feats, synth = write_detection_data(tmp_path)
    data = [*detection_overrides(feats, synth), "data.batch_size=1"]  # 4 training videos: 4 steps per stage
    teacher = tmp_path / "teacher"
    fit(load_config(REPO / "configs/detection/synth_teacher_gen.yaml",
                    [*data, "train.epochs=1", f"train.out_dir={teacher}",
                     "student.kwargs={preset: large, attention: true, embed_dim: 16}"]))  # fmt: skip
    last = teacher / "checkpoints" / "last.pt"
    recipe = str(REPO / "configs/detection/synth_student_gen.yaml")
    kd = [recipe, *data, "student.kwargs={preset: small, attention: true, embed_dim: 16}",
          f"teacher.checkpoint={last}", f"method.teacher_extras={last}"]  # fmt: skip
    fit(load_config(kd[0], [*kd[1:], f"train.out_dir={tmp_path / 'reference'}"]))
    out = tmp_path / "run"
    args = [*kd, f"train.out_dir={out}", "train.save_every_steps=1"]
    position = kill_after_saves(args, 6, tmp_path / "killed.log")  # 4 generative steps, then 2 attention steps
    assert (position["epoch"], position["stage"], position["batch"]) == (1, 1, 2), position
    resume_and_compare(args, out, tmp_path / "reference")
