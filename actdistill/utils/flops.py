"""Multiply-accumulate counts (GMACs: the "GFLOPs" of paper 1 Table I and paper 2 Table 1) and parameter counts."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass(frozen=True)
class FlopCount:
    """MACs of one forward pass of one input, and the model's parameter count."""

    macs: int
    params: int

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def params_m(self) -> float:
        return self.params / 1e6


def count(model: nn.Module, input_shape: tuple[int, ...], *, conv_linear_only: bool = False) -> FlopCount:
    """GMACs of `model` on one input of `input_shape`, `(1, 3, H, W)` or `(1, 3, T, H, W)`, in eval mode, no grad.

    Default: every matmul and convolution seen by `torch.utils.flop_counter.FlopCounterMode` (FLOPs / 2), with timm's
    fused attention switched off so attention matmuls are counted (cf. paper 1, Table I). `conv_linear_only=True`: only
    Conv/ConvTranspose/Linear modules, via forward hooks (the convention of thop and ptflops' pytorch backend).
    """
    params = sum(p.numel() for p in model.parameters())
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _unfused_attention(model):
            macs = _hooked_macs(model, x) if conv_linear_only else _counter_macs(model, x)
    finally:
        model.train(was_training)
    return FlopCount(macs=macs, params=params)


def _counter_macs(model: nn.Module, x: Tensor) -> int:
    # Fused attention on CPU lands in an op FlopCounterMode does not know; count it like the unfused matmuls.
    extra = {}
    sdpa_cpu = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if sdpa_cpu is not None:
        extra[sdpa_cpu] = _sdpa_flops
    with FlopCounterMode(display=False, custom_mapping=extra) as counter:
        model(x)
    return counter.get_total_flops() // 2


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _hooked_macs(model: nn.Module, x: Tensor) -> int:
    total = 0

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        if isinstance(module, _CONV):
            total += output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
        elif isinstance(module, _CONV_T):
            # Each input element is scattered to out_channels/groups · kernel outputs.
            total += inputs[0].numel() * (module.out_channels // module.groups) * math.prod(module.kernel_size)
        else:
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (*_CONV, *_CONV_T, nn.Linear))]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return total


@contextmanager
def _unfused_attention(model: nn.Module) -> Iterator[None]:
    """Temporarily set timm's per-module `fused_attn` flags to False (the effect of `TIMM_FUSED_ATTN=0`)."""
    fused = [m for m in model.modules() if getattr(m, "fused_attn", None) is True]
    for m in fused:
        m.fused_attn = False
    try:
        yield
    finally:
        for m in fused:
            m.fused_attn = True
