"""Training checkpoints: which files a run keeps and how a run's state is restored from `last.pt`.

Reading and writing files is `actdistill.utils.checkpoint` (atomic writes, weights-only loads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from actdistill.errors import ActdistillError
from actdistill.utils.checkpoint import load_checkpoint, state_mismatch


def rotate(folder: Path, pattern: str, keep: int) -> None:
    """Delete all but the newest `keep` files matching `pattern` (sorted by name, which embeds the epoch)."""
    files = sorted(folder.glob(pattern))
    for old in files[: max(0, len(files) - keep)]:
        old.unlink(missing_ok=True)


def load_resumable(path: Path, student_name: str, layout: dict[str, int]) -> dict[str, Any]:
    """`last.pt` checked to be a training checkpoint of `student_name`, resumable with this batch layout."""
    ckpt = load_checkpoint(path)
    missing = [k for k in ("optimizers", "schedulers", "epoch", "rng", "history", "best") if k not in ckpt]
    if missing:
        raise ActdistillError(
            f"{path} is not a training checkpoint (no {', '.join(missing)}); start without --resume or use --overwrite"
        )
    saved = ckpt.get("model", {}).get("name")
    if saved and saved != student_name:
        raise ActdistillError(
            f"{path} holds a '{saved}' student but student.name is '{student_name}'; "
            "resume with the run's own config (its config.yaml) or choose another train.out_dir"
        )
    position, before = ckpt.get("position"), ckpt.get("layout", {})
    same = all(before.get(k) == layout[k] for k in ("global_batch", "accumulate_steps"))
    if position is not None and not same:
        raise ActdistillError(
            f"{path} was saved mid-epoch with global batch {before.get('global_batch')} "
            f"(accumulate_steps {before.get('accumulate_steps')}); resume with the same processes × data.batch_size "
            "and train.accumulate_steps so the rest of the epoch sees the same batches"
        )
    return ckpt


def restore_training_state(
    ckpt: dict[str, Any],
    path: Path,
    student: torch.nn.Module,
    distiller: Any,
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, Any],
    scalers: dict[str, Any],
) -> None:
    """Load weights, method state, optimizer/scheduler/scaler states; one-line errors for a mismatched file."""
    try:
        student.load_state_dict(ckpt["student"])
        distiller.load_student_state(ckpt.get("method", {}))
        for name, opt in optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        for name, sched in schedulers.items():
            sched.load_state_dict(ckpt["schedulers"][name])
        for name, scaler in scalers.items():
            if name in ckpt.get("scalers", {}):
                scaler.load_state_dict(ckpt["scalers"][name])
    except (RuntimeError, KeyError, ValueError) as exc:
        why = state_mismatch(student, ckpt["student"]) if isinstance(exc, RuntimeError) else repr(exc)[:120]
        raise ActdistillError(
            f"{path} does not fit this run's student/method/optimizer ({why}); "
            "resume with the run's own config (its config.yaml) or start without --resume"
        ) from None
