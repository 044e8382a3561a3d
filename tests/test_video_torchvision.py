"""torchvision's video zoo by name: S3D, MViT-v1-B/v2-S, Swin3D-T/S/B (and the wrapped video ResNets).

Every model runs on CPU at 8×32² in well under a second (MViT/Swin3D through their size-flexible forwards), so the
contract, weight files and one KD step in each direction run for real; full-size shapes and sizes use the meta device.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import urllib.error
import warnings

import pytest
import torch
import torchvision.models.video as tv_video
from torchvision.models import get_weight

from actdistill.distill.feature import AT, FitNet
from actdistill.distill.logit import KD
from actdistill.errors import ActdistillError
from actdistill.models import create_model
from actdistill.models.torchvision_video import TORCHVISION_VIDEO_MODELS
from actdistill.models.two_stream import create_flow_model
from actdistill.registry import MODELS
from actdistill.utils.flops import count

NEW = sorted(TORCHVISION_VIDEO_MODELS)
RESNETS = ["mc3_18", "r2plus1d_18", "r3d_18"]
ALL = NEW + RESNETS
CLIP = (2, 3, 8, 32, 32)  # runs for every name (S3D needs ≥ 5 frames × 17 px; the others take any clip)
K = 5
# name → (exact parameters at 101 classes, GMACs at 1×3×16×224²); at 400 classes both equal torchvision's metadata.
SIZES = {
    "s3d": (8_013_573, 17.98),
    "mvit_v1_b": (36_380_741, 70.60),
    "mvit_v2_s": (34_307_813, 64.22),
    "swin3d_t": (27_928_139, 43.88),
    "swin3d_s": (49_586_747, 82.84),
    "swin3d_b": (87_742_509, 140.67),
}
_BUILT: dict[str, torch.nn.Module] = {}
# Swin3D-S/B (50 M / 88 M parameters) take a few seconds per test just to copy, save and update.
BIG = {"swin3d_s", "swin3d_b"}
ALL_P = [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in ALL]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model(name: str) -> torch.nn.Module:
    """A fresh copy of `name` with K classes (built once per module: Swin3D-B takes a second to initialise)."""
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = MODELS.get(name)(K)
    return copy.deepcopy(_BUILT[name])


def _tiny_cfg(model: torch.nn.Module) -> torch.nn.Module:
    """Point `pretrained_cfg` at the tiny clip, so taps probe shapes on 8×32² instead of 8×224²."""
    model.pretrained_cfg = dataclasses.replace(model.pretrained_cfg, input_size=CLIP[1:])
    return model


def test_registered_with_metadata() -> None:
    for name in ALL:
        meta = MODELS.meta(name)
        assert meta["task"] == "video" and meta["paper"] and meta["loads_path"] is True
        weights = get_weight(meta["weights"])  # the enum member exists (no download)
        assert weights.meta["categories"] and meta["kinetics_top1"] == weights.meta["_metrics"]["Kinetics-400"]["acc@1"]
    for name in NEW:
        meta = MODELS.meta(name)
        assert meta["input_size"] == (3, 16, 224, 224) and len(meta["min_input"]) == 4
        assert meta["params_m"] == round(SIZES[name][0] / 1e6, 3) and meta["gmacs"] == SIZES[name][1]


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_sizes_on_meta(name: str) -> None:
    """Parameters and GMACs at the standard input; at 400 classes they are torchvision's `num_params` / `_ops`."""
    with torch.device("meta"):
        model = MODELS.get(name)(101)
    result = count(model, (1, *MODELS.meta(name)["input_size"]))
    assert result.params == SIZES[name][0]
    assert result.gmacs == pytest.approx(SIZES[name][1], abs=0.006)
    with torch.device("meta"):
        kinetics = MODELS.get(name)(400)
    weights = get_weight(MODELS.meta(name)["weights"])
    result = count(kinetics, (1, 3, 16, 224, 224))
    assert result.params == weights.meta["num_params"]
    assert result.gmacs == pytest.approx(weights.meta["_ops"], abs=0.001)


@pytest.mark.parametrize("name", NEW)
def test_standard_shapes_on_meta(name: str) -> None:
    with torch.device("meta"):
        model = MODELS.get(name)(K)
    x = torch.empty(1, *model.pretrained_cfg.input_size, device="meta")
    feats = model.forward_features(x)
    assert model(x).shape == model.forward_head(feats[-1]).shape == (1, K)
    for f, info in zip(feats, model.feature_info, strict=True):
        assert tuple(f.shape) == (1, info.channels, 16 // info.temporal_stride, 224 // info.stride, 224 // info.stride)
    assert tuple(feats[-1].shape[2:]) == ((2, 7, 7) if name == "s3d" else (8, 7, 7))


@pytest.mark.parametrize("name", ALL)
def test_contract_on_tiny_clip(name: str) -> None:
    model = _model(name).eval()
    torch.manual_seed(1)
    x = torch.randn(CLIP)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
        torch.testing.assert_close(model.forward_head(feats[-1]), out, rtol=0, atol=0)
    assert out.shape == (2, K) and model.num_classes == K
    cfg = model.pretrained_cfg
    assert len(cfg.input_size) == 4 and cfg.input_size[0] == 3 and len(cfg.mean) == len(cfg.std) == 3
    assert len(feats) == len(model.feature_info)
    modules = dict(model.named_modules())
    for f, info in zip(feats, model.feature_info, strict=True):
        assert info.name in modules
        assert f.shape[:2] == (2, info.channels)
        assert f.shape[2] == math.ceil(CLIP[2] / info.temporal_stride)
        assert f.shape[3] == f.shape[4] == math.ceil(CLIP[3] / info.stride)
    assert model.get_classifier().weight.shape[0] == K  # gradients: the KD steps below train every model


@pytest.mark.parametrize("name", ["swin3d_t", "mvit_v2_s"])
def test_forward_is_torchvisions(name: str) -> None:
    """Bit-identical to torchvision's own forward on a tiny clip. torchvision's MViT takes its token grid from the
    position encoding's sizes, so the reference is pointed at the clip's grid (MViT-v2 has no absolute embedding)."""
    torch.manual_seed(0)
    ref = getattr(tv_video, name)(num_classes=K).eval()
    if name.startswith("mvit"):
        ref.pos_encoding.temporal_size, ref.pos_encoding.spatial_size = 4, (8, 8)
    model = MODELS.get(name)(K).eval()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(CLIP)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


def test_mvit_v1_resized_position_encoding() -> None:
    """At the built 8×56² grid the resized (interpolated) embedding equals torchvision's, in torchvision's token
    order; at the standard input the whole forward is torchvision's (checked once, docs/video_models.md)."""
    model = _model("mvit_v1_b").eval()
    x = torch.randn(1, 3, 16, 224, 224)
    with torch.no_grad():
        tokens, thw = model._embed(x)
        assert thw == model._grid == (8, 56, 56) and tokens.shape == (1, 1 + 8 * 56 * 56, 96)
        model._grid = (0, 0, 0)  # force the interpolation path
        resized, _ = model._embed(x)
    torch.testing.assert_close(resized, tokens)


def test_mvit_head_without_class_token_averages(caplog) -> None:
    model = _model("mvit_v2_s").eval()
    with torch.no_grad():
        last = model.forward_features(torch.randn(CLIP))[-1]
        with caplog.at_level(logging.WARNING):
            logits = model.forward_head(last.clone())  # a new tensor: the class token is gone
    assert logits.shape == (2, K) and "class token" in caplog.text


@pytest.mark.parametrize("name", ALL_P)
def test_loads_local_state_dict(name: str, tmp_path, caplog) -> None:
    """A saved torchvision-layout state dict loads by path; an actdistill checkpoint of other classes keeps the body
    and re-initialises the head with a warning (a log record for the new models, a UserWarning for the ResNets)."""
    source = _model(name)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01)  # differ from a fresh init
    path = tmp_path / f"{name}.pth"
    torch.save(source.state_dict(), path)
    loaded = create_model(name, K, pretrained=path)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    del loaded
    path.unlink()
    if name not in ("s3d", "mvit_v2_s", "swin3d_t", "r3d_18"):
        return  # the checkpoint layout is shared code; four families are enough
    ckpt = tmp_path / "best.pt"
    torch.save({"student": source.state_dict(), "model": {"name": name}, "epoch": 1}, ckpt)
    with warnings.catch_warnings(record=True) as record, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        other = create_model(name, 3, pretrained=str(ckpt))
    texts = [caplog.text, *(str(w.message) for w in record)]
    assert any("classifier" in t and ("num_classes=3" in t or "class count" in t) for t in texts)
    head = _head_prefix(other)
    for key, value in other.state_dict().items():
        if key.startswith(head):
            assert value.shape[0] == 3
        else:
            assert torch.equal(value, source.state_dict()[key]), key


def _head_prefix(model: torch.nn.Module) -> str:
    head = model.get_classifier()
    return next(name for name, m in model.named_modules() if m is head) + "."


def test_checkpoint_head_warning_is_logged(tmp_path, caplog) -> None:
    source = _model("s3d")
    torch.save({"student": source.state_dict()}, tmp_path / "run.pt")
    with caplog.at_level(logging.WARNING):
        create_model("s3d", 3, pretrained=tmp_path / "run.pt")
    assert "classifier" in caplog.text and "num_classes=3" in caplog.text


def test_wrong_architecture_checkpoint_is_one_line(tmp_path) -> None:
    torch.save(_model("swin3d_t").state_dict(), tmp_path / "swin.pth")
    with pytest.raises(ActdistillError, match="different architecture"):
        create_model("s3d", K, pretrained=tmp_path / "swin.pth")


@pytest.mark.parametrize("name", ["s3d", "mvit_v2_s", "swin3d_t"])
def test_pretrained_true_fetches_the_kinetics_enum(name: str, monkeypatch) -> None:
    """`pretrained=True` asks torchvision for the metadata's weights enum; the 400-way head is replaced."""
    weights = get_weight(MODELS.meta(name)["weights"])
    torch.manual_seed(0)
    kinetics = getattr(tv_video, name)(num_classes=400).state_dict()
    asked = []

    def fake_download(url, *args, **kwargs):
        asked.append(url)
        return kinetics

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", fake_download)
    with pytest.warns(UserWarning, match="Kinetics head"):
        model = create_model(name, K, pretrained=True)
    assert asked == [weights.url]
    head = _head_prefix(model)
    for key, value in model.state_dict().items():
        if key.startswith(head):
            assert value.shape[0] == K
        else:
            assert torch.equal(value, kinetics[key]), key
    full = create_model(name, 400, pretrained=True)
    assert all(torch.equal(v, kinetics[k]) for k, v in full.state_dict().items())


def test_pretrained_true_offline_is_one_line(monkeypatch) -> None:
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(ActdistillError, match=r"S3D_Weights\.KINETICS400_V1.*student\.pretrained"):
        create_model("s3d", K, pretrained=True)


def test_flow_variant_and_rgb_checkpoint(tmp_path) -> None:
    rgb = _model("s3d")
    torch.save(rgb.state_dict(), tmp_path / "rgb.pth")
    with pytest.warns(UserWarning, match="class count"):
        flow = create_flow_model("s3d", 4, pretrained=str(tmp_path / "rgb.pth"))
    assert flow.pretrained_cfg.input_size[0] == 2 and flow.pretrained_cfg.std == (0.226, 0.226)
    kernel = rgb.state_dict()["features.0.0.0.weight"]
    torch.testing.assert_close(
        flow.state_dict()["features.0.0.0.weight"], kernel.mean(1, keepdim=True).expand(-1, 2, -1, -1, -1)
    )
    with torch.no_grad():
        assert flow.eval()(torch.randn(1, 2, 8, 32, 32)).shape == (1, 4)
    for name in ("mvit_v2_s", "swin3d_t"):
        with torch.no_grad():
            assert create_flow_model(name, 4).eval()(torch.randn(1, 2, 4, 32, 32)).shape == (1, 4)


def _step(distiller, batch) -> float:
    """One optimisation step; the loss is finite and the student's weights change."""
    before = [p.detach().clone() for p in distiller.student.parameters()]
    frozen = [p.detach().clone() for p in distiller.teacher.parameters()]
    params = list(distiller.trainable_parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    distiller.train()
    out = distiller(batch)
    assert torch.isfinite(out.loss) and out.logits.shape == (2, K)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, distiller.student.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(frozen, distiller.teacher.parameters()))
    return float(out.loss.detach())


def _batch() -> dict:
    torch.manual_seed(2)
    return {"input": torch.randn(CLIP), "label": torch.tensor([0, 3]), "index": torch.arange(2)}


@pytest.mark.parametrize("name", ALL_P)
def test_kd_step_as_teacher(name: str) -> None:
    """torchvision-video teacher → Top-I3D student: Hinton KD on logits and FitNet on the last stage maps."""
    teacher = _tiny_cfg(_model(name))
    student = _tiny_cfg(MODELS.get("top_i3d")(K, channel_scale=0.125))
    _step(KD(student, teacher), _batch())
    _step(FitNet(student, teacher, student_layer=-1, teacher_layer=-1), _batch())


@pytest.mark.parametrize("name", ALL_P)
def test_kd_step_as_student(name: str) -> None:
    """I3D teacher → torchvision-video student: Hinton KD and attention transfer on the last stages of both."""
    teacher = _tiny_cfg(MODELS.get("i3d")(K, channel_scale=0.125))
    student = _tiny_cfg(_model(name))
    _step(KD(student, teacher), _batch())
    method = AT(student, teacher)
    assert len(method.attention.taps) == min(len(student.feature_info), len(teacher.feature_info))
    _step(method, _batch())


@pytest.mark.slow
def test_list_models_sizes_counts_them(capsys) -> None:
    from actdistill.models.sizes import print_model_sizes  # `actdistill list models --sizes`

    print_model_sizes(NEW, None, 101)
    out = capsys.readouterr().out
    for name in NEW:
        line = next(row for row in out.splitlines() if row.startswith(name + " "))
        assert "could not count" not in line and "16×224×224" in line
        assert f"{SIZES[name][0] / 1e6:.3f}" in line
