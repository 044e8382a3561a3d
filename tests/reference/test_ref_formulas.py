"""DKD, MGD, FN, CTKD and SimKD against their published formulas, written out here from the original papers and
reference code (not imported): mdistiller `distillers/DKD.py` (Zhao et al. CVPR-22); yzd-v/MGD
`cls/mmcls/distillation/losses/mgd.py` (Yang et al. ECCV-22); aztc/FNKD (Xu et al. ECCV-20); zhengli97/CTKD
`models/temp_global.py`, `train_student.py` (Li et al. AAAI-23); DefangChen/SimKD `models/util.py` (Chen et al.
CVPR-22). Each test also shows that a plausible mistake (reduction, temperature, weight, sign) would be caught.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _reference_nets import Fixed, ToyNet, far
from torch import nn

import actdistill.distill  # noqa: F401  (registers the methods)
from actdistill.distill.feature import FN, MGD, SimKD
from actdistill.distill.functional import dkd_loss, mgd_loss
from actdistill.distill.logit import CTKD, DKD


def _logits(seed: int, b: int = 6, k: int = 10, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(b, k, generator=torch.Generator().manual_seed(seed)) * scale


# ----------------------------------------------------------------------------------------------------------- DKD


def reference_dkd(zs, zt, y, alpha: float, beta: float, t: float, reduction: str = "batchmean") -> torch.Tensor:
    """mdistiller's dkd_loss: binary (target vs rest) KL and non-target KL with the target logit shifted by −1000."""
    gt = F.one_hot(y, zs.shape[1]).bool()
    other = ~gt
    ps, pt = F.softmax(zs / t, dim=1), F.softmax(zt / t, dim=1)
    ps_bin = torch.stack([(ps * gt).sum(1), (ps * other).sum(1)], dim=1)
    pt_bin = torch.stack([(pt * gt).sum(1), (pt * other).sum(1)], dim=1)
    div = zs.shape[0] if reduction == "batchmean" else 1
    tckd = F.kl_div(torch.log(ps_bin), pt_bin, reduction="sum") * t**2 / div
    pt_rest = F.softmax(zt / t - 1000.0 * gt, dim=1)
    log_ps_rest = F.log_softmax(zs / t - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_ps_rest, pt_rest, reduction="sum") * t**2 / div
    return alpha * tckd + beta * nckd


@pytest.mark.parametrize("epoch", [1, 5, 20, 40])
def test_dkd_matches_the_reference_formula(epoch: int) -> None:
    zs, zt = _logits(1), _logits(2)
    y = torch.tensor([0, 3, 9, 1, 1, 5])
    ref = reference_dkd(zs, zt, y, 1.0, 8.0, 4.0)
    torch.testing.assert_close(dkd_loss(zs, zt, y, 1.0, 8.0, 4.0), ref, rtol=1e-5, atol=1e-6)
    method = DKD(Fixed(zs), Fixed(zt))  # w_ce 1, α 1, β 8, T 4, warm-up 20
    method.on_epoch(epoch)
    out = method({"input": torch.zeros(6), "label": y})
    ramp = min(epoch / 20, 1.0)
    torch.testing.assert_close(out.loss, F.cross_entropy(zs, y) + ramp * ref, rtol=1e-5, atol=1e-6)
    assert far(dkd_loss(zs, zt, y, 1.0, 8.0, 4.0), reference_dkd(zs, zt, y, 1.0, 8.0, 4.0, reduction="sum"))
    assert far(dkd_loss(zs, zt, y, 1.0, 8.0, 4.0), reference_dkd(zs, zt, y, 1.0, 8.0, 1.0))
    assert far(dkd_loss(zs, zt, y, 1.0, 8.0, 4.0), reference_dkd(zs, zt, y, 8.0, 1.0, 4.0))


# ----------------------------------------------------------------------------------------------------------- MGD


def reference_mgd(preds_s, preds_t, generation: nn.Module, rand: torch.Tensor, lambda_mgd: float, alpha: float):
    """MGD's classification loss: keep-mask 0 where rand < λ (per sample and channel), generator, SSE / N, × α."""
    mat = torch.where(rand < lambda_mgd, 0, 1).to(preds_s)
    new_fea = generation(preds_s * mat)
    return alpha * F.mse_loss(new_fea, preds_t, reduction="sum") / preds_t.shape[0]


@pytest.mark.parametrize("video", [False, True])
def test_mgd_matches_the_reference_formula(video: bool) -> None:
    torch.manual_seed(0)
    student, teacher = ToyNet((4, 8), video=video), ToyNet((6, 12), video=video)
    x = torch.randn(5, 3, 4, 16, 16) if video else torch.randn(5, 3, 16, 16)
    method = MGD(student, teacher, alpha_mgd=7e-5, lambda_mgd=0.15)
    torch.manual_seed(123)
    out = method({"input": x, "label": torch.zeros(5, dtype=torch.long)})
    with torch.no_grad():
        s, t = method.align(student.forward_features(x)[-1], teacher.forward_features(x)[-1])  # 1×1 conv 8→12
    torch.manual_seed(123)  # the mask is the method's only random draw
    rand = torch.rand((5, 12) + (1,) * (s.dim() - 2))
    ref = reference_mgd(s, t, method.generation, rand, 0.15, 7e-5)
    torch.testing.assert_close(out.parts["mgd"], ref, rtol=1e-5, atol=1e-9)
    g = torch.Generator().manual_seed(7)
    rand = torch.rand((5, 12) + (1,) * (s.dim() - 2), generator=torch.Generator().manual_seed(7))
    ours = mgd_loss(s, t, method.generation, 0.15, 7e-5, "channel", g)
    torch.testing.assert_close(ours, reference_mgd(s, t, method.generation, rand, 0.15, 7e-5), rtol=1e-5, atol=1e-9)
    assert far(ours, F.mse_loss(method.generation(s * (rand >= 0.15).to(s)), t) * 7e-5)  # a mean, not SSE / N
    assert far(ours, reference_mgd(s, t, method.generation, 1 - rand, 0.15, 7e-5))  # another mask


# ------------------------------------------------------------------------------------------------------------ FN


def reference_fn(f, w, b, y, logits_t, tau: float = 2.0, lam: float = 9.0) -> tuple[torch.Tensor, torch.Tensor]:
    """FNKD: x1 = W f + b with CE; x2 = W (f/‖f‖·min(‖f‖, τ)) + b against softmax(z_t) (T = 1), soft CE × λ."""
    x1 = f @ w.t() + b
    norm = f.norm(dim=1, keepdim=True)
    x2 = (f / norm * torch.clamp(norm, max=tau)) @ w.t() + b
    soft = -(F.softmax(logits_t, dim=1) * F.log_softmax(x2, dim=1)).sum(1).mean()
    return F.cross_entropy(x1, y), lam * soft


def test_fn_matches_the_reference_formula() -> None:
    torch.manual_seed(0)
    student, teacher = ToyNet((4, 8)), ToyNet((6, 12))
    x = torch.randn(6, 3, 16, 16) * torch.tensor([0.2, 0.5, 1, 4, 8, 16]).view(6, 1, 1, 1)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    out = FN(student, teacher)({"input": x, "label": y})
    with torch.no_grad():
        f = student.forward_features(x)[-1].mean((2, 3))
        logits_t = teacher(x)
    norms = f.norm(dim=1)
    assert (norms < 2).any() and (norms > 2).any()  # both sides of the norm cap τ = 2
    ce, fn = reference_fn(f, student.fc.weight, student.fc.bias, y, logits_t)
    torch.testing.assert_close(out.parts["ce"], ce, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.parts["fn"], fn, rtol=1e-5, atol=1e-7)
    assert far(out.parts["fn"], reference_fn(f, student.fc.weight, student.fc.bias, y, logits_t, tau=1.0)[1])
    assert far(out.parts["fn"], reference_fn(f, student.fc.weight, student.fc.bias, y, logits_t / 4)[1])  # T ≠ 1


# ---------------------------------------------------------------------------------------------------------- CTKD


def reference_ctkd_lambda(epoch: int, max_value: float = 0.0, min_value: float = -1.0, loops: int = 10) -> float:
    """CTKD train_student.py CosineDecay(max, min, num_loops), called with the epoch (from 1)."""
    e = min(epoch, loops)
    return (math.cos(math.pi * e / loops) + 1) / 2 * (max_value - min_value) + min_value


@pytest.mark.parametrize("epoch", [1, 5, 10, 30])
def test_ctkd_matches_the_reference_formula(epoch: int) -> None:
    zs, zt = _logits(3), _logits(4)
    y = torch.tensor([0, 3, 9, 1, 1, 5])
    method = CTKD(Fixed(zs), Fixed(zt))
    with torch.no_grad():
        method.temperature.theta.fill_(0.3)
    method.on_epoch(epoch)
    out = method({"input": torch.zeros(6), "label": y})
    out.loss.backward()
    # Reference: T = 1 + 20·sigmoid(θ) (Global_T through a gradient-reversal layer: forward identity), the KD of
    # train_student.py with the learned T, 0.1·CE + 0.9·T²·KL_batchmean; θ's gradient is λ(e) times the plain one.
    theta = torch.tensor(0.3, requires_grad=True)
    logits = zs.clone().requires_grad_(True)
    t = 1 + 20 * torch.sigmoid(theta)
    kl = F.kl_div(F.log_softmax(logits / t, dim=1), F.softmax(zt / t, dim=1), reduction="batchmean")
    ref = 0.1 * F.cross_entropy(logits, y) + 0.9 * kl * t**2
    ref.backward()
    lam = reference_ctkd_lambda(epoch)
    torch.testing.assert_close(out.loss, ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.metrics["temperature"], t.detach(), rtol=1e-6, atol=0)
    assert out.metrics["lambda"] == pytest.approx(lam)
    torch.testing.assert_close(method.temperature.theta.grad, lam * theta.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(method.student.logits.grad, logits.grad, rtol=1e-4, atol=1e-7)  # GRL only on θ
    assert lam < 0 and far(method.temperature.theta.grad, theta.grad)  # the sign is reversed


# --------------------------------------------------------------------------------------------------------- SimKD


def reference_simkd_projector(s_n: int, t_n: int, factor: int = 2) -> nn.Sequential:
    """SimKD's `transfer`: conv1x1 → BN → ReLU → conv3x3 → BN → ReLU → conv1x1 → BN → ReLU, bias-free convs."""
    mid = t_n // factor
    return nn.Sequential(
        nn.Conv2d(s_n, mid, kernel_size=1, stride=1, padding=0, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, mid, kernel_size=3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, t_n, kernel_size=1, stride=1, padding=0, bias=False),
        nn.BatchNorm2d(t_n),
        nn.ReLU(inplace=True),
    )


def test_simkd_matches_the_reference_formula() -> None:
    torch.manual_seed(0)
    student, teacher = ToyNet((4, 8)), ToyNet((6, 12))  # last maps 8×4×4 and 12×4×4
    method = SimKD(student, teacher).train()
    transfer = reference_simkd_projector(8, 12)
    transfer.load_state_dict(method.projector.state_dict())  # same layers, names and shapes
    x = torch.randn(6, 3, 16, 16)
    out = method({"input": x, "label": torch.zeros(6, dtype=torch.long)})
    with torch.no_grad():
        feat_s, feat_t = student.forward_features(x)[-1], teacher.forward_features(x)[-1]
    trans_feat_s = transfer(feat_s)
    pred = teacher.fc(F.adaptive_avg_pool2d(trans_feat_s, 1).flatten(1))  # the teacher's classifier reused
    torch.testing.assert_close(out.parts["simkd"], F.mse_loss(trans_feat_s, feat_t), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.logits, pred, rtol=1e-5, atol=1e-6)
    assert set(out.parts) == {"simkd"}  # -c 0 -d 0 -b 1: no CE, no KL
    assert far(out.parts["simkd"], F.mse_loss(trans_feat_s, feat_t, reduction="sum") / 6)
