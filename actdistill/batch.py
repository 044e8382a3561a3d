"""The batch contract: every key a training or evaluation batch may carry, its shape, and who puts it there.

Datasets yield sample dicts; `collate` stacks them into batches with these keys. A method declares the keys it
needs beyond a task's own (`Distiller.requires`); the engine checks them against what the task's data and the
teacher cache provide before the first batch (`missing_keys`). Shapes use B = batch, C = channels, T = time,
H × W = space, K = classes, V = test views, N_b = ground-truth segments of sample b.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchKey:
    """One batch entry: its shape/type and where it comes from."""

    shape: str
    source: str


BATCH_KEYS: dict[str, BatchKey] = {
    "input": BatchKey(
        "(B, C, H, W) image | (B, C, T, H, W) clip | (B, V, C, T, H, W) test views | (B, 3, C, T, H, W) PCL tuple | "
        "(B, C, T) detection features; float, normalised for the student",
        "every dataset",
    ),
    "label": BatchKey("(B,) int64: class index (classification) or pretext label 0-4 (PCL)", "classification, PCL"),
    "index": BatchKey("(B,) int64: position of the sample in the training set (memory banks)", "SeededView"),
    "skipped": BatchKey("int: samples of this batch dropped as unreadable", "collate_skip_broken"),
    "input_t": BatchKey("like `input`: the teacher's view when it differs from the student's", "detection"),
    "input_flow": BatchKey("(B, 2, T, H, W): optical flow of the same clip (two-stream evaluation)", "video rgb+flow"),
    "teacher_logits": BatchKey("(B, K) float: the teacher's logits for this exact view", "teacher cache or prefetch"),
    "teacher_pooled": BatchKey("(B, C) float: the teacher's pooled feature of the cached layer", "teacher cache"),
    "teacher_maps": BatchKey(
        "{tap: (B, C, ...) float}: the teacher feature maps a feature method reads", "teacher cache"
    ),
    "mask": BatchKey("(B, T) bool: valid (unpadded) feature steps", "detection"),
    "segments": BatchKey("list of B (N_b, 2) float: ground-truth segments on the feature grid", "detection"),
    "labels": BatchKey("list of B (N_b,) int64: classes of those segments", "detection"),
    "video": BatchKey("list of B str: video names", "detection"),
    "offset": BatchKey("(B,) int64: first feature step of the training crop", "detection"),
    "ssl_input": BatchKey(
        "(B, C, T) float: the crop with a background piece spliced into an action (AFSD's boundary-consistency "
        "sample; a copy of `input` where `ssl_valid` is False)",
        "detection training data when the method has ssl_weight > 0",
    ),
    "ssl_input_t": BatchKey(
        "like `ssl_input`: the same splice of the teacher's features `input_t`",
        "detection training data with data.teacher_root when the method has ssl_weight > 0",
    ),
    "ssl_segments": BatchKey(
        "(B, 3, 2) int64: inclusive steps of the left part, right part and inserted piece in `ssl_input`",
        "detection training data when the method has ssl_weight > 0",
    ),
    "ssl_valid": BatchKey(
        "(B,) bool: the sample has an SSL part (a long enough action and background in the crop)",
        "detection training data when the method has ssl_weight > 0",
    ),
}

# What each task's datasets put in every batch (after SeededView and collate).
TASK_KEYS: dict[str, frozenset[str]] = {
    "classification": frozenset({"input", "label", "index", "skipped"}),
    "pcl": frozenset({"input", "label", "index", "skipped"}),
    "detection": frozenset({"input", "index", "mask", "segments", "labels", "video", "offset", "skipped"}),
}
CACHE_KEYS = frozenset({"teacher_logits", "teacher_pooled", "teacher_maps"})


def missing_keys(required: frozenset[str] | set[str], provided: frozenset[str] | set[str]) -> list[str]:
    """Keys a method requires that the batches will not have (unknown names are reported too)."""
    unknown = sorted(k for k in required if k not in BATCH_KEYS)
    if unknown:
        raise ValueError(f"batch keys {unknown} are not in actdistill.batch.BATCH_KEYS; add them there first")
    return sorted(set(required) - set(provided))
