"""`train.precision=auto` decides from the CPU's bf16 support and a timed step, never by assumption (issue 19)."""

from __future__ import annotations

import logging
import time

import pytest
import torch

from actdistill.errors import ActdistillError
from actdistill.utils import runtime
from actdistill.utils.runtime import resolve_precision

CPU = torch.device("cpu")


def _probe(fp32_s: float, bf16_s: float, calls: list):
    """A stand-in training step that takes `fp32_s` without autocast and `bf16_s` under bf16 autocast."""

    def step(dtype: torch.dtype | None) -> None:
        calls.append(dtype)
        time.sleep(bf16_s if dtype is torch.bfloat16 else fp32_s)

    return step


@pytest.fixture
def cpu_support(monkeypatch):
    def set_support(text: str) -> None:
        monkeypatch.setattr(runtime, "cpu_bf16_support", lambda: text)

    return set_support


def test_auto_on_an_emulating_cpu_is_fp32_without_probing(cpu_support):
    cpu_support("emulated (AVX2)")
    calls: list = []
    assert resolve_precision("auto", CPU, probe=_probe(0.001, 0.0001, calls)) is None
    assert calls == []  # bf16 is never timed where it is emulated (28x slower on one AVX2 machine)


@pytest.mark.parametrize(("fp32_s", "bf16_s", "expected"), [(0.03, 0.01, torch.bfloat16), (0.01, 0.03, None)])
def test_auto_on_a_native_cpu_follows_the_timed_step(cpu_support, caplog, fp32_s, bf16_s, expected):
    cpu_support("native (AVX512_BF16)")
    calls: list = []
    with caplog.at_level(logging.INFO, logger="actdistill"):
        assert resolve_precision("auto", CPU, probe=_probe(fp32_s, bf16_s, calls)) is expected
    assert torch.bfloat16 in calls and None in calls
    chosen = "bf16" if expected is torch.bfloat16 else "fp32"
    assert "precision auto on CPU (native (AVX512_BF16)): a bf16 step is" in caplog.text
    assert caplog.text.rstrip().endswith(f"→ {chosen}")


def test_auto_without_a_probe_is_fp32_even_on_a_native_cpu(cpu_support):
    cpu_support("native (AMX)")
    assert resolve_precision("auto", CPU) is None


def test_explicit_bf16_on_an_emulating_cpu_warns_with_the_measured_slowdown(cpu_support, caplog):
    cpu_support("emulated (AVX2)")
    with caplog.at_level(logging.WARNING, logger="actdistill"):
        assert resolve_precision("bf16", CPU, probe=_probe(0.01, 0.03, [])) is torch.bfloat16
    assert "without native bf16 (emulated (AVX2))" in caplog.text and "slower than fp32" in caplog.text


def test_fp32_and_fp16_choices(cpu_support):
    cpu_support("native (AMX)")
    assert resolve_precision("fp32", CPU, probe=_probe(0.03, 0.01, [])) is None
    with pytest.raises(ActdistillError, match="fp16 needs a GPU"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ActdistillError, match="must be auto, bf16, fp16 or fp32"):
        resolve_precision("half", CPU)


def test_auto_on_cuda_follows_the_gpus_bf16_support(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", cuda) is None
