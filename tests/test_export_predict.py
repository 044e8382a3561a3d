"""ONNX export (parity, metadata, student only) and `predict` from a checkpoint and from the exported model."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from actdistill.cli import main, parse
from actdistill.config import Config
from actdistill.deploy import export as export_mod
from actdistill.deploy import export_onnx, predict_files
from actdistill.errors import ActdistillError
from actdistill.models import create_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

CLASSES = ["jumping", "reading", "waving"]


def _checkpoint(path, model_name, kwargs, **data):
    """An engine-format checkpoint (engine/checkpoint.py) with random weights, plus a method adapter (the method's
    extras) that must not be exported."""
    torch.manual_seed(0)
    model = create_model(model_name, len(CLASSES), **kwargs)
    if model_name == "i3d":  # calibrate BatchNorm statistics: at init the deep features (and logits) are constant
        shape = (4, 3, data["clip_len"], data["image_size"], data["image_size"])
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
            bn.momentum = None
        with torch.no_grad():
            model.train()(torch.randn(shape))
    cfg = Config()
    for key, value in data.items():
        setattr(cfg.data, key, value)
    spec = {"name": model_name, "num_classes": len(CLASSES), "kwargs": kwargs}
    torch.save(
        {
            "student": model.state_dict(),
            "model": spec,
            "predictor": {"spec": spec, "state": None},  # the predictor is the student itself
            "config": cfg.to_dict(),
            "class_names": CLASSES,
            "task": "classification",
            "method": {"extras": {"adapter": {"weight": torch.randn(1024, 1024)}}, "epoch": 1},
        },
        path,
    )
    return model


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export_image")
    model = _checkpoint(tmp / "best.pt", "pvt_v2_demo", {}, image_size=32)
    info = export_onnx(tmp / "best.pt", tmp / "model.onnx")
    img = tmp / "person.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(img)
    return tmp, model.eval(), info, img


def test_export_parity_and_dynamic_batch(image_run):
    tmp, model, info, _ = image_run
    assert info["max_abs_diff"] < 1e-4
    assert info["input_shape"] == ["batch", 3, 32, 32]
    assert export_mod.verify_onnx(model, tmp / "model.onnx", (3, 32, 32), batch=3, seed=1) < 1e-4


def test_metadata_round_trip(image_run):
    tmp, model, _, _ = image_run
    meta = export_mod.read_metadata(tmp / "model.onnx")
    assert json.loads(meta["class_names"]) == CLASSES
    assert json.loads(meta["input_size"]) == [3, 32, 32]
    assert json.loads(meta["mean"]) == pytest.approx(list(model.pretrained_cfg.mean))
    assert json.loads(meta["std"]) == pytest.approx(list(model.pretrained_cfg.std))
    assert meta["model_name"] == "pvt_v2_demo" and meta["task"] == "image" and meta["actdistill_version"]
    data = json.loads(meta["config"])["data"]  # the run config: `evaluate_onnx` rebuilds the test split from it
    assert data["image_size"] == 32 and data["name"] == "stanford40"


def test_exported_weights_are_the_student_only(image_run):
    tmp, model, _, _ = image_run
    proto = onnx.load(str(tmp / "model.onnx"))
    exported = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    own = sum(p.numel() for p in model.parameters())
    # The method's adapter (1M) in the checkpoint would add ~100%+; constant folding moves ~1%.
    assert abs(exported - own) < 0.02 * own


def test_predict_image_from_checkpoint_and_onnx(image_run, capsys):
    tmp, _, _, img = image_run
    from_pt = predict_files(tmp / "best.pt", [img], top_k=3)[0]
    from_onnx = predict_files(tmp / "model.onnx", [img], top_k=3)[0]
    probs = [t["prob"] for t in from_pt["top"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-5)
    assert from_pt["top"][0]["class"] == from_onnx["top"][0]["class"]
    assert [t["prob"] for t in from_onnx["top"]] == pytest.approx(probs, abs=1e-4)

    argv = ["predict", str(tmp / "model.onnx"), str(img), "--top-k", "3"]
    assert parse(argv).handler == "actdistill.deploy.predict:cmd_predict"
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[1] for line in lines] == [t["class"] for t in from_pt["top"]]


def test_predict_video_multi_clip(tmp_path):
    from actdistill.data.synthetic_video import encode_video

    _checkpoint(tmp_path / "v.pt", "i3d", {"channel_scale": 0.125}, name="ucf101", image_size=32, clip_len=8)
    info = export_onnx(tmp_path / "v.pt", tmp_path / "v.onnx")
    assert info["input_shape"] == ["batch", 3, 8, 32, 32] and info["max_abs_diff"] < 1e-3  # logits ~5: fp32 noise
    video = tmp_path / "clip.avi"
    frames = np.random.default_rng(0).integers(0, 255, (20, 36, 40, 3), dtype=np.uint8)
    encode_video(frames, video)
    from_pt = predict_files(tmp_path / "v.pt", [video], top_k=2, num_clips=3)[0]
    from_onnx = predict_files(tmp_path / "v.onnx", [video], top_k=2, num_clips=3)[0]
    assert from_pt["clips"] == 3 and len(from_pt["top"]) == 2
    assert from_pt["top"][0]["class"] == from_onnx["top"][0]["class"]
    assert from_onnx["top"][0]["prob"] == pytest.approx(from_pt["top"][0]["prob"], abs=1e-4)
    assert from_pt["top"][0]["prob"] > from_pt["top"][1]["prob"] + 1e-3  # the logits depend on the input


def test_clear_errors(image_run, tmp_path, monkeypatch):
    tmp, _, _, img = image_run
    with pytest.raises(ActdistillError, match="nowhere.jpg"):
        predict_files(tmp / "best.pt", [img, tmp / "nowhere.jpg"])
    with pytest.raises(ActdistillError, match="not found"):
        predict_files(tmp / "missing.onnx", [img])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(ActdistillError, match="broken.jpg"):
        predict_files(tmp / "best.pt", [broken])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ActdistillError, match=r"actdistill\[onnx\]"):
        export_onnx(tmp / "best.pt", tmp_path / "x.onnx")
    with pytest.raises(ActdistillError, match=r"actdistill\[onnx\]"):
        predict_files(tmp / "model.onnx", [img])


def test_predict_scores_the_runs_predictor(tmp_path):
    """A run whose predictor is more than its student (paper 2's attention head on the student, here AT with
    `student_attention`): `predict` must give the logits `actdistill eval` scores."""
    from actdistill.deploy.predict import load_predictor as load_deploy_predictor
    from actdistill.distill.feature import AT
    from actdistill.engine.evaluate import load_predictor as load_eval_predictor

    torch.manual_seed(0)
    s_spec = {"name": "top_i3d", "num_classes": 3, "kwargs": {"channel_scale": 0.125}}
    t_spec = {"name": "i3d", "num_classes": 3, "kwargs": {"channel_scale": 0.125}}
    student = create_model(s_spec["name"], 3, **s_spec["kwargs"])
    teacher = create_model(t_spec["name"], 3, **t_spec["kwargs"])
    method = AT(student, teacher, student_attention=True, input_size=(16, 64, 64))
    x = torch.randn(2, 3, 16, 64, 64)
    for bn in (m for m in method.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
        bn.momentum = None  # calibrated statistics: at init the deep features (and logits) are constant
    with torch.no_grad():
        method.train().predictor()(torch.randn(4, 3, 16, 64, 64))
        method.attention_head.fc.weight.normal_(0, 3.0)  # an attention that is far from uniform
    method.eval()
    cfg = Config()
    cfg.data.name, cfg.data.clip_len, cfg.data.image_size = "ucf101", 16, 64
    path = tmp_path / "last.pt"
    torch.save(
        {
            "student": student.state_dict(),
            "model": s_spec,
            "predictor": {"spec": method.predictor_spec(s_spec, t_spec), "state": method.predictor().state_dict()},
            "config": cfg.to_dict(),
            "class_names": CLASSES,
            "task": "classification",
            "method": method.student_state(),
        },
        path,
    )
    with torch.no_grad():
        assert not torch.allclose(method.predictor()(x), student(x), atol=1e-3)  # the head changes the logits
        scored = load_eval_predictor(path)(x).mean(-1)  # what evaluation scores: (B, K, T') averaged over time
        assert torch.allclose(scored, method.predictor()(x).mean(-1), atol=1e-5)
    predicted = torch.from_numpy(load_deploy_predictor(path).run(x))
    assert torch.allclose(predicted, scored, atol=1e-4)
