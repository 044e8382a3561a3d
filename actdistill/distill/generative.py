"""Paper 2: generative model-based feature KD for video (as in its official code): attention module, CVAE, methods.

Shapes (paper 2's code): `F = Mixed_5c(x) ∈ R^{B×C×T'×H'×W'}` (1024×8×7×7 for a 64×224² clip), `A ∈ (0,1)^{B×C×T'}`.
Methods registered here:
  * `generative` (student, frozen teacher): Stage 1 "generative" trains the student CVAE with eq. 14, Stage 2
    "attention" trains the student backbone + attention module with eq. 15 (paper 2, Fig. 2);
  * `generative_teacher` (no teacher): the same two stages without KD terms (toolkit decision); its checkpoint's method
    extras (`attention`, `cvae`) are what `generative` loads through `teacher_extras`.
Stage 1 wants Adam(1e-4, betas (0.8, 0.999)): its `GenerativeStage.optim` carries that override for the engine.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actdistill.distill.base import Batch, Distiller, Stage, StepOutput, make_output
from actdistill.distill.logit import class_logits
from actdistill.distill.taps import Tap, cached_run
from actdistill.errors import ActdistillError
from actdistill.models._contract import prefixed_stages
from actdistill.registry import register_method
from actdistill.utils.runtime import mean_over_ranks

log = logging.getLogger("actdistill")

CVAE_OPTIM: dict[str, Any] = {"name": "adam", "lr": 1e-4, "betas": (0.8, 0.999), "weight_decay": 0.0}


def group_count(channels: int, groups: int = 32) -> int:
    """GroupNorm groups: the largest divisor of `channels` that also divides `groups` (32 for 512/1024 in P2's code)."""
    return math.gcd(channels, groups)


# ------------------------------------------------------------------------------------------- attention (paper 2, eq. 8)


class AttentionModule(nn.Module):
    """Eq. 8 as paper 2's official code does it (BDNet_student.py): `(B, C, T', H', W')` → `A ∈ (0,1)^{B×C×T'}`.

    Conv3d(C→hidden, (1,kh,kw)) → GN → ReLU → squeeze → nearest-upsample the T' axis to length `interp_len` (= C)
    → Conv1d(hidden→C, k3, pad 1) over that axis → GN → ReLU → Linear(interp_len→T') → Sigmoid.
    The Linear and the first ReLU are not in eq. 8 (paper 2's code adds them); the code's "deconv1" is a plain conv.
    """

    def __init__(
        self,
        channels: int,
        time_steps: int,
        hidden: int | None = None,
        spatial_kernel: Sequence[int] = (7, 7),
        groups: int = 32,
        interp_len: int | None = None,
    ) -> None:
        super().__init__()
        hidden = hidden or max(channels // 2, 1)
        self.channels, self.time_steps = channels, time_steps
        self.interp_len = interp_len or channels
        kh, kw = spatial_kernel
        self.conv3d = nn.Conv3d(channels, hidden, (1, kh, kw))  # 1024→512, 1×7×7, no padding, bias
        self.gn1 = nn.GroupNorm(group_count(hidden, groups), hidden)
        self.conv1d = nn.Conv1d(hidden, channels, 3, padding=1)  # over the upsampled time axis
        self.gn2 = nn.GroupNorm(group_count(channels, groups), channels)
        self.fc = nn.Linear(self.interp_len, time_steps)

    def forward(self, feature: Tensor) -> Tensor:
        """`(B, C, T', H', W')` with `(H', W') == spatial_kernel` → `(B, C, T')` in (0, 1)."""
        h = F.relu(self.gn1(self.conv3d(feature)))  # (B, hidden, T', 1, 1)
        h = h.flatten(2)  # (B, hidden, T')
        h = F.interpolate(h, size=self.interp_len, mode="nearest")  # (B, hidden, C): T' axis upsampled to C
        h = F.relu(self.gn2(self.conv1d(h)))  # (B, C, C)
        return torch.sigmoid(self.fc(h))  # (B, C, T')


def attention_weighted_feature(feature: Tensor, attention: Tensor, per_sample: bool = False) -> Tensor:
    """Eq. 9-10 as P2's code has it (train_Top_I3D_KD.py): `F' = (F ⊙ A) · ΣF / Σ(F ⊙ A)`, θ = identity, σ not detached.

    `feature` `(B, C, T', H', W')`, `attention` `(B, C, T')` broadcast over H'×W'. The sums run over the whole
    batch tensor (faithful) or over each sample (`per_sample=True`, batch-size independent); either way the total
    sum of F' equals that of F. A zero denominator (all-zero feature) gives ratio 1 instead of NaN.
    """
    weighted = feature * attention[..., None, None]
    dims = tuple(range(1, feature.dim())) if per_sample else tuple(range(feature.dim()))
    num = feature.sum(dim=dims, keepdim=True)
    den = weighted.sum(dim=dims, keepdim=True)
    safe = torch.where(den != 0, den, torch.ones_like(den))
    return weighted * torch.where(den != 0, num / safe, torch.ones_like(den))


class AttentionPredictor(nn.Module):
    """Student + paper 2's attention module: `(B, C, T, H, W)` → per-step logits `(B, K, T'')` (eqs. 8-10, 12).

    Follows the model contract: `forward_features` is the student's; `forward_head(F)` weights F by its attention
    first, so `forward(x) == forward_head(forward_features(x)[-1])`. Registered as the model `attention_predictor`
    (distill/predictors.py), which is how a `generative` checkpoint is rebuilt for evaluation and export.
    """

    def __init__(self, student: nn.Module, attention: AttentionModule, per_sample_sigma: bool = False) -> None:
        super().__init__()
        self.student, self.attention, self.per_sample_sigma = student, attention, per_sample_sigma
        self.pretrained_cfg = getattr(student, "pretrained_cfg", None)
        self.feature_info = prefixed_stages(student, "student.")
        self.num_classes = getattr(student, "num_classes", None)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        return self.student.forward_features(x)

    def forward_head(self, feature: Tensor) -> Tensor:
        weighted = attention_weighted_feature(feature, self.attention(feature), self.per_sample_sigma)
        return self.student.forward_head(weighted)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x)[-1])


# ------------------------------------------------------------------------------------------ CVAE (paper 2, eqs. 3, 5-7)


class CVAE(nn.Module):
    """Conditional VAE of paper 2, eqs. 3, 5-7 (official code: BDNet_student.py), conditioned on λ = Aᵀ `(B, T', C)`;
    prior N(λ, I), fixed.

    Encoder: Conv3d(C→C, (1,kh,kw)) → GN → ReLU → (B, C, T') ⊕ A → Linear(2C→H) → ReLU → Linear(H→H) → ReLU →
    Linear(H→2L) giving μ, logσ² `(B, T', L)`. Decoder: (z ⊕ λ) → Linear(L+C→H) → ReLU → Linear(H→H) → ReLU →
    Linear(H→C) → ConvTranspose3d(C→C, (1,kh,kw)) → GN → ReLU → F̂ `(B, C, T', kh, kw)`. L must equal C because the
    prior mean is λ itself (code: 1024 per time step); H = C as in the code.
    """

    def __init__(
        self,
        channels: int,
        time_steps: int,
        latent: int | None = None,
        spatial: Sequence[int] = (7, 7),
        hidden: int | None = None,
        groups: int = 32,
    ) -> None:
        super().__init__()
        latent = latent or channels
        if latent != channels:
            raise ActdistillError(f"CVAE latent size must equal channels ({channels}): the prior mean is A (paper 2)")
        hidden = hidden or channels
        self.channels, self.time_steps, self.latent = channels, time_steps, latent
        kernel = (1, *spatial)
        self.enc_conv = nn.Conv3d(channels, channels, kernel)  # θ_i: 1×7×7, keeps C (as paper 2's code does)
        self.enc_gn = nn.GroupNorm(group_count(channels, groups), channels)
        self.enc_mlp = nn.Sequential(
            nn.Linear(2 * channels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * latent),
        )
        self.dec_mlp = nn.Sequential(
            nn.Linear(latent + channels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, channels),
        )
        self.dec_conv = nn.ConvTranspose3d(channels, channels, kernel)  # θ'_i, 1×n×n
        self.dec_gn = nn.GroupNorm(group_count(channels, groups), channels)

    def encode(self, feature: Tensor, attention: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 6: `(B, C, T', H', W')`, `(B, C, T')` → μ, logσ² `(B, T', L)`."""
        e = F.relu(self.enc_gn(self.enc_conv(feature))).flatten(2)  # (B, C, T')
        u = self.enc_mlp(torch.cat([e, attention], dim=1).transpose(1, 2))  # (B, T', 2L)
        return u[..., : self.latent], u[..., self.latent :]

    def decode(self, z: Tensor, attention: Tensor) -> Tensor:
        """Eq. 7: z `(B, T', L)`, A `(B, C, T')` → F̂ `(B, C, T', kh, kw)`."""
        v = self.dec_mlp(torch.cat([z, attention.transpose(1, 2)], dim=-1))  # (B, T', C)
        v = v.transpose(1, 2)[..., None, None]  # (B, C, T', 1, 1)
        return F.relu(self.dec_gn(self.dec_conv(v)))

    def forward(self, feature: Tensor, attention: Tensor, eps: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Training pass: F̂, μ, logσ² with `z = μ + ε·exp(½ logσ²)` (reparameterisation); `eps` `(B, T', L)`
        (default: drawn here)."""
        mu, logvar = self.encode(feature, attention)
        eps = torch.randn_like(mu) if eps is None else eps.to(mu)
        return self.decode(mu + eps * torch.exp(0.5 * logvar), attention), mu, logvar

    def inference(self, attention: Tensor, eps: Tensor | None = None) -> Tensor:
        """Eq. 13: sample the prior `z = λ + ε` (λ = Aᵀ) and decode → F̂ `(B, C, T', kh, kw)`."""
        lam = attention.transpose(1, 2)
        return self.decode(lam + (torch.randn_like(lam) if eps is None else eps.to(lam)), attention)


# ------------------------------------------------------------------------------------------ losses (paper 2, eqs. 4-15)


def kl_to_prior(mu: Tensor, logvar: Tensor, prior_mean: Tensor) -> Tensor:
    """KL(N(μ, σ²) ‖ N(λ, I)) as coded: `−½ · mean(1 + logσ² − (μ − λ)² − exp(logσ²))`, MEAN over all entries."""
    return -0.5 * torch.mean(1 + logvar - (mu - prior_mean).pow(2) - logvar.exp())


def recon_weight(epoch: int, mode: str = "code", max_weight: float = 0.5, ramp_epochs: int = 20) -> float:
    """Weight of L_recon in eq. 15: P2's code `min(epoch, 20)/20 · 0.5` (epochs from 1); `paper` gives 1."""
    if mode == "paper":
        return 1.0
    if mode != "code":
        raise ActdistillError(f"recon_weight_mode must be 'code' or 'paper', got '{mode}'")
    return min(epoch, ramp_epochs) / ramp_epochs * max_weight


def classification_loss(logits: Tensor, labels: Tensor, mode: str = "summed_prob") -> Tensor:
    """L_clf (paper 2, eq. 12; official code) on per-step logits `(B, K, T')` (or `(B, K)`).

    `summed_prob` (faithful): `CE(Σ_t softmax_K(logits), y)` — a second log-softmax over the summed probabilities.
    `mean_logit` (clean): `CE(mean_t logits, y)`. Mean over the batch.
    """
    logits = logits.float()
    if mode == "summed_prob":
        probs = logits.softmax(dim=1)
        return F.cross_entropy(probs.sum(dim=2) if probs.dim() == 3 else probs, labels)
    if mode == "mean_logit":
        return F.cross_entropy(class_logits(logits), labels)
    raise ActdistillError(f"clf_loss must be 'summed_prob' or 'mean_logit', got '{mode}'")


# ------------------------------------------------------------------------------------------------------- methods


@dataclass
class GenerativeStage(Stage):
    """A `Stage` with an optimiser override: `optim` replaces the run's `OptimConfig` fields (None: use the run's)."""

    optim: dict[str, Any] | None = None


def feature_shape(model: nn.Module, input_size: Sequence[int], in_channels: int = 3) -> tuple[int, ...]:
    """`(C, T', H', W')` of `model.forward_features(x)[-1]` for a clip `(in_channels, *input_size)`, on meta tensors."""
    if len(input_size) != 3:
        raise ActdistillError(f"input_size must be [clip_len, height, width], got {list(input_size)}")
    probe = copy.deepcopy(model).to("meta").eval()
    try:
        with torch.no_grad():
            out = probe.forward_features(torch.empty(2, in_channels, *input_size, device="meta"))[-1]
    except Exception as exc:  # noqa: BLE001 - any failure means the model does not take such clips
        raise ActdistillError(
            f"{type(model).__name__} does not take clips {[in_channels, *input_size]} ({exc.__class__.__name__}: "
            f"{str(exc)[:120]}); paper 2's method needs a video model following the model contract"
        ) from None
    if out.dim() != 5:
        raise ActdistillError(f"{type(model).__name__}: last feature map {tuple(out.shape)} is not (B, C, T, H, W)")
    return tuple(out.shape[1:])


def _steps(x: Tensor, mask: Tensor) -> Tensor:
    """`(B, C, T)` → `(N_valid, C)`: the valid time steps, so that means run over real positions only."""
    return x.transpose(1, 2)[mask]


def masked_mse(a: Tensor, b: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of `(a − b)²` over every entry, or over the valid steps of `(B, C, T)` maps when `mask` `(B, T)` is given
    (the denominator averaged over processes under torchrun)."""
    if mask is None:
        return F.mse_loss(a, b)
    m = mask[:, None].to(a.dtype)
    count = mean_over_ranks(m.sum() * a.shape[1]).clamp_min(1)
    return (((a - b) ** 2) * m).sum() / count


class GenerativeStages(Distiller):
    """Paper 2's two optimisation stages per epoch (Fig. 2; eqs. 13-15), for any network with a map F and an
    attention A over it: video classifiers (`generative`, `generative_teacher`) and temporal detectors
    (`detection_generative_*`, the detection form).

    Stage 1 ("generative", Adam 1e-4, betas (0.8, 0.999), as paper 2's official code): the CVAE learns F from A with
    `L_cvae = MSE(F̂, F) + α·KL` (eq. 5) on the network's detached (F, A), plus `_kd_gen`. Stage 2 ("attention", the
    run's optimiser): the network and its attention train on the task loss + `w_recon(epoch)·L_recon` (eq. 13: the
    frozen CVAE decodes `z = Aᵀ + ε`, compared with F, not detached) + `_kd_att`. A subclass supplies
    `generative_input(batch) -> (logits, F, A, mask)` (without autograd) and `attention_output(batch) -> (logits, F,
    A, task parts, mask, extra)`; `mask` `(B, T)` marks valid steps of `(B, C, T)` maps (None: dense maps).
    """

    cvae: CVAE
    use_recon: bool
    kl_weight: float

    def setup_stages(
        self, cvae: CVAE, kl_weight: float, recon_weight_mode: str, recon_max_weight: float,
        recon_ramp_epochs: int, use_recon: bool,
    ) -> None:  # fmt: skip
        """Call from `__init__`: the CVAE and the weights of eqs. 5 and 15."""
        recon_weight(1, recon_weight_mode)  # validate early
        self.cvae, self.kl_weight, self.use_recon = cvae, float(kl_weight), bool(use_recon)
        self.noise_seed = int(torch.randint(2**31, ()).item())  # from the run's seeded RNG
        self.recon_weight_mode, self.recon_max_weight = recon_weight_mode, float(recon_max_weight)
        self.recon_ramp_epochs = int(recon_ramp_epochs)

    # -- what a subclass provides
    def generative_input(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        raise NotImplementedError

    def attention_output(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor], Tensor | None, Any]:
        raise NotImplementedError

    def _kd_gen(self, batch: Batch, feature: Tensor, attention: Tensor, recon: Tensor, mask: Tensor | None) -> dict:
        return {}

    def _kd_att(self, batch: Batch, extra: Any) -> dict[str, Tensor]:
        return {}

    def _stage2_parameters(self) -> Iterator[nn.Parameter]:
        yield from (p for p in self.student.parameters() if p.requires_grad)

    def _cvae_parameters(self) -> Iterator[nn.Parameter]:
        yield from (p for p in self.cvae.parameters() if p.requires_grad)

    # -- the stages
    def noise(self, batch: Batch, attention: Tensor, stream: int) -> Tensor | None:
        """The CVAE's ε `(B, T, C)` for `attention` `(B, C, T)`, drawn per sample from a generator seeded by (run,
        epoch, `stream`, the sample's `index`): a run is the same with any number of processes and after a resume.
        None (draw from the global RNG) when the batch has no `index`."""
        if "index" not in batch:
            return None
        shape = attention.transpose(1, 2).shape[1:]
        rows = []
        for i in batch["index"].tolist():
            g = torch.Generator().manual_seed(hash((self.noise_seed, self.epoch, stream, int(i))) % (2**63 - 1))
            rows.append(torch.randn(shape, generator=g))
        return torch.stack(rows).to(attention.device)

    def cvae_terms(
        self,
        feature: Tensor,
        attention: Tensor,
        mask: Tensor | None,
        eps: Tensor | None = None,
        cvae: CVAE | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """F̂ and eq. 5 as coded for `cvae` (default: this method's): `cvae_mse` = mean((F − F̂)²), `cvae_kld` =
        α·KL(N(μ, σ²) ‖ N(Aᵀ, I)) (mean; over the valid steps of all processes when masked)."""
        recon, mu, logvar = (cvae or self.cvae)(feature, attention, eps)
        prior = attention.transpose(1, 2)
        if mask is None:
            kld = kl_to_prior(mu, logvar, prior)
        else:
            mu, logvar, prior = mu[mask], logvar[mask], prior[mask]
            kld = kl_to_prior(mu, logvar, prior) * mu.numel() / mean_over_ranks(torch.tensor(float(mu.numel())))
        return recon, {"cvae_mse": masked_mse(recon, feature, mask), "cvae_kld": self.kl_weight * kld}

    def forward_generative(self, batch: Batch) -> StepOutput:
        """Stage 1, eq. 14: `L_cvae (+ β·L_KD-gen)` on the network's detached (F, A)."""
        with torch.no_grad():
            logits, feature, attention, mask = self.generative_input(batch)
        feature, attention = feature.float(), attention.float()
        recon, parts = self.cvae_terms(feature, attention, mask, self.noise(batch, attention, 0))
        parts.update(self._kd_gen(batch, feature, attention, recon, mask))
        return make_output(logits.float(), parts)

    def forward_attention(self, batch: Batch) -> StepOutput:
        """Stage 2, eq. 15: task loss + `w_recon(epoch)·L_recon` (+ γ·L_KD-att)."""
        logits, feature, attention, parts, mask, extra = self.attention_output(batch)
        metrics: dict[str, Tensor | float] = {}
        if self.use_recon:
            weight = recon_weight(self.epoch, self.recon_weight_mode, self.recon_max_weight, self.recon_ramp_epochs)
            eps = self.noise(batch, attention, 3)
            raw = masked_mse(self.cvae.inference(attention, eps).float(), feature.float(), mask)
            parts["recon"] = weight * raw
            metrics.update(recon_raw=raw.detach(), recon_weight=weight)
        parts.update(self._kd_att(batch, extra))
        return make_output(logits.float(), parts, metrics)

    def forward(self, batch: Batch) -> StepOutput:
        """The stage 2 objective (what a single-stage caller would train); the engine uses `stages()`."""
        return self.forward_attention(batch)

    def stages(self) -> list[Stage]:
        """Per epoch: a full pass of stage 1 ("generative", Adam override), then stage 2 ("attention")."""
        return [
            GenerativeStage("generative", self._cvae_parameters, self.forward_generative, optim=dict(CVAE_OPTIM)),
            GenerativeStage("attention", self._stage2_parameters, self.forward_attention, optim=None),
        ]


class _AttentionCVAE(GenerativeStages):
    """Paper 2's method on a video classifier: attention module and CVAE on the last feature map (Mixed_5c).

    Stage 1 params = CVAE (backbone and attention run without autograd; BN statistics still update, as in the
    code); stage 2 params = backbone + attention, the task loss L_clf on the attention-weighted feature (eq. 12).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        *,
        input_size: Sequence[int],
        in_channels: int,
        kl_weight: float,
        recon_weight_mode: str,
        recon_max_weight: float,
        recon_ramp_epochs: int,
        clf_loss: str,
        per_sample_sigma: bool,
        use_recon: bool,
        groups: int,
    ) -> None:
        super().__init__(student, teacher)
        classification_loss(torch.zeros(1, 1), torch.zeros(1, dtype=torch.long), clf_loss)  # validate early
        self.shape = feature_shape(student, input_size, in_channels)
        c, t, h, w = self.shape
        self.input_size = tuple(input_size)
        self.attention = AttentionModule(c, t, spatial_kernel=(h, w), groups=groups)
        self.setup_stages(
            CVAE(c, t, spatial=(h, w), groups=groups), kl_weight, recon_weight_mode, recon_max_weight,
            recon_ramp_epochs, use_recon,
        )  # fmt: skip
        self.groups, self.clf_loss, self.per_sample_sigma = groups, clf_loss, bool(per_sample_sigma)

    def _features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Student Mixed_5c F `(B, C, T', H', W')` and its attention A `(B, C, T')`."""
        feature = self.student.forward_features(x)[-1]
        if tuple(feature.shape[1:]) != self.shape:
            raise ActdistillError(
                f"{type(self).__name__}: feature map {tuple(feature.shape[1:])} but the attention module and CVAE "
                f"were built for {self.shape} (method.input_size={list(self.input_size)}); set method.input_size "
                "to [data.clip_len, data.image_size, data.image_size]"
            )
        return feature, self.attention(feature)

    def _head(self, feature: Tensor, attention: Tensor) -> Tensor:
        """Per-step logits `(B, K, T'')` from the attention-weighted feature (eq. 9-10, 12)."""
        return self.student.forward_head(attention_weighted_feature(feature, attention, self.per_sample_sigma))

    def generative_input(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, None]:
        feature, attention = self._features(batch["input"])
        return class_logits(self._head(feature, attention)), feature, attention, None

    def attention_output(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor], None, Tensor]:
        feature, attention = self._features(batch["input"])
        logits = self._head(feature, attention)
        parts = {"clf": classification_loss(logits, batch["label"], self.clf_loss)}
        return class_logits(logits), feature, attention, parts, None, attention

    def _stage2_parameters(self) -> Iterator[nn.Parameter]:
        yield from (p for p in self.student.parameters() if p.requires_grad)
        yield from (p for p in self.attention.parameters() if p.requires_grad)

    @torch.no_grad()
    def attention_map(self, x: Tensor) -> Tensor:
        """The student's attention `(B, C, T')` for a clip (analysis)."""
        return self._features(x)[1]

    def predictor(self) -> AttentionPredictor:
        """Attention-only inference (no CVAE): student head on the attention-weighted feature, `(B, K, T'')`."""
        return AttentionPredictor(self.student, self.attention, self.per_sample_sigma)

    def predictor_spec(self, student_spec: dict[str, Any], teacher_spec: dict[str, Any] | None) -> dict[str, Any]:
        c, t, h, w = self.shape
        kwargs = {"student": student_spec, "channels": c, "time_steps": t, "spatial": [h, w]}
        kwargs.update(groups=self.groups, per_sample_sigma=self.per_sample_sigma)
        return {"name": "attention_predictor", "num_classes": student_spec["num_classes"], "kwargs": kwargs}


_COMMON_NOTES = "two stages per epoch (generative: CVAE, Adam 1e-4; attention: backbone + attention, run's optim)"


@register_method(
    "generative_teacher",
    paper="Generative model-based feature KD (paper 2) — teacher preparation (toolkit decision)",
    knowledge="none",
    source="toolkit decision: the paper-2 stages without KD terms (no teacher script in its code)",
    notes=_COMMON_NOTES + "; its checkpoint feeds generative's teacher_extras",
)
class GenerativeTeacher(_AttentionCVAE):
    """Toolkit decision (paper 2 ships no teacher script): train I3D + attention + CVAE; stage 1 `L_cvae`,
    stage 2 `L_clf + w_recon·L_recon` (no KD).

    Also the "I3D+Att" / "Top-I3D+Att" rows of Table 4 (with `use_recon`). Its extras `attention`, `cvae` are saved
    by the engine under `ckpt["method"]["extras"]`.
    """

    uses_teacher = False

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        input_size: Sequence[int] = (64, 224, 224),
        in_channels: int = 3,
        kl_weight: float = 0.1,
        recon_weight_mode: str = "code",
        recon_max_weight: float = 0.5,
        recon_ramp_epochs: int = 20,
        clf_loss: str = "summed_prob",
        per_sample_sigma: bool = False,
        use_recon: bool = True,
        groups: int = 32,
    ) -> None:
        super().__init__(
            student,
            None,
            input_size=input_size,
            in_channels=in_channels,
            kl_weight=kl_weight,
            recon_weight_mode=recon_weight_mode,
            recon_max_weight=recon_max_weight,
            recon_ramp_epochs=recon_ramp_epochs,
            clf_loss=clf_loss,
            per_sample_sigma=per_sample_sigma,
            use_recon=use_recon,
            groups=groups,
        )


@register_method(
    "generative",
    paper="Generative model-based feature KD for video, paper 2 eqs. 4-15",
    knowledge="feature (generative) + attention",
    source="paper 2, eqs. 3-15 (official code: BDNet_student.py, train_Top_I3D_KD.py)",
    notes=_COMMON_NOTES,
)
class Generative(_AttentionCVAE):
    """Paper 2 (eqs. 4, 11, 14-15). Stage 1, eq. 14: `L_cvae + β·MSE(F̂_S, F̂_T)`, both CVAEs fed the student's (F, A).
    Stage 2, eq. 15: `L_clf + w_recon(epoch)·L_recon + γ·MSE(A_S, A_T)`, A_T from the frozen teacher + its attention.

    The teacher side (`teacher_side.attention`, `teacher_side.cvae`) is frozen and loaded from `teacher_extras`, a
    `generative_teacher` checkpoint (random with a warning when empty: tests and demos only). Switches (Table 3):
    `use_recon`, `use_kd_gen`, `use_kd_att` remove their parts. Parts: stage 1 `cvae_mse`, `cvae_kld` (×α), `kd_gen`
    (×β); stage 2 `clf`, `recon` (×w_recon), `kd_att` (×γ).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        teacher_extras: str = "",
        input_size: Sequence[int] = (64, 224, 224),
        in_channels: int = 3,
        beta: float = 0.01,
        gamma: float = 0.1,
        kl_weight: float = 0.1,
        recon_weight_mode: str = "code",
        recon_max_weight: float = 0.5,
        recon_ramp_epochs: int = 20,
        clf_loss: str = "summed_prob",
        per_sample_sigma: bool = False,
        use_recon: bool = True,
        use_kd_gen: bool = True,
        use_kd_att: bool = True,
        groups: int = 32,
    ) -> None:
        super().__init__(
            student,
            teacher,
            input_size=input_size,
            in_channels=in_channels,
            kl_weight=kl_weight,
            recon_weight_mode=recon_weight_mode,
            recon_max_weight=recon_max_weight,
            recon_ramp_epochs=recon_ramp_epochs,
            clf_loss=clf_loss,
            per_sample_sigma=per_sample_sigma,
            use_recon=use_recon,
            groups=groups,
        )
        t_shape = feature_shape(teacher, input_size, in_channels)
        if t_shape != self.shape:
            raise ActdistillError(f"generative: teacher feature {t_shape} differs from the student's {self.shape}")
        c, t, h, w = self.shape
        self.teacher_side = nn.ModuleDict(
            {
                "attention": AttentionModule(c, t, spatial_kernel=(h, w), groups=groups),
                "cvae": CVAE(c, t, spatial=(h, w), groups=groups),
            }
        )
        if teacher_extras:
            self._load_teacher_extras(teacher_extras)
        else:
            log.warning("generative: teacher_extras is empty; the teacher's attention module and CVAE are RANDOM")
        self.teacher_side.eval().requires_grad_(False)
        # The teacher map eq. 11 reads: what `actdistill cache build` stores so that a cached run skips the teacher.
        self.teacher_taps = (Tap("stage", len(getattr(teacher, "feature_info", [None])) - 1),)
        self.beta, self.gamma = float(beta), float(gamma)
        self.use_kd_gen, self.use_kd_att = bool(use_kd_gen), bool(use_kd_att)
        self.teacher_extras = teacher_extras

    def _load_teacher_extras(self, path: str) -> None:
        from actdistill.utils.checkpoint import load_checkpoint

        extras = load_checkpoint(path).get("method", {}).get("extras", {})
        missing = [k for k in ("attention", "cvae") if k not in extras]
        if missing:
            raise ActdistillError(
                f"teacher_extras {path} has no method extras {missing}; pass a checkpoint of a generative_teacher run"
            )
        try:
            for name in ("attention", "cvae"):
                self.teacher_side[name].load_state_dict(extras[name])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ActdistillError(
                f"teacher_extras {path} does not fit feature shape {self.shape} ({first[:160]}); "
                "use the same input_size and teacher architecture as the generative_teacher run"
            ) from None

    def train(self, mode: bool = True) -> Generative:
        super().train(mode)
        self.teacher_side.eval()
        return self

    def _kd_gen(
        self, batch: Batch, feature: Tensor, attention: Tensor, recon: Tensor, mask: Tensor | None
    ) -> dict[str, Tensor]:
        """Eq. 4: `β·MSE(F̂_S, F̂_T)`, the teacher CVAE fed the student's (F, A) with its own ε (paper 2's code)."""
        if not self.use_kd_gen:
            return {}
        with torch.no_grad():
            target = self.teacher_side["cvae"](feature, attention, self.noise(batch, attention, 1))[0]
        return {"kd_gen": self.beta * F.mse_loss(recon, target.float())}

    def _kd_att(self, batch: Batch, attention: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        """Eq. 11: `γ·MSE(A_S, A_T)`, A_T from the teacher's own backbone + attention on the same clip (detached)."""
        if not self.use_kd_att:
            return {}
        assert self.teacher is not None
        with torch.no_grad():
            cached = cached_run(batch, self.teacher_taps)
            feature = (
                cached.get(self.teacher_taps[0])
                if cached is not None
                else self.teacher.forward_features(self.teacher_input(batch))[-1]
            )
            target = self.teacher_side["attention"](feature)
        return {"kd_att": self.gamma * F.mse_loss(attention.float(), target.float())}
