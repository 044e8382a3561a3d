"""Detection training objectives as `Distiller`s: plain detection, logit KD, pyramid feature KD, attention KD.

Batches are dicts: `input` `(B, C, T)` student features, optional `input_t` (the teacher's features, when it was
extracted with another backbone), `mask` `(B, T)` bool, `segments` list of `(N_b, 2)` on the level-0 grid and
`labels` list of `(N_b,)`. Every method returns `make_output(...)`, so `loss == sum(parts)`; `logits` are the
student's class logits over all pyramid positions `(B, K, ΣT_l)`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actdistill.detect.detector import TemporalDetector, detection_losses
from actdistill.distill.base import Batch, Distiller, StepOutput, make_output
from actdistill.errors import ActdistillError

__all__ = ["METHODS", "AttentionKD", "DetectionTask", "FeatureKD", "LogitKD", "binary_kd_loss", "build_method"]


def _valid(heads: dict[str, Any]) -> Tensor:
    return torch.cat(heads["masks"], dim=1)  # (B, ΣT_l)


def _logits(heads: dict[str, Any]) -> Tensor:
    return torch.cat(heads["cls"], dim=2)  # (B, K, ΣT_l)


def binary_kd_loss(logits_s: Tensor, logits_t: Tensor, valid: Tensor, temperature: float) -> Tensor:
    """T²·mean over valid positions of Σ_k KL(Bern(σ(z_t/T)) ‖ Bern(σ(z_s/T))); logits `(B, K, P)`, valid `(B, P)`.

    Hinton et al. 2015's softened-target KD written for the detector's independent sigmoid class scores (each
    class at each position is a two-way distribution), as dense detectors distil sigmoid heads.
    """
    zs, zt = logits_s.float() / temperature, logits_t.float() / temperature
    pt = torch.sigmoid(zt)
    # KL(p‖q) for Bernoulli: p·(log p − log q) + (1−p)·(log(1−p) − log(1−q)), with log σ(z) = −softplus(−z).
    kl = pt * (F.logsigmoid(zt) - F.logsigmoid(zs)) + (1 - pt) * (F.logsigmoid(-zt) - F.logsigmoid(-zs))
    per_pos = kl.sum(dim=1)  # (B, P)
    return temperature**2 * per_pos[valid].sum() / valid.sum().clamp_min(1)


class DetectionTask(Distiller):
    """Plain detection training (no teacher): parts `cls`, `reg`, plus `bg` for attention models (SPEC §3.12)."""

    uses_teacher = False

    def __init__(
        self, student: TemporalDetector, teacher: TemporalDetector | None = None, bg_weight: float = 35.0
    ) -> None:
        super().__init__(student, teacher)
        self.bg_weight = bg_weight

    def student_heads(self, batch: Batch) -> dict[str, Any]:
        """The student's outputs on `batch` (with the F_bg branch when it has an attention head)."""
        return self.student(batch["input"], batch["mask"], background=self.student.attention is not None)

    @torch.no_grad()
    def teacher_heads(self, batch: Batch) -> dict[str, Any]:
        """The frozen teacher's outputs on its view of `batch` (`input_t` or `input`)."""
        assert self.teacher is not None, f"{type(self).__name__} needs a teacher"
        return self.teacher(self.teacher_input(batch), batch["mask"])

    def task_parts(self, heads: dict[str, Any], batch: Batch) -> dict[str, Tensor]:
        """Detection losses on F (or F_fg) and, for attention models, `bg_weight`×(cls + reg) on F_bg."""
        parts = detection_losses(self.student, heads, batch["segments"], batch["labels"])
        if heads.get("background") is not None:
            bg = detection_losses(self.student, heads["background"], batch["segments"], batch["labels"], True)
            parts["bg"] = self.bg_weight * (bg["cls"] + bg["reg"])
        return parts

    def forward(self, batch: Batch) -> StepOutput:
        heads = self.student_heads(batch)
        return make_output(_logits(heads), self.task_parts(heads, batch))

    def predict(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Any]:  # type: ignore[override]
        return self.student(x, mask)


class LogitKD(DetectionTask):
    """Task losses + `kd_weight`·`binary_kd_loss` of per-position class logits at `temperature` (Hinton 2015)."""

    uses_teacher = True

    def __init__(
        self,
        student: TemporalDetector,
        teacher: TemporalDetector,
        temperature: float = 2.0,
        kd_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, **kwargs)
        self.temperature, self.kd_weight = temperature, kd_weight

    def forward(self, batch: Batch) -> StepOutput:
        heads, t_heads = self.student_heads(batch), self.teacher_heads(batch)
        parts = self.task_parts(heads, batch)
        parts["kd"] = self.kd_weight * binary_kd_loss(_logits(heads), _logits(t_heads), _valid(heads), self.temperature)
        return make_output(_logits(heads), parts)


def _masked_mse(a: Tensor, b: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean over valid positions and channels of `w·(a − b)²`; `a`, `b` `(B, C, T)`, mask/weight `(B, T)`."""
    w = mask.to(a.dtype) if weight is None else weight * mask.to(a.dtype)
    err = ((a - b) ** 2).mean(dim=1)  # (B, T)
    return (err * w).sum() / w.sum().clamp_min(1e-6)


class FeatureKD(DetectionTask):
    """Task losses + `feat_weight`·Σ_levels masked MSE(adapter(F_s^l), F_t^l) (FitNets, Romero et al. 2015).

    The adapter is a 1×1 Conv1d per level when the embedding widths differ (identity otherwise).
    """

    uses_teacher = True

    def __init__(
        self, student: TemporalDetector, teacher: TemporalDetector, feat_weight: float = 1.0, **kwargs: Any
    ) -> None:
        super().__init__(student, teacher, **kwargs)
        cs, ct = student.config, teacher.config
        if cs.levels != ct.levels:
            raise ActdistillError(
                f"feature KD needs the same pyramid depth; student has {cs.levels} levels, teacher {ct.levels}"
            )
        same = cs.embed_dim == ct.embed_dim
        self.adapters = nn.ModuleList(
            nn.Identity() if same else nn.Conv1d(cs.embed_dim, ct.embed_dim, 1) for _ in range(cs.levels)
        )
        self.feat_weight = feat_weight

    def feature_loss(
        self, heads: dict[str, Any], t_heads: dict[str, Any], weights: list[Tensor] | None = None
    ) -> Tensor:
        """Σ over levels of the (optionally position-weighted) masked MSE between adapted student and teacher maps."""
        total = heads["feats"][0].new_zeros(())
        for lv, (fs, ft, m) in enumerate(zip(heads["feats"], t_heads["feats"], heads["masks"])):
            total = total + _masked_mse(self.adapters[lv](fs), ft, m, None if weights is None else weights[lv])
        return total

    def forward(self, batch: Batch) -> StepOutput:
        heads, t_heads = self.student_heads(batch), self.teacher_heads(batch)
        parts = self.task_parts(heads, batch)
        parts["feat"] = self.feat_weight * self.feature_loss(heads, t_heads)
        return make_output(_logits(heads), parts)


class AttentionKD(FeatureKD):
    """P2's attention distillation for detection (SPEC §3.12, eq. 11 of §3.7): task + bg losses + γ·MSE(A_S, A_T).

    Both detectors need `attention=True` (the teacher trained with it). When their widths differ the attentions are
    compared as temporal profiles (channel means, `(B, T)`), since A_S and A_T then have different channel axes.
    Toolkit option, not in SPEC: `feat_weight > 0` adds pyramid feature KD weighted per position by the teacher's
    foreground attention (its channel mean, max-pooled to each level), so the student imitates the teacher where
    the teacher attends. The CVAE / L_recon / triplet-SSL terms of §3.12 are not part of this method.
    """

    def __init__(
        self,
        student: TemporalDetector,
        teacher: TemporalDetector,
        gamma: float = 0.1,
        feat_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, feat_weight=feat_weight, **kwargs)
        if student.attention is None or teacher.attention is None:
            raise ActdistillError(
                "attention KD needs attention heads in both detectors; set model.attention=true for the student and "
                "train the teacher with model.attention=true"
            )
        self.gamma = gamma

    def forward(self, batch: Batch) -> StepOutput:
        heads, t_heads = self.student_heads(batch), self.teacher_heads(batch)
        parts = self.task_parts(heads, batch)
        a_s, a_t, mask = heads["attention"], t_heads["attention"], batch["mask"]
        if a_s.shape[1] != a_t.shape[1]:
            a_s, a_t = a_s.mean(dim=1, keepdim=True), a_t.mean(dim=1, keepdim=True)
        parts["att"] = self.gamma * _masked_mse(a_s, a_t, mask)
        if self.feat_weight > 0:
            profile = a_t.mean(dim=1, keepdim=True)  # (B, 1, T)
            weights = [profile[:, 0]]
            for _ in heads["feats"][1:]:
                profile = F.max_pool1d(profile, 3, 2, 1)
                weights.append(profile[:, 0])
            parts["feat_fg"] = self.feat_weight * self.feature_loss(heads, t_heads, weights)
        return make_output(_logits(heads), parts)


METHODS: dict[str, type[DetectionTask]] = {
    "vanilla": DetectionTask,
    "logit_kd": LogitKD,
    "feature_kd": FeatureKD,
    "attention_kd": AttentionKD,
}


def _keywords(cls: type) -> list[str]:
    """Named hyper-parameters of one class's `__init__` (not student/teacher, not **kwargs)."""
    import inspect

    params = inspect.signature(cls.__init__).parameters.values()
    return [
        p.name for p in params if p.name not in ("self", "student", "teacher") and p.kind is p.POSITIONAL_OR_KEYWORD
    ]


def build_method(
    name: str, student: TemporalDetector, teacher: TemporalDetector | None, **hparams: Any
) -> DetectionTask:
    """The detection objective `name` (one of `METHODS`) around `student` and a frozen `teacher`."""
    if name not in METHODS:
        raise ActdistillError(f"unknown detection method {name!r}; choose one of {', '.join(METHODS)}")
    cls = METHODS[name]
    allowed = {p for klass in cls.__mro__ if klass in METHODS.values() for p in _keywords(klass)}
    unknown = sorted(set(hparams) - allowed)
    if unknown:
        raise ActdistillError(
            f"detection method {name!r} has no hyper-parameter {', '.join(map(repr, unknown))}; "
            f"its hyper-parameters: {', '.join(sorted(allowed))}"
        )
    if not cls.uses_teacher:
        return cls(student, None, **hparams)
    if teacher is None:
        raise ActdistillError(f"method {name!r} needs a teacher; set teacher.checkpoint to a detection checkpoint")
    return cls(student, teacher, **hparams)
