"""Detection training objectives as `Distiller`s: plain detection, logit KD, pyramid feature KD, attention KD, and
paper 2's two-stage generative KD (`generative_teacher`, `generative_kd`; paper 2, eqs. 3-15, in the detection
form of its official code).

Batches are dicts: `input` `(B, C, T)` student features, optional `input_t` (the teacher's features, when it was
extracted with another backbone), `mask` `(B, T)` bool, `segments` list of `(N_b, 2)` on the level-0 grid and
`labels` list of `(N_b,)`. Every method returns `make_output(...)`, so `loss == sum(parts)`; `logits` are the
student's class logits over all pyramid positions `(B, K, ΣT_l)`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actdistill.detect.detector import TemporalDetector, detection_losses
from actdistill.distill.base import Batch, Distiller, Stage, StepOutput, make_output
from actdistill.distill.generative import CVAE, CVAE_OPTIM, GenerativeStage, kl_to_prior, recon_weight
from actdistill.errors import ActdistillError

__all__ = [
    "CVAE1d",
    "METHODS",
    "AttentionKD",
    "DetectionTask",
    "FeatureKD",
    "GenerativeDetectionTeacher",
    "GenerativeKD",
    "LogitKD",
    "binary_kd_loss",
    "build_method",
    "cvae_parts",
]

log = logging.getLogger("actdistill.detect")


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
    """Plain detection training (no teacher): parts `cls`, `reg`, plus `bg` for attention models (paper 2's code)."""

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
    """P2's attention distillation for detection (eq. 11, official code): task + bg losses + γ·MSE(A_S, A_T).

    Both detectors need `attention=True` (the teacher trained with it). When their widths differ the attentions are
    compared as temporal profiles (channel means, `(B, T)`), since A_S and A_T then have different channel axes.
    Toolkit option, not in paper 2: `feat_weight > 0` adds pyramid feature KD weighted per position by the teacher's
    foreground attention (its channel mean, max-pooled to each level), so the student imitates the teacher where
    the teacher attends. The CVAE / L_recon / triplet-SSL terms of P2's detection code are not part of this method.
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

    def attention_parts(self, heads: dict[str, Any], t_heads: dict[str, Any], batch: Batch) -> dict[str, Tensor]:
        """`att` = γ·MSE(A_S, A_T) (eq. 11) and, with `feat_weight > 0`, the attention-weighted `feat_fg`."""
        parts: dict[str, Tensor] = {}
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
        return parts

    def forward(self, batch: Batch) -> StepOutput:
        heads, t_heads = self.student_heads(batch), self.teacher_heads(batch)
        parts = self.task_parts(heads, batch)
        parts.update(self.attention_parts(heads, t_heads, batch))
        return make_output(_logits(heads), parts)


# ---------------------------------------------------------------------------------- paper 2's generative KD (eqs. 3-15)


class CVAE1d(CVAE):
    """Paper 2's CVAE (`generative.CVAE`, paper 2, eqs. 3, 5-7) on detector features `(B, C, T)`.

    The maps are viewed as `(B, C, T, 1, 1)`, so the encoder's θ_i and the decoder's θ'_i become 1×1×1 (de)convs over
    channels (the video CVAE's 1×7×7 collapses a 7×7 map; here there is no spatial extent). Conditioning λ = Aᵀ, prior
    N(λ, I), latent = C per time step, hidden = C; GroupNorm groups gcd(C, 16) as in the detector.
    """

    def __init__(self, channels: int, groups: int = 16) -> None:
        super().__init__(channels, 1, spatial=(1, 1), groups=groups)

    def encode(self, feature: Tensor, attention: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 6: F `(B, C, T)`, A `(B, C, T)` → μ, logσ² `(B, T, C)`."""
        return super().encode(feature[..., None, None], attention)

    def decode(self, z: Tensor, attention: Tensor) -> Tensor:
        """Eq. 7: z `(B, T, C)`, A `(B, C, T)` → F̂ `(B, C, T)`."""
        return super().decode(z, attention)[..., 0, 0]


def _steps(x: Tensor, mask: Tensor) -> Tensor:
    """`(B, C, T)` → `(N_valid, C)`: the valid time steps, so that means run over real positions only."""
    return x.transpose(1, 2)[mask]


def cvae_parts(
    cvae: CVAE1d, feature: Tensor, attention: Tensor, mask: Tensor, kl_weight: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 5 as coded (`generative.cvae_loss`) over valid steps: F̂ and parts `cvae_mse` = mean((F − F̂)²),
    `cvae_kld` = α·KL(N(μ, σ²) ‖ N(Aᵀ, I)) (`generative.kl_to_prior`, mean over entries)."""
    recon, mu, logvar = cvae(feature, attention)
    return recon, {
        "cvae_mse": F.mse_loss(_steps(recon, mask), _steps(feature, mask)),
        "cvae_kld": kl_weight * kl_to_prior(mu[mask], logvar[mask], attention.transpose(1, 2)[mask]),
    }


class _GenerativeStages:
    """Two stages per epoch (paper 2, Fig. 2; official code) over a detector with an attention head and a student CVAE.

    Stage 1 "generative": only the CVAE side trains (Adam 1e-4, betas (0.8, 0.999): `GenerativeStage.optim`); the
    detector and its attention run without autograd. Stage 2 "attention": detector + attention train on the detection
    losses (F_fg, `bg_weight`·F_bg) + `w_recon(epoch)`·L_recon (+ KD terms); the CVAE decoder stays in the graph,
    frozen. Set up by `_setup_generative` from the concrete class's `__init__`.
    """

    student: TemporalDetector
    epoch: int

    def _setup_generative(
        self,
        kl_weight: float,
        recon_weight_mode: str,
        recon_max_weight: float,
        recon_ramp_epochs: int,
        use_recon: bool,
    ) -> None:
        recon_weight(1, recon_weight_mode)  # validate early
        if self.student.attention is None:
            raise ActdistillError(
                "generative detection methods need an attention head in the student; set model.attention=true"
            )
        self.cvae = CVAE1d(self.student.config.embed_dim)
        self.kl_weight, self.use_recon = float(kl_weight), bool(use_recon)
        self.recon_weight_mode, self.recon_max_weight = recon_weight_mode, float(recon_max_weight)
        self.recon_ramp_epochs = int(recon_ramp_epochs)
        self.recon_weight_now = recon_weight(
            self.epoch, recon_weight_mode, self.recon_max_weight, self.recon_ramp_epochs
        )

    # hooks for the KD terms
    def _kd_gen(self, batch: Batch, feature: Tensor, attention: Tensor, recon: Tensor) -> dict[str, Tensor]:
        return {}

    def _kd_att(self, batch: Batch, heads: dict[str, Any]) -> dict[str, Tensor]:
        return {}

    def on_epoch(self, epoch: int) -> None:
        """Epoch counter and the L_recon weight `min(epoch, ramp)/ramp·max` (P2 code; `paper`: 1, eq. 15)."""
        self.epoch = epoch
        self.recon_weight_now = recon_weight(
            epoch, self.recon_weight_mode, self.recon_max_weight, self.recon_ramp_epochs
        )

    def forward_generative(self, batch: Batch) -> StepOutput:
        """Stage 1, eq. 14: `L_cvae (+ β·L_KD-gen)` on the student's detached (F, A); F is the un-weighted stem map."""
        mask = batch["mask"]
        with torch.no_grad():
            heads = self.student(batch["input"], mask)
        feature, attention = heads["feature"].float(), heads["attention"].float()
        recon, parts = cvae_parts(self.cvae, feature, attention, mask, self.kl_weight)
        parts.update(self._kd_gen(batch, feature, attention, recon))
        return make_output(_logits(heads), parts)

    def forward_attention(self, batch: Batch) -> StepOutput:
        """Stage 2 (eq. 15): detection losses on F_fg + bg part + `w_recon`·L_recon (eq. 13) (+ γ·L_KD-att)."""
        heads = self.student_heads(batch)  # type: ignore[attr-defined]
        parts = self.task_parts(heads, batch)  # type: ignore[attr-defined]
        metrics: dict[str, Tensor | float] = {}
        if self.use_recon:
            # z = λ + ε through the frozen decoder vs the un-weighted F (not detached), valid steps only.
            raw = _masked_mse(self.cvae.inference(heads["attention"]).float(), heads["feature"].float(), batch["mask"])
            parts["recon"] = self.recon_weight_now * raw
            metrics.update(recon_raw=raw.detach(), recon_weight=self.recon_weight_now)
        parts.update(self._kd_att(batch, heads))
        return make_output(_logits(heads), parts, metrics)

    def forward(self, batch: Batch) -> StepOutput:
        """The stage 2 objective (what a single-stage caller trains); `detect train` runs `stages()`."""
        return self.forward_attention(batch)

    def _stage1_parameters(self) -> Iterator[nn.Parameter]:
        yield from (p for p in self.cvae.parameters() if p.requires_grad)

    def _stage2_parameters(self) -> Iterator[nn.Parameter]:
        yield from (p for p in self.student.parameters() if p.requires_grad)

    def stages(self) -> list[Stage]:
        """Per epoch: a full pass of stage 1 ("generative", Adam override), then stage 2 ("attention", recipe optim)."""
        return [
            GenerativeStage("generative", self._stage1_parameters, self.forward_generative, optim=dict(CVAE_OPTIM)),
            GenerativeStage("attention", self._stage2_parameters, self.forward_attention, optim=None),
        ]


class GenerativeDetectionTeacher(_GenerativeStages, DetectionTask):
    """Teacher preparation for `generative_kd` (toolkit decision: paper 2 ships no teacher script), no teacher.

    Stage 1: `L_cvae` of the detector's own CVAE; stage 2: detection losses (+ bg) + `w_recon`·L_recon. Its
    checkpoint's `method_state.extras.cvae` is the teacher CVAE that `generative_kd` loads.
    """

    uses_teacher = False

    def __init__(
        self,
        student: TemporalDetector,
        teacher: TemporalDetector | None = None,
        kl_weight: float = 0.1,
        recon_weight_mode: str = "code",
        recon_max_weight: float = 0.5,
        recon_ramp_epochs: int = 20,
        use_recon: bool = True,
        **kwargs: Any,
    ) -> None:
        DetectionTask.__init__(self, student, None, **kwargs)
        self._setup_generative(kl_weight, recon_weight_mode, recon_max_weight, recon_ramp_epochs, use_recon)


class GenerativeKD(_GenerativeStages, AttentionKD):
    """Paper 2's generative KD for detection (eqs. 3-15, official detection code): attention KD plus the CVAE stages.

    Stage 1 ("generative", eq. 14): `L_cvae + β·L_KD-gen`, L_KD-gen = MSE(F̂_S, F̂_T) (eq. 4) with the frozen teacher
    CVAE fed the student's (F_S, A_S) as in paper 2 when both detectors have the same width; with different widths the
    teacher CVAE gets the teacher's own (F_T, A_T) on the same features and a 1×1 Conv1d `gen_adapter` (trained in
    stage 1) maps F̂_S to the teacher's width (toolkit option). The teacher CVAE comes from the teacher checkpoint's
    extras (`load_teacher_extras`, a `generative_teacher` run); without them it is trained in stage 1 on the
    teacher's (F_T, A_T) with `L_cvae` (parts `teacher_cvae_mse`, `teacher_cvae_kld`) and a warning.
    Stage 2 ("attention", eq. 15 in P2's detection code form): detection losses on F_fg + `bg_weight`·(losses on F_bg) +
    `w_recon(epoch)`·L_recon + γ·L_KD-att. Switches `use_recon`, `use_kd_gen`, `use_kd_att` drop their parts.
    """

    def __init__(
        self,
        student: TemporalDetector,
        teacher: TemporalDetector,
        beta: float = 0.01,
        gamma: float = 0.1,
        kl_weight: float = 0.1,
        recon_weight_mode: str = "code",
        recon_max_weight: float = 0.5,
        recon_ramp_epochs: int = 20,
        use_recon: bool = True,
        use_kd_gen: bool = True,
        use_kd_att: bool = True,
        feat_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        AttentionKD.__init__(self, student, teacher, gamma=gamma, feat_weight=feat_weight, **kwargs)
        self._setup_generative(kl_weight, recon_weight_mode, recon_max_weight, recon_ramp_epochs, use_recon)
        ds, dt = student.config.embed_dim, teacher.config.embed_dim
        self.teacher_cvae = CVAE1d(dt)
        self.gen_adapter = nn.Conv1d(ds, dt, 1) if ds != dt and use_kd_gen else None
        self.teacher_cvae_prepared, self._warned = False, False
        self.beta, self.use_kd_gen, self.use_kd_att = float(beta), bool(use_kd_gen), bool(use_kd_att)

    def load_teacher_extras(self, extras: dict[str, Any], source: str = "teacher checkpoint") -> bool:
        """Load and freeze the teacher CVAE from a `generative_teacher` run's method extras; False if it has none."""
        if "cvae" not in extras:
            return False
        try:
            self.teacher_cvae.load_state_dict(extras["cvae"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ActdistillError(
                f"{source}: its CVAE does not fit the teacher's width {self.teacher_cvae.channels} ({first[:160]})"
            ) from None
        self.teacher_cvae.requires_grad_(False)
        self.teacher_cvae_prepared = True
        log.info("generative_kd: teacher CVAE loaded from %s", source)
        return True

    def on_epoch(self, epoch: int) -> None:
        super().on_epoch(epoch)
        if not self.teacher_cvae_prepared and not self._warned:
            log.warning(
                "generative_kd: the teacher checkpoint has no CVAE (train the teacher with method.name="
                "generative_teacher); the teacher CVAE is trained in stage 1 from the teacher's features instead"
            )
            self._warned = True

    def _kd_gen(self, batch: Batch, feature: Tensor, attention: Tensor, recon: Tensor) -> dict[str, Tensor]:
        """Eq. 4 (β·MSE(F̂_S, F̂_T), paper 2), plus the teacher CVAE's own `L_cvae` while it is not prepared."""
        parts: dict[str, Tensor] = {}
        if self.teacher_cvae_prepared and not self.use_kd_gen:
            return parts
        mask = batch["mask"]
        t_heads = self.teacher_heads(batch)
        t_feature, t_attention = t_heads["feature"].float(), t_heads["attention"].float()
        if not self.teacher_cvae_prepared:
            _, t_parts = cvae_parts(self.teacher_cvae, t_feature, t_attention, mask, self.kl_weight)
            parts.update({f"teacher_{k}": v for k, v in t_parts.items()})
        if self.use_kd_gen:
            with torch.no_grad():
                if self.gen_adapter is None:
                    target = self.teacher_cvae(feature, attention)[0]  # both CVAEs get the student's (F, A), paper 2
                else:
                    target = self.teacher_cvae(t_feature, t_attention)[0]
            pred = recon if self.gen_adapter is None else self.gen_adapter(recon)
            parts["kd_gen"] = self.beta * _masked_mse(pred, target, mask)
        return parts

    def _kd_att(self, batch: Batch, heads: dict[str, Any]) -> dict[str, Tensor]:
        """Eq. 11: γ·MSE(A_S, A_T) (and `feat_fg` when `feat_weight > 0`), as `attention_kd`."""
        if not self.use_kd_att and self.feat_weight <= 0:
            return {}
        parts = self.attention_parts(heads, self.teacher_heads(batch), batch)
        if not self.use_kd_att:
            parts.pop("att")
        return parts

    def _stage1_parameters(self) -> Iterator[nn.Parameter]:
        yield from super()._stage1_parameters()
        if not self.teacher_cvae_prepared:
            yield from (p for p in self.teacher_cvae.parameters() if p.requires_grad)
        if self.gen_adapter is not None:
            yield from (p for p in self.gen_adapter.parameters() if p.requires_grad)

    def _stage2_parameters(self) -> Iterator[nn.Parameter]:
        yield from super()._stage2_parameters()
        yield from (p for p in self.adapters.parameters() if p.requires_grad)  # feature adapters (feat_weight > 0)


METHODS: dict[str, type[DetectionTask]] = {
    "vanilla": DetectionTask,
    "logit_kd": LogitKD,
    "feature_kd": FeatureKD,
    "attention_kd": AttentionKD,
    "generative_teacher": GenerativeDetectionTeacher,
    "generative_kd": GenerativeKD,
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
