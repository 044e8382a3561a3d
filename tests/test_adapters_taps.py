"""Feature taps (stage index / name / module hooks) and the adapters that bridge student and teacher features."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from actdistill.distill.adapters import build_adapter, map_to_tokens, plan_pair, tokens_to_map
from actdistill.distill.taps import (
    Tap,
    find_classifier,
    probe_shapes,
    resolve_tap,
    run_model,
    shared_forward,
)
from actdistill.errors import ActdistillError
from actdistill.models import create_model


@pytest.fixture(scope="module")
def pvt() -> nn.Module:
    return create_model("pvt_v2_demo", 3).eval()


def test_tap_by_index_name_and_module(pvt: nn.Module) -> None:
    assert resolve_tap(pvt, -1) == resolve_tap(pvt, 3) == resolve_tap(pvt, "model.stages.3") == Tap("stage", 3)
    assert resolve_tap(pvt, "-2") == Tap("stage", 2)
    block = resolve_tap(pvt, "module:model.stages.0.blocks.0")
    head_in = resolve_tap(pvt, "input:model.head")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        run = run_model(pvt, x, [Tap("stage", 1), block, head_in])
        torch.testing.assert_close(run.logits, pvt(x))
        torch.testing.assert_close(run.get(Tap("stage", 1)), pvt.forward_features(x)[1])
    assert run.get(block).shape == (2, 64, 32)  # tokens (B, N, C) of the first block
    assert run.get(head_in).shape == (2, 160)  # the pooled feature the classifier reads
    assert not pvt.model.stages[0].blocks[0]._forward_hooks  # hooks live only during the forward
    assert probe_shapes(pvt, [block]) == [(1, 256, 32)]  # dummy input at the preset's 64 px


def test_unknown_layer_lists_names_and_shapes(pvt: nn.Module) -> None:
    with pytest.raises(ActdistillError) as err:
        resolve_tap(pvt, "module:model.stages.0.blocks.9")
    message = str(err.value)
    assert "\n" not in message and "model.stages.0.blocks.0" in message
    assert "0=model.stages.0 (32×16×16)" in message and "model.stages.0.blocks.0 (256×32)" in message
    with pytest.raises(ActdistillError, match="out of range"):
        resolve_tap(pvt, 4)
    with pytest.raises(ActdistillError, match="no stage named 'stage9'"):
        resolve_tap(pvt, "stage9")


def test_find_classifier() -> None:
    assert isinstance(find_classifier(create_model("convnext_demo", 3))[1], nn.Linear)
    name, conv = find_classifier(create_model("i3d", 3, channel_scale=0.125))
    assert name == "head.logits" and isinstance(conv, nn.Conv3d)
    assert find_classifier(nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)))[0] == "2"
    with pytest.raises(ActdistillError, match="classifier"):
        find_classifier(nn.Sequential(nn.ReLU()))


def test_shared_forward_runs_a_model_once() -> None:
    model = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    assert run_model(model, x) is not run_model(model, x)
    with shared_forward():
        assert run_model(model, x) is run_model(model, x)
        assert run_model(model, x.clone()) is not run_model(model, x)


def test_tokens_to_map_with_and_without_class_token() -> None:
    tokens = torch.randn(2, 16, 5)
    grid = tokens_to_map(tokens)
    assert grid.shape == (2, 5, 4, 4)
    torch.testing.assert_close(map_to_tokens(grid), tokens)
    with_cls = torch.cat([torch.randn(2, 1, 5), tokens], dim=1)
    torch.testing.assert_close(tokens_to_map(with_cls), grid)
    adapter = build_adapter((1, 17, 5), (1, 8, 4, 4))
    s, t = adapter(with_cls, torch.randn(2, 8, 4, 4))
    assert s.shape == t.shape == (2, 8, 4, 4)
    torch.testing.assert_close(s, adapter.proj(grid))
    map_vs_tokens = build_adapter((1, 8, 2, 2), (1, 65, 12))  # teacher ViT with a class token
    s, t = map_vs_tokens(torch.randn(2, 8, 2, 2), torch.randn(2, 65, 12))
    assert s.shape == t.shape == (2, 12, 8, 8)


def test_temporal_pooling_tiling_and_per_frame_folding() -> None:
    student, teacher = torch.randn(2, 8, 4, 4), torch.randn(2, 16, 3, 4, 4)
    pooled = build_adapter(tuple(student.shape), tuple(teacher.shape))
    s, t = pooled(student, teacher)
    assert s.shape == t.shape == (2, 16, 4, 4)
    torch.testing.assert_close(t, teacher.mean(2))
    tiled = build_adapter(tuple(student.shape), tuple(teacher.shape), time="tile")
    s, t = tiled(student, teacher)
    assert s.shape == t.shape == (2, 16, 3, 4, 4) and torch.equal(t, teacher)
    torch.testing.assert_close(s[:, :, 0], s[:, :, 2])  # the one student frame, repeated over time
    frames = torch.randn(2 * 3, 8, 4, 4)  # a per-frame 2-D student, (B·T, C, H, W), frames b-major
    folded = build_adapter((3, 8, 4, 4), (1, 16, 3, 4, 4), project="never")
    s, _ = folded(frames, teacher)
    assert s.shape == (2, 8, 3, 4, 4)
    torch.testing.assert_close(s[1, :, 2], frames[5])


def test_spatial_resize_and_projection_modes() -> None:
    small, big = torch.randn(2, 4, 4, 4), torch.randn(2, 6, 8, 8)
    up = build_adapter((1, 4, 4, 4), (1, 6, 8, 8))
    assert up(small, big)[0].shape == (2, 6, 8, 8)
    down = build_adapter((1, 6, 8, 8), (1, 4, 4, 4), project="never")
    s, _ = down(big, small)
    torch.testing.assert_close(s, nn.functional.adaptive_avg_pool2d(big, 4))
    common = build_adapter((1, 6, 8, 8), (1, 4, 4, 4), project="never", resize="min")
    assert [x.shape[2:] for x in common(big, small)] == [(4, 4), (4, 4)]
    same = build_adapter((1, 6, 8, 8), (1, 6, 4, 4))
    assert same.proj is None and build_adapter((1, 6, 8, 8), (1, 6, 4, 4), project="always").proj is not None
    vector = build_adapter((1, 6, 8, 8), (1, 10))
    assert vector(big, torch.randn(2, 10))[0].shape == (2, 10)


def test_unbridgeable_pairs_name_both_shapes() -> None:
    with pytest.raises(ActdistillError, match=r"\(1, 48, 8\).*\(1, 16, 2, 4, 4\).*square"):
        build_adapter((1, 48, 8), (1, 16, 2, 4, 4))
    with pytest.raises(ActdistillError, match=r"batch sizes"):
        build_adapter((3, 8, 4, 4), (2, 8, 4, 4))
    with pytest.raises(ActdistillError, match=r"\(8,\)"):
        build_adapter((8,), (1, 8, 4, 4))
    plan = plan_pair((1, 48, 8), (1, 48, 16))  # equal, non-square token sequences: laid out as columns
    assert plan.student_tokens == plan.teacher_tokens == "column"
