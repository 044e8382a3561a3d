"""int8 export (static QDQ calibrated on the run's data, dynamic fallback) and ONNX evaluation on the test split.

Parity tolerance for int8 vs fp32 logits: |Δ| ≤ 5 % of the fp32 logit range over the evaluated samples.
Why: static QDQ rounds every quantized tensor to one of 256 levels (error ≤ range/510 per tensor, per-channel
weight scales), and a test sample outside the calibrated activation ranges is clipped; on this tiny run the
typical error is 0.2-0.7 % of the range and the worst test sample 3.7 % (out of calibration range), so 5 % bounds
it with margin while an unfused or mis-calibrated model (errors of 20-100 %) fails. Top-1 agreement follows from it:
with every logit within `tol`, a sample whose fp32 top-1 leads the runner-up by more than 2·tol cannot change its
prediction, so those samples must agree exactly (samples with smaller margins may flip and are not asserted).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from actdistill import cli
from actdistill.config import Config
from actdistill.errors import ActdistillError
from actdistill.models import create_model

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from actdistill.deploy import export as export_mod  # noqa: E402
from actdistill.deploy import quantize as q  # noqa: E402
from actdistill.deploy.onnx_eval import evaluate_onnx, onnx_config  # noqa: E402

pytestmark = pytest.mark.slow  # ONNX export + calibration: tens of seconds on a 2-core CPU
REL_TOL = 0.05  # of the fp32 logit range (module docstring)
KEYS = ("top1", "top5", "mean_class_accuracy", "mAP", "num_samples")


def _parity(fp32: str, int8: str, x: np.ndarray) -> dict[str, float]:
    ref = q._session(fp32).run(None, {"input": x})[0]
    got = q._session(int8).run(None, {"input": x})[0]
    tol = REL_TOL * float(ref.max() - ref.min())
    top2 = np.sort(ref, axis=-1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) > 2 * tol
    return {
        "max_abs": float(np.abs(ref - got).max()),
        "tol": tol,
        "decisive": int(decisive.sum()),
        "decisive_agree": bool((ref.argmax(-1) == got.argmax(-1))[decisive].all()),
    }


@pytest.fixture(scope="module")
def run(tiny_stanford40, tmp_path_factory):
    """A resnet_demo checkpoint of the tiny Stanford 40 set, exported with `export --quantize int8` (CLI path)."""
    tmp = tmp_path_factory.mktemp("quant")
    torch.manual_seed(0)
    model = create_model("resnet_demo", 3)
    cfg = Config()
    cfg.data.root, cfg.data.image_size, cfg.data.num_workers, cfg.data.batch_size = "/nowhere", 32, 0, 8
    cfg.train.device, cfg.train.precision = "cpu", "fp32"
    from actdistill.data.build import DATASETS

    cfg.data.root = str(tiny_stanford40)
    classes = list(reversed(DATASETS.get(cfg.data.name)(cfg.data, "test", None)[1]))  # remapped by name in eval
    cfg.data.root = "/nowhere"
    torch.save(
        {"student": model.state_dict(), "model": {"name": "resnet_demo", "num_classes": 3, "kwargs": {}},
         "config": cfg.to_dict(), "class_names": classes},
        tmp / "best.pt",
    )  # fmt: skip
    argv = ["export", str(tmp / "best.pt"), f"data.root={tiny_stanford40}", "--quantize", "int8", "--calibration", "16"]
    assert cli.main(argv) == 0
    return tmp


def test_int8_export_is_static_and_within_tolerance(run, capsys):
    fp32, int8 = run / "best.onnx", run / "best.int8.onnx"
    assert fp32.is_file() and int8.is_file()
    meta = export_mod.read_metadata(int8)
    quant = json.loads(meta["quantization"])
    assert quant["mode"] == "static" and quant["calibration"] == {"samples": 16, "method": "minmax"}
    assert q.int8_kernels(int8)["ops"].get("QLinearConv", 0) >= 10  # ONNX Runtime runs the convs in int8
    cfg, meta = onnx_config(fp32)
    x = q.calibration_inputs(cfg, json.loads(meta["mean"]), json.loads(meta["std"]), (3, 32, 32), 64, split="test")
    check = _parity(str(fp32), str(int8), x)
    assert check["max_abs"] <= check["tol"], check
    assert check["decisive"] >= len(x) // 2 and check["decisive_agree"], check


def test_fp32_onnx_eval_equals_pytorch_eval(run, tiny_stanford40):
    from actdistill.engine.evaluate import evaluate_checkpoint

    ours = evaluate_onnx(run / "best.onnx")  # data.root comes from the metadata (the export's override)
    ref = evaluate_checkpoint(run / "best.pt", [f"data.root={tiny_stanford40}"])
    for key in ("top1", "top5", "mean_class_accuracy", "num_samples"):
        assert ours[key] == ref[key], key
    assert ours["mAP"] == pytest.approx(ref["mAP"], abs=1e-6)
    assert ours["confusion_matrix"] == ref["confusion_matrix"]
    int8 = evaluate_onnx(run / "best.int8.onnx")
    assert set(KEYS) <= set(int8) and int8["num_samples"] == ref["num_samples"]
    assert int8["quantization"]["mode"] == "static" and ours["quantization"] is None


def test_cli_eval_takes_onnx_models(run, tmp_path):
    """`actdistill eval model.onnx` (what `export` tells the user to run) reports the same as evaluate_onnx."""
    out = tmp_path / "report.json"
    assert cli.main(["eval", str(run / "best.int8.onnx"), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["top1"] == evaluate_onnx(run / "best.int8.onnx")["top1"]
    assert report["quantization"]["mode"] == "static"
    assert cli.main(["eval", str(run / "best.onnx"), "--fuse-flow", str(run / "best.pt")]) == 2


def test_quantize_needs_the_data_or_says_how(run, tmp_path):
    with pytest.raises(ActdistillError, match="data.root"):
        export_mod.export_onnx(run / "best.pt", tmp_path / "x.onnx", quantize="int8", calibration=4, verify=False)
    import onnx

    proto = onnx.load(str(run / "best.onnx"))
    del proto.metadata_props[:]  # as written by an older actdistill: no run config
    onnx.save(proto, str(tmp_path / "old.onnx"))
    with pytest.raises(ActdistillError, match="no run config"):
        evaluate_onnx(tmp_path / "old.onnx")


class LSTMHead(nn.Module):
    """A per-frame 1×1×1 conv, spatial pooling and an LSTM over time: almost all MACs in the LSTM."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv3d(3, 8, 1)
        self.rnn = nn.LSTM(8, 64, batch_first=True)
        self.fc = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stem(x).mean((3, 4)).transpose(1, 2)
        return self.fc(self.rnn(f)[0][:, -1])


def test_falls_back_to_dynamic_when_static_qdq_misses_the_compute(tmp_path, caplog):
    torch.manual_seed(0)
    export_mod.export_model(LSTMHead().eval(), (3, 8, 6, 6), tmp_path / "lstm.onnx")
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((8, 3, 8, 6, 6)).astype(np.float32)
    profile = q.compute_profile(tmp_path / "lstm.onnx")
    assert profile["static_coverage"] < 0.1 and profile["dynamic_coverage"] > 0.9
    with caplog.at_level("WARNING", logger="actdistill"):
        out = q.quantize_onnx(tmp_path / "lstm.onnx", tmp_path / "lstm.int8.onnx", calib)
    assert out["mode"] == "dynamic" and "static QDQ covers only" in out["reason"] and "LSTM" in out["reason"]
    assert "using dynamic quantization" in caplog.text
    assert out["kernels"]["ops"].get("DynamicQuantizeLSTM") == 1
    x = rng.standard_normal((32, 3, 8, 6, 6)).astype(np.float32)
    check = _parity(str(tmp_path / "lstm.onnx"), str(tmp_path / "lstm.int8.onnx"), x)
    assert check["max_abs"] <= check["tol"] and check["decisive_agree"], check


def test_static_mode_refuses_a_model_without_static_coverage(tmp_path):
    class OnlyLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(4, 8, batch_first=True)

        def forward(self, x):
            return self.rnn(x)[0][:, -1]

    export_mod.export_model(OnlyLSTM().eval(), (5, 4), tmp_path / "m.onnx")
    calib = np.zeros((2, 5, 4), np.float32)
    with pytest.raises(ActdistillError, match="static QDQ covers none"):
        q.quantize_onnx(tmp_path / "m.onnx", tmp_path / "m8.onnx", calib, mode="static")
