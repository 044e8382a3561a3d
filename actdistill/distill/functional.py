"""Pure distillation losses. Each docstring states the formula, the reduction and the source.

Reductions are chosen so that a loss does not change when the batch is duplicated ("batchmean":
summed over classes, averaged over samples; for video, averaged over clips, not frames).
All softmax / log-softmax / KL maths run in fp32, also under autocast.

Shapes: every logit loss takes per-sample logits `(B, K)`. A video method that gets per-time-step
logits `(B, K, T')` first means them over time (`z̄ = mean_t z`, a toolkit decision); that is the method's job,
not these functions'. Feature losses take `(B, C, H, W)` or `(B, C, T, H, W)` maps. Teacher tensors are
expected to come from a frozen teacher under `no_grad`; only `rkd_loss` detaches them itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def kd_loss(logits_s: Tensor, logits_t: Tensor, temperature: float) -> Tensor:
    """Hinton et al. 2015; paper 1 eq. 2 (the L_kd term with its t² factor): T² · KL(p_t^T ‖ p_s^T).

    `logits_*`: `(B, K)`. KL summed over the K classes, averaged over the B samples (batchmean).
    Equals T² · (soft cross-entropy − teacher entropy); its gradient w.r.t. `logits_s` is T·(p_s − p_t)/B.
    """
    log_p_s = F.log_softmax(logits_s.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(logits_t.float() / temperature, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


def soft_cross_entropy(logits_s: Tensor, logits_t: Tensor, temperature: float = 1.0) -> Tensor:
    """Paper 1's L_kd as written: −(1/N) Σ_i Σ_j T_ij log S_ij with T, S the softened teacher/student softmax."""
    log_p_s = F.log_softmax(logits_s.float() / temperature, dim=-1)
    p_t = F.softmax(logits_t.float() / temperature, dim=-1)
    return -(p_t * log_p_s).sum(dim=-1).mean()


def _no_autocast(t: Tensor) -> torch.autocast:
    """A context that switches autocast off on `t`'s device, so matmuls inside a loss stay in fp32."""
    return torch.autocast(device_type=t.device.type, enabled=False)


def _check_same_batch(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{what}: batch sizes differ, student {tuple(a.shape)} vs teacher {tuple(b.shape)}")


def _pool_to_common(a: Tensor, b: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """Adaptive-avg-pool each spatial/temporal dim of `a` and `b` down to the smaller of the two extents."""
    if a.dim() != b.dim() or a.dim() not in (4, 5):
        raise ValueError(
            f"{what}: expected two (B, C, H, W) or two (B, C, T, H, W) maps, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    _check_same_batch(a, b, what)
    size = tuple(min(x, y) for x, y in zip(a.shape[2:], b.shape[2:]))
    pool = F.adaptive_avg_pool2d if a.dim() == 4 else F.adaptive_avg_pool3d
    a = a if tuple(a.shape[2:]) == size else pool(a, size)
    b = b if tuple(b.shape[2:]) == size else pool(b, size)
    return a, b


# ----------------------------------------------------------------------------------------------- logit losses


def dkd_parts(logits_s: Tensor, logits_t: Tensor, target: Tensor, temperature: float = 4.0) -> tuple[Tensor, Tensor]:
    """Decoupled KD's two terms (Zhao et al., CVPR-22; mdistiller `distillers/DKD.py`), each already ×T².

    With `p = softmax(z/T)` and target class g: `b = [p_g, 1 − p_g]` and `p̂ = softmax over the non-target logits`
    (= p renormalised over c ≠ g). Returns `(TCKD, NCKD) = (T²·KL_bm(b_t ‖ b_s), T²·KL_bm(p̂_t ‖ p̂_s))`, each
    summed over its classes and averaged over the B samples (batchmean; mdistiller's reduction, not MMRazor's
    batch sum). `logits_*`: `(B, K)` with K ≥ 2; `target`: `(B,)` class indices.

    log(1 − p_g) is taken as `logsumexp(z_{c≠g}/T) − logsumexp(z/T)` and p̂ from the gathered non-target logits,
    so no log of an underflowed probability appears (mdistiller takes `log` of the binary masses and shifts the
    target logit by −1000, both of which fail for extreme logits).
    """
    if logits_s.dim() != 2 or logits_s.shape != logits_t.shape:
        raise ValueError(
            f"dkd: expected two (B, K) logit tensors, got {tuple(logits_s.shape)}, {tuple(logits_t.shape)}"
        )
    b, k = logits_s.shape
    if k < 2:
        raise ValueError(f"dkd: needs at least 2 classes, got {k}")
    target = target.reshape(-1).long()
    non_target = ~F.one_hot(target, k).bool()

    def split(logits: Tensor) -> tuple[Tensor, Tensor]:
        z = logits.float() / temperature
        z_rest = z[non_target].view(b, k - 1)
        log_norm = torch.logsumexp(z, dim=-1, keepdim=True)
        log_target = z.gather(1, target[:, None]) - log_norm
        log_rest = torch.logsumexp(z_rest, dim=-1, keepdim=True) - log_norm
        return torch.cat([log_target, log_rest], dim=1), F.log_softmax(z_rest, dim=-1)

    bin_s, hat_s = split(logits_s)
    bin_t, hat_t = split(logits_t)
    tckd = F.kl_div(bin_s, bin_t, reduction="batchmean", log_target=True) * temperature**2
    nckd = F.kl_div(hat_s, hat_t, reduction="batchmean", log_target=True) * temperature**2
    return tckd, nckd


def dkd_loss(
    logits_s: Tensor, logits_t: Tensor, target: Tensor, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0
) -> Tensor:
    """Decoupled KD (Zhao et al., CVPR-22; mdistiller `DKD.py`): `α·TCKD + β·NCKD`, both ×T², batchmean.

    Shapes and maths as in `dkd_parts`. Defaults are mdistiller's CIFAR ones (α=1, β=8, T=4). The CE term and the
    `min(epoch/warmup, 1)` ramp belong to the method.
    """
    tckd, nckd = dkd_parts(logits_s, logits_t, target, temperature)
    return alpha * tckd + beta * nckd


def _pearson(a: Tensor, b: Tensor, dim: int, eps: float = 1e-8) -> Tensor:
    """Pearson correlation along `dim`: cos(a − mean a, b − mean b), with `eps` added to the norm product."""
    a = a - a.mean(dim=dim, keepdim=True)
    b = b - b.mean(dim=dim, keepdim=True)
    return (a * b).sum(dim=dim) / (a.norm(dim=dim) * b.norm(dim=dim) + eps)


def dist_parts(logits_s: Tensor, logits_t: Tensor, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """DIST's two terms (Huang et al., NeurIPS-22), each already ×τ².

    `y = softmax(z/τ)`, `(B, K)`. Returns `(τ²·inter, τ²·intra)` with `inter = 1 − mean_b ρ(y_s[b,:], y_t[b,:])`
    (correlation over classes, per sample) and `intra = 1 − mean_c ρ(y_s[:,c], y_t[:,c])` (over the batch, per
    class); ρ is Pearson's correlation with eps 1e-8 on the norm product (hunto/image_classification_sota
    `dist_kd.py`). intra needs B ≥ 2 (with B = 1 it is the constant τ²).
    """
    if logits_s.dim() != 2 or logits_s.shape != logits_t.shape:
        raise ValueError(
            f"dist: expected two (B, K) logit tensors, got {tuple(logits_s.shape)}, {tuple(logits_t.shape)}"
        )
    y_s = F.softmax(logits_s.float() / temperature, dim=-1)
    y_t = F.softmax(logits_t.float() / temperature, dim=-1)
    inter = 1 - _pearson(y_s, y_t, dim=1).mean()
    intra = 1 - _pearson(y_s, y_t, dim=0).mean()
    return inter * temperature**2, intra * temperature**2


def dist_loss(
    logits_s: Tensor, logits_t: Tensor, beta: float = 1.0, gamma: float = 1.0, temperature: float = 1.0
) -> Tensor:
    """DIST (Huang et al., NeurIPS-22): `τ²·(β·inter + γ·intra)`; see `dist_parts`. Scalar."""
    inter, intra = dist_parts(logits_s, logits_t, temperature)
    return beta * inter + gamma * intra


# --------------------------------------------------------------------------------------------- feature losses


def attention_map(feat: Tensor, p: float = 2) -> Tensor:
    """Attention map of Zagoruyko & Komodakis (ICLR-17, the mean-of-|A|^p map).

    `q(f) = L2-normalise(mean_c |f|^p)` flattened over all positions: `(B, C, H, W) → (B, H·W)` and, for video,
    `(B, C, T, H, W) → (B, T·H·W)` (one spatio-temporal map, not per frame). fp32.
    """
    if feat.dim() < 3:
        raise ValueError(f"attention_map: expected (B, C, ...) feature maps, got {tuple(feat.shape)}")
    return F.normalize(feat.float().abs().pow(p).mean(dim=1).flatten(1), dim=1)


def at_loss(feat_s: Tensor, feat_t: Tensor, p: float = 2, mode: str = "code") -> Tensor:
    """Attention transfer (Zagoruyko & Komodakis, ICLR-17), one layer, without the β weight.

    `feat_*`: `(B, C_*, H, W)` or `(B, C_*, T, H, W)`; channel counts may differ. Where the extents differ, each
    dim of the larger map is adaptive-avg-pooled to the smaller size before `q` (RepDistiller / mdistiller).
    * `mode="code"` (authors' and every anchor's code): `mean_{b,n} (q_s − q_t)²`.
    * `mode="paper"` (the paper's AT term, torchdistill `mode='paper'`): `(1/B) Σ_b ‖q_s,b − q_t,b‖₂`, not squared.
    """
    if mode not in ("code", "paper"):
        raise ValueError(f"at_loss: mode must be 'code' or 'paper', got {mode!r}")
    feat_s, feat_t = _pool_to_common(feat_s.float(), feat_t.float(), "at_loss")
    diff = attention_map(feat_s, p) - attention_map(feat_t, p)
    if mode == "code":
        return diff.pow(2).mean()
    return diff.norm(dim=1).mean()


def hint_loss(feat_s: Tensor, feat_t: Tensor) -> Tensor:
    """FitNets hint loss (Romero et al., ICLR-15; RepDistiller `FitNet.py`): `MSE_mean(r(f_s), f_t)`.

    The mean runs over all elements (RepDistiller / mdistiller); the paper's ½‖·‖² summed over the batch is this
    value times numel/2. `feat_s` is the regressor's output and must have exactly `feat_t`'s shape (any rank);
    the regressor (ConvReg) and any pooling live in the method.
    """
    if feat_s.shape != feat_t.shape:
        raise ValueError(
            f"hint_loss: student {tuple(feat_s.shape)} and teacher {tuple(feat_t.shape)} shapes differ; "
            "regress the student feature to the teacher's shape first"
        )
    return F.mse_loss(feat_s.float(), feat_t.float())


def simkd_loss(feat_s_projected: Tensor, feat_t: Tensor) -> Tensor:
    """SimKD (Chen et al., CVPR-22; DefangChen/SimKD): `MSE_mean(P(f_s), f_t)` over all elements.

    `(B, C, H, W)` or `(B, C, T, H, W)`, equal channel counts; the larger spatial/temporal extent is
    adaptive-avg-pooled to the smaller first. (The reference pools the *student* before its projector when the
    student map is larger; a method that wants that order pools before calling P.)
    """
    feat_s, feat_t = _pool_to_common(feat_s_projected.float(), feat_t.float(), "simkd_loss")
    if feat_s.shape[1] != feat_t.shape[1]:
        raise ValueError(f"simkd_loss: channels differ, {tuple(feat_s_projected.shape)} vs {tuple(feat_t.shape)}")
    return F.mse_loss(feat_s, feat_t)


def mgd_mask(
    shape: torch.Size | tuple[int, ...],
    ratio: float,
    kind: str,
    device: torch.device | str | None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """MGD's random keep-mask (Yang et al., ECCV-22): each entry is 0 with probability `ratio`.

    `shape` is the feature's `(B, C, H, W)` or `(B, C, T, H, W)`. `kind="channel"` (classification default) gives
    `(B, C, 1, 1[, 1])`; `kind="spatial"` (detection default) gives `(B, 1, H, W)` / `(B, 1, T, H, W)`. float32 0/1.
    Drawn on `generator`'s device when one is given, then moved to `device`.
    """
    shape = tuple(shape)
    if len(shape) not in (4, 5):
        raise ValueError(f"mgd_mask: expected a 4-D or 5-D feature shape, got {shape}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mgd_mask: ratio must be in [0, 1], got {ratio}")
    if kind == "channel":
        mask_shape = shape[:2] + (1,) * (len(shape) - 2)
    elif kind == "spatial":
        mask_shape = (shape[0], 1) + shape[2:]
    else:
        raise ValueError(f"mgd_mask: kind must be 'channel' or 'spatial', got {kind!r}")
    draw_device = generator.device if generator is not None else device
    uniform = torch.rand(mask_shape, generator=generator, device=draw_device)
    return (uniform >= ratio).to(device=device, dtype=torch.float32)


def mgd_loss(
    feat_s_aligned: Tensor,
    feat_t: Tensor,
    generator: nn.Module,
    mask_ratio: float = 0.15,
    alpha: float = 7e-5,
    mask: str = "channel",
    generator_rng: torch.Generator | None = None,
) -> Tensor:
    """Masked generative distillation (Yang et al., ECCV-22; yzd-v/MGD `cls/.../mgd.py`).

    `L = α · Σ_{b,c,...} (G(s ⊙ M) − f_t)² / B`: a sum over channels and positions, a mean over the B samples.
    `feat_s_aligned` (the student map after the 1×1 align conv) and `feat_t` are `(B, C, H, W)` or `(B, C, T, H, W)`
    of equal shape; `generator` G is 2-D or 3-D accordingly and must keep the shape. M comes from `mgd_mask`
    (`mask` = "channel" or "spatial", drop probability `mask_ratio`, random stream `generator_rng`). G runs under
    the caller's autocast (it is a trainable conv stack); the squared error is summed in fp32.
    """
    if feat_s_aligned.shape != feat_t.shape:
        raise ValueError(f"mgd_loss: aligned student {tuple(feat_s_aligned.shape)} != teacher {tuple(feat_t.shape)}")
    keep = mgd_mask(feat_s_aligned.shape, mask_ratio, mask, feat_s_aligned.device, generator_rng)
    generated = generator(feat_s_aligned * keep.to(feat_s_aligned.dtype))
    if generated.shape != feat_t.shape:
        raise ValueError(f"mgd_loss: generator output {tuple(generated.shape)} != teacher {tuple(feat_t.shape)}")
    return alpha * (generated.float() - feat_t.float()).pow(2).sum() / feat_t.shape[0]


def fn_loss(
    features_s: Tensor,
    classifier_weight: Tensor,
    classifier_bias: Tensor | None,
    logits_t: Tensor,
    norm_cap: float = 2.0,
) -> Tensor:
    """Feature-normalised KD's distillation term (Xu et al., ECCV-20; aztc/FNKD).

    `x2 = W·(min(‖f‖₂, τ)·f/‖f‖₂) + b`, then `H(softmax(z_t), softmax(x2)) = −mean_b Σ_k softmax(z_t)_k·log
    softmax(x2)_k` (soft cross-entropy, teacher at T=1, averaged over samples). For ‖f‖ > τ and b = 0 this is KD
    with the sample-specific temperature ‖f‖/τ. `features_s`: `(B, D)` penultimate student features;
    `classifier_weight`: `(K, D)`; `classifier_bias`: `(K,)` or None; `logits_t`: `(B, K)`. The method adds
    `CE(W f + b, y)` and the weight λ=9; for video it flattens the T' time steps into the batch first.
    """
    if features_s.dim() != 2:
        raise ValueError(f"fn_loss: expected (B, D) features, got {tuple(features_s.shape)}")
    with _no_autocast(features_s):
        f = features_s.float()
        norm = f.norm(dim=1, keepdim=True)
        f_capped = f * (norm.clamp(max=norm_cap) / norm.clamp_min(1e-12))
        bias = None if classifier_bias is None else classifier_bias.float()
        x2 = F.linear(f_capped, classifier_weight.float(), bias)
        return soft_cross_entropy(x2, logits_t, 1.0)


# -------------------------------------------------------------------------------------------- relation losses


def _rkd_geometry(emb: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise distances `(B, B)` divided by their mean over pairs at positive distance, and the angle cosines
    `(B, B, B)`: `[i, j, k] = ⟨unit(e_j − e_i), unit(e_k − e_i)⟩`."""
    diff = emb.unsqueeze(0) - emb.unsqueeze(1)
    dist = diff.norm(dim=-1)
    n_pos = (dist > 0).sum().clamp(min=1)
    dist = dist / (dist.sum() / n_pos).clamp_min(1e-12)
    unit = F.normalize(diff, dim=-1)
    return dist, unit @ unit.transpose(1, 2)


def rkd_parts(emb_s: Tensor, emb_t: Tensor) -> tuple[Tensor, Tensor]:
    """Relational KD's two unweighted terms (Park et al., CVPR-19): `(distance, angle)`.

    `distance = mean_{i,j} SmoothL1(ψ_D^s(i,j), ψ_D^t(i,j))`, ψ_D = ‖e_i − e_j‖₂ / μ with μ the mean distance over
    pairs at positive distance; `angle = mean_{i,j,k} SmoothL1(ψ_A^s, ψ_A^t)`, ψ_A(i,j,k) = ⟨unit(e_j − e_i),
    unit(e_k − e_i)⟩. Means run over all B² pairs and B³ triplets (degenerate ones contribute 0), as in the
    authors' code (lenscloth/RKD). `emb_*`: `(B, D_*)`, higher ranks are flattened; dims may differ. The teacher
    side is detached. Memory: `(B, B, D)` difference tensors.
    """
    _check_same_batch(emb_s, emb_t, "rkd")
    with _no_autocast(emb_s):
        dist_s, angle_s = _rkd_geometry(emb_s.float().flatten(1))
        with torch.no_grad():
            dist_t, angle_t = _rkd_geometry(emb_t.detach().float().flatten(1))
        return F.smooth_l1_loss(dist_s, dist_t), F.smooth_l1_loss(angle_s, angle_t)


def rkd_loss(emb_s: Tensor, emb_t: Tensor, distance_weight: float = 25.0, angle_weight: float = 50.0) -> Tensor:
    """Relational KD (Park et al., CVPR-19): `w_D·distance + w_A·angle` from `rkd_parts`; defaults 25/50."""
    distance, angle = rkd_parts(emb_s, emb_t)
    return distance_weight * distance + angle_weight * angle


def crd_nce_loss(scores: Tensor, num_data: int, eps: float = 1e-7) -> Tensor:
    """CRD's NCE loss for one side (Tian et al., ICLR-20; RepDistiller `crd/criterion.py`).

    `scores`: `(B, K+1)` exponentiated, Z-normalised scores, the positive in column 0. With `m = K`, `P_n = 1/N`:
    `ℓ = −(1/B) Σ_b [log(o_pos/(o_pos + m·P_n + ε)) + Σ_neg log(m·P_n/(o_neg + m·P_n + ε))]` (sum over negatives,
    mean over samples). `num_data` = N, the dataset size.
    """
    if scores.dim() != 2 or scores.shape[1] < 1:
        raise ValueError(f"crd_nce_loss: expected (B, K+1) scores, got {tuple(scores.shape)}")
    if num_data <= 0:
        raise ValueError(f"crd_nce_loss: num_data must be positive, got {num_data}")
    o = scores.float()
    noise = (o.shape[1] - 1) / num_data
    log_pos = torch.log(o[:, 0] / (o[:, 0] + noise + eps))
    log_neg = torch.log(noise / (o[:, 1:] + noise + eps))
    return -(log_pos.sum() + log_neg.sum()) / o.shape[0]


def crd_loss(scores_s: Tensor, scores_t: Tensor, num_data: int, eps: float = 1e-7) -> Tensor:
    """CRD (Tian et al., ICLR-20): `ℓ(o_s) + ℓ(o_t)` with ℓ = `crd_nce_loss`; scores `(B, K+1)` each."""
    return crd_nce_loss(scores_s, num_data, eps) + crd_nce_loss(scores_t, num_data, eps)


# ------------------------------------------------------------------------------------ curriculum temperature


class _GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by λ.

    The forward has no autocast-eligible op, so no `custom_fwd`/`custom_bwd` is needed: the gradient keeps its
    dtype and flows under any autocast state (CTKD#8 lost it under AMP; tested here under CPU bf16 autocast).
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, lambda_: float) -> Tensor:  # type: ignore[override]
        ctx.lambda_ = lambda_
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.lambda_, None


def gradient_reverse(x: Tensor, lambda_: float) -> Tensor:
    """Gradient-reversal layer (Ganin & Lempitsky 2015; CTKD, Li et al. AAAI-23).

    Forward `GRL(x) = x`; backward `∂L/∂x ← λ·∂L/∂x` (λ ≤ 0 in CTKD, so θ ascends the KD loss). Any shape.
    """
    return _GradientReversal.apply(x, float(lambda_))


def ctkd_temperature(theta: Tensor, lambda_: float, t_start: float = 1.0, t_end: float = 20.0) -> Tensor:
    """CTKD's global temperature (Li et al., AAAI-23; zhengli97/CTKD `models/temp_global.py`).

    `T = t_start + t_end·sigmoid(GRL(θ, λ))` ∈ (t_start, t_start + t_end); θ is a learnable tensor (a scalar,
    init 1 → T ≈ 15.62). Computed in fp32 with autocast off; same shape as `theta`.
    """
    with _no_autocast(theta):
        return t_start + t_end * torch.sigmoid(gradient_reverse(theta.float(), lambda_))


def ctkd_lambda(epoch: int, max_value: float = 0.0, min_value: float = -1.0, num_loops: int = 10) -> float:
    """CTKD's GRL factor schedule (zhengli97/CTKD `train_student.py::CosineDecay`; Li et al. AAAI-23), epochs from 1.

    `λ(e) = (cos(π·min(e, N)/N) + 1)/2 · (max − min) + min`, N = `num_loops`: λ(1) ≈ −0.0245, λ(5) = −0.5,
    λ(e ≥ 10) = −1 with the defaults.
    """
    e = min(max(epoch, 0), num_loops)
    return (math.cos(math.pi * e / num_loops) + 1) / 2 * (max_value - min_value) + min_value
