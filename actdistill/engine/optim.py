"""The one optimiser and LR-schedule builder of every task.

Optimisers: SGD (paper 1), Adam/AdamW (paper 2's CVAE stage, detection). Schedules (`SchedConfig`): StepLR (paper 1:
teacher StepLR(10, 0.1) over 50 epochs, students StepLR(5, 0.3) over 15), cosine, constant, each after an optional
linear warm-up, advanced per epoch or per optimiser step (`per_step`, detection), and ReduceLROnPlateau on a
metric (paper 3's PCL: factor 0.1, patience 50, min LR 1e-5, on the validation loss).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from actdistill.config import OptimConfig, SchedConfig
from actdistill.errors import ActdistillError


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """`sgd` (momentum, optional Nesterov) or `adamw`/`adam`, over the given parameters."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ActdistillError("no trainable parameters for the optimiser (is the whole student frozen?)")
    name = cfg.name.lower()
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
        )
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    raise ActdistillError(f"optim.name must be sgd, adam or adamw, got '{cfg.name}'")


def lr_factor(t: int, cfg: SchedConfig, total: int, warmup: int | None = None) -> float:
    """LR multiplier at 0-based position `t` of `total` (epochs, or optimiser steps with `per_step`).

    step: gamma^(t // step_size); cosine: ½(1 + cos(π·s)) with s the progress after warm-up; none: 1; all after a
    linear warm-up over `warmup` positions (default `cfg.warmup_epochs`).
    """
    warmup = cfg.warmup_epochs if warmup is None else warmup
    if warmup > 0 and t < warmup:
        return (t + 1) / warmup
    name = cfg.name.lower()
    if name in ("none", "plateau"):
        return 1.0
    if name == "step":
        return cfg.gamma ** (t // max(cfg.step_size, 1))
    if name == "cosine":
        span = max(total - warmup, 1)
        s = min(max(t - warmup, 0) / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * s))
    raise ActdistillError(f"sched.name must be step, cosine, none or plateau, got '{cfg.name}'")


class Schedule:
    """One optimiser's LR schedule: `after_step()` every optimiser step, `after_epoch(metrics)` every epoch.

    Per-epoch and per-step schedules are a `LambdaLR` over `lr_factor` (cosine keeps `min_lr` as a floor);
    `plateau` adds ReduceLROnPlateau on `metrics[monitor]` (minimised for losses, maximised otherwise).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        cfg: SchedConfig,
        epochs: int,
        steps_per_epoch: int,
        monitor: str = "",
        minimise: bool = True,
    ) -> None:
        self.cfg, self.per_step, self.monitor = cfg, cfg.per_step, monitor
        total = epochs * steps_per_epoch if cfg.per_step else epochs
        warmup = cfg.warmup_epochs * steps_per_epoch if cfg.per_step else cfg.warmup_epochs
        base = optimizer.param_groups[0]["lr"]
        floor = cfg.min_lr / base if base > 0 and cfg.name.lower() == "cosine" else 0.0

        def factor(t: int) -> float:
            return floor + (1 - floor) * lr_factor(t, cfg, total, warmup)

        self.lambda_lr = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        self.plateau = None
        if cfg.name.lower() == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min" if minimise else "max", factor=cfg.gamma, patience=cfg.patience,
                min_lr=cfg.min_lr,
            )  # fmt: skip

    def after_step(self) -> None:
        if self.per_step:
            self.lambda_lr.step()

    def after_epoch(self, metrics: dict[str, Any] | None) -> None:
        if not self.per_step:
            self.lambda_lr.step()
        if self.plateau is not None and metrics is not None and self.monitor in metrics:
            self.plateau.step(float(metrics[self.monitor]))

    def state_dict(self) -> dict[str, Any]:
        state = {"lambda": self.lambda_lr.state_dict()}
        if self.plateau is not None:
            state["plateau"] = self.plateau.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Checkpoints written before `Schedule` held the LambdaLR state itself.
        self.lambda_lr.load_state_dict(state.get("lambda", state))
        if self.plateau is not None and "plateau" in state:
            self.plateau.load_state_dict(state["plateau"])
