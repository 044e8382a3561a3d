"""Paper 3's objectives as methods of the one method contract: PCL, and PCL + KD from a frozen PCL teacher.

Student and teacher are `PCLNet`s (model `pcl`); batches are PCL tuples (`input` `(B, 3, C, T, H, W)`, `label` the
pretext label, `index` the position of the video in the training set, for the memory banks).
  * `pcl`: `L = CE(pretext logits, label) + w_con·L_con` (PCL's objective; paper 3 §3), `L_con` the bidirectional
    memory-bank InfoNCE of PCL's code (`ssl.pcl.pcl_contrastive_loss`) or in-batch InfoNCE (`contrast: in_batch`);
  * `pcl_kd`: the same plus `λ·T²·KL(softmax(h_t/T) ‖ softmax(h_s/T))` on the pretext logits (paper 3 §3, Fig. 2),
    the teacher fed the same tuple. Parts: `ce`, `con` (×w_con), `kd` (×λ).
Negatives of the memory banks are drawn per sample from a generator seeded by (run seed, epoch, index), so a run is
the same with any number of processes (the banks' updates are gathered over ranks) and after a resume.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actdistill.distill.base import Batch, Distiller, StepOutput, make_output
from actdistill.errors import ActdistillError
from actdistill.models.pcl_net import PCLNet
from actdistill.registry import register_method
from actdistill.ssl.pcl import MemoryBank, in_batch_infonce, pcl_contrastive_loss, pcl_kd_loss


def per_sample_negatives(index: Tensor, num_data: int, k: int, seed: int) -> Tensor:
    """`(B, K+1)`: each sample's own index, then K uniform draws from `[0, num_data)` seeded by (seed, index)."""
    rows = []
    for i in index.tolist():
        g = torch.Generator().manual_seed((seed * 1_000_003 + int(i)) % (2**63 - 1))
        rows.append(torch.randint(num_data, (k,), generator=g))
    negatives = torch.stack(rows).to(index.device)
    return torch.cat([index.view(-1, 1), negatives], dim=1)


@register_method(
    "pcl",
    paper="PCL (Tao et al. 2022) as paper 3 trains it: VCP pretext CE + contrastive term",
    knowledge="none",
    task="pcl",
    source="paper 3 §3; PCL's released code (train_vcp_contrast.py: w_con 0.5, K 1024, τ 0.07, momentum 0.5)",
)
class PCL(Distiller):
    """Self-supervised PCL on tuples: pretext classification + memory-bank contrast (no teacher)."""

    uses_teacher = False
    requires = frozenset({"index", "label"})

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        num_data: int = 0,
        w_con: float = 0.5,
        k: int = 1024,
        temperature: float = 0.07,
        momentum: float = 0.5,
        contrast: str = "bank",
    ) -> None:
        super().__init__(student, teacher)
        if not isinstance(student, PCLNet):
            raise ActdistillError(f"{type(self).__name__.lower()} trains a PCL network: set student.name=pcl")
        if contrast not in ("bank", "in_batch"):
            raise ActdistillError(f"method.contrast must be 'bank' or 'in_batch', got {contrast!r}")
        if temperature <= 0 or w_con < 0 or k < 1 or not 0 <= momentum < 1:
            raise ActdistillError(
                f"PCL needs temperature > 0, w_con ≥ 0, k ≥ 1 and momentum in [0, 1); got {temperature}, {w_con}, "
                f"{k}, {momentum}"
            )
        if contrast == "bank" and num_data < 2:
            raise ActdistillError("PCL's memory banks need the training-set size (num_data ≥ 2)")
        proj_dim = student.head(torch.zeros(2, student.feat_dim)).shape[1]
        self.w_con, self.k, self.temperature, self.contrast = float(w_con), int(k), float(temperature), contrast
        self.bank1 = MemoryBank(max(num_data, 1), proj_dim, momentum)
        self.bank2 = MemoryBank(max(num_data, 1), proj_dim, momentum)
        self.negative_seed = int(torch.randint(2**31, ()).item())  # from the run's seeded RNG

    def pcl_parts(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Pretext logits `(B, 5)` and the `ce`, `con` parts of PCL's objective for a tuple batch."""
        out = self.student.forward_tuple(batch["input"])
        if self.contrast == "bank":
            seed = self.negative_seed * 7919 + self.epoch
            idx = per_sample_negatives(batch["index"], self.bank1.num_data, self.k, seed)
            con = pcl_contrastive_loss(out.v1, out.v2, batch["index"], self.bank1, self.bank2,
                                       temperature=self.temperature, idx=idx)  # fmt: skip
        else:
            con = in_batch_infonce(out.v1, out.v2, self.temperature)
        return out.logits, {"ce": F.cross_entropy(out.logits.float(), batch["label"]), "con": self.w_con * con}

    def forward(self, batch: Batch) -> StepOutput:
        logits, parts = self.pcl_parts(batch)
        return make_output(logits.float(), parts)


@register_method(
    "pcl_kd",
    paper="paper 3: PCL + KL distillation on pretext logits from a frozen PCL teacher",
    knowledge="logits",
    task="pcl",
    source="paper 3 §3, Fig. 2 (T = 4, λ = 1: toolkit defaults; the paper gives none)",
)
class PCLKD(PCL):
    """PCL + KD: `ce + w_con·con + λ·T²·KL(teacher ‖ student)` on the 5-way pretext logits; any teacher backbone."""

    uses_teacher = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        num_data: int = 0,
        w_con: float = 0.5,
        k: int = 1024,
        temperature: float = 0.07,
        momentum: float = 0.5,
        contrast: str = "bank",
        kd_temperature: float = 4.0,
        kd_weight: float = 1.0,
    ) -> None:
        super().__init__(
            student, teacher, num_data=num_data, w_con=w_con, k=k, temperature=temperature, momentum=momentum,
            contrast=contrast,
        )  # fmt: skip
        if kd_temperature <= 0 or kd_weight < 0:
            raise ActdistillError(
                f"pcl_kd needs kd_temperature > 0 and kd_weight ≥ 0; got {kd_temperature}, {kd_weight}"
            )
        self.kd_temperature, self.kd_weight = float(kd_temperature), float(kd_weight)

    def forward(self, batch: Batch) -> StepOutput:
        logits, parts = self.pcl_parts(batch)
        with torch.no_grad():
            teacher_logits = self.teacher(self.teacher_input(batch)).float()  # type: ignore[misc]
        parts["kd"] = pcl_kd_loss(logits.float(), teacher_logits, self.kd_temperature, self.kd_weight)
        return make_output(logits.float(), parts)
