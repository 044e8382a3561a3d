"""Optimisers and per-epoch LR schedules (paper 1: SGD + StepLR; cosine with warm-up as an alternative)."""

from __future__ import annotations

import math
from collections.abc import Iterable

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


def lr_factor(epoch: int, cfg: SchedConfig, total_epochs: int) -> float:
    """LR multiplier for 0-based `epoch` (stepped once per epoch).

    step: gamma^(epoch // step_size) — paper 1: teacher StepLR(10, 0.1) over 50 epochs, students
    StepLR(5, 0.3) over 15; cosine: ½(1 + cos(π·t)) from 1 down to min_lr/lr; both after a linear warm-up.
    """
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        return (epoch + 1) / cfg.warmup_epochs
    name = cfg.name.lower()
    if name == "none":
        return 1.0
    if name == "step":
        return cfg.gamma ** (epoch // max(cfg.step_size, 1))
    if name == "cosine":
        span = max(total_epochs - cfg.warmup_epochs, 1)
        t = min(max(epoch - cfg.warmup_epochs, 0) / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * t))
    raise ActdistillError(f"sched.name must be step, cosine or none, got '{cfg.name}'")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedConfig, total_epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-epoch `LambdaLR` following `lr_factor`; cosine respects `min_lr` as a floor."""
    base = optimizer.param_groups[0]["lr"]
    floor = cfg.min_lr / base if base > 0 else 0.0

    def factor(epoch: int) -> float:
        f = lr_factor(epoch, cfg, total_epochs)
        return floor + (1 - floor) * f if cfg.name.lower() == "cosine" else f

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
