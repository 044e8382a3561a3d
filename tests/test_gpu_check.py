"""benchmarks/gpu_check.py: without CUDA it says so and exits 0; its sections run end to end on the CPU (--smoke)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _run(*args: str, cuda: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU even on a machine that has one
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)


def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    out = tmp_path / "gpu.json"
    proc = _run("--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "CUDA is not available" in proc.stdout
    assert json.loads(out.read_text())["cuda_available"] is False


@pytest.mark.slow
def test_smoke_sections_run_and_record_results(tmp_path):
    out = tmp_path / "smoke.json"
    proc = _run("--smoke", "--only", "steps_smoke_image,cache_build_smoke_video,ddp", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    sections = res["sections"]
    assert set(sections) == {"steps_smoke_image", "cache_build_smoke_video", "ddp_gloo"}
    assert not [k for k, v in sections.items() if "error" in v], sections
    steps = sections["steps_smoke_image"]["bf16_channels_last"]
    assert {"plain", "online_kd", "cached_kd"} <= set(steps) and steps["cached_kd"]["ms"] > 0
    assert sections["cache_build_smoke_video"]["views_per_s"] > 0
    assert sections["ddp_gloo"]["world_size"] == 1 and sections["ddp_gloo"]["all_reduce_ok"]
    assert "steps_smoke_image" in proc.stdout  # the table


def test_a_failing_section_is_recorded_and_the_rest_still_runs(tmp_path, monkeypatch):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))

    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(gpu_check, "section_cache_build", boom)
    monkeypatch.setattr(gpu_check, "section_steps", lambda *a, **k: {"fp32_contiguous": {"skipped": "test"}})
    monkeypatch.setattr(gpu_check, "section_ddp", lambda *a, **k: {"skipped": "test"})
    monkeypatch.setattr(gpu_check, "section_compile", lambda *a, **k: {"skipped": "test"})
    out = tmp_path / "r.json"
    assert gpu_check.main(["--smoke", "--json", str(out)]) == 0
    sections = json.loads(out.read_text())["sections"]
    assert "out of memory" in sections["cache_build_smoke_image"]["error"]
    assert sections["steps_smoke_video"]["fp32_contiguous"] == {"skipped": "test"}
    assert "compile_smoke_video" in sections
