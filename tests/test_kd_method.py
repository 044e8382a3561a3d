"""Paper 1 eq. 2 through the `kd` method: α=1 is plain CE, the KD gradient is (1-α)·T·(S−T)/N."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from actdistill.distill.logit import KD, Vanilla


class Fixed(nn.Module):
    """A 'model' whose logits are a trainable tensor, so the gradient w.r.t. logits is the parameter's grad."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits * 1.0


def _batch(n: int = 4, k: int = 5) -> dict:
    return {"input": torch.zeros(n, 1), "label": torch.arange(n) % k}


def test_alpha_one_is_cross_entropy():
    torch.manual_seed(0)
    zs, zt = torch.randn(4, 5), torch.randn(4, 5)
    batch = _batch()
    out = KD(Fixed(zs), Fixed(zt), temperature=11.0, alpha=1.0)(batch)
    assert float(out.loss.detach()) == pytest.approx(float(F.cross_entropy(zs, batch["label"])), rel=1e-6)
    assert float(out.parts["kd"].detach()) == 0.0


def test_kd_gradient_matches_closed_form():
    """∂L/∂z_s = (1−α)·t·(S − T)/N + α·(softmax(z_s) − onehot)/N with S, T the softened distributions."""
    torch.manual_seed(1)
    n, k, t, a = 6, 7, 11.0, 0.45
    zs, zt = torch.randn(n, k) * 3, torch.randn(n, k) * 3
    student = Fixed(zs)
    batch = _batch(n, k)
    KD(student, Fixed(zt), temperature=t, alpha=a)(batch).loss.backward()
    s, tt = F.softmax(zs / t, -1), F.softmax(zt / t, -1)
    ce_grad = (F.softmax(zs, -1) - F.one_hot(batch["label"], k)) / n
    expected = (1 - a) * t * (s - tt) / n + a * ce_grad
    torch.testing.assert_close(student.logits.grad, expected, rtol=1e-5, atol=1e-7)


def test_literal_paper_values_give_negative_kd_weight():
    """Paper 1, §III-A / eq. 2: the printed T=0.45, α=11 would weight the KD term by (1−11)·0.45² = −2.025."""
    zs, zt = torch.randn(3, 4), torch.randn(3, 4)
    out = KD(Fixed(zs), Fixed(zt), temperature=0.45, alpha=11.0)(_batch(3, 4))
    raw = float(out.metrics["kl_raw"])
    assert float(out.parts["kd"].detach()) == pytest.approx(-10 * 0.45**2 * raw, rel=1e-5)


def test_loss_is_sum_of_parts_and_teacher_frozen():
    teacher = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    student = nn.Linear(3, 4)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    method = KD(student, teacher)
    method.train()
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    batch = {"input": torch.randn(8, 3), "label": torch.randint(0, 4, (8,))}
    out = method(batch)
    out.loss.backward()
    assert float(out.loss.detach()) == pytest.approx(float(sum(out.parts.values()).detach()))
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key  # BatchNorm running stats untouched too
    assert all(p.grad is None for p in teacher.parameters())
    assert {id(p) for p in method.trainable_parameters()} == {id(p) for p in student.parameters()}


def test_vanilla_is_plain_cross_entropy():
    zs = torch.randn(4, 5)
    batch = _batch()
    out = Vanilla(Fixed(zs))(batch)
    assert float(out.loss.detach()) == pytest.approx(float(F.cross_entropy(zs, batch["label"])))
    assert list(out.parts) == ["ce"]


def test_video_logits_averaged_over_time():
    z = torch.randn(2, 3, 7)  # (B, K, T') per-time-step logits of an I3D-style head
    batch = {"input": torch.zeros(2, 1), "label": torch.tensor([0, 2])}
    out = Vanilla(Fixed(z))(batch)
    assert float(out.loss.detach()) == pytest.approx(float(F.cross_entropy(z.mean(-1), batch["label"])), rel=1e-6)
