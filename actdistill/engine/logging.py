"""Run logging: one JSON line per epoch in metrics.jsonl, the same scalars to TensorBoard, a console line."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("actdistill")


class MetricsLogger:
    """Appends records to `metrics.jsonl` and mirrors numeric fields to TensorBoard when available."""

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional at run time
                log.warning("tensorboard is not installed; logging to metrics.jsonl only")

    def log(self, record: dict[str, Any], step: int) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for group in ("train", "test"):
                for key, value in record.get(group, {}).items():
                    if isinstance(value, (int, float)):
                        self.writer.add_scalar(f"{group}/{key}", value, step)
            if "lr" in record:
                self.writer.add_scalar("lr", record["lr"], step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
