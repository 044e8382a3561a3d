"""Self-supervised PCL pre-training with KL distillation on pretext logits (paper 3 and PCL's released code)."""

from actdistill.ssl.augment import AugmentConfig, build_pcl_augment
from actdistill.ssl.convergence import convergence_summary, epochs_to
from actdistill.ssl.evaluate import export_backbone, extract_features, linear_probe, retrieval_topk
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
    "AugmentConfig",
    "MemoryBank",
    "PCLNet",
    "PCLOutput",
    "ProjectionHead",
    "apply_pretext",
    "build_pcl_augment",
    "contrast_ce",
    "convergence_summary",
    "epochs_to",
    "export_backbone",
    "extract_features",
    "in_batch_infonce",
    "linear_probe",
    "pcl_contrastive_loss",
    "pcl_kd_loss",
    "pcl_loss",
    "permute_quadrants",
    "remote_clip_start",
    "residual_frames",
    "retrieval_topk",
    "rotate",
    "shuffle_chunks",
    "tuple_starts",
    "tuple_total",
]
