"""The method contract for every registered method of every task, then per-method behaviour.

Contract (distill/base.py, docs/architecture.md): `Distiller(student, teacher, **hparams)`, `forward(batch) ->
StepOutput` with `loss == sum(parts)`, a frozen teacher (bitwise unchanged, no gradients, eval mode), trainable
parameters listed once and never the teacher's, batch keys (`requires`) that the task's data provides, every stage
trainable through the engine's loop, and a predictor that `predictor_spec` rebuilds as a registered model.
The lists below come from the registry (`METHODS.meta(name)["task"]`): a newly registered method is tested here
without editing a list.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    detection_batch,
    detector_pair,
    engine_run,
    pcl_batch,
    pcl_pair,
    train_epoch,
)
from torch import nn

import actdistill.distill  # noqa: F401  (registers the methods)
from actdistill.batch import CACHE_KEYS, TASK_KEYS, missing_keys
from actdistill.distill.combined import Collab, Combo
from actdistill.distill.feature import AT, FN, MGD, FitNet, SimKD
from actdistill.distill.functional import ctkd_lambda, dkd_parts, fn_loss, kd_loss
from actdistill.distill.logit import CTKD, DKD, KD
from actdistill.distill.relation import CRD
from actdistill.engine.build import build_method
from actdistill.errors import ActdistillError
from actdistill.models import create_model
from actdistill.models._contract import FeatureInfo, PretrainedCfg
from actdistill.registry import METHODS


def methods_of(task: str) -> list[str]:
    return [n for n in METHODS.names() if METHODS.meta(n).get("task", "classification") == task]


CLASSIFICATION, PCL, DETECTION = methods_of("classification"), methods_of("pcl"), methods_of("detection")

# (teacher spec, student spec, input shape): `create_model(name, 3, **kwargs)`.
PAIRS = {
    "cnn_to_vit": (("convnext_demo", {}), ("pvt_v2_demo", {}), (2, 3, 32, 32)),
    "i3d_to_frames": (("i3d", {"channel_scale": 0.125}), ("frames", {"image_model": "pvt_v2_demo"}), (2, 3, 8, 32, 32)),
    # Paper 2's generative KD needs teacher and student features of one shape (as in its official code): I3D → Top-I3D.
    "i3d_to_top_i3d": (("i3d", {"channel_scale": 0.125}), ("top_i3d", {"channel_scale": 0.125}), (2, 3, 16, 64, 64)),
}
# Methods that cannot be built from (student, teacher) alone.
TEST_KWARGS = {
    "crd": {"num_data": 16, "nce_k": 8, "train_labels": [i % 3 for i in range(16)]},
    "combo": {"methods": [{"name": "kd", "temperature": 4}, {"name": "at"}]},
    "generative": {"input_size": (16, 64, 64)},
    "generative_teacher": {"input_size": (16, 64, 64)},
}
# Methods tied to one architecture pair; every other method runs on all pairs.
ONLY_PAIR = {"generative": "i3d_to_top_i3d", "generative_teacher": "i3d_to_top_i3d"}
# Known bugs (docs in the report of issue 15): the predictor SimKD's checkpoint rebuilds has no `pretrained_cfg`, so
# `actdistill eval` of a simkd run fails in `task.build_data` (B2).


def test_every_method_belongs_to_a_task_with_a_contract_test() -> None:
    tasks = {METHODS.meta(n).get("task", "classification") for n in METHODS.names()}
    assert tasks == set(TASK_KEYS) == {"classification", "pcl", "detection"}
    assert {"vanilla", "kd", "generative"} <= set(CLASSIFICATION) and set(PCL) == {"pcl", "pcl_kd"}
    assert {"detection", "detection_kd", "detection_generative_kd"} <= set(DETECTION)


def _batch(shape: tuple[int, ...]) -> dict:
    return {"input": torch.randn(shape), "label": torch.tensor([0, 2]), "index": torch.tensor([3, 11])}


def _spec(name: str, kwargs: dict) -> dict:
    return {"name": name, "num_classes": 3, "kwargs": dict(kwargs)}


def check_method_contract(method, task: str, batch: dict, student: nn.Module, teacher: nn.Module | None) -> list:
    """What every method of every task guarantees, checked on one pass of the engine's loop over one batch (every
    stage); returns each stage's `StepOutput` as the loop saw it."""
    uses_teacher = teacher is not None and method.teacher is teacher
    assert not missing_keys(method.requires, TASK_KEYS[task] | CACHE_KEYS), "requires keys its task never provides"
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()} if uses_teacher else {}
    student_before = [p.detach().clone() for p in student.parameters()]
    params = list(method.trainable_parameters())
    trainable = {id(p) for p in params}
    assert len(trainable) == len(params), "a parameter is listed twice"
    if teacher is not None:
        assert not trainable & {id(p) for p in teacher.parameters()}
    staged = {id(p) for stage in method.stages() for p in stage.parameters()}
    assert staged <= trainable | {id(p) for p in method.parameters() if p.requires_grad}
    method.train()
    assert not uses_teacher or not teacher.training  # train() keeps the teacher in eval mode
    run = engine_run(method, [batch], lr=0.1)
    outs, step = [], run.replicas.step
    run.replicas.step = lambda b, i: outs.append(step(b, i)) or outs[-1]  # what the loop back-propagates
    stats = train_epoch(run)  # every stage, through engine.loop
    assert len(outs) == len(method.stages())
    for out in outs:
        assert torch.allclose(out.loss, sum(p.float() for p in out.parts.values()))
        assert out.logits.shape[0] == len(batch["input"]) and torch.isfinite(out.loss)
    assert all(math.isfinite(v) for k, v in stats.items() if k.endswith("loss"))
    for key, value in teacher_before.items():
        assert torch.equal(value, teacher.state_dict()[key]), key  # BatchNorm statistics included
    if uses_teacher:
        assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    assert {id(p) for p in method.parameters() if p.grad is not None} <= trainable
    assert any(not torch.equal(a, b.detach()) for a, b in zip(student_before, student.parameters()))
    return outs


def check_predictor_rebuilds(method, student_spec: dict, teacher_spec: dict | None, *inputs: torch.Tensor) -> nn.Module:
    """`predictor_spec` names a registered model whose weights are `predictor().state_dict()`'s and which scores
    like `predictor()` (what `engine.evaluate.load_predictor` does with a checkpoint)."""
    method.eval()
    predictor = method.predictor()
    spec = method.predictor_spec(student_spec, teacher_spec)
    rebuilt = create_model(spec["name"], spec["num_classes"], pretrained=False, **spec.get("kwargs", {}))
    rebuilt.load_state_dict(predictor.state_dict())
    rebuilt.eval()
    with torch.no_grad():
        expected, got = predictor(*inputs), rebuilt(*inputs)
    if isinstance(expected, dict):  # the detector's heads
        expected, got = torch.cat(expected["cls"], 2), torch.cat(got["cls"], 2)
    torch.testing.assert_close(got, expected)
    return rebuilt


@pytest.mark.parametrize("pair", sorted(PAIRS))
@pytest.mark.parametrize("name", CLASSIFICATION)
def test_every_classification_method_takes_a_step(name: str, pair: str) -> None:
    if ONLY_PAIR.get(name, pair) != pair:
        pytest.skip(f"{name} needs teacher and student features of one shape: runs on the {ONLY_PAIR[name]} pair")
    torch.manual_seed(0)
    (t_name, t_kwargs), (s_name, s_kwargs), shape = PAIRS[pair]
    teacher, student = create_model(t_name, 3, **t_kwargs), create_model(s_name, 3, **s_kwargs)
    method = METHODS.get(name)(student, teacher, **TEST_KWARGS.get(name, {}))
    batch = _batch(shape)
    outs = check_method_contract(method, "classification", batch, student, teacher)
    assert all(out.logits.shape == (2, 3) for out in outs)
    rebuilt = check_predictor_rebuilds(method, _spec(s_name, s_kwargs), _spec(t_name, t_kwargs), batch["input"])
    # `actdistill eval` builds the test data from the rebuilt predictor's input statistics (engine/evaluate.py).
    assert rebuilt.pretrained_cfg.mean == student.pretrained_cfg.mean and rebuilt.num_classes == 3


@pytest.mark.parametrize("name", PCL)
def test_every_pcl_method_takes_a_step(name: str) -> None:
    torch.manual_seed(0)
    student, teacher = pcl_pair()
    batch = pcl_batch()
    uses_teacher = METHODS.get(name).uses_teacher
    method = build_method({"name": name, "k": 4}, student, teacher if uses_teacher else None, num_data=8)
    bank = method.bank1.memory.clone()
    (out,) = check_method_contract(method, "pcl", batch, student, teacher)
    assert out.logits.shape == (4, 5) and {"ce", "con"} <= set(out.parts)
    assert ("kd" in out.parts) == uses_teacher
    assert not torch.equal(bank[:4], method.bank1.memory[:4]) and torch.equal(bank[4:], method.bank1.memory[4:])
    spec = {"name": "pcl", "num_classes": 5, "kwargs": {"backbone": "r3d_10",
                                                        "backbone_kwargs": {"channel_scale": 0.0625}}}  # fmt: skip
    check_predictor_rebuilds(method, spec, None, batch["input"])
    with pytest.raises(ActdistillError, match="student.name=pcl"):
        build_method({"name": name}, create_model("r3d_10", 5, channel_scale=0.0625), teacher, num_data=8)


@pytest.mark.parametrize("name", DETECTION)
def test_every_detection_method_takes_a_step(name: str) -> None:
    torch.manual_seed(0)
    student, teacher = detector_pair(attention=True)
    student.set_input_stats(torch.zeros(6), torch.ones(6))
    batch = detection_batch()
    uses_teacher = METHODS.get(name).uses_teacher
    method = build_method({"name": name}, student, teacher if uses_teacher else None)
    outs = check_method_contract(method, "detection", batch, student, teacher)
    assert all(out.logits.shape == (2, 2, 24 + 12 + 6 + 3) for out in outs)  # (B, K, positions of 4 levels)
    assert {"cls", "reg", "bg"} <= set(outs[-1].parts)  # attention students also learn on F_bg
    spec = {"name": "temporal_detector", "num_classes": 2,
            "kwargs": {"in_channels": 6, "preset": "small", "attention": True, "embed_dim": 16}}  # fmt: skip
    check_predictor_rebuilds(method, spec, None, batch["input"], batch["mask"])
    with pytest.raises(ActdistillError, match="temporal detector"):
        build_method({"name": name}, create_model("pvt_v2_demo", 2), teacher if uses_teacher else None)


# ------------------------------------------------------------------------------------------------ toy models


class ToyNet(nn.Module):
    """A contract-following CNN: stages of Conv(k3, stride s) → ReLU; head: global average pool → Linear."""

    def __init__(self, channels=(4, 8), strides=(2, 2), video: bool = False, num_classes: int = 3) -> None:
        super().__init__()
        conv = nn.Conv3d if video else nn.Conv2d
        stages, c, total = [], 3, 1
        self.feature_info = []
        for i, (out, s) in enumerate(zip(channels, strides)):
            stages.append(nn.Sequential(conv(c, out, 3, (1, s, s) if video else s, 1), nn.ReLU()))
            c, total = out, total * s
            self.feature_info.append(FeatureInfo(f"stages.{i}", out, total))
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(c, num_classes)
        self.num_classes = num_classes
        self.pretrained_cfg = PretrainedCfg((3, 4, 16, 16) if video else (3, 16, 16))
        self.calls = 0

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.calls += 1
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward_head(self, feature: torch.Tensor) -> torch.Tensor:
        return self.fc(feature.flatten(2).mean(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x)[-1])

    def get_classifier(self) -> nn.Module:
        return self.fc


class Fixed(nn.Module):
    """A 'model' whose logits are a trainable tensor."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits * 1.0


def _toy_batch(n: int = 4, video: bool = False) -> dict:
    shape = (n, 3, 4, 16, 16) if video else (n, 3, 16, 16)
    return {"input": torch.randn(shape), "label": torch.arange(n) % 3, "index": torch.arange(n)}


# ------------------------------------------------------------------------------------------------ logit methods


def test_dkd_warmup_scales_only_the_dkd_term() -> None:
    torch.manual_seed(0)
    zs, zt = torch.randn(4, 5), torch.randn(4, 5)
    batch = {"input": torch.zeros(4, 1), "label": torch.tensor([0, 1, 2, 3])}
    method = DKD(Fixed(zs), Fixed(zt), warmup=20)
    tckd, nckd = dkd_parts(zs, zt, batch["label"], 4.0)
    for epoch, factor in ((1, 0.05), (5, 0.25), (20, 1.0), (30, 1.0)):
        method.on_epoch(epoch)
        out = method(batch)
        assert out.metrics["warmup"] == pytest.approx(factor)
        assert float(out.parts["dkd"].detach()) == pytest.approx(factor * float(tckd + 8 * nckd), rel=1e-5)
        assert float(out.parts["ce"].detach()) == pytest.approx(float(F.cross_entropy(zs, batch["label"])), rel=1e-6)
    torch.testing.assert_close(out.metrics["tckd"], tckd)
    state = method.student_state()
    fresh = DKD(Fixed(zs), Fixed(zt), warmup=20)
    fresh.load_student_state(state)
    assert fresh.epoch == 30 and fresh.warmup_factor() == 1.0


def test_ctkd_temperature_range_and_lambda_schedule() -> None:
    method = CTKD(nn.Linear(6, 4), nn.Linear(6, 4))
    batch = {"input": torch.randn(8, 6), "label": torch.randint(0, 4, (8,))}
    for epoch, lam in ((1, -0.0245), (5, -0.5), (10, -1.0), (40, -1.0)):
        method.on_epoch(epoch)
        out = method(batch)
        assert out.metrics["lambda"] == pytest.approx(lam, abs=1e-4)
        assert 1.0 < float(out.metrics["temperature"]) < 21.0
    assert float(out.metrics["temperature"]) == pytest.approx(1 + 20 * torch.sigmoid(torch.tensor(1.0)).item())
    assert any(p is method.temperature.theta for p in method.trainable_parameters())


@pytest.mark.parametrize("epoch", [1, 10])
def test_ctkd_gradient_reversed_under_bf16_autocast(epoch: int) -> None:
    torch.manual_seed(0)
    method = CTKD(nn.Linear(6, 4), nn.Linear(6, 4))
    method.on_epoch(epoch)
    batch = {"input": torch.randn(8, 6), "label": torch.randint(0, 4, (8,))}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method(batch)
    out.loss.backward()
    grad = method.temperature.theta.grad
    assert grad is not None and float(grad) != 0.0
    # The same KD term without the reversal layer, on the same (bf16-computed) logits.
    theta = torch.tensor(1.0, requires_grad=True)
    logits_t = method.teacher(batch["input"]).detach()
    plain = 0.9 * kd_loss(out.logits.detach().float(), logits_t, 1 + 20 * torch.sigmoid(theta))
    (plain_grad,) = torch.autograd.grad(plain, theta)
    lam = ctkd_lambda(epoch)
    assert math.copysign(1, float(grad)) == -math.copysign(1, float(plain_grad))
    assert float(grad) == pytest.approx(lam * float(plain_grad), rel=2e-2)


def test_ctkd_theta_survives_resume() -> None:
    method = CTKD(nn.Linear(6, 4), nn.Linear(6, 4))
    with torch.no_grad():
        method.temperature.theta.fill_(-0.3)
    method.on_epoch(7)
    fresh = CTKD(nn.Linear(6, 4), nn.Linear(6, 4))
    fresh.load_student_state(method.student_state())
    assert float(fresh.temperature.theta.detach()) == pytest.approx(-0.3) and fresh.epoch == 7


# ---------------------------------------------------------------------------------------------- feature methods


@pytest.mark.parametrize("cls", [FitNet, AT, MGD])
@pytest.mark.parametrize("video_teacher", [False, True])
def test_feature_methods_bridge_mismatched_maps(cls: type, video_teacher: bool) -> None:
    """Student 4/8 channels at 8²/4² maps; teacher 6/12 channels at 16²/8² (and 3-D: a time axis to pool)."""
    torch.manual_seed(0)
    student = ToyNet((4, 8), (2, 2))
    teacher = ToyNet((6, 12), (1, 2), video=video_teacher)
    kwargs = {"student_layer": 1, "teacher_layer": 1} if cls is not AT else {}
    method = cls(student, teacher, **kwargs).train()
    batch = _toy_batch()
    if video_teacher:
        batch["input_t"] = torch.randn(4, 3, 4, 16, 16)
    out = method(batch)
    distill = [v for k, v in out.parts.items() if k != "ce"]
    assert all(torch.isfinite(v) and float(v) > 0 for v in distill)
    out.loss.backward()
    extras = [p for m in method.extra_modules().values() for p in m.parameters()]
    assert cls is AT or all(p.grad is not None for p in extras)
    if cls is FitNet:
        s, t = method.regressor(
            student.forward_features(batch["input"])[1],
            teacher.forward_features(batch.get("input_t", batch["input"]))[1],
        )
        assert s.shape == t.shape == (4, 12, 8, 8)


def test_feature_method_tokens_and_unknown_layer() -> None:
    student, teacher = ToyNet(), ToyNet((6, 12))
    with pytest.raises(ActdistillError, match=r"stages\.1 \(8×4×4\)"):
        FitNet(student, teacher, student_layer="module:stages.7")
    method = FitNet(student, teacher, student_layer="module:stages.1.0", teacher_layer="stages.1")
    assert method(_toy_batch()).parts["hint"] > 0


def test_fn_uses_the_students_own_classifier_on_the_pooled_feature() -> None:
    torch.manual_seed(0)
    student, teacher = ToyNet(), ToyNet((6, 12))
    method = FN(student, teacher)
    batch = _toy_batch()
    out = method(batch)
    pooled = student.forward_features(batch["input"])[-1].mean((2, 3))
    expected = 9.0 * fn_loss(pooled, student.fc.weight, student.fc.bias, teacher(batch["input"]), 2.0)
    torch.testing.assert_close(out.parts["fn"], expected)
    assert not method.extra_modules()  # the classifier stays the student's, not an extra


def test_at_with_paper2_attention_head_on_the_student() -> None:
    """Paper 2's Table-1 AT setting: the student classifies through the attention module; AT on the maps as before."""
    from actdistill.distill.generative import AttentionModule

    torch.manual_seed(0)
    teacher = create_model("i3d", 3, channel_scale=0.125)
    student = create_model("top_i3d", 3, channel_scale=0.125)
    x = torch.randn(2, 3, 16, 64, 64)
    batch = {"input": x, "label": torch.tensor([0, 2])}
    taps = {"student_layers": [-1], "teacher_layers": [-1]}
    plain = AT(student, teacher, **taps)
    assert plain.attention_head is None and set(plain.extra_modules()) == {"attention"}  # default: no new module
    method = AT(student, teacher, **taps, student_attention=True, input_size=(16, 64, 64))
    assert isinstance(method.attention_head, AttentionModule)
    assert method.attention_head.time_steps == 2 and method.attention_head.channels == 128  # Mixed_5c 128×2×2×2
    assert {id(p) for p in method.attention_head.parameters()} <= {id(p) for p in method.trainable_parameters()}
    assert "attention_head" in method.student_state()["extras"]

    method.eval()  # no head dropout: logits are deterministic
    plain.eval()
    out, ref = method(batch), plain(batch)
    with torch.no_grad():
        feature = student.forward_features(x)[-1]
        a = method.attention_head(feature)  # (B, C, T')
        weighted = feature * a[..., None, None]
        weighted = weighted * feature.sum() / weighted.sum()  # paper 2's σ over the whole batch
        expected_logits = student.forward_head(weighted).mean(-1)
    torch.testing.assert_close(out.logits, expected_logits)
    assert not torch.allclose(out.logits, ref.logits)  # the attention head changes the classification
    torch.testing.assert_close(out.parts["ce"], F.cross_entropy(expected_logits, batch["label"]))
    torch.testing.assert_close(out.parts["at"], ref.parts["at"])  # AT on the un-weighted maps, as before
    torch.testing.assert_close(method.predict(x).mean(-1), out.logits)

    method.train()
    out = method(batch)
    out.loss.backward()
    assert all(p.grad is not None for p in method.attention_head.parameters())
    with pytest.raises(ActdistillError):
        AT(create_model("pvt_v2_demo", 3), create_model("convnext_demo", 3), student_attention=True)


@pytest.mark.parametrize("pair", ["i3d", "timm"])
def test_fn_reads_the_pooled_feature_before_dropout(pair: str) -> None:
    """Paper 2's FN baseline reads pooled Mixed_5c, not the classifier input after the head's dropout (p=0.5)."""
    torch.manual_seed(0)
    if pair == "i3d":
        teacher = create_model("i3d", 3, channel_scale=0.125)
        student = create_model("top_i3d", 3, channel_scale=0.125)  # I3D head: avg-pool → Dropout(0.5) → conv
        x = torch.randn(2, 3, 16, 64, 64)
    else:
        teacher = create_model("convnext_demo", 3)
        student = create_model("pvt_v2_demo", 3, drop_rate=0.5)  # timm head: pool → Dropout(0.5) → fc
        x = torch.randn(2, 3, 32, 32)
    batch = {"input": x, "label": torch.tensor([0, 2])}
    method = FN(student, teacher).train()
    fns = [method(batch).parts["fn"] for _ in range(3)]
    assert student.training and all(m.training for m in student.modules())  # modes restored
    # The reference f, computed independently: the eval-mode pooled feature before the classifier.
    with torch.no_grad():
        last = student.forward_features(x)[-1]
        logits_t = teacher(x)
        if pair == "i3d":
            pooled = F.avg_pool3d(last, (2, *last.shape[3:]), stride=1)  # (B, D, T', 1, 1)
            rows = pooled.flatten(2).transpose(1, 2).reshape(-1, pooled.shape[1])  # (B·T', D), b-major
            target = logits_t.transpose(1, 2).reshape(rows.shape[0], -1)  # the teacher's logits of the same step
            conv = student.head.logits
            w, b = conv.weight.flatten(1), conv.bias
        else:
            rows = last.flatten(2).mean(-1)  # PVT-v2 averages its tokens
            target = logits_t
            w, b = student.model.head.weight, student.model.head.bias
    expected = 9.0 * fn_loss(rows, w, b, target, 2.0)
    for fn in fns:
        torch.testing.assert_close(fn, expected, rtol=1e-4, atol=1e-6)
    # After dropout half of f is zero: reading the classifier input of the training forward gives another value.
    post = 9.0 * fn_loss(F.dropout(rows, 0.5, training=True), w, b, target, 2.0)
    assert not torch.allclose(post, expected, rtol=1e-3)
    fns[0].backward()
    assert student.get_classifier().weight.grad is not None


def test_simkd_predicts_with_the_teacher_head() -> None:
    torch.manual_seed(0)
    student, teacher = ToyNet(), ToyNet((6, 12), video=True)
    method = SimKD(student, teacher)
    batch = {**_toy_batch(), "input_t": torch.randn(4, 3, 4, 16, 16)}
    assert set(method.train()(batch).parts) == {"simkd"}  # no CE by default
    method.eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        before = method.predict(x)
        deployed = method.deployable().eval()(x)
        teacher.fc.weight.add_(torch.randn_like(teacher.fc.weight))
        after = method.predict(x)
    assert before.shape == (3, 3)
    torch.testing.assert_close(deployed, before)
    assert not torch.allclose(before, after)
    with pytest.raises(ActdistillError, match="last stage"):
        SimKD(student, teacher, teacher_layer=0)


# --------------------------------------------------------------------------------------------- relation methods


def test_crd_state_round_trip_and_index_requirement() -> None:
    torch.manual_seed(0)
    student, teacher = ToyNet(), ToyNet((6, 12))
    assert CRD.requires == frozenset({"index"})
    with pytest.raises(ActdistillError, match="num_data"):
        CRD(student, teacher)
    method = CRD(student, teacher, num_data=10, nce_k=4, negatives="uniform").train()
    before = method.memory.memory_s.clone()
    method(_toy_batch())
    assert float(method.memory.z_s) > 0 and float(method.memory.z_t) > 0
    assert not torch.equal(before[:4], method.memory.memory_s[:4]) and torch.equal(
        before[4:], method.memory.memory_s[4:]
    )
    fresh = CRD(ToyNet(), ToyNet((6, 12)), num_data=10, nce_k=4, negatives="uniform")
    fresh.load_student_state(method.student_state())
    for key, value in method.memory.state_dict().items():
        assert torch.equal(value, fresh.memory.state_dict()[key]), key
    batch = _toy_batch()
    del batch["index"]
    with pytest.raises(ActdistillError, match="index"):
        method(batch)


def test_crd_uniform_negatives_skip_the_positive() -> None:
    method = CRD(ToyNet(), ToyNet(), num_data=8, nce_k=5, negatives="uniform")
    index = torch.tensor([0, 3, 7])
    neg = method.draw_negatives(index)
    assert neg.shape == (3, 5) and not (neg == index[:, None]).any()
    assert all(len(set(row.tolist())) == 5 for row in neg)  # K ≤ N−1: without replacement
    method.nce_k = 20  # K > N−1: with replacement
    neg = method.draw_negatives(index)
    assert neg.shape == (3, 20) and not (neg == index[:, None]).any() and int(neg.max()) < 8


def test_crd_class_negatives_come_from_other_classes() -> None:
    # RepDistiller's CIFAR100InstanceSample: K negatives uniform over the other classes' samples, without
    # replacement unless K exceeds their number. Labels are unsorted and not 0..C-1.
    labels = torch.tensor([5, 2, 5, 9, 2, 2, 9, 5, 2, 9, 9, 9])
    method = CRD(ToyNet(), ToyNet(), num_data=12, nce_k=6, train_labels=labels.tolist())
    assert method.negatives_mode == "class"
    index = torch.tensor([0, 1, 3, 11])
    torch.manual_seed(0)
    counts = torch.zeros(4, 12)
    for _ in range(2000):
        neg = method.draw_negatives(index)
        assert (labels[neg] != labels[index][:, None]).all()
        assert all(len(set(row.tolist())) == 6 for row in neg)  # 7-9 candidates per row ≥ K
        counts += F.one_hot(neg, 12).sum(1)
    for row, i in enumerate(index.tolist()):
        others = labels != labels[i]
        freq = counts[row][others] / 2000
        torch.testing.assert_close(freq, torch.full_like(freq, 6 / int(others.sum())), atol=0.05, rtol=0)
    method.nce_k = 10  # more than any row's 7-9 candidates: with replacement
    neg = method.draw_negatives(index)
    assert neg.shape == (4, 10) and (labels[neg] != labels[index][:, None]).all()
    with pytest.raises(ActdistillError, match="train_labels has 3"):
        CRD(ToyNet(), ToyNet(), num_data=12, train_labels=[0, 1, 2])
    with pytest.raises(ActdistillError, match="two classes"):
        CRD(ToyNet(), ToyNet(), num_data=4, train_labels=[1, 1, 1, 1])
    with pytest.raises(ActdistillError, match="negatives"):
        CRD(ToyNet(), ToyNet(), num_data=4, negatives="relax")
    with pytest.warns(UserWarning, match="train_labels"):
        fallback = CRD(ToyNet(), ToyNet(), num_data=12)
    assert fallback.negatives_mode == "uniform"


# ------------------------------------------------------------------------------------------------ combinations


def test_combo_prefixes_parts_counts_ce_once_and_runs_each_model_once() -> None:
    torch.manual_seed(0)
    student, teacher = ToyNet(), ToyNet((6, 12))
    batch = _toy_batch()
    cfg = [{"name": "kd", "weight": 0.5, "temperature": 4}, {"name": "at", "weight": 2.0}]
    combo = Combo(student, teacher, methods=cfg)
    student.calls = teacher.calls = 0
    out = combo(batch)
    assert (student.calls, teacher.calls) == (1, 1)
    assert set(out.parts) == {"kd/ce", "kd/kd", "at/at"}
    kd_out = KD(student, teacher, temperature=4)(batch)
    at_out = AT(student, teacher)(batch)
    expected = 0.5 * kd_out.loss + 2.0 * at_out.parts["at"]
    torch.testing.assert_close(out.loss, expected)

    with_ce = Combo(student, teacher, methods=cfg, ce_weight=1.0)(batch)
    assert set(with_ce.parts) == {"ce", "kd/kd", "at/at"}
    torch.testing.assert_close(with_ce.parts["ce"], F.cross_entropy(student(batch["input"]), batch["label"]))
    with pytest.raises(ActdistillError, match="temp"):
        Combo(student, teacher, methods=[{"name": "kd", "temp": 4}])


def test_combo_registers_sub_method_extras_and_restores_state() -> None:
    student, teacher = ToyNet(), ToyNet((6, 12))
    cfg = [{"name": "fitnet", "student_layer": 1, "teacher_layer": 1}, {"name": "crd", "nce_k": 4}]
    combo = Combo(student, teacher, methods=cfg, num_data=10)
    assert combo.requires == frozenset({"index"})
    names = {n for n, _ in combo.named_parameters()}
    assert any(n.startswith("sub_extras.fitnet.regressor") for n in names)
    assert any(n.startswith("sub_extras.crd.embed_s") for n in names)
    combo.train()(_toy_batch())
    combo.on_epoch(3)
    fresh = Combo(ToyNet(), ToyNet((6, 12)), methods=cfg, num_data=10)
    fresh.load_student_state(combo.student_state())
    torch.testing.assert_close(fresh.subs[1].memory.memory_s, combo.subs[1].memory.memory_s)
    assert fresh.subs[0].epoch == 3


def test_collab_scratch_teacher_is_fresh_and_trained() -> None:
    torch.manual_seed(0)
    student, teacher = ToyNet(), ToyNet((6, 12))
    method = Collab(student, teacher).train()
    scratch = method.scratch_teacher
    assert scratch is not teacher and all(p.requires_grad for p in scratch.parameters())
    assert not torch.equal(scratch.fc.weight, teacher.fc.weight)
    out = method(_toy_batch())
    assert set(out.parts) == {"ce", "kd", "at", "scratch_ce"}
    out.loss.backward()
    assert scratch.fc.weight.grad is not None and teacher.fc.weight.grad is None
