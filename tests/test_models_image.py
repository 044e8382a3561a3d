"""Image model contract over the demo presets, create_model's lookup and checkpoint loading, and Table I sizes."""

from __future__ import annotations

import logging
import math

import pytest
import timm
import torch
from safetensors.torch import save_file

from actdistill.errors import ActdistillError
from actdistill.models import TimmAdapter, count_parameters, create_model, load_state_dict_file, model_summary
from actdistill.registry import MODELS

DEMOS = [n for n in MODELS.names() if MODELS.meta(n).get("paper") == "demo"]
PAPER1 = {  # paper 1, Table I: exact parameter counts with a 40-way head, and the paper's truncated millions
    "convnext_small": (49_485_448, 49.48),
    "swinv2_cr_tiny_ns_224": (27_595_228, 27.59),
    "twins_svt_small": (23_568_296, 23.56),
    "mvitv2_tiny": (23_435_080, 23.43),
    "convit_small": (27_361_642, 27.36),
    "pvt_v2_b2_li": (22_061_032, 22.06),
}


def _check_contract(model: torch.nn.Module, size: int, num_classes: int, exact_head: bool = True) -> None:
    model.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        head = model.forward_head(feats[-1])
    assert logits.shape == (2, num_classes)
    assert len(feats) == len(model.feature_info)
    modules = dict(model.named_modules())
    for f, info in zip(feats, model.feature_info):
        assert info.name in modules
        assert f.shape == (2, info.channels, size // info.stride, size // info.stride)
    if exact_head:
        torch.testing.assert_close(head, logits, rtol=1e-4, atol=1e-5)


def test_demo_presets_are_registered() -> None:
    assert {"convnext_demo", "pvt_v2_demo"} <= set(DEMOS)
    assert MODELS.meta("convnext_demo")["role"] == "teacher"


@pytest.mark.parametrize("name", DEMOS)
def test_demo_contract(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    assert model.num_classes == 7
    assert model.pretrained_cfg.input_size == (3, 64, 64)
    _check_contract(model, 64, 7)

    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    feats = model.forward_features(torch.randn(2, 3, 64, 64))
    (out.square().mean() + sum(f.mean() for f in feats)).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", DEMOS)
def test_demo_has_no_hub_weights(name: str) -> None:
    with pytest.raises(ActdistillError, match="without pretrained weights"):
        create_model(name, 7, pretrained=True)


def test_unknown_name_suggests() -> None:
    with pytest.raises(ActdistillError, match=r"unknown model 'convnxt_small'\. Did you mean: convnext_small"):
        create_model("convnxt_small", 40)
    with pytest.raises(ActdistillError, match="actdistill list models"):
        create_model("no_such_net_at_all", 40)


def test_unknown_kwarg_is_a_user_error() -> None:
    with pytest.raises(ActdistillError, match="'dimz'"):
        create_model("convnext_demo", 7, dimz=(8, 16, 32, 64))


def test_any_timm_name_is_wrapped() -> None:
    model = create_model("resnet10t", 5)
    assert isinstance(model, TimmAdapter)
    _check_contract(model, 64, 5)
    assert model_summary("resnet10t")["source"] == "timm"
    assert model_summary("convnext_small")["pretrained_tag"] == "convnext_small.fb_in1k"


def test_hub_failure_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ActdistillError, match=r"Hugging Face hub.*student\.pretrained \(or teacher\.pretrained\)"):
        create_model("pvt_v2_b2_li", 40, pretrained=True)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_round_trip(tmp_path, suffix: str) -> None:
    torch.manual_seed(0)
    src = create_model("pvt_v2_demo", 7).eval()
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    dst = create_model("pvt_v2_demo", 7, pretrained=path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


@pytest.mark.parametrize("wrap", ["student", "state_dict", "module", "raw_timm"])
def test_checkpoint_containers_and_prefixes(tmp_path, wrap: str) -> None:
    src = create_model("convnext_demo", 7)
    state = src.state_dict()
    if wrap == "student":  # an actdistill run checkpoint, RNG state included
        obj = {"student": state, "epoch": 3, "rng": {"numpy": __import__("numpy").random.get_state()}}
    elif wrap == "state_dict":
        obj = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    elif wrap == "module":
        obj = {f"module.{k}": v for k, v in state.items()}
    else:  # keys as timm saves them, without the adapter's `model.` prefix
        obj = src.model.state_dict()
    torch.save(obj, tmp_path / "w.pt")
    dst = create_model("convnext_demo", 7, pretrained=tmp_path / "w.pt")
    for k, v in dst.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_imagenet_head_is_dropped_with_warning(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    src = create_model("convnext_demo", 1000)
    torch.save(src.model.state_dict(), tmp_path / "in1k.pth")
    with caplog.at_level(logging.WARNING):
        dst = create_model("convnext_demo", 40, pretrained=str(tmp_path / "in1k.pth"))
    assert "classifier" in caplog.text and "num_classes=40" in caplog.text
    assert dst.model.head.fc.weight.shape == (40, 256)
    assert torch.equal(dst.model.stem[0].weight, src.model.stem[0].weight)
    assert torch.equal(dst.model.head.norm.weight, src.model.head.norm.weight)


def test_foreign_checkpoint_is_rejected(tmp_path) -> None:
    torch.save(create_model("twins_demo", 7).state_dict(), tmp_path / "twins.pth")
    with pytest.raises(ActdistillError, match="different architecture"):
        create_model("convnext_demo", 7, pretrained=tmp_path / "twins.pth")
    narrower = create_model("convnext_demo", 7, dims=(16, 32, 64, 128)).state_dict()
    torch.save(narrower, tmp_path / "narrow.pth")
    with pytest.raises(ActdistillError, match=r"different architecture.*\(16, 3, 4, 4\) vs \(32, 3, 4, 4\)"):
        create_model("convnext_demo", 7, pretrained=tmp_path / "narrow.pth")


def test_missing_or_bad_checkpoint_file(tmp_path) -> None:
    with pytest.raises(ActdistillError, match="nowhere.pth' does not exist"):
        create_model("convnext_demo", 7, pretrained=tmp_path / "nowhere.pth")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ActdistillError, match="unknown suffix"):
        load_state_dict_file(tmp_path / "w.txt")
    torch.save({"epoch": 1, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(ActdistillError, match="holds no state dict"):
        load_state_dict_file(tmp_path / "meta.pt")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PAPER1))
def test_paper1_table1_parameters(name: str) -> None:
    exact, paper_m = PAPER1[name]
    model = create_model(name, 40)
    n = count_parameters(model)
    assert n == exact
    assert math.floor(n / 1e4) / 100 == paper_m  # the paper truncates, it does not round
    assert model.pretrained_cfg.input_size == (3, 224, 224)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PAPER1))
def test_paper1_models_run_at_64px(name: str) -> None:
    # img_size=64 is needed by Swin-v2 (windows) and ConViT (position embedding); the others ignore it or adapt.
    model = create_model(name, 40, img_size=64)
    # ConViT-S pools its class token, so its head cannot be rebuilt from a map (TimmAdapter docstring).
    _check_contract(model, 64, 40, exact_head=name != "convit_small")


def test_factories_that_load_paths_themselves_get_the_path(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    seen = {}

    def factory(num_classes: int, pretrained: bool | str = False) -> torch.nn.Module:
        seen["pretrained"] = pretrained
        return torch.nn.Linear(2, num_classes)

    monkeypatch.setitem(MODELS._items, "own_loader", factory)
    monkeypatch.setitem(MODELS._meta, "own_loader", {"loads_path": True})
    create_model("own_loader", 3, pretrained=tmp_path / "w.pth")
    assert seen["pretrained"] == str(tmp_path / "w.pth")
