"""MAC counting: hand-worked layers in both modes, attention visibility, and paper 1's two reproducible GFLOPs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.layers import Attention
from torch import nn

from actdistill.models import count_parameters, create_model
from actdistill.registry import MODELS
from actdistill.utils.flops import FlopCount, count

BOTH = [False, True]


@pytest.mark.parametrize("conv_linear_only", BOTH)
def test_conv2d_by_hand(conv_linear_only: bool) -> None:
    result = count(nn.Conv2d(3, 8, 3, padding=1), (1, 3, 10, 10), conv_linear_only=conv_linear_only)
    assert result.macs == 3 * 8 * 9 * 100  # C_in · C_out · k² · H_out · W_out
    assert result.params == 8 * 3 * 9 + 8


@pytest.mark.parametrize("conv_linear_only", BOTH)
def test_linear_by_hand(conv_linear_only: bool) -> None:
    assert count(nn.Linear(16, 4), (1, 16), conv_linear_only=conv_linear_only).macs == 64


@pytest.mark.parametrize("conv_linear_only", BOTH)
def test_video_and_transposed_conv_by_hand(conv_linear_only: bool) -> None:
    conv3d = count(nn.Conv3d(3, 4, 3, padding=1), (1, 3, 4, 8, 8), conv_linear_only=conv_linear_only)
    assert conv3d.macs == 3 * 4 * 27 * (4 * 8 * 8)
    # A transposed conv scatters every input element to C_out · k² outputs.
    deconv = count(nn.ConvTranspose2d(4, 6, 3, stride=2), (1, 4, 5, 5), conv_linear_only=conv_linear_only)
    assert deconv.macs == 4 * 25 * 6 * 9


def test_fused_attention_matmuls_are_counted() -> None:
    attn = Attention(16, num_heads=2)
    assert attn.fused_attn  # timm's default; counting must not depend on it
    linear = 10 * 16 * 48 + 10 * 16 * 16  # qkv and proj over 10 tokens
    matmuls = 2 * (2 * 10 * 10 * 8)  # QKᵀ and AV, 2 heads of width 8
    assert count(attn, (1, 10, 16)).macs == linear + matmuls
    assert count(attn, (1, 10, 16), conv_linear_only=True).macs == linear
    assert attn.fused_attn  # flag restored


def test_plain_sdpa_is_counted() -> None:
    class SelfAttention(nn.Module):
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, q, q)

    assert count(SelfAttention(), (1, 2, 10, 8)).macs == 2 * (2 * 10 * 10 * 8)


def test_mode_and_units_are_preserved() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5)).train()
    result = count(model, (1, 8))
    assert model.training
    assert result == FlopCount(macs=64, params=72)
    assert result.gmacs == 64e-9 and result.params_m == 72e-6


@pytest.mark.parametrize("name", [n for n in MODELS.names() if MODELS.meta(n).get("paper") == "demo"])
def test_demo_presets_count(name: str) -> None:
    model = create_model(name, 40)
    full, conv_linear = count(model, (1, 3, 64, 64)), count(model, (1, 3, 64, 64), conv_linear_only=True)
    assert full.params == count_parameters(model)
    assert 0 < conv_linear.macs <= full.macs < 10**8  # demo presets stay below 0.1 GMACs


@pytest.mark.slow
def test_convnext_small_matches_paper1() -> None:
    assert 8.6 <= count(create_model("convnext_small", 40), (1, 3, 224, 224)).gmacs < 8.8  # Table I: 8.6


@pytest.mark.slow
def test_twins_svt_small_matches_paper1_with_conv_linear_counting() -> None:
    gmacs = count(create_model("twins_svt_small", 40), (1, 3, 224, 224), conv_linear_only=True).gmacs
    assert 2.8 <= gmacs < 3.0  # Table I: 2.8 (only conv+linear counting reproduces it)
