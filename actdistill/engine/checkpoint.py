"""Training checkpoints: what a run's `checkpoints/*.pt` hold, how they are written, and how `--resume` reads them.

One format for every task. A checkpoint is plain data (tensors, numbers, strings, lists, dicts; loaded with
`weights_only=True`): `student` (weights), `model` (its `create_model` spec), `predictor` (spec and, when it is
more than the student, weights: what evaluation scores), `method` (adapters, memory banks, epoch), `optimizers`,
`schedulers`, `scalers`, `epoch` (completed), `position` (how far the next epoch got), `layout`, `rng`, `history`,
`best`, `config`, `class_names`, `task`, `versions`. Only rank 0 writes; files are written atomically.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from actdistill import __version__
from actdistill.engine.build import Run
from actdistill.engine.loop import EpochState
from actdistill.errors import ActdistillError
from actdistill.utils.checkpoint import atomic_save, load_checkpoint, rng_state, save_weights, state_mismatch


@dataclass
class Progress:
    """Training so far: completed epochs, per-epoch records, the best epoch, and a mid-epoch position."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, "value": None, "metrics": {}})
    position: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None


def versions() -> dict[str, str]:
    """Library versions recorded in checkpoints and results."""
    import timm
    import torchvision

    return {
        "actdistill": __version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "timm": str(timm.__version__),
        "python": platform.python_version(),
    }


def rotate(folder: Path, pattern: str, keep: int) -> None:
    """Delete all but the newest `keep` files matching `pattern` (sorted by name, which embeds the epoch)."""
    files = sorted(folder.glob(pattern))
    for old in files[: max(0, len(files) - keep)]:
        old.unlink(missing_ok=True)


class Checkpointer:
    """Writes a run's checkpoints and plain weights (rank 0 only) and restores a run from `last.pt`."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.folder = run.folder / "checkpoints"

    def state(self, progress: Progress, position: dict[str, Any] | None = None) -> dict[str, Any]:
        """The checkpoint dict for `progress` (and a mid-epoch `position`)."""
        run = self.run
        predictor = {"spec": run.predictor_spec, "state": None}
        if run.predictor_spec is not run.model_spec:
            predictor["state"] = run.method.predictor().state_dict()
        return {
            "student": run.student.state_dict(),
            "model": run.model_spec,
            "predictor": predictor,
            "method": run.method.student_state(),
            "optimizers": {n: o.state_dict() for n, o in run.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in run.schedules.items()},
            "scalers": {n: s.state_dict() for n, s in run.scalers.items()},
            "epoch": progress.epoch,
            "position": position,
            "layout": run.layout,
            "rng": rng_state(),
            "history": progress.history,
            "best": progress.best,
            "config": run.cfg.to_dict(),
            "class_names": run.data.classes,
            "task": run.task.name,
            "versions": versions(),
        }

    def save(self, name: str, progress: Progress, position: dict[str, Any] | None = None) -> Path:
        """Write `checkpoints/<name>` (rank 0; the path is returned on every rank)."""
        path = self.folder / name
        if self.run.ctx.is_main:
            atomic_save(self.state(progress, position), path)
        return path

    def save_position(self, progress: Progress, epoch: int, state: EpochState, name: str) -> Path:
        """Write `checkpoints/<name>` in the middle of `epoch`, at `state` (a collective: every rank calls it)."""
        return self.save(name, progress, {"epoch": epoch, **state.to_dict(self.run.replicas)})

    def save_epoch(self, progress: Progress) -> Path:
        """`last.pt` and `epoch_NNNN.pt` after a completed epoch; old epoch files beyond `train.keep_last` go."""
        state = self.state(progress)
        last = self.folder / "last.pt"
        if self.run.ctx.is_main:
            atomic_save(state, last)
            atomic_save(state, self.folder / f"epoch_{progress.epoch:04d}.pt")
            rotate(self.folder, "epoch_*.pt", self.run.cfg.train.keep_last)
        return last

    def save_weights(self, kind: str) -> None:
        """`student_<kind>.safetensors`: the student's plain weights (`create_model(..., pretrained=path)`)."""
        if self.run.ctx.is_main:
            save_weights(self.run.student.state_dict(), self.run.folder / f"student_{kind}.safetensors")

    def restore(self) -> Progress:
        """Load `last.pt` into the run (weights, method, optimisers, schedules, scalers); its progress."""
        run, path = self.run, self.folder / "last.pt"
        ckpt = load_checkpoint(path)
        missing = [k for k in ("optimizers", "schedulers", "epoch", "rng", "history", "best") if k not in ckpt]
        if missing:
            raise ActdistillError(
                f"{path} is not a training checkpoint (no {', '.join(missing)}); start without --resume or use "
                "--overwrite"
            )
        saved = ckpt.get("model", {}).get("name")
        if saved and saved != run.cfg.student.name:
            raise ActdistillError(
                f"{path} holds a '{saved}' student but student.name is '{run.cfg.student.name}'; "
                "resume with the run's own config (its config.yaml) or choose another train.out_dir"
            )
        position, before = ckpt.get("position"), ckpt.get("layout", {})
        if position is not None and any(before.get(k) != run.layout[k] for k in ("global_batch", "accumulate_steps")):
            raise ActdistillError(
                f"{path} was saved mid-epoch with global batch {before.get('global_batch')} "
                f"(accumulate_steps {before.get('accumulate_steps')}); resume with the same processes × "
                "data.batch_size and train.accumulate_steps so the rest of the epoch sees the same batches"
            )
        try:
            run.student.load_state_dict(ckpt["student"])
            run.method.load_student_state(ckpt.get("method", {}))
            for name, opt in run.optimizers.items():
                opt.load_state_dict(ckpt["optimizers"][name])
            for name, schedule in run.schedules.items():
                schedule.load_state_dict(ckpt["schedulers"][name])
            for name, scaler in run.scalers.items():
                if name in ckpt.get("scalers", {}):
                    scaler.load_state_dict(ckpt["scalers"][name])
        except (RuntimeError, KeyError, ValueError) as exc:
            why = state_mismatch(run.student, ckpt["student"]) if isinstance(exc, RuntimeError) else repr(exc)[:120]
            raise ActdistillError(
                f"{path} does not fit this run's student/method/optimizer ({why}); "
                "resume with the run's own config (its config.yaml) or start without --resume"
            ) from None
        return Progress(ckpt["epoch"], ckpt["history"], ckpt["best"], position, ckpt["rng"])
