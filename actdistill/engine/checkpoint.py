"""Checkpoints: written atomically, loaded with errors that say what is wrong with the file."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actdistill.errors import ActdistillError


def atomic_save(obj: Any, path: str | Path) -> Path:
    """`torch.save` to a temp file in the same folder, fsync, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load an actdistill checkpoint on CPU, with one-line errors for missing or unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise ActdistillError(f"checkpoint {path} not found; pass the path of a run's checkpoints/best.pt or last.pt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise ActdistillError(
            f"checkpoint {path} could not be read ({exc.__class__.__name__}); it is corrupt or not a PyTorch file"
        ) from None
    if not isinstance(ckpt, dict) or "student" not in ckpt:
        raise ActdistillError(
            f"checkpoint {path} is not an actdistill checkpoint (no 'student' entry); "
            "to start from plain weights use student.pretrained=PATH instead"
        )
    return ckpt


def state_mismatch(model: torch.nn.Module, state: dict[str, Any]) -> str:
    """Why `state` does not load into `model`, in a few words: counts of missing/unexpected/reshaped entries."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and tuple(own[k].shape) != tuple(getattr(state[k], "shape", ()))]
    found = {"missing": missing, "unexpected": unexpected, "with another shape": reshaped}
    return ", ".join(f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in found.items() if keys) or "no match"


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states, plus the current CUDA device's."""
    # Only the current device: under torchrun the other GPUs belong to other processes, and reading their
    # state would create a CUDA context on each of them.
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore `rng_state()`; a CUDA state is applied to the current device."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, (list, tuple)):  # older checkpoints: one state per visible device
            cuda = cuda[torch.cuda.current_device()] if torch.cuda.current_device() < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


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
