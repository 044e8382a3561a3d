"""Self-supervised PCL pre-training with KL distillation on pretext logits (paper 3; SPEC §4)."""

from actdistill.ssl.convergence import convergence_summary, epochs_to
from actdistill.ssl.pcl import (
    MemoryBank,
    PCLNet,
    PCLOutput,
    ProjectionHead,
    contrast_ce,
    in_batch_infonce,
    pcl_contrastive_loss,
    pcl_kd_loss,
    pcl_loss,
)
from actdistill.ssl.pretext import (
    NUM_PRETEXT,
    apply_pretext,
    permute_quadrants,
    remote_clip_start,
    residual_frames,
    rotate,
    shuffle_chunks,
    tuple_starts,
    tuple_total,
)

__all__ = [
    "NUM_PRETEXT",
    "MemoryBank",
    "PCLNet",
    "PCLOutput",
    "ProjectionHead",
    "apply_pretext",
    "contrast_ce",
    "convergence_summary",
    "epochs_to",
    "in_batch_infonce",
    "pcl_contrastive_loss",
    "pcl_kd_loss",
    "pcl_loss",
    "permute_quadrants",
    "remote_clip_start",
    "residual_frames",
    "rotate",
    "shuffle_chunks",
    "tuple_starts",
    "tuple_total",
]
