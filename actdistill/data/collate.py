"""Batch collation that tolerates broken samples (datasets return None for files they cannot decode)."""

from __future__ import annotations

from typing import Any

from torch.utils.data import default_collate


def collate_skip_broken(samples: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack the non-None sample dicts (`input` → `(B, ...)`) and add `skipped`: how many were None.

    If every sample is None the result is just `{"skipped": n}`; the training loop skips such a batch.
    """
    kept = [s for s in samples if s is not None]
    if not kept:
        return {"skipped": len(samples)}
    batch = default_collate(kept)
    batch["skipped"] = len(samples) - len(kept)
    return batch
