"""`actdistill` command line: a thin layer over library functions (each is callable from Python too).

Parsing imports nothing heavy: every subcommand names its handler as `"module:function"`, imported only when the
command runs, so `actdistill --help`, any `--help` and `actdistill list` answer at once (without torch). Overrides
(`section.key=value`) are accepted anywhere on the command line, before or after flags.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from actdistill import __version__
from actdistill.errors import ActdistillError

EPILOG_TRAIN = """examples:
  actdistill train configs/image/stanford40_pvt_v2_kd.yaml data.root=/data/Stanford40
  actdistill train configs/demo/kd.yaml train.epochs=5 optim.lr=0.01 method.temperature=4
  actdistill train runs/x/config.yaml --resume train.epochs=20
  torchrun --nproc-per-node 4 -m actdistill train configs/image/stanford40_pvt_v2_kd.yaml  (docs/distributed.md)"""


# --- handlers of the core commands (the others live beside their library code) ---------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from actdistill.demo import run_demo

    out = run_demo(args.out, seed=args.seed, full=args.full, workers=args.workers)
    html = Path(out["report"]).with_suffix(".html")
    print(f"\nreport: {out['report']} and {html}  ({out['wall_time_s'] / 60:.1f} min)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from actdistill.config import load_config, split_recipe_args
    from actdistill.engine.fit import fit
    from actdistill.engine.loop import TrainingInterrupted

    cfg = load_config(*split_recipe_args(args.config, args.overrides))
    try:
        results = fit(cfg, resume=args.resume, overwrite=args.overwrite)
    except TrainingInterrupted as stop:
        if os.environ.get("RANK", "0") == "0":  # one message per job, not one per process
            print(f"actdistill: {stop}", file=sys.stderr)
        return 128 + stop.signum
    if os.environ.get("RANK", "0") == "0":
        print(f"{cfg.name}: {summary_line(results)} → {cfg.train.out_dir}")
    return 0


def summary_line(results: dict[str, Any]) -> str:
    """`last epoch top1 51.00% mAP 60.00% (best mAP 62.00% at epoch 9, chosen on val)` for any task's results."""
    shown = ("top1", "mAP", "pretext_acc", "pretext_loss", "average_map")
    last = " ".join(f"{k} {_pct(k, v)}" for k, v in results["last"].items() if k in shown)
    best, split = results.get("best") or {}, results.get("selected_on", "none")
    if best.get("value") is None or split == "none":
        return f"last epoch {last} (no model selection: no validation split)"
    note = " — TEST split, optimistic" if split == "test" else ""
    metric = results.get("best_metric") or next(iter(results["last"]))
    chosen = f"at epoch {best['epoch']}, chosen on {split}{note}"
    return f"last epoch {last} (best {metric} {_pct(metric, best['value'])} {chosen})"


def _pct(key: str, value: float) -> str:
    return f"{value:.4f}" if key.endswith("loss") else f"{100 * value:.2f}%"


def cmd_eval(args: argparse.Namespace) -> int:
    from actdistill.engine.evaluate import evaluate_checkpoint, evaluate_fused

    if Path(args.checkpoint).suffix == ".onnx":
        if args.fuse_flow:
            raise ActdistillError("--fuse-flow takes checkpoints (.pt), not exported .onnx models")
        from actdistill.deploy.onnx_eval import evaluate_onnx

        report = evaluate_onnx(args.checkpoint, args.overrides)
    elif args.fuse_flow:
        report = evaluate_fused(
            args.checkpoint, args.fuse_flow, args.overrides, mode=args.fusion, rgb_weight=args.rgb_weight
        )
    else:
        report = evaluate_checkpoint(args.checkpoint, args.overrides)
    summary = {k: v for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(f"full report: {args.out}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from actdistill.registry import read_catalog

    if args.what == "models" and args.sizes:
        from actdistill.models.sizes import print_model_sizes

        print_model_sizes(args.models, args.input, args.num_classes)
        return 0
    for name, meta in read_catalog()[args.what].items():
        desc = "; ".join(f"{k}={v}" for k, v in meta.items() if v not in (None, "", []))
        print(f"{name:<26} {desc}")
    if args.what == "models":
        print("\nAny timm model name also works (e.g. resnet50); see `timm.list_models()`.")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    if args.layout != "stanford40" and args.kind != "image":
        raise ActdistillError(f"data synth: --layout {args.layout} applies to --kind image only")
    if args.kind == "detection":
        from actdistill.detect.synthetic import write_synthetic_detection

        root = write_synthetic_detection(args.out, seed=args.seed, progress=True)
        print(f"wrote a synthetic THUMOS14-layout detection dataset to {root} (docs/detection.md)")
        return 0
    if args.kind == "video":
        from actdistill.data.synthetic_video import write_synthetic_ucf101

        per_class = args.train_per_class or 16
        root = write_synthetic_ucf101(
            args.out, num_classes=args.classes or 8, videos_per_class=per_class, groups=min(8, per_class),
            frames=args.frames, size=args.size, seed=args.seed, workers=args.workers, progress=True,
        )  # fmt: skip
        print(f"wrote a synthetic UCF101-layout video dataset to {root}; train with data.name=ucf101 data.root={root}")
        return 0
    from actdistill.data.synthetic_image import write_synthetic_stanford40

    root = write_synthetic_stanford40(
        args.out,
        num_classes=args.classes or 10,
        train_per_class=args.train_per_class or 60,
        test_per_class=args.test_per_class,
        image_size=args.size,
        seed=args.seed,
        workers=args.workers,
        layout=args.layout,
    )
    name = "image_folder" if args.layout == "image_folder" else "stanford40"
    print(f"wrote a synthetic {name}-layout dataset to {root}; train with data.name={name} data.root={root}")
    return 0


def cmd_data_index(args: argparse.Namespace) -> int:
    """Probe every listed video once (frame counts, fps) and cache the manifest that training then reads."""
    from actdistill.config import load_config, split_recipe_args
    from actdistill.data.build import build_split
    from actdistill.registry import DATASETS

    cfg = load_config(*split_recipe_args(args.config, args.overrides))
    if DATASETS.meta(cfg.data.name).get("task") != "video":
        raise ActdistillError(f"data index builds video manifests; data.name={cfg.data.name} is not a video dataset")
    for split in ("train", "test"):
        dataset, classes = build_split(cfg.data, split, None)
        print(f"{cfg.data.name} {split}: {len(dataset)} videos indexed, {len(dataset.skipped)} skipped, "  # type: ignore[arg-type,attr-defined]
              f"{len(classes)} classes")  # fmt: skip
    return 0


def cmd_data_flow(args: argparse.Namespace) -> int:
    from actdistill.data.flow import extract_flow_tree

    counts = extract_flow_tree(args.videos, args.out, method=args.method, bound=args.bound, workers=args.workers)
    print(f"optical flow into {args.out}: {counts['done']} done, {counts['skipped']} already there, "
          f"{counts['failed']} failed; train with data.modality=flow data.flow_root={args.out}")  # fmt: skip
    return 1 if counts["failed"] and not counts["done"] else 0


def cmd_cache_build(args: argparse.Namespace) -> int:
    from actdistill.apps.cache_build import build_teacher_cache
    from actdistill.config import load_config, split_recipe_args

    cfg = load_config(*split_recipe_args(args.config, args.overrides))
    out = args.out or cfg.teacher.cache
    if not out:
        raise ActdistillError("cache build: give --out PATH (or set teacher.cache in the recipe)")
    path = build_teacher_cache(
        cfg, out, epochs=args.epochs, topk=args.topk, batch_size=args.batch_size, features=args.features,
        maps_dtype=args.maps_dtype, overwrite=args.overwrite,
    )  # fmt: skip
    print(f"wrote {path}; train with the same recipe and overrides plus teacher.cache={path}")
    return 0


def cmd_cache_info(args: argparse.Namespace) -> int:
    from actdistill.apps.cache_build import cache_info

    print(json.dumps(cache_info(args.path), indent=1))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from actdistill.apps.compare import compare, load_comparison

    methods = [m for m in args.methods or [] if "=" not in m]
    overrides = [*args.overrides, *(m for m in args.methods or [] if "=" in m)]  # overrides typed after --methods
    spec = load_comparison(args.config, overrides, out_dir=args.out_dir, quick=args.quick)
    if args.seeds:
        spec["seeds"] = args.seeds
    report = compare(spec, only=methods or None)
    print(report.read_text())
    print(f"report: {report}")
    return 0


# --- the parser --------------------------------------------------------------------------------------------------


def _handler(p: argparse.ArgumentParser, target: str) -> None:
    """The subcommand runs `module:function` (imported when the command runs, not when it is parsed)."""
    p.set_defaults(handler=target)


def _recipe_args(p: argparse.ArgumentParser, what: str = "recipe YAML (see configs/)") -> None:
    p.add_argument("config", nargs="?", help=f"{what}; optional when overrides say everything")
    p.add_argument(
        "overrides", nargs="*", help="section.key=value overrides (anywhere on the line), e.g. optim.lr=0.01"
    )


def _add_core(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="paper 1 end to end on built-in synthetic data (teacher, student, student+KD, report)",
        description="Generate the synthetic Stanford-40-layout dataset, train a CNN teacher and a small PVT-v2 student "
        "without and with KD, and write report.md / report.html with a Table-I-style table and curves.",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo); its runs are replaced")
    p.add_argument("--seed", type=int, default=0, help="seed for data generation and training (default: 0)")
    p.add_argument("--full", action="store_true", help="more data and paper-length schedules (slower)")
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="runs trained at once, each in a one-thread process (default: 2; 1 = one after another in this process)",
    )
    _handler(p, "actdistill.cli:cmd_demo")

    p = sub.add_parser(
        "train",
        help="train a model (with or without a teacher) from a YAML recipe: any task, any method",
        description="Train from a recipe; `section.key=value` arguments override the recipe.",
        epilog=EPILOG_TRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _recipe_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in train.out_dir from checkpoints/last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in train.out_dir")
    _handler(p, "actdistill.cli:cmd_train")

    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint or an exported .onnx model on the test split (the network the run evaluated)",
        description="Evaluate a run's checkpoint (best.pt / last.pt) or a model written by `actdistill export` "
        "(fp32 or int8, with ONNX Runtime) on the test split of the dataset it was trained on; override e.g. "
        "data.root=... to point at another copy.",
    )
    p.add_argument("checkpoint", help="checkpoints/best.pt or last.pt, or an exported .onnx model")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides (e.g. data.root=/data/Stanford40)")
    p.add_argument("--out", help="write the full JSON report (per-class AP, confusion matrix) here")
    p.add_argument(
        "--fuse-flow", metavar="FLOW_CHECKPOINT", help="video: fuse with this flow run's scores (two-stream)"
    )
    p.add_argument(
        "--fusion", default=None, choices=["softmax", "logits", "p2"],
        help="two-stream fusion: mean of softmax, mean of logits, or paper 2's rule (default: the RGB run's "
        "eval.fusion)",
    )  # fmt: skip
    p.add_argument("--rgb-weight", type=float, default=0.5, help="two-stream: weight of the RGB stream (default 0.5)")
    _handler(p, "actdistill.cli:cmd_eval")

    p = sub.add_parser("list", help="list registered models, methods or datasets")
    p.add_argument("what", choices=["models", "methods", "datasets"])
    p.add_argument("--sizes", action="store_true", help="models: parameters and GMACs at each model's standard input")
    p.add_argument("--input", type=int, nargs="+", help="with --sizes: input shape without batch, e.g. 3 16 112 112")
    p.add_argument("--num-classes", type=int, default=101, help="with --sizes: classifier size (default: 101)")
    p.add_argument("--models", nargs="+", help="with --sizes: only these models")
    _handler(p, "actdistill.cli:cmd_list")


def _add_data(sub: Any) -> None:
    p = sub.add_parser("data", help="dataset tools: synthetic data, video manifests, optical flow")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    s = data_sub.add_parser(
        "synth",
        help="write a learnable synthetic action dataset in a real dataset layout",
        description="--kind image writes stick-figure actions in the Stanford 40 layout (JPEGImages/, ImageSplits/, "
        "XMLAnnotations/; docs/synthetic_data.md); --kind video writes moving figures in the UCF101 layout, with "
        "class pairs told apart only by motion direction or speed (docs/video_data.md); --kind detection writes "
        "untrimmed videos with THUMOS14-style annotations (docs/detection.md).",
    )
    s.add_argument("--kind", default="image", choices=["image", "video", "detection"], help="layout (default: image)")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--classes", type=int, default=0, help="number of action classes (default: 10 image, 8 video)")
    s.add_argument("--train-per-class", type=int, default=0, help="images (image, 60) or videos (video, 16) per class")
    s.add_argument("--frames", type=int, default=32, help="video: frames per video (default: 32)")
    s.add_argument("--test-per-class", type=int, default=30, help="test images per class (default: 30)")
    s.add_argument("--size", type=int, default=64, help="image side in pixels (default: 64)")
    s.add_argument("--seed", type=int, default=0, help="seed; the same seed writes the same bytes (default: 0)")
    s.add_argument("--workers", type=int, default=1, help="processes used to draw images (default: 1)")
    s.add_argument(
        "--layout", default="stanford40", choices=["stanford40", "image_folder"],
        help="--kind image: stanford40 (JPEGImages/, ImageSplits/, XMLAnnotations/) or image_folder (train/<class>/, "
        "val/<class>/; data.name=image_folder)",
    )  # fmt: skip
    _handler(s, "actdistill.cli:cmd_data_synth")
    s = data_sub.add_parser(
        "index",
        help="probe a video dataset once (frame counts, fps) and cache its manifest, in parallel",
        description="Build the cached manifest of the recipe's video dataset (train and test splits) so that training "
        "never probes videos at start-up; data.num_workers processes probe in parallel.",
    )
    _recipe_args(s, "recipe YAML")
    _handler(s, "actdistill.cli:cmd_data_index")
    s = data_sub.add_parser(
        "flow",
        help="extract TV-L1 optical flow into the two-stream frame layout (resumable)",
        description="Writes flow_x_%05d.jpg / flow_y_%05d.jpg per video (OpenCV contrib: pip install "
        "'actdistill[flow]'); videos already done are skipped.",
    )
    s.add_argument("videos", help="video root (class folders of videos or img_%%05d.jpg frame folders)")
    s.add_argument("out", help="flow root (mirrors the video tree)")
    s.add_argument("--method", default="tvl1", choices=["tvl1", "farneback"], help="flow algorithm (default: tvl1)")
    s.add_argument("--bound", type=float, default=20.0, help="clip |flow| at this many pixels before quantising")
    s.add_argument("--workers", type=int, default=1, help="processes (default: 1)")
    _handler(s, "actdistill.cli:cmd_data_flow")


def _add_analysis(sub: Any) -> None:
    p = sub.add_parser(
        "analyze",
        help="teacher–student CKA / cosine / Euclidean per stage, prediction agreement and calibration",
        description="Rebuild the teacher and each student from their checkpoints, run them on the same test samples "
        "and write summary.json, analysis.md and heatmap / reliability PNGs.",
    )
    p.add_argument("--teacher", required=True, help="teacher checkpoint (a run's checkpoints/last.pt)")
    p.add_argument("--student", required=True, action="append", help="student checkpoint; repeat for several")
    p.add_argument("--data", nargs="*", default=[], help="section.key=value overrides, e.g. data.root=/data/S40")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-samples", type=int, default=512, help="test samples used, evenly spaced (default: 512)")
    p.add_argument("--align-size", type=int, default=7, help="max cells per axis for map-aligned CKA (default: 7)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto (default: cpu)")
    _handler(p, "actdistill.analysis.analyze:cmd_analyze")

    p = sub.add_parser(
        "report",
        help="aggregate run folders into report.md and a self-contained report.html",
        description="Table-I-style comparison (mean ± std over seeds, gain over the no-KD run), training curves, "
        "confusion matrix and per-class AP changes from the runs' results.json files, with published numbers for "
        "the same dataset in their own section.",
    )
    p.add_argument("run_dirs", nargs="+", help="run folders (each holding results.json)")
    p.add_argument("--out", default="report", help="output folder (default: report)")
    _handler(p, "actdistill.analysis.html_report:cmd_report")

    p = sub.add_parser(
        "motion-pairs",
        help="accuracy on the synthetic video set's motion-only class pairs (2-way, per pair)",
        description="A per-frame model is at chance within each motion-only pair of the synthetic video set; the "
        "2-way accuracy on those pairs measures what a model learned about motion.",
    )
    p.add_argument("runs", nargs="+", help="run folders (or checkpoint files); section.key=value items are overrides")
    p.add_argument("--checkpoint", default="last", choices=["last", "best"], help="which checkpoint (default: last)")
    p.add_argument("--json", help="also write the results as JSON here")
    _handler(p, "actdistill.analysis.motion_pairs:cmd_motion_pairs")


def _add_deploy(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint's predictor to ONNX (dynamic batch, metadata, verified with ONNX Runtime)",
        description="Rebuild what the run evaluated from its checkpoint (never the teacher or adapters), export it to "
        "ONNX with a dynamic batch axis and the run's input size, store class names / mean / std / input size as "
        "metadata, and check ONNX Runtime against PyTorch. Needs: pip install 'actdistill[onnx]'.",
    )
    p.add_argument("checkpoint", help="a run's checkpoints/best.pt or last.pt")
    p.add_argument(
        "overrides", nargs="*", help="data.key=value overrides for the calibration data (e.g. data.root=/data/S40)"
    )
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format (default: onnx)")
    p.add_argument("--out", help="output file (default: the checkpoint path with .onnx)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default: 18, the exporter's native one)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the verification input (default: 1)")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch (and int8) checks")
    p.add_argument(
        "--quantize", choices=["int8"],
        help="also write an int8 model (ONNX Runtime quantization); --out names it, the fp32 model is kept beside it",
    )  # fmt: skip
    p.add_argument(
        "--calibration", type=int, default=64, metavar="N",
        help="int8: training samples (test transform) that calibrate the activation ranges (default: 64)",
    )  # fmt: skip
    p.add_argument(
        "--quant-mode", default="auto", choices=["auto", "static", "dynamic"],
        help="int8: static QDQ, dynamic, or auto (static unless its ops miss most of the MACs; default)",
    )  # fmt: skip
    p.add_argument("--per-tensor", action="store_true", help="int8: one weight scale per tensor (default: per channel)")
    p.add_argument(
        "--calibration-method", default="minmax", choices=["minmax", "entropy", "percentile"],
        help="int8 static: activation-range estimator (default: minmax)",
    )  # fmt: skip
    _handler(p, "actdistill.deploy.export:cmd_export")

    p = sub.add_parser(
        "predict",
        help="top-k actions for images or videos, from a checkpoint or an exported ONNX model",
        description="Classify image files (jpg/png) or videos (files or frame folders; softmax averaged over "
        "--num-clips evenly spaced clips) with a run's checkpoint or a model written by `actdistill export`.",
    )
    p.add_argument("model", help="checkpoint (.pt) or exported .onnx file")
    p.add_argument("files", nargs="+", help="image or video files")
    p.add_argument("--top-k", type=int, default=5, help="classes shown per file (default: 5)")
    p.add_argument("--num-clips", type=int, default=3, help="video: clips averaged per video (default: 3)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    _handler(p, "actdistill.deploy.predict:cmd_predict")

    p = sub.add_parser(
        "bench",
        help="teacher vs student latency, throughput, memory (PyTorch, ONNX Runtime) and KD training-step cost",
        description="Time teacher and student (checkpoints, or model names with random weights) at each batch size "
        "in PyTorch eager and ONNX Runtime, and compare a plain, an online-KD and a naive KD training step.",
    )
    p.add_argument("--teacher", required=True, help="teacher checkpoint or model name (e.g. convnext_demo)")
    p.add_argument("--student", required=True, help="student checkpoint or model name (e.g. pvt_v2_demo)")
    p.add_argument("--size", type=int, default=224, help="input side in pixels (default: 224)")
    p.add_argument("--batch", type=_batch_sizes, default=[1, 32], help="comma-separated batch sizes (default: 1,32)")
    p.add_argument("--clip", type=int, default=16, help="video models: frames per clip (default: 16)")
    p.add_argument("--classes", type=int, default=40, help="classes of models built by name (default: 40)")
    p.add_argument("--steps", type=int, default=10, help="timed runs per measurement (default: 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default: 3)")
    p.add_argument("--train-batch", type=int, default=8, help="batch of the training-step comparison (default: 8)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto (default: cpu)")
    p.add_argument("--precision", default="fp32", help="plain/online-KD step precision: fp32|bf16|auto (default fp32)")
    p.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
    p.add_argument(
        "--int8", action="store_true",
        help="add ONNX Runtime int8 rows (static QDQ, random calibration: fine for latency, not for accuracy)",
    )  # fmt: skip
    p.add_argument("--no-train", action="store_true", help="skip the training-step comparison")
    p.add_argument("--json", help="also write the results as JSON here")
    _handler(p, "actdistill.analysis.bench:cmd_bench")


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes must be integers like 1,32; got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive; got {text!r}")
    return sizes


def _add_apps(sub: Any) -> None:
    p = sub.add_parser("cache", help="teacher-output cache: build once, then distil without running the teacher")
    csub = p.add_subparsers(dest="cache_command", required=True, metavar="CACHE_COMMAND")
    b = csub.add_parser("build", help="run the recipe's teacher over E epochs of training views and store its logits")
    _recipe_args(b, "recipe YAML (the same one you will train with)")
    b.add_argument("--out", default="", help="cache folder (new, or a cache with --overwrite; default: teacher.cache)")
    b.add_argument("--epochs", type=int, default=10, help="epochs of augmented views to store (default: 10)")
    b.add_argument("--topk", type=int, default=0, help="logits kept per view; 0 = all classes, exact (default: 0)")
    b.add_argument("--batch-size", type=int, default=0, help="teacher batch (default: data.batch_size)")
    b.add_argument("--features", help="also store this teacher layer's pooled output, e.g. -1 (for rkd, crd)")
    b.add_argument(
        "--maps-dtype", default="float16", choices=["float16", "int8"],
        help="storage of the teacher maps a feature method reads: float16 (default) or int8 + per-channel scales",
    )  # fmt: skip
    b.add_argument("--overwrite", action="store_true", help="replace an existing cache at --out")
    _handler(b, "actdistill.cli:cmd_cache_build")
    i = csub.add_parser("info", help="print a cache's settings and size (and verify its files)")
    i.add_argument("path")
    _handler(i, "actdistill.cli:cmd_cache_info")

    p = sub.add_parser(
        "compare",
        help="train one student per method with identical settings and write a Table-1-style report",
        description="Run a comparison file (e.g. configs/video/table1.yaml): prepare the teachers, train every "
        "method for every seed, write report.md, summary.json and curves. Finished runs are reused. Overrides: "
        "section.key=value (every run), prepare.section.key=value (prepared runs), methods.section.key=value "
        "(method rows).",
    )
    p.add_argument("config", help="comparison YAML (configs/video/table1.yaml)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides (see above)")
    p.add_argument("--seeds", type=int, nargs="+", help="override the file's seeds")
    p.add_argument("--methods", nargs="+", help="only these method rows (labels)")
    p.add_argument("--out-dir", help="override the file's out_dir (everything it writes goes there)")
    p.add_argument("--quick", action="store_true", help="a first try: 1 epoch, a data subset, 1 seed (<out_dir>-quick)")
    _handler(p, "actdistill.cli:cmd_compare")

    p = sub.add_parser(
        "ssl-grid",
        help="paper 3: PCL baselines, same- and cross-architecture PCL+KD students, convergence report",
        description="Run a grid file (configs/ssl/ucf101_grid.yaml, configs/ssl/synth_grid.yaml): train the "
        "baselines, then every teacher × student PCL+KD run, each through `actdistill train`'s engine; write "
        "report.md, summary.json and curves. Finished runs are reused.",
    )
    p.add_argument("config", help="grid YAML (configs/ssl/synth_grid.yaml)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides of every run")
    p.add_argument("--out-dir", help="override the file's out_dir")
    p.add_argument("--only", nargs="+", help="only these architecture keys and/or run names (teachers follow)")
    _handler(p, "actdistill.apps.ssl_grid:cmd_ssl_grid")

    p = sub.add_parser("detect", help="temporal action detection: snippet features, detector training, evaluation")
    dsub = p.add_subparsers(dest="detect_command", required=True, metavar="DETECT_COMMAND")
    e = dsub.add_parser(
        "extract",
        help="run a video backbone over sliding windows; one (T, C) .npy per video",
        description="Feature i is the pooled last forward_features map of the --window-frame clip centred on frame "
        "i*stride + stride/2 at --fps; videos whose .npy exists are skipped (resume).",
    )
    e.add_argument("--backbone", required=True, help="an actdistill checkpoint (.pt) or a model name (e.g. i3d)")
    e.add_argument("--videos", required=True, help="folder of videos or frame folders")
    e.add_argument("--out", required=True, help="output folder (features.json + <video>.npy)")
    e.add_argument("--window", type=int, default=16, help="frames per clip (default: 16)")
    e.add_argument("--stride", type=int, default=4, help="frames between clips (default: 4)")
    e.add_argument("--fps", type=float, default=10.0, help="frame rate videos are resampled to (default: 10)")
    e.add_argument("--size", type=int, default=112, help="frame side fed to the backbone (default: 112)")
    e.add_argument("--tap", type=int, default=-1, help="forward_features entry to pool (default: -1, the last)")
    e.add_argument("--batch-size", type=int, default=16, help="clips per forward pass (default: 16)")
    e.add_argument("--num-classes", type=int, default=400, help="head size for a model name (unused by features)")
    e.add_argument("--model-kwargs", nargs="*", default=[], help="model options, e.g. channel_scale=0.25")
    e.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    _handler(e, "actdistill.apps.detection:cmd_extract")
    t = dsub.add_parser("train", help="same as `actdistill train` with a detection recipe (configs/detection/)")
    _recipe_args(t, "detection recipe YAML")
    t.add_argument("--resume", action="store_true", help="continue the run in train.out_dir")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in train.out_dir")
    _handler(t, "actdistill.cli:cmd_train")
    v = dsub.add_parser("eval", help="mAP at each tIoU of a detection checkpoint on its test subset")
    v.add_argument("checkpoint", help="checkpoints/best.pt or last.pt of a detection run")
    v.add_argument("overrides", nargs="*", help="overrides, e.g. eval.protocol=activitynet eval.nms=hard")
    v.add_argument("--out", help="write the JSON report (per-class AP, predictions) here")
    _handler(v, "actdistill.cli:cmd_eval")
    v.set_defaults(fuse_flow=None, fusion=None, rgb_weight=0.5)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actdistill",
        description="Knowledge distillation for human action recognition: small, fast students from big teachers.",
    )
    parser.add_argument("--version", action="version", version=f"actdistill {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_core, _add_data, _add_analysis, _add_deploy, _add_apps):
        add(sub)
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; `key=value` items after flags are added to the command's overrides."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *(x for x in extra if "=" in x and not x.startswith("-"))]
        extra = [x for x in extra if "=" not in x or x.startswith("-")]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `actdistill` console script."""
    args = parse(argv)
    root = logging.getLogger("actdistill")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    module, function = args.handler.split(":")
    try:
        return int(getattr(importlib.import_module(module), function)(args))
    except ActdistillError as exc:
        print(f"actdistill: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("actdistill: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
