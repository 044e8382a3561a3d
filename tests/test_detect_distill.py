"""Detection distillation: zero at identical nets, hand-computed values, frozen teacher, one training step."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from actdistill.detect.detector import build_detector
from actdistill.detect.distill import (
    AttentionKD,
    DetectionTask,
    FeatureKD,
    LogitKD,
    _masked_mse,
    binary_kd_loss,
    build_method,
)
from actdistill.errors import ActdistillError

torch.set_num_threads(1)


def _batch(channels: int = 6, length: int = 24) -> dict:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[1, 20:] = False
    return {
        "input": torch.randn(2, channels, length, generator=g),
        "mask": mask,
        "segments": [torch.tensor([[3.0, 9.0]]), torch.tensor([[10.0, 16.0]])],
        "labels": [torch.tensor([0]), torch.tensor([1])],
    }


def _pair(attention: bool = False, same: bool = False):
    torch.manual_seed(0)
    teacher = build_detector("large", 6, 2, attention=attention, embed_dim=32)
    student = copy.deepcopy(teacher) if same else build_detector("small", 6, 2, attention=attention, embed_dim=16)
    return student, teacher


def test_binary_kd_hand_value():
    # One position, one class: p_t = σ(ln 3) = 0.75, p_s = 0.5, T = 1.
    zs, zt = torch.zeros(1, 1, 1), torch.full((1, 1, 1), math.log(3.0))
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert binary_kd_loss(zs, zt, torch.ones(1, 1, dtype=torch.bool), 1.0).item() == pytest.approx(expected, rel=1e-5)
    # T = 2 scales the logits by 1/2 and the loss by T² = 4; padded positions do not count.
    pt, ps = 1 / (1 + math.exp(-math.log(3.0) / 2)), 0.5
    kl2 = pt * math.log(pt / ps) + (1 - pt) * math.log((1 - pt) / (1 - ps))
    zs2, zt2 = torch.zeros(1, 1, 2), torch.tensor([[[math.log(3.0), 5.0]]])
    valid = torch.tensor([[True, False]])
    assert binary_kd_loss(zs2, zt2, valid, 2.0).item() == pytest.approx(4 * kl2, rel=1e-5)


def test_masked_mse_hand_value():
    a, b = torch.tensor([[[1.0, 2.0, 9.0]]]), torch.tensor([[[0.0, 0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    assert _masked_mse(a, b, mask).item() == pytest.approx(2.5)
    assert _masked_mse(a, b, mask, torch.tensor([[1.0, 3.0, 1.0]])).item() == pytest.approx((1 + 12) / 4)


@pytest.mark.parametrize(
    "cls,part,attention", [(LogitKD, "kd", False), (FeatureKD, "feat", False), (AttentionKD, "att", True)]
)
def test_zero_at_identical_teacher_and_student(cls, part, attention):
    student, teacher = _pair(attention, same=True)
    student.set_input_stats(torch.zeros(6), torch.ones(6))
    method = cls(student, teacher, **({"feat_weight": 1.0} if cls is AttentionKD else {}))
    out = method(_batch())
    assert out.parts[part].item() == pytest.approx(0.0, abs=1e-7)
    if cls is AttentionKD:
        assert out.parts["feat_fg"].item() == pytest.approx(0.0, abs=1e-7)
    assert torch.allclose(out.loss, sum(out.parts.values()))


@pytest.mark.parametrize(
    "name,hparams,attention",
    [
        ("vanilla", {}, False),
        ("logit_kd", {"temperature": 2.0}, False),
        ("feature_kd", {}, False),
        ("attention_kd", {"feat_weight": 0.5}, True),
    ],
)
def test_one_step_trains_student_and_leaves_teacher_bitwise_unchanged(name, hparams, attention):
    student, teacher = _pair(attention)
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    method = build_method(name, student, teacher if name != "vanilla" else None, **hparams)
    method.train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    opt = torch.optim.SGD(list(method.trainable_parameters()), lr=0.1)
    out = method(_batch())
    assert torch.isfinite(out.loss) and out.loss.item() == pytest.approx(sum(p.item() for p in out.parts.values()))
    assert out.logits.shape == (2, 2, 24 + 12 + 6 + 3)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert all(torch.equal(frozen[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    assert name == "vanilla" or not teacher.training
    if name == "feature_kd":
        assert isinstance(method.adapters[0], torch.nn.Conv1d) and method.adapters[0].out_channels == 32
    if attention:
        assert "bg" in out.parts and "att" in out.parts


def test_methods_check_their_inputs():
    student, teacher = _pair(False)
    with pytest.raises(ActdistillError, match="needs a teacher"):
        build_method("logit_kd", student, None)
    with pytest.raises(ActdistillError, match="attention heads"):
        AttentionKD(student, teacher)
    with pytest.raises(ActdistillError, match="unknown detection method"):
        build_method("nope", student, None)
    assert isinstance(build_method("vanilla", student, None), DetectionTask)


def test_unknown_detection_hyper_parameter_is_refused():
    from actdistill.detect.distill import build_method

    student, teacher = build_detector("small", 8, 3), build_detector("small", 8, 3)
    with pytest.raises(ActdistillError, match="no hyper-parameter 'temprature'.*temperature"):
        build_method("logit_kd", student, teacher, temprature=2.0)
    assert build_method("logit_kd", student, teacher, temperature=2.0, bg_weight=1.0).temperature == 2.0
