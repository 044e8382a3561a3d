"""PCL's memory-bank contrastive loss (paper 3 §3; PCL's lib/NCEAverage.py `NCEAverage_ori` with use_softmax and
lib/NCECriterion.py `NCESoftmaxLoss`) against the formula written out here.

For sample b with projections v₁ = g(f₀), v₂ = g(f₂) and indices idx_b = [b, j₁ … j_K]:
    out₁[b, k] = ⟨M₂[idx_b,k], v₁_b⟩ / τ,   out₂[b, k] = ⟨M₁[idx_b,k], v₂_b⟩ / τ
    L = mean_b(−out₁[b,0] + log Σ_k exp out₁[b,k]) + mean_b(−out₂[b,0] + log Σ_k exp out₂[b,k])
then, without gradient, M₁[i_b] ← normalise(0.5·M₁[i_b] + 0.5·v₁_b) and M₂[i_b] ← normalise(0.5·M₂[i_b] + 0.5·v₂_b).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _reference_nets import far

from actdistill.ssl.pcl import MemoryBank, pcl_contrastive_loss


def _reference(v1, v2, mem1, mem2, idx, tau: float, momentum: float = 0.5):
    loss = torch.zeros((), dtype=torch.float64)
    for v, bank in ((v1, mem2), (v2, mem1)):
        terms = []
        for b in range(v.shape[0]):
            logits = [float(bank[j].double() @ v[b].double()) / tau for j in idx[b].tolist()]
            log_z = torch.logsumexp(torch.tensor(logits, dtype=torch.float64), 0)
            terms.append(log_z - logits[0])
        loss = loss + torch.stack(terms).mean()
    new1, new2 = mem1.clone(), mem2.clone()
    for b, i in enumerate(idx[:, 0].tolist()):
        for new, old, v in ((new1, mem1, v1), (new2, mem2, v2)):
            row = momentum * old[i] + (1 - momentum) * v[b]
            new[i] = row / row.norm()
    return loss, new1, new2


@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_pcl_contrastive_loss_matches_the_memory_bank_formula(tau: float) -> None:
    torch.manual_seed(0)
    n, k, b, dim = 30, 12, 5, 16
    bank1, bank2 = MemoryBank(n, dim), MemoryBank(n, dim)
    mem1, mem2 = bank1.memory.clone(), bank2.memory.clone()
    v1, v2 = F.normalize(torch.randn(b, dim), dim=1), F.normalize(torch.randn(b, dim), dim=1)
    index = torch.tensor([3, 0, 29, 11, 7])
    # The same K+1 indices for both directions (as NCEAverage draws once); negatives may repeat or equal the sample.
    idx = torch.cat([index[:, None], torch.randint(0, n, (b, k))], dim=1)
    idx[0, 1] = 3
    idx[1, 2:4] = 17
    bank1.sample_indices = lambda index, k, generator=None: idx  # type: ignore[method-assign]
    ours = pcl_contrastive_loss(v1, v2, index, bank1, bank2, k=k, temperature=tau)
    ref, new1, new2 = _reference(v1, v2, mem1, mem2, idx, tau)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bank1.memory, new1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bank2.memory, new2, rtol=1e-5, atol=1e-6)
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[index] = False
    assert torch.equal(bank1.memory[untouched], mem1[untouched])
    # Able to fail: another temperature, the banks the other way round (M₁ with v₁), or a sum over the batch.
    assert far(ours, _reference(v1, v2, mem1, mem2, idx, 2 * tau)[0])
    assert far(ours, _reference(v1, v2, mem2, mem1, idx, tau)[0])
    assert far(ours, b * ref)
