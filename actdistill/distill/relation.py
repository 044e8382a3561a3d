"""Relation-based methods: RKD and CRD (Park et al. CVPR-19, Tian et al. ICLR-20; functional `rkd_parts`, `crd_loss`).

Both embed a globally average-pooled feature map (default: the last stage) per sample: `(B, C, …) → (B, C)`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actdistill.distill.adapters import channels_of, global_pool
from actdistill.distill.base import Batch, StepOutput, make_output
from actdistill.distill.feature import FeatureDistiller, LayerSpec
from actdistill.distill.functional import crd_loss, rkd_parts
from actdistill.distill.logit import class_logits
from actdistill.distill.taps import ModelRun, Tap, probe_shapes, run_model
from actdistill.errors import ActdistillError
from actdistill.registry import register_method


class PooledRelationDistiller(FeatureDistiller):
    """Methods that read the teacher only as a globally pooled feature `(B, C_t)` of `tap_t`.

    A teacher-output cache built with `--features <teacher_layer>` supplies it as `batch["teacher_pooled"]`; the
    teacher then does not run.
    """

    reads_pooled_teacher_feature = True
    tap_s: Tap
    tap_t: Tap

    def _student_run_and_pooled_teacher(self, batch: Batch) -> tuple[ModelRun, Tensor]:
        """The student's run (with grad) and the teacher's pooled feature `(B, C_t)`: cached, or computed no-grad."""
        if "teacher_pooled" in batch:
            return run_model(self.student, batch["input"], self.student_taps), batch["teacher_pooled"].float()
        run_s, run_t = self._runs(batch)
        return run_s, global_pool(run_t.get(self.tap_t))


@register_method(
    "rkd",
    paper="Relational KD, Park et al. CVPR-19",
    knowledge="relation",
    source="RKD paper §4 / lenscloth/RKD and RepDistiller distiller_zoo/RKD.py (w_d=25, w_a=50, -b 1)",
)
class RKD(PooledRelationDistiller):
    """Relational KD: `L = w_ce·CE + w_d·distance + w_a·angle` on pooled embeddings `(B, C_s)`, `(B, C_t)`.

    distance/angle: SmoothL1 between the mean-normalised pairwise distances / triplet angle cosines of the batch
    (`functional.rkd_parts`; needs B ≥ 2, B ≥ 3 for angles). Parts `ce`, `rkd_distance`, `rkd_angle`.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        student_layer: LayerSpec = -1,
        teacher_layer: LayerSpec = -1,
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
        ce_weight: float = 1.0,
    ) -> None:
        super().__init__(student, teacher)
        self.distance_weight, self.angle_weight, self.ce_weight = distance_weight, angle_weight, ce_weight
        self.tap_s, self.tap_t = self._taps(student_layer, teacher_layer)

    def forward(self, batch: Batch) -> StepOutput:
        run_s, pooled_t = self._student_run_and_pooled_teacher(batch)
        distance, angle = rkd_parts(global_pool(run_s.get(self.tap_s)), pooled_t)
        logits = class_logits(run_s.logits)
        parts = {
            **self._ce(logits, batch, self.ce_weight),
            "rkd_distance": self.distance_weight * distance,
            "rkd_angle": self.angle_weight * angle,
        }
        return make_output(logits, parts)


NEGATIVES = ("class", "uniform")
"""CRD's negative samplers: other classes (the authors' `CIFAR100InstanceSample`) or any other sample."""


class ContrastMemory(nn.Module):
    """CRD's two memory banks `(N, D)` (student and teacher embeddings) and the normalising constants Z_s, Z_t.

    All buffers, so they are saved with the method (`student_state()`) and restored on resume. Banks start
    `U(−s, s)`, s = 1/√(D/3); Z < 0 means "not fixed yet" (they are fixed on the first batch).
    """

    def __init__(self, num_data: int, dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("memory_s", torch.rand(num_data, dim) * 2 * bound - bound)
        self.register_buffer("memory_t", torch.rand(num_data, dim) * 2 * bound - bound)
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))

    @torch.no_grad()
    def update(self, index: Tensor, emb_s: Tensor, emb_t: Tensor, momentum: float) -> None:
        """`M[i] ← normalize(m·M[i] + (1 − m)·e)` for both banks."""
        for bank, emb in ((self.memory_s, emb_s), (self.memory_t, emb_t)):
            bank[index] = F.normalize(momentum * bank[index] + (1 - momentum) * emb.detach().float(), dim=1)


@register_method(
    "crd",
    paper="Contrastive Representation Distillation, Tian et al. ICLR-20",
    knowledge="relation",
    source="Tian et al. ICLR-20; RepDistiller scripts/run_cifar_distill.sh (K=16384, τ=0.07, m=0.5, -b 0.8)",
)
class CRD(PooledRelationDistiller):
    """CRD (ICLR-20): `L = w_ce·CE + w·(ℓ(o_s) + ℓ(o_t))` with NCE over one positive and K negatives per sample.

    e = L2norm(Linear(pooled feature)) (dim `feat_dim`, one trainable embedding per side); o_s = exp(⟨M_t[idx], e_s⟩/τ)
    / Z_s and o_t = exp(⟨M_s[idx], e_t⟩/τ) / Z_t, Z fixed on the first batch as mean(o)·N; idx = [index, K negatives].
    Banks are updated with momentum after the loss, in training mode only. Scores are computed in fp32 with autocast
    off. Parts `ce`, `crd`.

    Negatives (`negatives`):
    * `"class"` (default; the authors' sampler, RepDistiller dataset/cifar100.py `CIFAR100InstanceSample`): drawn
      uniformly from the samples of the *other classes* (`train_labels[index]` gives the class), without
      replacement when K ≤ their number (and the draw is small, B·N ≤ 2²²), else with replacement. Needs
      `train_labels`, the training set's labels by dataset index (the engine passes them, as it passes `num_data`);
      without them the method warns and falls back to `"uniform"`.
    * `"uniform"`: drawn uniformly from the other N−1 samples (any class), same replacement rule.
    (RepDistiller's `mode` 'exact'/'relax' is about the positive — the sample itself or another of its class — and
    draws negatives from other classes in both modes; here the positive is always the sample itself, 'exact'.)
    Needs `batch["index"]` (dataset indices) and `num_data` = N, the training-set size (the engine passes it).
    """

    requires = frozenset({"index"})

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        student_layer: LayerSpec = -1,
        teacher_layer: LayerSpec = -1,
        feat_dim: int = 128,
        nce_k: int = 16384,
        nce_t: float = 0.07,
        nce_momentum: float = 0.5,
        weight: float = 0.8,
        ce_weight: float = 1.0,
        num_data: int = 0,
        negatives: str = "class",
        train_labels: Sequence[int] | None = None,
    ) -> None:
        super().__init__(student, teacher)
        if num_data < 2:
            raise ActdistillError(f"crd needs num_data (the training-set size, at least 2), got {num_data}")
        if negatives not in NEGATIVES:
            raise ActdistillError(f"crd: negatives must be one of {', '.join(NEGATIVES)}, got {negatives!r}")
        self.nce_k, self.nce_t, self.nce_momentum = int(nce_k), float(nce_t), float(nce_momentum)
        self.weight, self.ce_weight, self.num_data = float(weight), float(ce_weight), int(num_data)
        self.negatives_mode = negatives
        if negatives == "class" and train_labels is None:
            warnings.warn(
                "crd: negatives='class' needs train_labels (the training labels by dataset index); none were "
                "given, so negatives are drawn uniformly from all other samples (negatives='uniform')",
                stacklevel=2,
            )
            self.negatives_mode = "uniform"
        # Sampling tables (not buffers: derived from the labels, never checkpointed): dataset indices in class order
        # and, per index, where its class's block starts and how long it is in that order.
        if self.negatives_mode == "class":
            labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long).reshape(-1)
            if labels.numel() != self.num_data:
                raise ActdistillError(
                    f"crd: train_labels has {labels.numel()} entries but num_data is {self.num_data}; pass the "
                    "training set's label of every dataset index"
                )
            _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
            if counts.numel() < 2:
                raise ActdistillError("crd: negatives='class' needs at least two classes in train_labels")
            self._order = torch.argsort(inverse, stable=True)
            first = torch.cumsum(counts, 0) - counts
            self._block_start, self._block_len = first[inverse], counts[inverse]
        else:
            self._order = torch.arange(self.num_data)
            self._block_start = torch.arange(self.num_data)
            self._block_len = torch.ones(self.num_data, dtype=torch.long)
        self.tap_s, self.tap_t = self._taps(student_layer, teacher_layer)
        (shape_s,), (shape_t,) = probe_shapes(student, [self.tap_s]), probe_shapes(teacher, [self.tap_t])
        self.embed_s = nn.Linear(channels_of(shape_s), feat_dim)
        self.embed_t = nn.Linear(channels_of(shape_t), feat_dim)
        self.memory = ContrastMemory(self.num_data, feat_dim)

    def draw_negatives(self, index: Tensor) -> Tensor:
        """`(B, K)` dataset indices of negatives for the samples `index` `(B,)` (see the class docstring).

        Every row avoids a block of the class-sorted order — the sample's class (`"class"`), or the sample itself
        (`"uniform"`): positions are drawn in `[0, N − block)` and shifted past the block.
        """
        device = index.device
        if self._order.device != device:
            self._order, self._block_start, self._block_len = (
                t.to(device) for t in (self._order, self._block_start, self._block_len)
            )
        b, n, k = index.shape[0], self.num_data, self.nce_k
        start, length = self._block_start[index], self._block_len[index]
        room = n - length  # (B,) how many candidates each row has
        distinct = (k <= room) & (b * n <= 2**22)
        pos = torch.empty(b, k, dtype=torch.long, device=device)
        if bool(distinct.any()):
            width = int(room[distinct].max())
            keys = torch.rand(int(distinct.sum()), width, device=device)
            keys.masked_fill_(torch.arange(width, device=device) >= room[distinct, None], -1.0)
            pos[distinct] = keys.topk(k, dim=1).indices
        if not bool(distinct.all()):
            rows = room[~distinct, None]  # with replacement: uniform in [0, room) (modulo bias < N/2⁶²)
            pos[~distinct] = torch.randint(0, 2**62, (rows.shape[0], k), device=device) % rows
        pos = pos + length[:, None] * (pos >= start[:, None]).long()  # skip over the excluded block
        return self._order[pos]

    def _scores(self, bank: Tensor, index: Tensor, emb: Tensor, z: Tensor) -> Tensor:
        scores = torch.exp(torch.bmm(bank[index], emb.unsqueeze(2)).squeeze(2) / self.nce_t)
        if float(z) < 0:  # Z is fixed once, on the first batch (RepDistiller crd/memory.py)
            z.fill_(float(scores.detach().mean()) * self.num_data)
        return scores / z

    def forward(self, batch: Batch) -> StepOutput:
        if "index" not in batch:
            raise ActdistillError("crd needs batch['index'] (dataset indices); use an actdistill dataset/loader")
        index = batch["index"].long().reshape(-1)
        if int(index.min()) < 0 or int(index.max()) >= self.num_data:
            raise ActdistillError(f"crd: batch index {int(index.max())} outside num_data={self.num_data}")
        run_s, pooled_t = self._student_run_and_pooled_teacher(batch)
        idx = torch.cat([index[:, None], self.draw_negatives(index)], dim=1)
        with torch.autocast(device_type=index.device.type, enabled=False):
            emb_s = F.normalize(self.embed_s(global_pool(run_s.get(self.tap_s)).float()), dim=1)
            emb_t = F.normalize(self.embed_t(pooled_t.float()), dim=1)
            o_s = self._scores(self.memory.memory_t, idx, emb_s, self.memory.z_s)
            o_t = self._scores(self.memory.memory_s, idx, emb_t, self.memory.z_t)
            crd = crd_loss(o_s, o_t, self.num_data)
        if self.training:
            self.memory.update(index, emb_s, emb_t, self.nce_momentum)
        logits = class_logits(run_s.logits)
        return make_output(logits, {**self._ce(logits, batch, self.ce_weight), "crd": self.weight * crd})
