"""Pure distillation losses. Each docstring states the formula, the reduction and the source.

Reductions are chosen so that a loss does not change when the batch is duplicated ("batchmean":
summed over classes, averaged over samples; for video, averaged over clips, not frames).
All softmax / log-softmax / KL maths run in fp32, also under autocast.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


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


