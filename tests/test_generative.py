"""Paper 2 generative KD (eqs. 3-15): attention, weighted feature, CVAE/KL, weights, stages, the engine path."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import engine_run, train_epoch
from torch import nn

from actdistill.config import OptimConfig, load_config
from actdistill.distill.generative import (
    CVAE,
    CVAE_OPTIM,
    AttentionModule,
    Generative,
    GenerativeStages,
    GenerativeTeacher,
    attention_weighted_feature,
    classification_loss,
    group_count,
    kl_to_prior,
    recon_weight,
)
from actdistill.engine.build import method_params
from actdistill.engine.fit import check_config
from actdistill.engine.loop import only_stage_trainable
from actdistill.engine.optim import build_optimizer
from actdistill.errors import ActdistillError
from actdistill.models import create_model

# 16 frames at 64² give a Mixed_5c of 2×2×2 (T'=2, non-degenerate spatial map); 32² would give 2×1×1.
CLIP = (16, 64, 64)
NUM_CLASSES = 5


def _pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    student = create_model("top_i3d", NUM_CLASSES, channel_scale=0.125)
    teacher = create_model("i3d", NUM_CLASSES, channel_scale=0.125)
    return student, teacher


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"input": torch.randn(2, 3, *CLIP, generator=g), "label": torch.tensor([1, 3])}


def _optimizer(stage, base: OptimConfig | None = None) -> torch.optim.Optimizer:
    """What fit.py does with the stage override: `OptimConfig` fields replaced by `stage.optim`."""
    cfg = dataclasses.replace(base or OptimConfig(lr=0.1, weight_decay=0.0), **(getattr(stage, "optim", None) or {}))
    return build_optimizer(stage.parameters(), cfg)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------------------------------ modules


def test_group_count_divides() -> None:
    assert group_count(1024) == 32 and group_count(512) == 32 and group_count(64) == 32 and group_count(24) == 8
    assert group_count(7) == 1


def test_attention_range_and_shape() -> None:
    torch.manual_seed(0)
    att = AttentionModule(channels=64, time_steps=3, spatial_kernel=(2, 2))
    a = att(torch.relu(torch.randn(4, 64, 3, 2, 2)))
    assert a.shape == (4, 64, 3)
    assert bool((a > 0).all()) and bool((a < 1).all())
    assert att.fc.in_features == 64 and att.conv3d.out_channels == 32  # Linear(C→T'), hidden C/2


@pytest.mark.parametrize("per_sample", [False, True])
def test_weighted_feature_keeps_sum(per_sample: bool) -> None:
    torch.manual_seed(0)
    feat = torch.rand(3, 8, 2, 2, 2, dtype=torch.float64)
    att = torch.rand(3, 8, 2, dtype=torch.float64)
    out = attention_weighted_feature(feat, att, per_sample=per_sample)
    assert torch.allclose(out.sum(), feat.sum(), rtol=1e-12)
    if per_sample:
        assert torch.allclose(out.sum(dim=(1, 2, 3, 4)), feat.sum(dim=(1, 2, 3, 4)), rtol=1e-12)
    # the direction is F ⊙ A (θ = identity)
    ratio = out / (feat * att[..., None, None])
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio)) or per_sample


def test_weighted_feature_zero_feature_is_finite() -> None:
    out = attention_weighted_feature(torch.zeros(1, 4, 2, 1, 1), torch.rand(1, 4, 2))
    assert torch.isfinite(out).all() and out.abs().sum() == 0


def test_cvae_shapes() -> None:
    torch.manual_seed(0)
    cvae = CVAE(channels=32, time_steps=2, spatial=(3, 3))
    feat, att = torch.rand(2, 32, 2, 3, 3), torch.rand(2, 32, 2)
    recon, mu, logvar = cvae(feat, att)
    assert recon.shape == feat.shape and mu.shape == logvar.shape == (2, 2, 32)
    assert cvae.inference(att).shape == feat.shape
    with pytest.raises(ActdistillError):
        CVAE(channels=32, time_steps=2, latent=16)


def test_kl_against_hand_values() -> None:
    lam = torch.randn(2, 3, 4)
    assert float(kl_to_prior(lam.clone(), torch.zeros_like(lam), lam)) == pytest.approx(0.0, abs=1e-7)
    # one element: μ=1, λ=0, σ²=2 → KL = ½(σ² + (μ−λ)² − 1 − ln σ²) = ½(2 + 1 − 1 − ln 2) = 1 − ½ ln 2
    one = kl_to_prior(torch.tensor([1.0]), torch.tensor([math.log(2.0)]), torch.tensor([0.0]))
    assert float(one) == pytest.approx(1 - 0.5 * math.log(2.0), rel=1e-6)
    # the mean over entries: [that element, a zero-KL element] halves it
    two = kl_to_prior(torch.tensor([1.0, 0.5]), torch.tensor([math.log(2.0), 0.0]), torch.tensor([0.0, 0.5]))
    assert float(two) == pytest.approx(0.5 * (1 - 0.5 * math.log(2.0)), rel=1e-6)

    # L_cvae = MSE + 0.1·KL (eq. 5): the two parts of stage 1, `GenerativeStages.cvae_terms`, on a CVAE whose output
    # is fixed (F̂ = [0, 3], μ = 1, logσ² = ln 2) for F = [1, 3] and the prior mean λ = Aᵀ = 0.
    class FixedCVAE(nn.Module):
        def forward(self, feature, attention, eps=None):
            return torch.tensor([[0.0, 3.0]]), torch.ones(1, 1, 1), torch.full((1, 1, 1), math.log(2.0))

    stages = GenerativeStages(nn.Identity())
    stages.setup_stages(FixedCVAE(), kl_weight=0.1, recon_weight_mode="code", recon_max_weight=0.5,
                        recon_ramp_epochs=20, use_recon=True)  # fmt: skip
    _, parts = stages.cvae_terms(torch.tensor([[1.0, 3.0]]), torch.zeros(1, 1, 1), None)
    assert float(parts["cvae_mse"]) == pytest.approx(0.5, rel=1e-6)
    assert float(parts["cvae_kld"]) == pytest.approx(0.1 * (1 - 0.5 * math.log(2.0)), rel=1e-6)
    assert float(sum(parts.values())) == pytest.approx(0.5 + 0.1 * (1 - 0.5 * math.log(2.0)), rel=1e-6)


def test_recon_weight_ramp_and_paper_mode() -> None:
    assert [recon_weight(e) for e in (1, 10, 20, 40)] == pytest.approx([0.025, 0.25, 0.5, 0.5])
    assert recon_weight(3, "paper") == 1.0
    with pytest.raises(ActdistillError):
        recon_weight(1, "other")


def test_classification_loss_faithful_and_clean() -> None:
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])  # (B=1, K=2, T'=2)
    y = torch.tensor([1])
    # faithful: P = Σ_t softmax = [0.25+0.5, 0.75+0.5]; CE(P, 1) = log(1 + e^{0.75−1.25})
    faithful = classification_loss(logits, y, "summed_prob")
    assert float(faithful) == pytest.approx(math.log(1 + math.exp(-0.5)), rel=1e-6)
    # clean: mean logits [0, ln3/2]; CE = log(1 + 3^{-1/2})
    clean = classification_loss(logits, y, "mean_logit")
    assert float(clean) == pytest.approx(math.log(1 + 3**-0.5), rel=1e-6)


# ------------------------------------------------------------------------------------------------ the method


@pytest.fixture(scope="module")
def method() -> Generative:
    student, teacher = _pair()
    return Generative(student, teacher, input_size=CLIP)


def test_stages_and_optimiser_override(method: Generative) -> None:
    stages = method.stages()
    assert [s.name for s in stages] == ["generative", "attention"]
    assert stages[0].optim == CVAE_OPTIM and stages[1].optim is None
    opt = _optimizer(stages[0])
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["betas"] == (0.8, 0.999) and opt.defaults["lr"] == 1e-4
    cvae_ids = {id(p) for p in method.cvae.parameters()}
    assert {id(p) for p in stages[0].parameters()} == cvae_ids
    stage2 = {id(p) for p in stages[1].parameters()}
    assert stage2 == {id(p) for p in (*method.student.parameters(), *method.attention.parameters())}
    teacher_side = {id(p) for p in method.teacher_side.parameters()}
    assert not teacher_side & {id(p) for p in method.trainable_parameters()}


def test_each_stage_changes_only_its_parameters() -> None:
    student, teacher = _pair()
    m = Generative(student, teacher, input_size=CLIP).train()
    groups = {"cvae": m.cvae, "student": m.student, "attention": m.attention}
    expected = {"generative": {"cvae"}, "attention": {"student", "attention"}}
    for stage in m.stages():
        opt = _optimizer(stage)
        before = {n: {k: p.detach().clone() for k, p in g.named_parameters()} for n, g in groups.items()}
        with only_stage_trainable(m, stage, True):
            out = stage.forward(_batch())
            out.loss.backward()
            assert all(p.grad is None for p in m.cvae.parameters()) or stage.name == "generative"
            opt.step()
            opt.zero_grad(set_to_none=True)
        for name, g in groups.items():
            changed = any(not torch.equal(before[name][k], p) for k, p in g.named_parameters())
            assert changed == (name in expected[stage.name]), (stage.name, name)


def test_engine_two_stages_keep_teacher_bitwise() -> None:
    student, teacher = _pair()
    m = Generative(student, teacher, input_size=CLIP)
    teacher_before, side_before = _snapshot(m.teacher), _snapshot(m.teacher_side)
    cvae_before, att_before = _snapshot(m.cvae), _snapshot(m.attention)
    run = engine_run(m, [_batch(0), _batch(1)], lr=0.1)  # one optimiser per stage, stage 1's own Adam settings
    assert isinstance(run.optimizers["generative"], torch.optim.Adam)
    assert run.optimizers["generative"].defaults["lr"] == 1e-4 and run.optimizers["attention"].defaults["lr"] == 0.1
    stats = train_epoch(run)
    for key in ("generative/cvae_mse", "generative/cvae_kld", "generative/kd_gen", "attention/clf", "attention/recon"):
        assert key in stats and math.isfinite(stats[key])
    assert stats["attention/recon_weight"] == pytest.approx(0.025)
    after = _snapshot(m.teacher)
    assert all(torch.equal(teacher_before[k], after[k]) for k in teacher_before)  # incl. BN running stats
    side_after = _snapshot(m.teacher_side)
    assert all(torch.equal(side_before[k], side_after[k]) for k in side_before)
    assert any(not torch.equal(cvae_before[k], v) for k, v in _snapshot(m.cvae).items())
    assert any(not torch.equal(att_before[k], v) for k, v in _snapshot(m.attention).items())
    assert all(p.requires_grad for p in m.trainable_parameters())  # the engine restored the frozen half
    assert m.predict(_batch()["input"]).shape == (2, NUM_CLASSES, 1)


@pytest.mark.parametrize(
    ("switch", "stage", "part"),
    [
        ("use_recon", "attention", "recon"),
        ("use_kd_gen", "generative", "kd_gen"),
        ("use_kd_att", "attention", "kd_att"),
    ],
)
def test_ablation_switches_remove_parts(switch: str, stage: str, part: str) -> None:
    student, teacher = _pair()
    on = Generative(student, teacher, input_size=CLIP)
    off = Generative(student, teacher, input_size=CLIP, **{switch: False})
    batch = _batch()
    assert part in next(s for s in on.stages() if s.name == stage).forward(batch).parts
    out = next(s for s in off.stages() if s.name == stage).forward(batch)
    assert part not in out.parts
    assert torch.allclose(out.loss, sum(out.parts.values()))


def test_no_kd_att_skips_the_teacher_forward() -> None:
    student, teacher = _pair()
    m = Generative(student, teacher, input_size=CLIP, use_kd_att=False)
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    m.stages()[1].forward(_batch())
    assert not calls and not list(m.teacher.Mixed_5c.parameters())[0].requires_grad


def test_loss_weights_scale_parts() -> None:
    student, teacher = _pair()
    m1 = Generative(student, teacher, input_size=CLIP, recon_weight_mode="paper", clf_loss="mean_logit")
    m2 = Generative(student, teacher, input_size=CLIP, recon_weight_mode="paper", clf_loss="mean_logit", gamma=0.2)
    m2.load_state_dict(m1.state_dict())
    m1.eval(), m2.eval()  # no dropout: both see the same logits
    torch.manual_seed(1)
    p1 = m1.stages()[1].forward(_batch()).parts
    torch.manual_seed(1)
    p2 = m2.stages()[1].forward(_batch()).parts
    assert float(p2["kd_att"].detach()) == pytest.approx(2 * float(p1["kd_att"].detach()), rel=1e-5)
    assert float(p1["recon"].detach()) == pytest.approx(float(p2["recon"].detach()), rel=1e-5)
    logits = m1.student.forward_head(
        attention_weighted_feature(*m1._features(_batch()["input"]))  # noqa: SLF001 - the clean L_clf by hand
    )
    assert float(p1["clf"].detach()) == pytest.approx(
        float(F.cross_entropy(logits.mean(-1), _batch()["label"]).detach()), rel=1e-5
    )


def test_teacher_preparation_feeds_teacher_extras(tmp_path) -> None:
    student, teacher = _pair()
    prep = GenerativeTeacher(teacher, input_size=CLIP)
    parts = [set(s.forward(_batch()).parts) for s in prep.stages()]
    assert parts == [{"cvae_mse", "cvae_kld"}, {"clf", "recon"}]
    path = tmp_path / "teacher.pt"
    torch.save({"student": teacher.state_dict(), "method": prep.student_state()}, path)
    m = Generative(student, teacher, input_size=CLIP, teacher_extras=str(path))
    for name in ("attention", "cvae"):
        loaded, saved = m.teacher_side[name].state_dict(), getattr(prep, name).state_dict()
        assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert not any(p.requires_grad for p in m.teacher_side.parameters())


def test_wrong_input_size_is_a_clear_error(method: Generative) -> None:
    with pytest.raises(ActdistillError, match="input_size"):
        method.stages()[1].forward({"input": torch.randn(2, 3, 8, 32, 32), "label": torch.tensor([0, 1])})


# Recipes only: comparison files (a top-level `methods:` list, e.g. table1.yaml) are checked in test_compare.py.
CONFIGS = sorted(
    p
    for p in (Path(__file__).resolve().parents[1] / "configs" / "video").glob("*.yaml")
    if "methods" not in (yaml.safe_load(p.read_text()) or {})
)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_video_configs_load_and_name_valid_hyperparameters(path: Path) -> None:
    import actdistill.distill  # noqa: F401  (registers the baseline methods)

    cfg = load_config(path)
    check_config(cfg)  # ranges, the method for the dataset's task, metric names (no data is read)
    cls, params = method_params(cfg.method)
    if cls in (Generative, GenerativeTeacher):
        assert list(params["input_size"]) == [cfg.data.clip_len, cfg.data.image_size, cfg.data.image_size]
    if path.name.startswith(("ucf101", "hmdb51")):
        assert (cfg.data.clip_len, cfg.data.image_size, cfg.data.batch_size, cfg.train.seed) == (64, 224, 6, 2020)
        assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.train.epochs) == ("sgd", 1e-3, 5e-4, 200)


def test_clear_errors_for_unsuitable_models() -> None:
    image = create_model("pvt_v2_demo", NUM_CLASSES)
    with pytest.raises(ActdistillError, match="video model"):
        GenerativeTeacher(image, input_size=(8, 32, 32))
    student, _ = _pair()
    frames = create_model("frames", NUM_CLASSES, image_model="pvt_v2_demo")
    with pytest.raises(ActdistillError, match="differs"):
        Generative(student, frames, input_size=CLIP)
