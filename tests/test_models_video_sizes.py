"""Pinned sizes of the video models at the papers' inputs (P2 Table 1, PCL), counted on meta tensors (no compute)."""

from __future__ import annotations

import pytest
import torch

from actdistill.models.video_zoo import VIDEO_MODELS
from actdistill.registry import MODELS
from actdistill.utils.flops import count

# name → (exact parameter count at 101 classes, measured GMACs, input). GMACs = FlopCounterMode FLOPs / 2.
SIZES = {
    "i3d": (12_390_789, 111.15, (1, 3, 64, 224, 224)),  # measured: 12.391 M, 111.15 (P2 Table 1: 111.3)
    "top_i3d": (10_532_613, 45.36, (1, 3, 64, 224, 224)),  # 10.533 M, 45.36
    "bottom_i3d": (7_561_605, 102.68, (1, 3, 64, 224, 224)),  # 7.562 M, 102.68
    "i2d": (5_703_429, 36.89, (1, 3, 64, 224, 224)),  # 5.703 M, 36.89
    "c3d": (27_713_253, 38.50, (1, 3, 16, 112, 112)),  # measured: 27.713 M, 38.50
    "r3d_10": (14_413_605, 19.89, (1, 3, 16, 112, 112)),  # 14.414 M, 19.89
    "r2plus1d_10": (14_417_116, 21.36, (1, 3, 16, 112, 112)),  # 14.417 M, 21.36
    "r3d_18": (33_218_085, 40.70, (1, 3, 16, 112, 112)),  # 33.218 M, 40.70
    "mc3_18": (11_542_053, 43.34, (1, 3, 16, 112, 112)),  # 11.542 M, 43.34
    "r2plus1d_18": (31_351_938, 40.52, (1, 3, 16, 112, 112)),  # 31.352 M, 40.52
}


def _measure(name: str) -> tuple[int, float]:
    with torch.device("meta"):
        model = MODELS.get(name)(101)
    result = count(model, SIZES[name][2])
    return result.params, result.gmacs


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SIZES))
def test_sizes_match_spec(name: str) -> None:
    params, gmacs = _measure(name)
    want_params, want_gmacs, shape = SIZES[name]
    assert params == want_params
    assert round(params / 1e6, 3) == MODELS.meta(name)["params_m"]
    assert gmacs == pytest.approx(want_gmacs, abs=0.006)  # two decimals (far inside the 1 % budget)
    assert MODELS.meta(name)["gmacs"] == want_gmacs
    assert tuple(MODELS.meta(name)["input_size"]) == shape[1:]


@pytest.mark.slow
def test_p2_flops_claims() -> None:
    """P2 Table 1: teacher 111.3 G, student 45.5 G ("≈ 40.9 %"); reproduced within 0.2 G (torch.utils.flop_counter)."""
    _, teacher = _measure("i3d")
    _, student = _measure("top_i3d")
    assert abs(teacher - MODELS.meta("i3d")["gmacs_paper"]) < 0.2
    assert abs(student - MODELS.meta("top_i3d")["gmacs_paper"]) < 0.2
    assert student / teacher == pytest.approx(0.409, abs=0.002)


def test_every_sized_model_is_registered() -> None:
    assert set(SIZES) == set(VIDEO_MODELS) - {"frames"}
