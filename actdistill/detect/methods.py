"""Temporal-detection objectives as methods of the one method contract (task `detection`).

Batches (actdistill.batch): `input` `(B, C, T)` student features, optional `input_t` (the teacher's, extracted with
another backbone), `mask` `(B, T)` valid steps, `segments` list of `(N_b, 2)` on the level-0 grid, `labels` list of
`(N_b,)`. Student and teacher are `TemporalDetector`s (model `temporal_detector`). Every method returns
`make_output(...)`, so `loss == sum(parts)`; `logits` are the student's class logits over all pyramid positions
`(B, K, ΣT_l)`. Normalisers that count positions are averaged over processes under torchrun.

  * `detection`: the detection losses (focal + DIoU; plus `bg_weight`× the losses on F_bg for attention models);
  * `detection_kd`: + Hinton KD on the per-position sigmoid class scores;
  * `detection_feature_kd`: + FitNets-style MSE on the pyramid features;
  * `detection_attention_kd`: + paper 2's attention distillation (eq. 11) for attention detectors;
  * `detection_generative_teacher` / `detection_generative_kd`: paper 2's two-stage generative KD in its detection
    form (eqs. 3-15; the stages are `distill.generative.GenerativeStages`, shared with the video method).

Every method takes `ssl_weight` (default 0: off): AFSD's triplet self-supervised term (AFSD (Lin et al. CVPR-21),
boundary consistency learning; `detect/boundary.py`), part `ssl_triplet`, on the batch's SSL clip `ssl_input` (the
data builds it when the recipe's method has `ssl_weight > 0`); in the two-stage methods it belongs to stage 2, as in
paper 2's detection code. The attention-KD methods then also distil the attention on that clip (`att_ssl`, paper 2,
eq. 15 as its detection code applies it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actdistill.detect.boundary import triplet_terms
from actdistill.detect.detector import detection_losses
from actdistill.distill.base import Batch, Distiller, StepOutput, make_output
from actdistill.distill.generative import CVAE, GenerativeStages
from actdistill.errors import ActdistillError
from actdistill.models.temporal_detector import TemporalDetector
from actdistill.registry import register_method
from actdistill.utils.checkpoint import load_checkpoint
from actdistill.utils.runtime import mean_over_ranks

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
    return temperature**2 * per_pos[valid].sum() / mean_over_ranks(valid.sum().float()).clamp_min(1)


@register_method(
    "detection",
    paper="the detection losses only (no teacher)",
    knowledge="none",
    task="detection",
    source="ActionFormer (Zhang et al. ECCV 2022) losses; paper 2's detection code for the bg term",
)
class DetectionTask(Distiller):
    """Plain detection training (no teacher): parts `cls`, `reg`, plus `bg` for attention models (paper 2's code).

    The base of every detection method. `ssl_weight > 0` adds AFSD's triplet term on the batch's SSL clip (part
    `ssl_triplet`, see `ssl_parts`; AFSD (Lin et al. CVPR-21), boundary consistency learning; AFSD and paper 2's
    detection code use 0.1).
    """

    uses_teacher = False

    def __init__(
        self,
        student: TemporalDetector,
        teacher: TemporalDetector | None = None,
        *,
        bg_weight: float = 35.0,
        ssl_weight: float = 0.0,
    ) -> None:
        super().__init__(student, teacher)
        if not isinstance(student, TemporalDetector):
            raise ActdistillError("detection methods train a temporal detector: set student.name=temporal_detector")
        self.bg_weight = bg_weight
        self.ssl_weight = float(ssl_weight)
        if self.ssl_weight < 0:
            raise ActdistillError(f"method.ssl_weight must be >= 0; got {ssl_weight}")
        if self.ssl_weight > 0 and student.config.embed_dim < 2:
            raise ActdistillError("method.ssl_weight > 0 pools start and end halves of the channels: embed_dim >= 2")

    def student_heads(self, batch: Batch) -> dict[str, Any]:
        """The student's outputs on `batch` (with the F_bg branch when it has an attention head); with `ssl_weight > 0`
        also its outputs on the SSL clip under key `ssl` (every sample, valid or not, so every process runs the same
        graph under torchrun)."""
        heads = self.student(batch["input"], batch["mask"], background=self.student.attention is not None)
        if self.ssl_weight > 0:
            missing = [k for k in ("ssl_input", "ssl_segments", "ssl_valid") if k not in batch]
            if missing:
                raise ActdistillError(
                    f"method.ssl_weight={self.ssl_weight:g} needs the SSL clip in the batch (missing {missing}): "
                    "detection data builds it when the recipe's method has ssl_weight > 0 "
                    "(detect.dataset.build_detection_data; FeatureSequences(..., ssl=True))"
                )
            heads["ssl"] = self.student(batch["ssl_input"], batch["mask"])
        return heads

    def ssl_parts(self, heads: dict[str, Any], batch: Batch) -> dict[str, Tensor]:
        """`ssl_triplet` = `ssl_weight`·mean over samples with an SSL part of `boundary.triplet_terms` (AFSD (Lin et
        al. CVPR-21), boundary consistency learning), on the student's pyramid for the SSL clip. A batch without any
        valid sample gives a graph-connected zero, so every process has the same parts and gradients under torchrun
        (the count is averaged over processes like the other normalisers)."""
        if heads.get("ssl") is None:
            return {}
        ssl = heads["ssl"]
        valid = batch["ssl_valid"].to(device=ssl["feats"][0].device, dtype=torch.float32)
        per_sample = triplet_terms(ssl["feats"], ssl["masks"], ssl["strides"], batch["ssl_segments"])
        per_sample = torch.where(valid > 0, per_sample, torch.zeros_like(per_sample))  # invalid rows: exactly 0
        # Not clamped at 1: under torchrun a process's share of the valid samples can be below 1 (e.g. 1 of 2 ranks).
        count = mean_over_ranks(valid.sum()).clamp_min(1e-6)
        return {"ssl_triplet": self.ssl_weight * per_sample.sum() / count}

    @torch.no_grad()
    def teacher_heads(self, batch: Batch) -> dict[str, Any]:
        """The frozen teacher's outputs on its view of `batch` (`input_t` or `input`)."""
        assert self.teacher is not None, f"{type(self).__name__} needs a teacher"
        return self.teacher(self.teacher_input(batch), batch["mask"])

    def task_parts(self, heads: dict[str, Any], batch: Batch) -> dict[str, Tensor]:
        """Detection losses on F (or F_fg), for attention models `bg_weight`×(cls + reg) on F_bg, and `ssl_triplet`."""
        parts = detection_losses(self.student, heads, batch["segments"], batch["labels"])
        if heads.get("background") is not None:
            bg = detection_losses(self.student, heads["background"], batch["segments"], batch["labels"], True)
            parts["bg"] = self.bg_weight * (bg["cls"] + bg["reg"])
        parts.update(self.ssl_parts(heads, batch))
        return parts

    def forward(self, batch: Batch) -> StepOutput:
        heads = self.student_heads(batch)
        return make_output(_logits(heads), self.task_parts(heads, batch))


@register_method(
    "detection_kd",
    paper="Hinton et al. 2015 on per-position sigmoid class scores",
    knowledge="logits",
    task="detection",
    source="Hinton et al. 2015 (dense-detector form)",
)
class LogitKD(DetectionTask):
    """Task losses + `kd_weight`·`binary_kd_loss` of per-position class logits at `temperature` (Hinton 2015)."""

    uses_teacher = True

    def __init__(
        self,
        student: TemporalDetector,
        teacher: TemporalDetector,
        *,
        temperature: float = 2.0,
        kd_weight: float = 1.0,
        bg_weight: float = 35.0,
        ssl_weight: float = 0.0,
    ) -> None:
        super().__init__(student, teacher, bg_weight=bg_weight, ssl_weight=ssl_weight)
        if temperature <= 0:
            raise ActdistillError(f"detection_kd: method.temperature must be > 0, got {temperature}")
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
    return (err * w).sum() / mean_over_ranks(w.sum()).clamp_min(1e-6)


@register_method(
    "detection_feature_kd",
    paper="FitNets (Romero et al. ICLR-15) on the pyramid features",
    knowledge="feature",
    task="detection",
    source="Romero et al. ICLR-15",
)
class FeatureKD(DetectionTask):
    """Task losses + `feat_weight`·Σ_levels masked MSE(adapter(F_s^l), F_t^l) (FitNets, Romero et al. 2015).

    The adapter is a 1×1 Conv1d per level when the embedding widths differ (identity otherwise).
    """

    uses_teacher = True

    def __init__(
        self,
        student: TemporalDetector,
        teacher: TemporalDetector,
        *,
        feat_weight: float = 1.0,
        bg_weight: float = 35.0,
        ssl_weight: float = 0.0,
    ) -> None:
        super().__init__(student, teacher, bg_weight=bg_weight, ssl_weight=ssl_weight)
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


@register_method(
    "detection_attention_kd",
    paper="paper 2 eq. 11 (attention distillation), detection form",
    knowledge="attention",
    task="detection",
    source="paper 2 eq. 11; official detection code",
)
class AttentionKD(FeatureKD):
    """P2's attention distillation for detection (eq. 11, official code): task + bg losses + γ·MSE(A_S, A_T).

    Both detectors need `attention=True` (the teacher trained with it). When their widths differ the attentions are
    compared as temporal profiles (channel means, `(B, T)`), since A_S and A_T then have different channel axes.
    Toolkit option, not in paper 2: `feat_weight > 0` adds pyramid feature KD weighted per position by the teacher's
    foreground attention (its channel mean, max-pooled to each level), so the student imitates the teacher where
    the teacher attends. With `ssl_weight > 0` the γ·MSE(A_S, A_T) term is also taken on the SSL clip (`att_ssl`, the
    teacher reading the same splice of its own features, `ssl_input_t`), as paper 2's detection code does (eq. 15).
    The CVAE / L_recon terms of P2's detection code are not part of this method.
    """

    def __init__(
        self,
        student: TemporalDetector,
        teacher: TemporalDetector,
        *,
        gamma: float = 0.1,
        feat_weight: float = 0.0,
        bg_weight: float = 35.0,
        ssl_weight: float = 0.0,
    ) -> None:
        super().__init__(student, teacher, feat_weight=feat_weight, bg_weight=bg_weight, ssl_weight=ssl_weight)
        if student.attention is None or teacher.attention is None:
            raise ActdistillError(
                "attention KD needs attention heads in both detectors; set student.kwargs.attention=true for the "
                "student and train the teacher with student.kwargs.attention=true"
            )
        self.gamma = gamma

    @staticmethod
    def _comparable(a_s: Tensor, a_t: Tensor) -> tuple[Tensor, Tensor]:
        """A_S, A_T as they are compared: as channel-mean profiles `(B, 1, T)` when the widths differ."""
        if a_s.shape[1] != a_t.shape[1]:
            return a_s.mean(dim=1, keepdim=True), a_t.mean(dim=1, keepdim=True)
        return a_s, a_t

    def attention_parts(
        self, heads: dict[str, Any], t_heads: dict[str, Any], batch: Batch, with_att: bool = True
    ) -> dict[str, Tensor]:
        """`att` = γ·MSE(A_S, A_T) (eq. 11), `att_ssl` the same on the SSL clip's valid samples when the student ran on
        it (`ssl_weight > 0`; paper 2, eq. 15, as its detection code applies it) and, with `feat_weight > 0`, the
        attention-weighted `feat_fg`. `with_att=False` leaves out `att` and `att_ssl`."""
        parts: dict[str, Tensor] = {}
        a_s, a_t = self._comparable(heads["attention"], t_heads["attention"])
        mask = batch["mask"]
        if with_att:
            parts["att"] = self.gamma * _masked_mse(a_s, a_t, mask)
        if with_att and heads.get("ssl") is not None:
            with torch.no_grad():
                t_ssl = self.teacher(batch.get("ssl_input_t", batch["ssl_input"]), mask)  # type: ignore[misc]
            s_ssl, t_att = self._comparable(heads["ssl"]["attention"], t_ssl["attention"])
            valid = mask & batch["ssl_valid"].to(mask.device)[:, None]
            parts["att_ssl"] = self.gamma * _masked_mse(s_ssl, t_att, valid)
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


# --- paper 2's generative KD (detection form) ---


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


class _DetectionStages(GenerativeStages, DetectionTask):
    """Paper 2's two stages on a detector with an attention head: F is the un-weighted stem map, A its attention."""

    def _setup(self, kl_weight: float, mode: str, max_weight: float, ramp: int, use_recon: bool) -> None:
        if self.student.attention is None:
            raise ActdistillError(
                "generative detection methods need an attention head in the student; set student.kwargs.attention=true"
            )
        self.setup_stages(CVAE1d(self.student.config.embed_dim), kl_weight, mode, max_weight, ramp, use_recon)

    def generative_input(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        heads = self.student(batch["input"], batch["mask"])
        return _logits(heads), heads["feature"], heads["attention"], batch["mask"]

    def attention_output(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor], Tensor, Any]:
        heads = self.student_heads(batch)
        parts = self.task_parts(heads, batch)
        return _logits(heads), heads["feature"], heads["attention"], parts, batch["mask"], heads


@register_method(
    "detection_generative_teacher",
    paper="paper 2's stages without KD terms, detection form (teacher preparation)",
    knowledge="none",
    task="detection",
    source="toolkit decision: paper 2 ships no teacher script",
)
class GenerativeDetectionTeacher(_DetectionStages):
    """Teacher preparation for `detection_generative_kd`: stage 1 `L_cvae` of the detector's CVAE; stage 2 detection
    losses (+ bg) + `w_recon`·L_recon (+ `ssl_triplet` with `ssl_weight > 0`). Its checkpoint's method extras hold the
    CVAE that the student's run loads."""

    uses_teacher = False

    def __init__(
        self,
        student: TemporalDetector,
        teacher: TemporalDetector | None = None,
        *,
        kl_weight: float = 0.1,
        recon_weight_mode: str = "code",
        recon_max_weight: float = 0.5,
        recon_ramp_epochs: int = 20,
        use_recon: bool = True,
        bg_weight: float = 35.0,
        ssl_weight: float = 0.0,
    ) -> None:
        DetectionTask.__init__(self, student, None, bg_weight=bg_weight, ssl_weight=ssl_weight)
        self._setup(kl_weight, recon_weight_mode, recon_max_weight, recon_ramp_epochs, use_recon)


@register_method(
    "detection_generative_kd",
    paper="paper 2 (generative feature KD + attention KD), detection form",
    knowledge="feature (generative) + attention",
    task="detection",
    source="paper 2 eqs. 3-15; official detection code (GKD/thumos14/train.py)",
)
class GenerativeKD(_DetectionStages, AttentionKD):
    """Paper 2's generative KD for detection (eqs. 3-15, official detection code): attention KD plus the CVAE stages.

    Stage 1 ("generative", eq. 14): `L_cvae + β·L_KD-gen`, L_KD-gen = MSE(F̂_S, F̂_T) (eq. 4) with the frozen teacher
    CVAE fed the student's (F_S, A_S) as in paper 2 when both detectors have the same width; with different widths the
    teacher CVAE gets the teacher's own (F_T, A_T) on the same features and a 1×1 Conv1d `gen_adapter` (trained in
    stage 1) maps F̂_S to the teacher's width (toolkit option). The teacher CVAE comes from the teacher checkpoint's
    extras (`load_teacher_extras`, a `generative_teacher` run); without them it is trained in stage 1 on the
    teacher's (F_T, A_T) with `L_cvae` (parts `teacher_cvae_mse`, `teacher_cvae_kld`) and a warning.
    `teacher_extras`: the `detection_generative_teacher` checkpoint holding that CVAE (usually teacher.checkpoint).
    Stage 2 ("attention", eq. 15 in P2's detection code form): detection losses on F_fg + `bg_weight`·(losses on F_bg) +
    `w_recon(epoch)`·L_recon + γ·L_KD-att; with `ssl_weight > 0` (P2's code: 0.1) also AFSD's triplet term
    `ssl_triplet` (AFSD (Lin et al. CVPR-21), boundary consistency learning) and γ·L_KD-att on the SSL clip
    (`att_ssl`). Switches `use_recon`, `use_kd_gen`, `use_kd_att` drop their parts (`use_kd_att`: `att`, `att_ssl`).
    """

    def __init__(
        self,
        student: TemporalDetector,
        teacher: TemporalDetector,
        *,
        teacher_extras: str = "",
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
        bg_weight: float = 35.0,
        ssl_weight: float = 0.0,
    ) -> None:
        AttentionKD.__init__(
            self, student, teacher, gamma=gamma, feat_weight=feat_weight, bg_weight=bg_weight, ssl_weight=ssl_weight
        )
        self._setup(kl_weight, recon_weight_mode, recon_max_weight, recon_ramp_epochs, use_recon)
        ds, dt = student.config.embed_dim, teacher.config.embed_dim
        self.teacher_cvae = CVAE1d(dt)
        self.gen_adapter = nn.Conv1d(ds, dt, 1) if ds != dt and use_kd_gen else None
        self.teacher_cvae_prepared, self._warned = False, False
        self.beta, self.use_kd_gen, self.use_kd_att = float(beta), bool(use_kd_gen), bool(use_kd_att)
        if teacher_extras:
            extras = load_checkpoint(teacher_extras).get("method", {}).get("extras", {})
            self.load_teacher_extras(extras, teacher_extras)

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
                "detection_generative_kd: teacher_extras holds no CVAE (train the teacher with method.name="
                "detection_generative_teacher); the teacher CVAE is trained in stage 1 from the teacher's features"
            )
            self._warned = True

    def _kd_gen(
        self, batch: Batch, feature: Tensor, attention: Tensor, recon: Tensor, mask: Tensor | None
    ) -> dict[str, Tensor]:
        """Eq. 4 (β·MSE(F̂_S, F̂_T), paper 2), plus the teacher CVAE's own `L_cvae` while it is not prepared."""
        parts: dict[str, Tensor] = {}
        if self.teacher_cvae_prepared and not self.use_kd_gen:
            return parts
        t_heads = self.teacher_heads(batch)
        t_feature, t_attention = t_heads["feature"].float(), t_heads["attention"].float()
        if not self.teacher_cvae_prepared:
            eps = self.noise(batch, t_attention, 2)
            _, t_parts = self.cvae_terms(t_feature, t_attention, mask, eps, cvae=self.teacher_cvae)
            parts.update({f"teacher_{k}": v for k, v in t_parts.items()})
        if self.use_kd_gen:
            with torch.no_grad():
                if self.gen_adapter is None:
                    # both CVAEs get the student's (F, A), as in paper 2
                    target = self.teacher_cvae(feature, attention, self.noise(batch, attention, 1))[0]
                else:
                    target = self.teacher_cvae(t_feature, t_attention, self.noise(batch, t_attention, 1))[0]
            pred = recon if self.gen_adapter is None else self.gen_adapter(recon)
            parts["kd_gen"] = self.beta * _masked_mse(pred, target, mask)  # type: ignore[arg-type]
        return parts

    def _kd_att(self, batch: Batch, heads: dict[str, Any]) -> dict[str, Tensor]:
        """Eq. 11: γ·MSE(A_S, A_T), with `ssl_weight > 0` also on the SSL clip (`att_ssl`; paper 2, eq. 15, as its
        detection code applies it), and `feat_fg` when `feat_weight > 0`, as `attention_kd`."""
        if not self.use_kd_att and self.feat_weight <= 0:
            return {}
        return self.attention_parts(heads, self.teacher_heads(batch), batch, with_att=self.use_kd_att)

    def _cvae_parameters(self) -> Iterator[nn.Parameter]:
        yield from super()._cvae_parameters()
        if not self.teacher_cvae_prepared:
            yield from (p for p in self.teacher_cvae.parameters() if p.requires_grad)
        if self.gen_adapter is not None:
            yield from (p for p in self.gen_adapter.parameters() if p.requires_grad)

    def _stage2_parameters(self) -> Iterator[nn.Parameter]:
        yield from super()._stage2_parameters()
        yield from (p for p in self.adapters.parameters() if p.requires_grad)  # feature adapters (feat_weight > 0)
