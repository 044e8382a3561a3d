"""Logit-based methods: the plain baseline, Hinton KD (paper 1, eq. 2), DKD, CTKD and DIST (their original papers).

Methods register with `actdistill.registry.register_method` (name, paper, knowledge type, source of the defaults).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actdistill.distill.base import Batch, Distiller, StepOutput, make_output
from actdistill.distill.functional import ctkd_lambda, ctkd_temperature, dist_parts, dkd_parts, kd_loss
from actdistill.distill.taps import ModelRun, run_model
from actdistill.errors import ActdistillError
from actdistill.registry import register_method


def class_logits(logits: Tensor) -> Tensor:
    """`(B, K)` logits; video heads giving per-time-step logits `(B, K, T')` are averaged over time."""
    return logits.mean(dim=-1) if logits.dim() == 3 else logits


def student_run(distiller: Distiller, batch: Batch) -> ModelRun:
    """The student's forward on `batch["input"]` (shared with the other methods of a `combo` step)."""
    return run_model(distiller.student, batch["input"])


def teacher_class_logits(distiller: Distiller, batch: Batch) -> Tensor:
    """Teacher logits `(B, K)` in fp32: the cached `teacher_logits` batch key, else a no-grad (shared) forward."""
    if "teacher_logits" in batch:
        return class_logits(batch["teacher_logits"].float())
    assert distiller.teacher is not None, f"{type(distiller).__name__} needs a teacher"
    with torch.no_grad():
        return class_logits(run_model(distiller.teacher, distiller.teacher_input(batch)).logits.float())


@register_method("vanilla", paper="no distillation (cross-entropy only)", knowledge="none")
class Vanilla(Distiller):
    """Cross-entropy on the labels only, run through the same engine as the distillation methods."""

    uses_teacher = False

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None) -> None:
        super().__init__(student, None)

    def forward(self, batch: Batch) -> StepOutput:
        logits = class_logits(self.student(batch["input"]))
        return make_output(logits, {"ce": F.cross_entropy(logits.float(), batch["label"])})


@register_method(
    "kd", paper="Hinton et al. 2015; paper 1 eq. 2", knowledge="logits", source="paper 1, §III-A: T/alpha swapped"
)
class KD(Distiller):
    """Paper 1, eq. 2: `L = (1 − α)·T²·KL(p_t^T ‖ p_s^T) + α·CE(z_s, y)`; α weights the HARD loss.

    Defaults T=11, α=0.45 (paper 1, eq. 2): its §III-A prints "T = 0.45 and alpha = 11", which read literally
    gives a negative KD weight (1 − 11)·0.45² = −2.03 that pushes the student away from the teacher, and a
    temperature below 1 that sharpens instead of softening; the two values were evidently swapped.
    Logged parts: `ce` and `kd` (weighted, summing to the loss); metrics `kl_raw` (unscaled KL) and `ce_raw`.
    """

    def __init__(
        self, student: nn.Module, teacher: nn.Module, *, temperature: float = 11.0, alpha: float = 0.45
    ) -> None:
        super().__init__(student, teacher)
        if temperature <= 0:
            raise ActdistillError(f"kd: temperature must be > 0, got {temperature}")
        self.temperature, self.alpha = float(temperature), float(alpha)

    def forward(self, batch: Batch) -> StepOutput:
        logits_s = class_logits(student_run(self, batch).logits)
        logits_t = teacher_class_logits(self, batch)
        ce = F.cross_entropy(logits_s.float(), batch["label"])
        kd = kd_loss(logits_s, logits_t, self.temperature)
        parts = {"ce": self.alpha * ce, "kd": (1.0 - self.alpha) * kd}
        return make_output(logits_s, parts, {"kl_raw": kd.detach() / self.temperature**2, "ce_raw": ce.detach()})


@register_method(
    "dkd",
    paper="Decoupled KD, Zhao et al. CVPR-22",
    knowledge="logits",
    source="Zhao et al. CVPR-22; mdistiller engine/cfg.py (CIFAR)",
)
class DKD(Distiller):
    """Decoupled KD (CVPR-22): `L = w_ce·CE + min(epoch/warmup, 1)·(α·TCKD + β·NCKD)`, TCKD/NCKD ×T², batchmean.

    The warm-up scales only the DKD term; the epoch comes from `on_epoch` (from 1) and is checkpointed by the base
    class. Video logits `(B, K, T')` are averaged over time first. Parts `ce`, `dkd`; metrics `tckd`, `nckd`
    (unweighted, ×T²) and `warmup` (the factor).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        ce_weight: float = 1.0,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        warmup: int = 20,
    ) -> None:
        super().__init__(student, teacher)
        self.ce_weight, self.alpha, self.beta = float(ce_weight), float(alpha), float(beta)
        self.temperature, self.warmup = float(temperature), int(warmup)

    def warmup_factor(self) -> float:
        """`min(epoch / warmup, 1)` (1 when warmup ≤ 0)."""
        return min(self.epoch / self.warmup, 1.0) if self.warmup > 0 else 1.0

    def forward(self, batch: Batch) -> StepOutput:
        logits_s = class_logits(student_run(self, batch).logits)
        logits_t = teacher_class_logits(self, batch)
        tckd, nckd = dkd_parts(logits_s, logits_t, batch["label"], self.temperature)
        factor = self.warmup_factor()
        parts = {
            "ce": self.ce_weight * F.cross_entropy(logits_s.float(), batch["label"]),
            "dkd": factor * (self.alpha * tckd + self.beta * nckd),
        }
        return make_output(logits_s, parts, {"tckd": tckd.detach(), "nckd": nckd.detach(), "warmup": factor})


class GlobalTemperature(nn.Module):
    """CTKD's global temperature parameter θ (zhengli97/CTKD `models/temp_global.py`), a scalar initialised to 1.

    A child module of the method so that it is optimised with the student and saved by `student_state()`.
    """

    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(float(init)))

    def forward(self, lambda_: float, t_start: float, t_end: float) -> Tensor:
        """Scalar T = t_start + t_end·sigmoid(GRL(θ, λ)) (fp32)."""
        return ctkd_temperature(self.theta, lambda_, t_start, t_end)


@register_method(
    "ctkd",
    "ctkd_curriculum",
    paper="Curriculum Temperature KD, Li et al. AAAI-23",
    knowledge="logits",
    source="Li et al. AAAI-23; paper 2 Table 1; zhengli97/CTKD train_student.py, scripts/run_cifar_distill.sh",
)
class CTKD(Distiller):
    """Curriculum temperature KD (AAAI-23): `L = w_ce·CE + w_kd·T²·KL(p_t^T ‖ p_s^T)` with a learned T.

    `T = t_start + t_end·sigmoid(GRL(θ, λ(e)))` ∈ (t_start, t_start + t_end), θ init 1 (T ≈ 15.62); the gradient
    reversal multiplies θ's gradient by `λ(e) = ctkd_lambda(e)` (cosine 0 → −1 over `decay_loops` epochs), so θ
    ascends the KD loss: an easy-to-hard curriculum. θ lives in the child module `temperature`, is trained by the
    student's optimiser and checkpointed with the method. Logits `(B, K)` or `(B, K, T')` (averaged over time).
    Parts `ce`, `kd`; metrics `temperature` (every step), `lambda` and `kl_raw`.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        t_start: float = 1.0,
        t_end: float = 20.0,
        init_theta: float = 1.0,
        decay_max: float = 0.0,
        decay_min: float = -1.0,
        decay_loops: int = 10,
    ) -> None:
        super().__init__(student, teacher)
        self.ce_weight, self.kd_weight = float(ce_weight), float(kd_weight)
        self.t_start, self.t_end = float(t_start), float(t_end)
        self.decay = (float(decay_max), float(decay_min), int(decay_loops))
        self.temperature = GlobalTemperature(init_theta)

    def lambda_(self) -> float:
        """The gradient-reversal factor λ(epoch) of the current epoch."""
        return ctkd_lambda(self.epoch, *self.decay)

    def forward(self, batch: Batch) -> StepOutput:
        logits_s = class_logits(student_run(self, batch).logits)
        logits_t = teacher_class_logits(self, batch)
        lam = self.lambda_()
        temperature = self.temperature(lam, self.t_start, self.t_end)
        kd = kd_loss(logits_s, logits_t, temperature)
        parts = {
            "ce": self.ce_weight * F.cross_entropy(logits_s.float(), batch["label"]),
            "kd": self.kd_weight * kd,
        }
        t = temperature.detach()
        return make_output(logits_s, parts, {"temperature": t, "lambda": lam, "kl_raw": kd.detach() / t**2})


@register_method(
    "dist",
    paper="DIST, Huang et al. NeurIPS-22",
    knowledge="logits",
    source="Huang et al. NeurIPS-22; hunto/image_classification_sota configs/strategies/distill/resnet_dist.yaml",
)
class DIST(Distiller):
    """KD from a stronger teacher (NeurIPS-22): `L = w_ce·CE + w_kd·τ²·(β·inter + γ·intra)`.

    inter/intra are 1 − Pearson correlation of `softmax(z/τ)` per sample (over classes) and per class (over the
    batch; needs B ≥ 2). Video logits are averaged over time. Parts `ce`, `dist`; metrics `inter`, `intra` (×τ²).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        ce_weight: float = 1.0,
        kd_weight: float = 2.0,
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 1.0,
    ) -> None:
        super().__init__(student, teacher)
        self.ce_weight, self.kd_weight = float(ce_weight), float(kd_weight)
        self.beta, self.gamma, self.temperature = float(beta), float(gamma), float(temperature)

    def forward(self, batch: Batch) -> StepOutput:
        logits_s = class_logits(student_run(self, batch).logits)
        logits_t = teacher_class_logits(self, batch)
        inter, intra = dist_parts(logits_s, logits_t, self.temperature)
        parts = {
            "ce": self.ce_weight * F.cross_entropy(logits_s.float(), batch["label"]),
            "dist": self.kd_weight * (self.beta * inter + self.gamma * intra),
        }
        return make_output(logits_s, parts, {"inter": inter.detach(), "intra": intra.detach()})
