"""Detection distillation: zero at identical nets, hand-computed values, frozen teacher, one training step."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import detection_batch, detector_pair

from actdistill.detect.methods import (
    AttentionKD,
    DetectionTask,
    FeatureKD,
    LogitKD,
    _masked_mse,
    binary_kd_loss,
)
from actdistill.engine.build import build_method as build_registered
from actdistill.errors import ActdistillError
from actdistill.models.temporal_detector import build_detector

# The detection methods' registry names (the old short names of detect.distill, now `task: detection` methods).
NAMES = {
    "vanilla": "detection",
    "logit_kd": "detection_kd",
    "feature_kd": "detection_feature_kd",
    "attention_kd": "detection_attention_kd",
    "generative_kd": "detection_generative_kd",
    "generative_teacher": "detection_generative_teacher",
}


def build_method(name, student, teacher, **hparams):
    """A detection method by its short name, through the engine's `build_method` (registry, checked params)."""
    return build_registered({"name": NAMES.get(name, name), **hparams}, student, teacher)


torch.set_num_threads(1)


def _batch(channels: int = 6, length: int = 24) -> dict:
    return detection_batch(channels, length)  # every key of a detection batch (conftest)


def _pair(attention: bool = False, same: bool = False):
    """(student, teacher): a small 16-wide and a large 32-wide detector over 6-d features, 2 classes (conftest)."""
    torch.manual_seed(0)
    return detector_pair(attention, same)


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
    with pytest.raises(ActdistillError, match="unknown method 'nope'"):
        build_method("nope", student, None)
    assert isinstance(build_method("vanilla", student, None), DetectionTask)


def test_unknown_detection_hyper_parameter_is_refused():
    student, teacher = build_detector("small", 8, 3), build_detector("small", 8, 3)
    with pytest.raises(ActdistillError, match="no hyper-parameter 'temprature'.*temperature"):
        build_method("logit_kd", student, teacher, temprature=2.0)
    assert build_method("logit_kd", student, teacher, temperature=2.0, bg_weight=1.0).temperature == 2.0


# ------------------------------------------------------------------- generative KD (paper 2, eqs. 3-15, detection form)


def _gen_method(same: bool = False, **hparams):
    student, teacher = _pair(True, same=same)
    method = build_method("generative_kd", student, teacher, **hparams)
    method.train()
    method.on_epoch(1)
    return method, teacher


def _one_stage_step(method, stage, batch):
    from actdistill.engine.loop import only_stage_trainable

    before = {n: p.detach().clone() for n, p in method.named_parameters() if not n.startswith("teacher.")}
    opt = torch.optim.SGD(list(stage.parameters()), lr=0.1)
    with only_stage_trainable(method, stage, True):
        out = stage.forward(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    changed = {n for n, p in method.named_parameters() if n in before and not torch.equal(before[n], p)}
    return out, changed


def test_generative_kd_stages_train_only_their_parameters_and_keep_the_teacher():
    from actdistill.distill.generative import CVAE_OPTIM

    method, teacher = _gen_method()
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    stage1, stage2 = method.stages()
    assert (stage1.name, stage2.name) == ("generative", "attention")
    assert stage1.optim == CVAE_OPTIM and stage2.optim is None
    batch = _batch()
    out1, changed1 = _one_stage_step(method, stage1, batch)
    # widths differ (16 vs 32): gen_adapter maps F̂_S to the teacher width; no prepared teacher CVAE → trained here.
    assert set(out1.parts) == {"cvae_mse", "cvae_kld", "teacher_cvae_mse", "teacher_cvae_kld", "kd_gen"}
    assert out1.loss.item() == pytest.approx(sum(p.item() for p in out1.parts.values()), rel=1e-6)
    assert changed1 and all(n.split(".")[0] in ("cvae", "teacher_cvae", "gen_adapter") for n in changed1)
    assert any(n.startswith("cvae.") for n in changed1) and any(n.startswith("teacher_cvae.") for n in changed1)
    out2, changed2 = _one_stage_step(method, stage2, batch)
    assert set(out2.parts) == {"cls", "reg", "bg", "recon", "att"}
    assert out2.loss.item() == pytest.approx(sum(p.item() for p in out2.parts.values()), rel=1e-6)
    assert changed2 and all(n.startswith("student.") for n in changed2)
    assert any(n.startswith("student.attention.") for n in changed2)
    assert out2.metrics["recon_weight"] == pytest.approx(1 / 40)
    assert all(torch.equal(frozen[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    assert all(p.requires_grad for p in method.cvae.parameters())  # only_stage_trainable restored them


def test_generative_kd_loads_a_prepared_teacher_cvae_and_feeds_it_the_student_features():
    student, teacher = _pair(True, same=True)
    prep = build_method("generative_teacher", copy.deepcopy(teacher), None, bg_weight=1.0)
    assert [s.name for s in prep.stages()] == ["generative", "attention"]
    out = prep.forward_generative(_batch())
    assert set(out.parts) == {"cvae_mse", "cvae_kld"}
    extras = prep.student_state()["extras"]
    method = build_method("generative_kd", student, teacher)
    assert method.gen_adapter is None and method.load_teacher_extras(extras)
    assert not method.load_teacher_extras({})  # nothing to load: stays as it was
    method.train()
    method.on_epoch(1)
    t_cvae = {k: v.clone() for k, v in method.teacher_cvae.state_dict().items()}
    stage1 = method.stages()[0]
    assert {id(p) for p in stage1.parameters()} == {id(p) for p in method.cvae.parameters()}
    out1, changed1 = _one_stage_step(method, stage1, _batch())
    assert set(out1.parts) == {"cvae_mse", "cvae_kld", "kd_gen"}
    assert changed1 and all(n.startswith("cvae.") for n in changed1)
    assert all(torch.equal(t_cvae[k], v) for k, v in method.teacher_cvae.state_dict().items())
    with pytest.raises(ActdistillError, match="does not fit"):
        narrow = build_detector("small", 6, 2, attention=True, embed_dim=16)
        build_method("generative_kd", copy.deepcopy(narrow), narrow).load_teacher_extras(extras)


def test_cvae_parts_and_recon_ramp_against_hand_computation():
    from actdistill.detect.methods import CVAE1d

    torch.manual_seed(0)
    holder, _ = _gen_method(kl_weight=0.1)  # `GenerativeStages.cvae_terms`: eq. 5 on masked (B, C, T) maps
    cvae = holder.cvae = CVAE1d(2)
    feature, attention = torch.rand(2, 2, 3), torch.rand(2, 2, 3)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    torch.manual_seed(1)
    _, parts = holder.cvae_terms(feature, attention, mask)
    torch.manual_seed(1)
    recon, mu, logvar = cvae(feature, attention)
    sq, kl, n = 0.0, 0.0, 0
    for b, t in [(0, 0), (0, 1), (0, 2), (1, 0)]:
        for c in range(2):
            sq += (recon[b, c, t] - feature[b, c, t]).item() ** 2
            m, lv, lam = mu[b, t, c].item(), logvar[b, t, c].item(), attention[b, c, t].item()
            kl += -0.5 * (1 + lv - (m - lam) ** 2 - math.exp(lv))
            n += 1
    assert parts["cvae_mse"].item() == pytest.approx(sq / n, rel=1e-5)
    assert parts["cvae_kld"].item() == pytest.approx(0.1 * kl / n, rel=1e-5)
    method, _ = _gen_method()
    batch = _batch()
    for epoch, weight in [(1, 1 / 40), (10, 0.25), (20, 0.5), (45, 0.5)]:
        method.on_epoch(epoch)
        out = method.stages()[1].forward(batch)
        assert out.metrics["recon_weight"] == pytest.approx(weight)
        assert out.parts["recon"].item() == pytest.approx(weight * out.metrics["recon_raw"].item(), rel=1e-5)
    paper, _ = _gen_method(recon_weight_mode="paper")
    paper.on_epoch(3)
    assert paper.stages()[1].forward(batch).metrics["recon_weight"] == 1.0


def test_generative_kd_switches_and_checks():
    method, _ = _gen_method(use_recon=False, use_kd_gen=False, use_kd_att=False)
    assert method.gen_adapter is None
    assert set(method.stages()[1].forward(_batch()).parts) == {"cls", "reg", "bg"}
    assert set(method.stages()[0].forward(_batch()).parts) == {
        "cvae_mse",
        "cvae_kld",
        "teacher_cvae_mse",
        "teacher_cvae_kld",
    }
    student, teacher = _pair(True)
    with pytest.raises(ActdistillError, match="no hyper-parameter 'betta'.*beta"):
        build_method("generative_kd", student, teacher, betta=0.1)
    with pytest.raises(ActdistillError, match="no hyper-parameter 'beta'"):
        build_method("generative_teacher", student, None, beta=0.1)
    with pytest.raises(ActdistillError, match="recon_weight_mode"):
        build_method("generative_kd", student, teacher, recon_weight_mode="ramp")
    with pytest.raises(ActdistillError, match="attention head"):
        build_method("generative_teacher", build_detector("small", 6, 2), None)
    with pytest.raises(ActdistillError, match="needs a teacher"):
        build_method("generative_kd", student, None)
    ok = build_method("generative_kd", student, teacher, beta=0.02, gamma=0.2, bg_weight=2.0, feat_weight=0.5)
    assert (ok.beta, ok.gamma, ok.bg_weight, ok.feat_weight) == (0.02, 0.2, 2.0, 0.5)
    assert "feat_fg" in ok.stages()[1].forward(_batch()).parts
