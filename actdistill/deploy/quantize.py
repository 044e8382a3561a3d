"""int8 ONNX models for CPU deployment (`actdistill export --quantize int8`).

Static quantization (ONNX Runtime `quantize_static`, QDQ format, uint8 activations / int8 weights, per-channel
weights) calibrated on training samples read with the dataset's own loader and test-time normalisation. ONNX
Runtime fuses each `DequantizeLinear → Conv/MatMul/Gemm → QuantizeLinear` group into an int8 kernel
(QLinearConv, QLinearMatMul, QGemm), so activations stay int8 between those ops.

Static QDQ covers Conv, ConvTranspose, MatMul and Gemm (plus the element-wise and pooling ops between them); it
does not cover recurrent layers (LSTM/GRU) or Einsum. Before quantizing, `compute_profile` estimates the MACs of
each compute op from the graph's inferred shapes; when the ops static QDQ covers hold less than
`MIN_STATIC_COVERAGE` of them (or static quantization fails, or ONNX Runtime runs none of them as int8 kernels),
`mode="auto"` falls back to dynamic quantization (weights int8, activations quantized per batch at run time) and
says why. Dynamic quantization leaves Conv in fp32 by default: ONNX Runtime's ConvInteger kernel is slower than
its fp32 convolution on x86 (resnet_demo at 64²: 7.0 vs 1.8 ms per image, BENCHMARKS.md "int8 deployment").
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actdistill.errors import ActdistillError

__all__ = [
    "MODES",
    "calibration_inputs",
    "compare_onnx",
    "compute_profile",
    "head_nodes",
    "int8_kernels",
    "op_type_profile",
    "quantize_onnx",
]

log = logging.getLogger("actdistill")

MODES = ("auto", "static", "dynamic")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# Ops with weights or large inner products: where the MACs (and the int8 gains) are.
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN", "Einsum", "Attention")
STATIC_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")  # static QDQ → QLinearConv / QLinearMatMul / QGemm
DYNAMIC_OPS = ("MatMul", "LSTM", "Attention")  # dynamic → DynamicQuantizeMatMul / DynamicQuantizeLSTM / QAttention
DYNAMIC_CONV_OPS = ("Conv",)  # → ConvInteger: slower than fp32 Conv on x86, opt-in (`dynamic_conv=True`)
# Static QDQ is used when the ops it covers hold at least this share of the model's MACs.
MIN_STATIC_COVERAGE = 0.5
# Kernels in ONNX Runtime's optimised graph that run int8 arithmetic, and the fp32 compute kernels.
INT8_KERNELS = (
    "QLinearConv", "QLinearMatMul", "QGemm", "QLinearConvTranspose", "MatMulIntegerToFloat", "MatMulInteger",
    "ConvInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "QAttention", "NhwcQLinearConv",
)  # fmt: skip
FLOAT_KERNELS = (*COMPUTE_OPS, "FusedConv", "FusedMatMul", "FusedGemm", "NchwcConv")
# Calibration batches of at most this many input bytes: the calibration model holds all activations of a batch, so
# 64×224² video clips go one at a time while small images go 16 at a time.
CALIBRATION_BATCH_BYTES = 4 * 2**20


def _require_quantization():
    from actdistill.deploy.onnx_deps import require_onnx

    onnx, ort = require_onnx("int8 quantization")
    try:
        from onnxruntime import quantization
    except ImportError as exc:  # pragma: no cover - part of the onnxruntime wheel
        raise ActdistillError(f"int8 quantization needs onnxruntime.quantization ({exc})") from None
    return onnx, ort, quantization


# ---------------------------------------------------------------------------------------------------- calibration


def calibration_inputs(
    config: Any,
    mean: Sequence[float],
    std: Sequence[float],
    shape: Sequence[int],
    n: int,
    *,
    split: str = "train",
    seed: int = 0,
) -> np.ndarray:
    """`(n, *shape)` float32 inputs: `n` samples of the run's dataset split, evenly spread over it (every class in a
    class-ordered list), read with the dataset's own loader and the test transform (resize/centre crop, the model's
    mean/std), as the deployed model sees them. Video clips start where the training sampler puts them, seeded.

    `config` is the run's `Config` (from a checkpoint, with overrides such as `data.root=...` applied).
    """
    from actdistill.data.build import build_split, build_transforms

    if n < 1:
        raise ActdistillError(f"--calibration must be ≥ 1 samples; got {n}")
    data = config.data
    try:
        dataset, _ = build_split(data, split, None)
    except ActdistillError as exc:
        raise ActdistillError(
            f"static int8 quantization reads calibration samples from the run's {split} split, which failed: {exc}. "
            "Pass data.root=... (and other data.* overrides) where the dataset is, or --quant-mode dynamic"
        ) from None
    dataset.transform = build_transforms(data, tuple(mean), tuple(std))[1]
    total = len(dataset)
    if total == 0:
        raise ActdistillError(f"the {split} split of {data.name} at {data.root} is empty; cannot calibrate")
    picks = sorted({int(i * total / min(n, total)) for i in range(min(n, total))})
    out = []
    for index in picks:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1_000_003 + index)
            sample = dataset[index]
        if sample is None:  # broken video: logged by the dataset
            continue
        x = sample["input"]
        if x.dim() == len(shape) + 1:  # several views per sample: calibrate on the first
            x = x[0]
        if tuple(x.shape) != tuple(shape):
            raise ActdistillError(
                f"calibration sample {index} has shape {tuple(x.shape)} but the exported model takes {tuple(shape)}; "
                "do not override data.image_size / data.clip_len when quantizing"
            )
        out.append(x.float().numpy())
    if not out:
        raise ActdistillError(f"no readable calibration sample in the {split} split of {data.name} at {data.root}")
    return np.stack(out).astype(np.float32)


def _batches(inputs: np.ndarray, limit_bytes: int = CALIBRATION_BATCH_BYTES) -> list[np.ndarray]:
    size = max(1, min(16, limit_bytes // max(1, inputs[0].nbytes)))
    return [inputs[i : i + size] for i in range(0, len(inputs), size)]


class _Reader:
    """`onnxruntime.quantization.CalibrationDataReader` over fixed input batches."""

    def __init__(self, name: str, batches: list[np.ndarray]) -> None:
        self.name, self.batches, self.pos = name, batches, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.batches):
            return None
        self.pos += 1
        return {self.name: self.batches[self.pos - 1]}

    def rewind(self) -> None:
        self.pos = 0


# ---------------------------------------------------------------------------------------------------- graph analysis


def _shapes(model: Any) -> dict[str, list[int]]:
    """Static shape of every tensor ONNX shape inference knows (symbolic dims such as the batch count as 1)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference failures leave the shapes already stored
        inferred = model
    shapes: dict[str, list[int]] = {}
    graph = inferred.graph
    for vi in (*graph.input, *graph.value_info, *graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tt.shape.dim]
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _node_macs(node: Any, shapes: dict[str, list[int]]) -> float | None:
    """Multiply-accumulates of one compute node for a batch of 1, or None when its shapes are unknown."""

    def shape(i: int, outputs: bool = False) -> list[int] | None:
        names = node.output if outputs else node.input
        return shapes.get(names[i]) if i < len(names) and names[i] else None

    op = node.op_type
    w, out, a = shape(1), shape(0, outputs=True), shape(0)
    if op == "Conv" and w and out:
        return math.prod(out[1:]) * math.prod(w[1:])
    if op == "ConvTranspose" and w and a:
        return math.prod(a[1:]) * math.prod(w[1:])
    if op == "MatMul" and a and out:
        return math.prod(out) * a[-1]
    if op == "Gemm" and a and out:
        trans_a = any(att.name == "transA" and att.i for att in node.attribute)
        return math.prod(out) * (a[0] if trans_a else a[-1])
    if op in ("LSTM", "GRU", "RNN") and a and w:
        r = shape(2)
        layout = next((att.i for att in node.attribute if att.name == "layout"), 0)
        steps = a[1] if layout else a[0]
        return steps * (math.prod(w) + (math.prod(r) if r else 0))
    return None


def compute_profile(model: Any) -> dict[str, Any]:
    """MACs per compute op type of an ONNX model (path or ModelProto) for a batch of 1, and the share static and
    dynamic quantization cover: `{"macs": {op: MACs}, "nodes": {op: count}, "unknown": [ops without shapes],
    "static_coverage", "dynamic_coverage"}` (coverages by MACs; by node count when no shape is known)."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    shapes = _shapes(model)
    macs: dict[str, float] = defaultdict(float)
    nodes: Counter[str] = Counter()
    unknown: list[str] = []
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        nodes[node.op_type] += 1
        value = _node_macs(node, shapes)
        if value is None:
            unknown.append(node.op_type)
        else:
            macs[node.op_type] += value
    weights = dict(macs) if sum(macs.values()) > 0 else {k: float(v) for k, v in nodes.items()}
    total = sum(weights.values())

    def share(ops: Iterable[str]) -> float:
        return sum(weights.get(op, 0.0) for op in ops) / total if total else 0.0

    return {
        "macs": dict(macs),
        "nodes": dict(nodes),
        "unknown": sorted(set(unknown)),
        "static_coverage": share(STATIC_OPS),
        "dynamic_coverage": share(DYNAMIC_OPS),
    }


def _session(path: str | Path, threads: int = 1, optimized: str | Path | None = None, level: str = "all"):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.log_severity_level = 3  # no "hardware specific optimizations" warnings when saving the optimised graph
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    if level == "extended":
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def int8_kernels(path: str | Path) -> dict[str, Any]:
    """Compute kernels of the graph ONNX Runtime actually runs (after its QDQ fusions): `{"int8": n, "float": m,
    "ops": {op_type: count}}`. A QDQ model whose groups were not fused runs its Conv/MatMul in fp32 between
    Dequantize/Quantize nodes: slower than the plain fp32 model."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="actdistill-q-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        _session(path, optimized=optimized, level="extended")  # layout-neutral fusions only, as a portable check
        ops = Counter(n.op_type for n in onnx.load(str(optimized), load_external_data=False).graph.node)
    int8 = sum(ops[k] for k in INT8_KERNELS)
    flt = sum(ops[k] for k in FLOAT_KERNELS)
    return {"int8": int8, "float": flt, "ops": {k: ops[k] for k in (*INT8_KERNELS, *FLOAT_KERNELS) if ops[k]}}


# ---------------------------------------------------------------------------------------------------- quantization


def _preprocess(src: Path, dst: Path) -> Path:
    """ONNX Runtime's recommended pre-processing (symbolic shape inference + graph optimisation), else the model."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst))
        return dst
    except Exception as exc:  # noqa: BLE001 - symbolic shape inference fails on some graphs; retry without it
        log.debug("quant_pre_process failed (%s); retrying without symbolic shape inference", exc)
    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return dst
    except Exception:  # noqa: BLE001
        return src


def _fmt_share(profile: dict[str, Any]) -> str:
    weights = profile["macs"] or profile["nodes"]
    total = sum(weights.values()) or 1.0
    top = sorted(weights.items(), key=lambda kv: -kv[1])[:4]
    return ", ".join(f"{op} {100 * v / total:.0f}%" for op, v in top)


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray | None = None,
    *,
    mode: str = "auto",
    per_channel: bool = True,
    method: str = "minmax",
    dynamic_conv: bool = False,
    min_static_coverage: float = MIN_STATIC_COVERAGE,
) -> dict[str, Any]:
    """Quantize an fp32 ONNX model to int8 at `out_path`; returns a summary.

    `calibration`: `(N, *input_shape)` float32 inputs (`calibration_inputs`); needed by static quantization.
    `mode`: "static" (QDQ, error when it cannot apply), "dynamic", or "auto" (static unless the ops it covers hold
    under `min_static_coverage` of the MACs, it fails, or no int8 kernel results; then dynamic, with the reason).
    Summary keys: `path`, `mode`, `reason` (why dynamic, else ""), `per_channel`, `calibration` ({samples, method}),
    `coverage` (`compute_profile` of the fp32 model), `kernels` (`int8_kernels` of the result), `size_mb`
    ({fp32, int8}).
    """
    onnx, _, q = _require_quantization()
    if mode not in MODES:
        raise ActdistillError(f"quantization mode must be one of {', '.join(MODES)}; got {mode!r}")
    if method not in CALIBRATION_METHODS:
        raise ActdistillError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}; got {method!r}")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="actdistill-q-") as tmp:
        pre = _preprocess(fp32_path, Path(tmp) / "pre.onnx")
        profile = compute_profile(pre)
        if not profile["nodes"]:
            raise ActdistillError(f"{fp32_path}: no Conv/MatMul/Gemm/LSTM in the graph; nothing to quantize to int8")
        reason = ""
        chosen = mode
        if mode == "auto":
            if profile["static_coverage"] < min_static_coverage:
                reason = (
                    f"static QDQ covers only {100 * profile['static_coverage']:.0f}% of the MACs "
                    f"({_fmt_share(profile)}; QDQ covers {'/'.join(STATIC_OPS)})"
                )
            elif calibration is None or len(calibration) == 0:
                reason = "no calibration samples"
            chosen = "dynamic" if reason else "static"
        elif mode == "static" and profile["static_coverage"] == 0:
            raise ActdistillError(
                f"{fp32_path}: static QDQ covers none of the model's compute ({_fmt_share(profile)}); "
                "use --quant-mode dynamic or auto"
            )
        kernels: dict[str, Any] = {}
        if chosen == "static":
            if calibration is None or len(calibration) == 0:
                raise ActdistillError("static int8 quantization needs calibration samples (--calibration N ≥ 1)")
            try:
                kernels = _quantize_static(q, onnx, pre, out_path, calibration, per_channel, method)
            except ActdistillError:
                raise
            except Exception as exc:  # noqa: BLE001 - ONNX Runtime's quantizer raises many types
                if mode == "static":
                    raise ActdistillError(
                        f"static int8 quantization of {fp32_path} failed ({type(exc).__name__}: {exc}); "
                        "try --quant-mode dynamic"
                    ) from None
                reason = f"static quantization failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
            else:
                if kernels["int8"] == 0 and mode == "auto":
                    reason = "ONNX Runtime fused no QDQ group into an int8 kernel (the model would run fp32 + Q/DQ)"
            chosen = "dynamic" if reason else "static"
        if chosen == "dynamic":
            ops = DYNAMIC_OPS + (DYNAMIC_CONV_OPS if dynamic_conv else ())
            if not any(op in profile["nodes"] for op in ops):
                raise ActdistillError(
                    f"{fp32_path}: {reason or 'dynamic quantization requested'}, and dynamic quantization covers "
                    f"none of its compute either ({_fmt_share(profile)}; dynamic covers {'/'.join(ops)})"
                )
            q.quantize_dynamic(
                str(pre), str(out_path), op_types_to_quantize=list(ops), per_channel=per_channel,
                weight_type=q.QuantType.QInt8,
            )  # fmt: skip
            kernels = int8_kernels(out_path)
            if reason:
                log.warning("int8: %s; using dynamic quantization instead", reason)
    return {
        "path": str(out_path),
        "mode": chosen,
        "reason": reason,
        "per_channel": per_channel,
        "calibration": {"samples": 0 if calibration is None else len(calibration), "method": method},
        "coverage": profile,
        "kernels": kernels,
        "size_mb": {"fp32": fp32_path.stat().st_size / 2**20, "int8": out_path.stat().st_size / 2**20},
    }


class _DropAxisWarnings(logging.Filter):
    """ONNX Runtime's quantizer logs one root-logger warning per 1-D weight (LayerNorm/bias scales) when
    per-channel is on ("Axis 1 is out-of-range ..."); those weights get one scale per tensor, which is right."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is out-of-range for weight" not in record.getMessage()


def head_nodes(model: Any, depth: int = 8) -> list[str]:
    """Names of the nodes from the last compute op (the classifier) to the graph outputs.

    Static quantization would also quantize the logits to uint8 with the range seen in calibration: a test sample
    whose logits leave that range is clipped (seen on a 12-image test split: one sample off by 20 % of the logit
    range, all others ≤ 1 %). These few nodes stay fp32; their cost is one small Gemm.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    names: list[str] = []
    for output in model.graph.output:
        node, steps = producer.get(output.name), 0
        while node is not None and steps < depth:
            names.append(node.name)
            if node.op_type in COMPUTE_OPS:
                break
            node = next((producer[i] for i in node.input if i in producer), None)
            steps += 1
    return [n for n in dict.fromkeys(names) if n]


def _quantize_static(q, onnx, pre: Path, out_path: Path, calibration: np.ndarray, per_channel: bool, method: str):
    proto = onnx.load(str(pre), load_external_data=False)
    name, head = proto.graph.input[0].name, head_nodes(proto)
    calib_method = {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }[method]
    # MinMax keeps only per-tensor ReduceMin/ReduceMax values per batch, so memory stays one batch of activations.
    # (Do not set CalibMaxIntermediateOutputs: onnxruntime 1.32 drops, not merges, the batches it clears.)
    quiet = _DropAxisWarnings()
    logging.getLogger().addFilter(quiet)
    try:
        _run_static(q, pre, out_path, _Reader(name, _batches(calibration)), per_channel, calib_method, head)
    finally:
        logging.getLogger().removeFilter(quiet)
    return int8_kernels(out_path)


def _run_static(
    q, pre: Path, out_path: Path, reader: _Reader, per_channel: bool, calib_method: Any, exclude: list[str]
) -> None:
    q.quantize_static(
        str(pre),
        str(out_path),
        reader,
        quant_format=q.QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=q.QuantType.QUInt8,  # u8 activations × s8 weights: the VNNI / AVX2 fast path on x86
        weight_type=q.QuantType.QInt8,
        calibrate_method=calib_method,
        nodes_to_exclude=exclude,
    )


# ---------------------------------------------------------------------------------------------------- checks


def compare_onnx(reference: str | Path, candidate: str | Path, inputs: np.ndarray, batch: int = 8) -> dict[str, float]:
    """Logits of two ONNX models on the same inputs: `{"top1_agreement", "max_abs_diff", "mean_abs_diff",
    "logit_range", "samples"}` (agreement as a fraction; range = max − min of the reference logits)."""
    sessions = [_session(p) for p in (reference, candidate)]
    name = sessions[0].get_inputs()[0].name
    outs: list[list[np.ndarray]] = [[], []]
    for i in range(0, len(inputs), batch):
        for k, s in enumerate(sessions):
            outs[k].append(s.run(None, {name: inputs[i : i + batch]})[0])
    ref, got = (np.concatenate(o) for o in outs)
    diff = np.abs(ref - got)
    return {
        "top1_agreement": float((ref.argmax(-1) == got.argmax(-1)).mean()),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "logit_range": float(ref.max() - ref.min()),
        "samples": len(ref),
    }


def op_type_profile(path: str | Path, x: np.ndarray, runs: int = 10, threads: int = 1) -> dict[str, float]:
    """Mean ms per run spent in each op type (ONNX Runtime's profiler, node events of `runs` runs after one warm-up),
    most expensive first; "_total" is the sum of all nodes."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="actdistill-prof-") as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.log_severity_level = 3
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(runs + 1):
            session.run(None, feed)
        trace = json.loads(Path(session.end_profiling()).read_text())
    nodes = [e for e in trace if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]
    events = nodes[len(nodes) // (runs + 1) :]  # sequential executor: the warm-up run's events come first
    per_op: dict[str, float] = defaultdict(float)
    for ev in events:
        per_op[ev["args"]["op_name"]] += ev["dur"] / 1000 / runs
    ranked = dict(sorted(per_op.items(), key=lambda kv: -kv[1]))
    ranked["_total"] = sum(per_op.values())
    return ranked
