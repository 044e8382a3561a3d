"""PCL (VCP + contrastive) memory banks and losses (paper 3 §3 / Fig. 2; PCL's released code).

The network is `actdistill.models.pcl_net.PCLNet`.

Shapes: a tuple is three clips `(B, C, T, H, W)`; backbone features are `(B, D)` (D = 512 for the P3 backbones);
pretext logits `(B, 5)`; projections `(B, 128)`, unit L2 norm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actdistill.distill.functional import kd_loss


class MemoryBank(nn.Module):
    """CMC-style memory bank (PCL's released code, `lib/NCEAverage.py`): `(N, P)` buffer, one row per training video.

    Initialised `U(−1/√(P/3), +1/√(P/3))` (not normalised); a row is L2-normalised when it is updated.
    """

    memory: Tensor

    def __init__(self, num_data: int, dim: int = 128, momentum: float = 0.5) -> None:
        super().__init__()
        stdv = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("memory", torch.rand(num_data, dim) * 2 * stdv - stdv)
        self.momentum = momentum

    @property
    def num_data(self) -> int:
        return self.memory.shape[0]

    def sample_indices(self, index: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """`(B,)` → `(B, K+1)`: the sample's own index in column 0, then K uniform draws (may include the sample)."""
        neg = torch.randint(self.num_data, (index.shape[0], k), generator=generator, device=self.memory.device)
        return torch.cat([index.view(-1, 1).to(neg), neg], dim=1)

    def contrast(
        self,
        v: Tensor,
        index: Tensor,
        k: int = 1024,
        temperature: float = 0.07,
        generator: torch.Generator | None = None,
        idx: Tensor | None = None,
    ) -> Tensor:
        """Logits `(B, K+1)` = `memory[idx] · v / τ` with `idx` from `sample_indices` (or given), memory detached.

        `v`: `(B, P)` query projections; `index`: `(B,)` dataset indices; column 0 is the positive.
        """
        if idx is None:
            idx = self.sample_indices(index, k, generator)
        weight = self.memory[idx].detach()  # (B, K+1, P)
        return torch.bmm(weight, v.unsqueeze(2).to(weight.dtype)).squeeze(2) / temperature

    @torch.no_grad()
    def update(self, index: Tensor, v: Tensor) -> None:
        """`memory[i] ← normalise(m·memory[i] + (1−m)·v)` for each `i` in `index` `(B,)`, `v` `(B, P)`."""
        rows = self.memory[index] * self.momentum + v.detach().to(self.memory.dtype) * (1 - self.momentum)
        self.memory[index] = F.normalize(rows, dim=1)


def contrast_ce(logits: Tensor) -> Tensor:
    """CE with target 0 over `(B, K+1)` logits, mean over B: `−mean_b log softmax(logits_b)[0]`."""
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), target)


def pcl_contrastive_loss(
    v1: Tensor,
    v2: Tensor,
    index: Tensor,
    bank1: MemoryBank,
    bank2: MemoryBank,
    k: int = 1024,
    temperature: float = 0.07,
    generator: torch.Generator | None = None,
    update: bool = True,
    idx: Tensor | None = None,
) -> Tensor:
    """Bidirectional memory-bank InfoNCE (PCL's `lib/NCEAverage.py`): `CE(M₂[idx]·v₁/τ, 0) + CE(M₁[idx]·v₂/τ, 0)`.

    Both directions share one `idx` `(B, K+1)` (given, or drawn with `sample_indices`, as PCL's `NCEAverage`). With
    `update`, the banks then take the momentum update `M₁[i] ← v₁`, `M₂[i] ← v₂` (after the logits). Returns a scalar.
    """
    if idx is None:
        idx = bank1.sample_indices(index, k, generator)
    out1 = bank2.contrast(v1, index, temperature=temperature, idx=idx)
    out2 = bank1.contrast(v2, index, temperature=temperature, idx=idx)
    loss = contrast_ce(out1) + contrast_ce(out2)
    if update:
        bank1.update(index, v1)
        bank2.update(index, v2)
    return loss


def in_batch_infonce(v1: Tensor, v2: Tensor, temperature: float = 0.07) -> Tensor:
    """Bank-free option for tiny datasets: in-batch InfoNCE, `CE(v₁v₂ᵀ/τ, diag) + CE(v₂v₁ᵀ/τ, diag)`.

    `v1, v2`: `(B, P)` unit rows; the other B−1 samples of the batch are the negatives. Returns a scalar.
    """
    logits = v1.float() @ v2.float().t() / temperature
    target = torch.arange(v1.shape[0], device=v1.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)


def pcl_loss(logits: Tensor, target: Tensor, contrastive: Tensor, w_con: float = 0.5) -> Tensor:
    """PCL's objective: `L_PCL = CE(h, y) + w_con · L_con`; `logits (B, 5)`, `target (B,)`, `contrastive` scalar."""
    return F.cross_entropy(logits.float(), target) + w_con * contrastive


def pcl_kd_loss(logits_s: Tensor, logits_t: Tensor, temperature: float = 4.0, weight: float = 1.0) -> Tensor:
    """Paper 3 §3 / Fig. 2: `λ_kd · T² · KL(softmax(h_t/T) ‖ softmax(h_s/T))` on pretext logits `(B, 5)`.

    The teacher is a frozen PCLNet (`eval()`, `no_grad`) fed the same tuple; only pretext logits are compared, so any
    teacher backbone pairs with any student backbone. Batchmean reduction (`distill.functional.kd_loss`).
    """
    return weight * kd_loss(logits_s, logits_t.detach(), temperature)
