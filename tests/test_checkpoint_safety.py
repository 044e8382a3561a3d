"""Opening a checkpoint never runs code: a file with a pickled payload is refused everywhere a user can pass one."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
from conftest import TINY_RUN

from actdistill.cli import main
from actdistill.errors import ActdistillError
from actdistill.models import create_model
from actdistill.utils.checkpoint import (
    atomic_save,
    load_checkpoint,
    load_weights,
    plain_rng_state,
    remove_stale_temp_files,
    rng_state,
    safe_load,
    save_weights,
    set_rng_state,
)


class Payload:
    """Unpickling this creates the file `marker`: harmless proof that code from the checkpoint ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def trained(tiny_stanford40, tmp_path_factory):
    """A finished one-epoch run of the tiny student: its folder and the path of its last.pt."""
    out = tmp_path_factory.mktemp("safety") / "run"
    assert main(["train", f"data.root={tiny_stanford40}", *TINY_RUN, f"train.out_dir={out}"]) == 0
    return out


def _poisoned(trained, tmp_path):
    """A copy of the run's last.pt with a payload added; returns (checkpoint path, marker path)."""
    marker = tmp_path / "payload_ran"
    ckpt = load_checkpoint(trained / "checkpoints" / "last.pt")
    ckpt["extra"] = Payload(str(marker))
    path = tmp_path / "poisoned.pt"
    torch.save(ckpt, path)
    with pytest.raises(pickle.UnpicklingError):  # sanity: the file really needs arbitrary unpickling
        torch.load(path, weights_only=True)
    return path, marker


def _refused(capsys, argv, marker):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds pickled Python objects" in err and "refuses it" in err, err
    assert not marker.exists(), "the payload ran"


def test_eval_predict_export_analyze_refuse_a_payload(trained, tmp_path, capsys, tiny_stanford40):
    path, marker = _poisoned(trained, tmp_path)
    image = next((tiny_stanford40 / "JPEGImages").glob("*.jpg"))
    _refused(capsys, ["eval", str(path), f"data.root={tiny_stanford40}"], marker)
    _refused(capsys, ["predict", str(path), str(image)], marker)
    _refused(capsys, ["export", str(path), "--out", str(tmp_path / "m.onnx")], marker)
    good = trained / "checkpoints" / "last.pt"
    _refused(capsys, ["analyze", "--teacher", str(path), "--student", str(good), "--out", str(tmp_path / "a")], marker)


def test_training_refuses_a_payload_teacher_and_a_planted_last_pt(trained, tmp_path, capsys, tiny_stanford40):
    path, marker = _poisoned(trained, tmp_path)
    kd = [f"data.root={tiny_stanford40}", *TINY_RUN, "method.name=kd"]
    _refused(capsys, ["train", *kd, f"teacher.checkpoint={path}", f"train.out_dir={tmp_path / 'kd'}"], marker)
    planted = tmp_path / "planted"
    (planted / "checkpoints").mkdir(parents=True)
    (planted / "checkpoints" / "last.pt").write_bytes(path.read_bytes())
    argv = ["train", f"data.root={tiny_stanford40}", *TINY_RUN, f"train.out_dir={planted}", "--resume"]
    _refused(capsys, argv, marker)


def test_plain_weights_refuse_a_payload(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Payload(str(marker))}, path)
    with pytest.raises(ActdistillError, match="holds pickled Python objects"):
        create_model("pvt_v2_demo", 3, pretrained=str(path))
    assert not marker.exists()


def test_run_weights_are_safetensors_and_load_with_create_model(trained):
    state = load_weights(trained / "student_last.safetensors")
    model = create_model("pvt_v2_demo", 3, pretrained=str(trained / "student_last.safetensors"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert not (trained / "student_last.pt").exists()


def test_checkpoint_metadata_is_plain_data(trained):
    """The whole run checkpoint opens with torch's weights-only reader and no allow-listed globals."""
    ckpt = torch.load(trained / "checkpoints" / "last.pt", weights_only=True)
    assert isinstance(ckpt["rng"]["numpy"]["keys"], torch.Tensor)


def test_rng_state_round_trip_and_legacy_layout(tmp_path):
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    saved = rng_state()
    atomic_save({"student": {}, "rng": saved}, tmp_path / "r.pt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
    # Checkpoints written before the plain-data layout held NumPy's tuple; they still load and restore.
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    legacy = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    torch.save({"student": {}, "rng": legacy}, tmp_path / "old.pt")
    set_rng_state(safe_load(tmp_path / "old.pt")["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
    assert isinstance(plain_rng_state(legacy)["numpy"]["keys"], torch.Tensor)


def test_save_weights_handles_tied_tensors_and_stale_temp_files_go(tmp_path):
    w = torch.randn(3, 3)
    save_weights({"a": w, "b": w}, tmp_path / "tied.safetensors")  # shared storage: copied, not refused
    loaded = load_weights(tmp_path / "tied.safetensors")
    assert torch.equal(loaded["a"], w) and torch.equal(loaded["b"], w)
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half")
    (tmp_path / "keep.tmp.txt").write_text("not ours")
    assert remove_stale_temp_files(tmp_path) == 1
    assert (tmp_path / "keep.tmp.txt").exists()
