"""Video models: the model contract on tiny clips, the I3D 2D/3D switch, GoogLeNet inflation, checkpoint layouts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import actdistill.models.video_zoo  # noqa: F401  (registers the video models)
from actdistill.errors import ActdistillError
from actdistill.models import i3d as i3d_mod
from actdistill.models.frames import FrameModel
from actdistill.models.inflate import (
    actdistill_to_kinetics_i3d,
    googlenet_key_map,
    inflate_from_googlenet,
    kinetics_i3d_to_actdistill,
    load_kinetics_i3d,
)
from actdistill.models.two_stream import LateFusion, create_flow_model
from actdistill.models.video_zoo import VIDEO_MODELS
from actdistill.registry import MODELS

# name → (factory kwargs, tiny input). torchvision's -18 nets have fixed widths, so they get fewer frames.
TINY = {
    "i3d": (dict(channel_scale=0.125), (2, 3, 8, 32, 32)),
    "top_i3d": (dict(channel_scale=0.125), (2, 3, 8, 32, 32)),
    "bottom_i3d": (dict(channel_scale=0.125), (2, 3, 8, 32, 32)),
    "i2d": (dict(channel_scale=0.125), (2, 3, 8, 32, 32)),
    "c3d": (dict(channel_scale=0.125), (2, 3, 8, 32, 32)),
    "r3d_10": (dict(channel_scale=0.125), (2, 3, 8, 32, 32)),
    "r2plus1d_10": (dict(channel_scale=0.125), (2, 3, 8, 32, 32)),
    "r3d_18": ({}, (2, 3, 4, 32, 32)),
    "mc3_18": ({}, (2, 3, 4, 32, 32)),
    "r2plus1d_18": ({}, (2, 3, 4, 32, 32)),
    "frames": (dict(image_model="test_resnet"), (2, 3, 4, 32, 32)),
}
I3D_FAMILY = ("i3d", "top_i3d", "bottom_i3d", "i2d")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny convs: on a busy 2-core box, OpenMP barriers between 2 threads cost far more than the work itself.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_every_video_model_is_registered_and_covered() -> None:
    assert set(TINY) == set(VIDEO_MODELS)
    for name in VIDEO_MODELS:
        meta = MODELS.meta(name)
        assert meta["task"] == "video" and meta["paper"] and meta["input_size"]


@pytest.mark.parametrize("name", sorted(TINY))
def test_contract_on_tiny_clip(name: str) -> None:
    torch.manual_seed(0)
    kwargs, shape = TINY[name]
    model = MODELS.get(name)(5, **kwargs)
    x = torch.randn(shape)
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
        torch.testing.assert_close(model.forward_head(feats[-1]), out)
    assert out.shape == ((2, 5, i3d_mod.output_time(shape[2])) if name in I3D_FAMILY else (2, 5))
    assert model.num_classes == 5
    assert len(model.pretrained_cfg.input_size) == 4 and len(model.pretrained_cfg.mean) == 3
    assert len(feats) == len(model.feature_info)
    modules = dict(model.named_modules())
    for f, info in zip(feats, model.feature_info, strict=True):
        assert info.name in modules
        assert f.shape[:2] == (2, info.channels)
        assert f.shape[2] == math.ceil(shape[2] / info.temporal_stride)
        assert f.shape[3] == f.shape[4] == math.ceil(shape[3] / info.stride)
    model.train()
    model(x).float().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", ["i3d", "c3d", "r2plus1d_10", "mc3_18"])
def test_flow_variant_takes_two_channels(name: str) -> None:
    kwargs, shape = TINY[name]
    model = create_flow_model(name, 4, **kwargs).eval()
    assert model.pretrained_cfg.input_size[0] == 2 and model.pretrained_cfg.std == (0.226, 0.226)
    with torch.no_grad():
        assert model(torch.randn(1, 2, *shape[2:])).shape[:2] == (1, 4)


def test_late_fusion_modes() -> None:
    torch.manual_seed(0)
    rgb = MODELS.get("top_i3d")(4, channel_scale=0.125).eval()
    flow = MODELS.get("top_i3d")(4, channel_scale=0.125, in_channels=2).eval()
    clip = {"rgb": torch.randn(2, 3, 16, 32, 32), "flow": torch.randn(2, 2, 16, 32, 32)}
    with torch.no_grad():
        z_r, z_f = rgb(clip["rgb"]), flow(clip["flow"])
        soft = LateFusion(rgb, flow, "softmax")(clip)
        torch.testing.assert_close(soft.exp(), (z_r.mean(-1).softmax(1) + z_f.mean(-1).softmax(1)) / 2)
        logit = LateFusion(rgb, flow, "logits")((clip["rgb"], clip["flow"]))
        torch.testing.assert_close(logit, (z_r.mean(-1) + z_f.mean(-1)) / 2)
        p2 = LateFusion(rgb, flow, "p2")(clip)
        torch.testing.assert_close(p2, (z_r + z_f).softmax(1).sum(2))  # P2's test code: sum of per-step probabilities
    with pytest.raises(ActdistillError, match="flow"):
        LateFusion(rgb, flow)({"rgb": clip["rgb"]})


def test_frame_model_attention_starts_as_mean() -> None:
    torch.manual_seed(0)
    image = MODELS.get("frames")(3, image_model="test_resnet").image_model
    mean, attn = FrameModel(image, "mean").eval(), FrameModel(image, "attention").eval()
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        per_frame = image(x.transpose(1, 2).reshape(8, 3, 32, 32)).reshape(2, 4, 3)
        torch.testing.assert_close(mean(x), per_frame.mean(1))
        torch.testing.assert_close(attn(x), per_frame.mean(1))
    with pytest.raises(ActdistillError, match="image_model"):
        MODELS.get("frames")(3)


# --- I3D family -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", I3D_FAMILY)
def test_i3d_presets_switch_temporal_kernels(name: str) -> None:
    model = MODELS.get(name)(5, channel_scale=0.125)
    three_d = i3d_mod.PRESETS[name]
    for block, kt in model.temporal_kernels().items():
        full = 7 if block == "Conv3d_1a_7x7" else 3
        assert kt == (full if block in three_d else 1), block
    for block in i3d_mod.MIXED:
        m = getattr(model, block)
        expect = 3 if block in three_d else 1
        assert m.b1b.conv.weight.shape[2] == m.b2b.conv.weight.shape[2] == m.b3a.kernel[0] == expect
        assert m.b0.conv.weight.shape[2:] == m.b1a.conv.weight.shape[2:] == (1, 1, 1)
    assert model.Conv3d_1a_7x7.stride == (2, 2, 2)  # temporal stride 2 even for the 1×7×7 kernel (P2's Top-I3D code)
    assert model.MaxPool3d_4a_3x3.kernel == (3, 3, 3) and model.MaxPool3d_5a_2x2.kernel == (2, 2, 2)


def test_top_i3d_is_p2s_split() -> None:
    assert i3d_mod.PRESETS["top_i3d"] == {"Mixed_4d", "Mixed_4e", "Mixed_4f", "Mixed_5b", "Mixed_5c"}
    assert i3d_mod.PRESETS["bottom_i3d"] | i3d_mod.PRESETS["top_i3d"] == set(i3d_mod.SWITCHABLE)
    with pytest.raises(ActdistillError, match="Mixed_9z"):
        i3d_mod.InceptionI3D(blocks_3d={"Mixed_9z"})


@pytest.mark.parametrize("name", I3D_FAMILY)
def test_i3d_full_size_shapes_on_meta(name: str) -> None:
    with torch.device("meta"):
        model = MODELS.get(name)(101).eval()
        ends = model.extract_endpoints(torch.empty(1, 3, 64, 224, 224))
    assert list(ends) == [*i3d_mod.ENDPOINTS, "Logits"]
    assert ends["Conv3d_1a_7x7"].shape == (1, 64, 32, 112, 112)
    assert ends["Mixed_3c"].shape == (1, 480, 32, 28, 28)
    assert ends["Mixed_4f"].shape == (1, 832, 16, 14, 14)
    assert ends["Mixed_5c"].shape == (1, 1024, 8, 7, 7)  # P2's feature tap, same for every preset (as P2's code)
    assert ends["Logits"].shape == (1, 101, 7)
    assert [(f.channels, f.stride, f.temporal_stride) for f in model.feature_info] == [
        (192, 4, 2),
        (480, 8, 2),
        (832, 16, 4),
        (1024, 32, 8),
    ]


@pytest.mark.parametrize(
    ("size", "k", "s", "pads"), [(224, 7, 2, (2, 3)), (112, 3, 2, (0, 1)), (7, 3, 2, (1, 1)), (8, 2, 2, (0, 0))]
)
def test_tf_same_padding_rule(size: int, k: int, s: int, pads: tuple[int, int]) -> None:
    assert i3d_mod.same_padding(size, k, s) == pads
    assert (size + sum(pads) - k) // s + 1 == math.ceil(size / s)


# --- inflation from a 2D GoogLeNet ------------------------------------------------------------------------------


def _random_googlenet(num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    g = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True, num_classes=num_classes)
    for m in g.modules():  # non-trivial BN so that a wrong mapping cannot hide behind vanishing activations
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return g.eval()


def _googlenet_tf_same(g: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """inception5b map and logits of `g`, with conv1 padded TF-style ((2, 3) on even sizes instead of (3, 3)).

    That is the only padding difference: torchvision's ceil-mode max-pools equal TF "same" zero-padded pools on
    post-ReLU inputs, and stride-1 3×3 convs pad 1/1 in both.
    """
    conv1 = g.conv1
    x = F.relu(conv1.bn(F.conv2d(F.pad(x, (2, 3, 2, 3)), conv1.conv.weight, stride=2)))
    for name in ("maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3"):
        x = getattr(g, name)(x)
    for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4"):
        x = getattr(g, name)(x)
    feat = g.inception5b(g.inception5a(x))
    return {"Mixed_5c": feat, "logits": g.fc(g.avgpool(feat).flatten(1))}


def test_googlenet_key_map_covers_every_unit() -> None:
    g = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    units = {k.rsplit(".", 2)[0] for k in g.state_dict() if k.endswith(".conv.weight")}
    assert units == set(googlenet_key_map())
    model = i3d_mod.i3d(5, channel_scale=0.125)
    names = dict(model.named_modules())
    assert all(dst in names for dst in googlenet_key_map().values())


def test_inflated_i2d_equals_googlenet_per_frame(tmp_path) -> None:
    """I2D inflated from GoogLeNet: on a clip of identical frames, every time step equals the 2D net (exact)."""
    g = _random_googlenet(num_classes=7)
    path = tmp_path / "googlenet.pth"
    torch.save(g.state_dict(), path)
    model = i3d_mod.i2d(7, pretrained=str(path)).eval()  # layout detected, inflated
    frame = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = _googlenet_tf_same(g, frame)
        ends = model.extract_endpoints(frame.unsqueeze(2).expand(-1, -1, 8, -1, -1))
    assert ends["Mixed_5c"].shape == (2, 1024, 1, 2, 2)
    torch.testing.assert_close(ends["Mixed_5c"][:, :, 0], ref["Mixed_5c"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ends["Logits"][..., 0], ref["logits"], rtol=1e-4, atol=1e-4)  # fc copied into head


def _interior_steps(frames: int) -> list[int]:
    """Mixed_5c steps of a full I3D whose temporal receptive field (99 frames) lies inside the clip (no zero pad)."""
    layers = [(7, 2), (3, 1), (3, 1), (3, 1), (3, 2)] + [(3, 1)] * 5 + [(2, 2), (3, 1), (3, 1)]  # (kt, st) in order
    off, jump, size, n = 0, 1, 1, frames
    for k, s in layers:
        front = i3d_mod.same_padding(n, k, s)[0]
        off, jump, size, n = off - front * jump, jump * s, size + (k - 1) * jump, math.ceil(n / s)
    assert size == 99
    return [j for j in range(n) if off + j * jump >= 0 and off + j * jump + size <= frames]


def test_inflated_i3d_equals_googlenet_inside_the_clip() -> None:
    """Full I3D: equality holds only where no temporal zero padding is seen; border steps do differ."""
    g = _random_googlenet(num_classes=1000)
    model = inflate_from_googlenet(i3d_mod.i3d(5), g.state_dict()).eval()
    frame = torch.randn(1, 3, 32, 32)
    steps = _interior_steps(112)
    assert steps == [6, 7]
    with torch.no_grad():
        ref = _googlenet_tf_same(g, frame)["Mixed_5c"]
        feat = model.forward_features(frame.unsqueeze(2).expand(-1, -1, 112, -1, -1))[-1]
    assert feat.shape == (1, 1024, 14, 1, 1)
    for t in steps:
        torch.testing.assert_close(feat[:, :, t], ref, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(feat[:, :, 0], ref, rtol=1e-2, atol=1e-2)


def test_inflate_rejects_scaled_models() -> None:
    g = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    with pytest.raises(ActdistillError, match="channel_scale"):
        inflate_from_googlenet(i3d_mod.i3d(5, channel_scale=0.5), g.state_dict())


# --- pytorch-i3d Kinetics layout --------------------------------------------------------------------------------


def _as_pytorch_i3d(model: nn.Module) -> dict[str, torch.Tensor]:
    """A pytorch-i3d-style state dict (old PyTorch: no num_batches_tracked) fabricated from our model."""
    return {actdistill_to_kinetics_i3d(k): v.clone() for k, v in model.state_dict().items() if "num_batches" not in k}


def test_kinetics_key_mapping_round_trip() -> None:
    model = i3d_mod.i3d(400, channel_scale=0.125)
    sd = _as_pytorch_i3d(model)
    assert {"Conv3d_1a_7x7.conv3d.weight", "Conv3d_1a_7x7.bn.running_mean", "Mixed_3b.b1a.conv3d.weight"} <= set(sd)
    assert {"Mixed_5c.b3b.conv3d.weight", "logits.conv3d.weight", "logits.conv3d.bias"} <= set(sd)
    assert all(actdistill_to_kinetics_i3d(kinetics_i3d_to_actdistill(k)) == k for k in sd)
    torch.manual_seed(1)
    other = load_kinetics_i3d(i3d_mod.i3d(400, channel_scale=0.125), sd)
    for k, v in model.state_dict().items():
        if "num_batches" not in k:
            torch.testing.assert_close(other.state_dict()[k], v)
    assert other.pretrained_cfg.mean == (0.5, 0.5, 0.5)  # pytorch-i3d expects pixels in [-1, 1]


def test_kinetics_checkpoint_with_other_class_count(tmp_path) -> None:
    teacher = i3d_mod.i3d(400, channel_scale=0.125)
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(_as_pytorch_i3d(teacher), path)
    with pytest.warns(UserWarning, match="class count"):
        model = i3d_mod.i3d(101, pretrained=str(path), channel_scale=0.125)
    torch.testing.assert_close(model.Mixed_4f.b1b.conv.weight, teacher.Mixed_4f.b1b.conv.weight)
    assert model.head.logits.weight.shape[0] == 101
    # A Top-I3D student gets the 3D kernels summed over time in its 2D blocks.
    student = i3d_mod.top_i3d(101, channel_scale=0.125)
    with pytest.warns(UserWarning):
        load_kinetics_i3d(student, _as_pytorch_i3d(teacher))
    torch.testing.assert_close(student.Mixed_3b.b1b.conv.weight, teacher.Mixed_3b.b1b.conv.weight.sum(2, True))
    flow = i3d_mod.i3d(101, in_channels=2, channel_scale=0.125)
    with pytest.warns(UserWarning):
        load_kinetics_i3d(flow, _as_pytorch_i3d(teacher))
    assert flow.Conv3d_1a_7x7.conv.weight.shape[1] == 2


def test_pretrained_errors_are_user_facing(tmp_path, monkeypatch) -> None:
    with pytest.raises(ActdistillError, match="student.pretrained"):
        i3d_mod.i3d(5, pretrained=True)
    with pytest.raises(ActdistillError, match="missing.pth"):
        MODELS.get("c3d")(5, pretrained=str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save(MODELS.get("c3d")(5, channel_scale=0.125).state_dict(), wrong)
    with pytest.raises(ActdistillError, match="shape"):
        MODELS.get("c3d")(5, pretrained=str(wrong))

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models.video, "r3d_18", offline)
    with pytest.raises(ActdistillError, match="Kinetics-400"):
        MODELS.get("r3d_18")(5, pretrained=True)


def test_torchvision_wrapper_loads_local_weights(tmp_path) -> None:
    torch.manual_seed(0)
    src = torchvision.models.video.mc3_18(weights=None, num_classes=400)
    path = tmp_path / "mc3_18.pth"
    torch.save(src.state_dict(), path)
    with pytest.warns(UserWarning, match="class count"):
        model = MODELS.get("mc3_18")(10, pretrained=str(path))
    torch.testing.assert_close(model.layer3[0].conv1[0].weight, src.layer3[0].conv1[0].weight)
    with pytest.warns(UserWarning, match="class count"):
        flow = MODELS.get("mc3_18")(10, pretrained=str(path), in_channels=2)
    torch.testing.assert_close(flow.stem[0].weight, src.stem[0].weight.mean(1, keepdim=True).expand(-1, 2, -1, -1, -1))
