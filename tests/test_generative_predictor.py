"""Paper 2's run scored outside training: `actdistill eval`, `predict` and `export` rebuild the student *with its
attention module* (eqs. 8-10, 12), the network the run evaluated, not the bare student."""

import json

import numpy as np
import pytest
import torch

from actdistill.cli import main
from actdistill.distill.generative import AttentionPredictor
from actdistill.engine.evaluate import evaluate_checkpoint, load_predictor
from actdistill.utils.checkpoint import load_checkpoint

RECIPE = "configs/video/synth_top_i3d_generative.yaml"


@pytest.fixture(scope="module")
def generative_run(tiny_ucf, tmp_path_factory):
    """One tiny epoch of the shipped synthetic generative recipe on the 3-class UCF101-layout set: `(folder)`."""
    out = tmp_path_factory.mktemp("generative") / "run"
    args = ["train", RECIPE, f"data.root={tiny_ucf}", "train.epochs=1", "train.device=cpu", f"train.out_dir={out}"]
    assert main(args) == 0
    return out


def test_eval_repeats_the_runs_last_evaluation_exactly(generative_run):
    results = json.loads((generative_run / "results.json").read_text())
    report = evaluate_checkpoint(generative_run / "checkpoints" / "last.pt")
    for key in ("top1", "top5", "mAP"):
        assert report[key] == results["last"][key], key


def test_the_checkpoint_rebuilds_student_plus_attention(generative_run):
    path = generative_run / "checkpoints" / "last.pt"
    model = load_predictor(path)
    assert isinstance(model, AttentionPredictor)
    student_only = load_predictor(path, {**load_checkpoint(path), "predictor": None})  # the bare student
    x = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(model(x), student_only(x), atol=1e-4)  # the attention changes the logits


def test_onnx_export_matches_pytorch_with_the_attention_module(generative_run, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from actdistill.deploy import export_onnx
    from actdistill.deploy.predict import load_predictor as load_deploy_predictor

    path = generative_run / "checkpoints" / "last.pt"
    info = export_onnx(path, tmp_path / "gen.onnx", batch=2)
    assert info["max_abs_diff"] is not None and info["max_abs_diff"] <= 1e-3
    assert info["parameters"] == sum(p.numel() for p in load_predictor(path).parameters())
    x = torch.randn(3, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = load_predictor(path)(x)
        expected = expected.mean(-1) if expected.dim() == 3 else expected
    got = load_deploy_predictor(tmp_path / "gen.onnx").run(x)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-3)
