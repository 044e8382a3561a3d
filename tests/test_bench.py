"""`actdistill bench` on tiny models: documented keys, positive numbers, table and JSON output."""

from __future__ import annotations

import json

import pytest

from actdistill.analysis import bench as bench_mod
from actdistill.cli import main, parse


def test_bench_tiny_models_returns_documented_keys():
    res = bench_mod.bench(
        "convnext_demo", "pvt_v2_demo", size=32, batches=(1, 2), classes=3, steps=2, warmup=1, train_batch=2,
        onnx=False,
    )  # fmt: skip
    assert set(res) == {"setup", "inference", "speedup", "speedup_vs_eager_teacher", "train_step_ms", "train_ratios"}
    for role in ("teacher", "student"):
        for b in (1, 2):
            row = res["inference"]["eager"][role][b]
            assert row["latency_ms"] > 0 and row["throughput"] > 0 and row["peak_mem_mb"] >= 0
    assert all(v > 0 for v in res["speedup"]["eager"].values())
    assert res["speedup_vs_eager_teacher"]["eager"] == res["speedup"]["eager"]
    assert set(res["train_step_ms"]) == {"plain", "online_kd", "cached_kd", "naive_kd"}
    ms = res["train_step_ms"]
    assert res["train_ratios"]["cached_kd/plain"] == pytest.approx(ms["cached_kd"] / ms["plain"])
    assert all(v > 0 for v in [*res["train_step_ms"].values(), *res["train_ratios"].values()])
    assert "online_kd/plain" in bench_mod.format_table(res)


def test_bench_cli_onnx_and_json(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "bench.json"
    argv = ["bench", "--teacher", "pvt_v2_demo", "--student", "pvt_v2_demo", "--size", "32", "--batch", "1,2",
            "--classes", "3", "--steps", "2", "--warmup", "1", "--no-train", "--json", str(out)]  # fmt: skip
    args = parse(argv)
    assert args.handler == "actdistill.analysis.bench:cmd_bench" and args.batch == [1, 2]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert res["inference"]["onnx"]["student"]["2"]["throughput"] > 0
    assert "onnx" in capsys.readouterr().out


def test_bench_rejects_bad_batches():
    for bad in ("1,x", "0,2", ""):
        with pytest.raises(SystemExit):
            parse(["bench", "--teacher", "a", "--student", "b", "--batch", bad])


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/clear_refs"), reason="Linux peak-RSS reset")
def test_cpu_peak_memory_sees_a_forward_allocation_after_a_larger_one():
    import torch

    class Allocates(torch.nn.Module):
        def __init__(self, mb: int) -> None:
            super().__init__()
            self.n = mb * 2**20 // 4

        def forward(self, x):
            return torch.ones(self.n).add_(x.sum())  # 4-byte floats: `mb` MB, written so the pages are resident

    big = bench_mod.cpu_forward_peak_mb(Allocates(200), torch.zeros(1))
    small = bench_mod.cpu_forward_peak_mb(Allocates(60), torch.zeros(1))
    assert 190 <= big <= 260 and 55 <= small <= 100  # the 200 MB peak does not hide the later 60 MB one


@pytest.mark.slow
def test_bench_int8_rows_next_to_fp32(capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    res = bench_mod.bench(
        "resnet_demo", "pvt_v2_demo", size=32, batches=(1,), classes=3, steps=2, warmup=1, int8=True, train=False,
    )  # fmt: skip
    assert set(res["inference"]) == {"eager", "onnx", "onnx_int8"}
    for runtime in ("onnx", "onnx_int8"):
        for role in ("teacher", "student"):
            assert res["inference"][runtime][role][1]["latency_ms"] > 0
    eager_t = res["inference"]["eager"]["teacher"][1]["latency_ms"]
    int8_s = res["inference"]["onnx_int8"]["student"][1]["latency_ms"]
    assert res["speedup_vs_eager_teacher"]["onnx_int8"][1] == pytest.approx(eager_t / int8_s)
    assert {q["mode"] for q in res["setup"]["int8"].values()} == {"static"}
    assert res["setup"]["int8"]["teacher"]["kernels"]["int8"] > 0
    table = bench_mod.format_table(res)
    assert "onnx_int8" in table and "int8 teacher: static" in table
