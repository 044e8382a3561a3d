"""Logit-based methods: the plain baseline and Hinton KD (paper 1, eq. 2)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from actdistill.distill.base import Batch, Distiller, StepOutput, make_output
from actdistill.distill.functional import kd_loss
from actdistill.registry import METHODS


def class_logits(logits: Tensor) -> Tensor:
    """`(B, K)` logits; video heads giving per-time-step logits `(B, K, T')` are averaged over time."""
    return logits.mean(dim=-1) if logits.dim() == 3 else logits


@METHODS.register("vanilla", paper="no distillation (cross-entropy only)", knowledge="none")
class Vanilla(Distiller):
    """Cross-entropy on the labels only, run through the same engine as the distillation methods."""

    uses_teacher = False

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None) -> None:
        super().__init__(student, None)

    def forward(self, batch: Batch) -> StepOutput:
        logits = class_logits(self.student(batch["input"]))
        return make_output(logits, {"ce": F.cross_entropy(logits.float(), batch["label"])})


@METHODS.register("kd", paper="Hinton et al. 2015; paper 1 eq. 2", knowledge="logits")
class KD(Distiller):
    """Paper 1, eq. 2: `L = (1 − α)·T²·KL(p_t^T ‖ p_s^T) + α·CE(z_s, y)`; α weights the HARD loss.

    Defaults T=11, α=0.45 (SPEC §1.2): the paper prints "T = 0.45 and alpha = 11", which read literally
    gives a negative KD weight (1 − 11)·0.45² = −2.03 that pushes the student away from the teacher, and a
    temperature below 1 that sharpens instead of softening; the two values were evidently swapped.
    Logged parts: `ce` and `kd` (weighted, summing to the loss); metrics `kl_raw` (unscaled KL) and `ce_raw`.
    """

    def __init__(
        self, student: nn.Module, teacher: nn.Module, *, temperature: float = 11.0, alpha: float = 0.45
    ) -> None:
        super().__init__(student, teacher)
        if temperature <= 0:
            raise ValueError(f"kd: temperature must be > 0, got {temperature}")
        self.temperature, self.alpha = float(temperature), float(alpha)

    def forward(self, batch: Batch) -> StepOutput:
        logits_s = class_logits(self.student(batch["input"]))
        logits_t = class_logits(self.teacher_logits(batch))
        ce = F.cross_entropy(logits_s.float(), batch["label"])
        kd = kd_loss(logits_s, logits_t, self.temperature)
        parts = {"ce": self.alpha * ce, "kd": (1.0 - self.alpha) * kd}
        return make_output(logits_s, parts, {"kl_raw": kd.detach() / self.temperature**2, "ce_raw": ce.detach()})
