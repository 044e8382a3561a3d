"""`actdistill` command line: a thin layer over library functions (each is callable from Python too)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from actdistill import __version__
from actdistill.errors import ActdistillError

EPILOG_TRAIN = """examples:
  actdistill train configs/image/stanford40_pvt_v2_kd.yaml data.root=/data/Stanford40
  actdistill train configs/demo/student_kd.yaml train.epochs=5 optim.lr=0.01 method.temperature=4
  actdistill train runs/x/config.yaml --resume
  torchrun --nproc-per-node 4 -m actdistill train configs/image/stanford40_pvt_v2_kd.yaml  (docs/distributed.md)"""


def _register_all() -> None:
    """Import the modules whose import registers models, methods and datasets."""
    import actdistill.data.build  # noqa: F401
    import actdistill.distill  # noqa: F401
    import actdistill.models  # noqa: F401


def cmd_demo(args: argparse.Namespace) -> int:
    from actdistill.demo import run_demo

    out = run_demo(args.out, seed=args.seed, full=args.full)
    print(Path(out["report"]).read_text().split("\n\n")[2])
    print(f"\nreport: {out['report']}  ({out['wall_time_s'] / 60:.1f} min)")
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
    last = results["last"]
    if os.environ.get("RANK", "0") != "0":
        return 0
    print(
        f"{cfg.name}: last epoch top1 {100 * last['top1']:.2f}% mAP {100 * last['mAP']:.2f}% "
        f"(best {cfg.train.best_metric} {100 * results['best']['value']:.2f}% at epoch {results['best']['epoch']}) "
        f"→ {cfg.train.out_dir}"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from actdistill.engine.evaluate import evaluate_checkpoint, evaluate_fused

    if args.fuse_flow:
        report = evaluate_fused(
            args.checkpoint, args.fuse_flow, args.overrides, mode=args.fusion, rgb_weight=args.rgb_weight
        )
    else:
        report = evaluate_checkpoint(args.checkpoint, args.overrides)
    summary = {k: report[k] for k in ("top1", "top5", "mean_class_accuracy", "mAP", "num_samples")}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(f"full report: {args.out}")
    return 0


def cmd_list_sizes(names: list[str], input_size: list[int] | None, num_classes: int) -> None:
    """Parameters and GMACs per model at its standard input (or `--input`), counted on meta tensors (no compute)."""
    from actdistill.analysis.flops import count
    from actdistill.models import create_model
    from actdistill.registry import MODELS

    print(f"{'model':<24}{'input':>16}{'params (M)':>13}{'GMACs':>10}   ({num_classes} classes)")
    for name in names:
        meta = MODELS.meta(name)
        shape = tuple(input_size or meta.get("input_size") or (3, 224, 224))
        kwargs = {"image_model": "pvt_v2_demo"} if name == "frames" else {}
        try:
            model = create_model(name, num_classes, **kwargs).to("meta")
            flops = count(model, (1, *shape))
            print(f"{name:<24}{'×'.join(map(str, shape)):>16}{flops.params / 1e6:>13.3f}{flops.gmacs:>10.3f}")
        except Exception as exc:  # noqa: BLE001 - one model that cannot be counted must not hide the others
            print(f"{name:<24}{'×'.join(map(str, shape)):>16}   could not count ({type(exc).__name__}: {exc})"[:150])


def cmd_list(args: argparse.Namespace) -> int:
    from actdistill.registry import DATASETS, METHODS, MODELS

    if args.what == "models" and args.sizes:
        cmd_list_sizes(args.models or MODELS.names(), args.input, args.num_classes)
        return 0
    registry = {"models": MODELS, "methods": METHODS, "datasets": DATASETS}[args.what]
    for name in registry.names():
        meta = registry.meta(name)
        desc = "; ".join(f"{k}={v}" for k, v in meta.items() if v not in (None, ""))
        print(f"{name:<26} {desc}")
    if args.what == "models":
        print("\nAny timm model name also works (e.g. resnet50); see `timm.list_models()`.")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    if args.kind == "detection":
        from actdistill.detect.synthetic import write_synthetic_detection

        root = write_synthetic_detection(args.out, seed=args.seed, progress=True)
        print(f"wrote a synthetic THUMOS14-layout detection dataset to {root} (docs/detection.md)")
        return 0
    if args.kind == "video":
        from actdistill.data.synthetic_video import write_synthetic_ucf101

        root = write_synthetic_ucf101(
            args.out, num_classes=args.classes or 8, videos_per_class=args.train_per_class or 16,
            frames=args.frames, size=args.size, seed=args.seed, workers=args.workers, progress=True,
        )  # fmt: skip
        print(f"wrote a synthetic UCF101-layout video dataset to {root}; train with data.name=ucf101 data.root={root}")
        return 0
    from actdistill.data.synthetic_image import write_synthetic_stanford40

    root = write_synthetic_stanford40(
        args.out,
        num_classes=args.classes,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        image_size=args.size,
        seed=args.seed,
        workers=args.workers,
    )
    print(f"wrote a synthetic Stanford 40 dataset to {root}; train with data.root={root}")
    return 0


def cmd_data_index(args: argparse.Namespace) -> int:
    """Probe every listed video once (frame counts, fps) and cache the manifest that training then reads."""
    from actdistill.config import load_config, split_recipe_args
    from actdistill.data.build import DATASETS, dataset_task

    cfg = load_config(*split_recipe_args(args.config, args.overrides))
    if dataset_task(cfg.data.name) != "video":
        raise ActdistillError(f"data index builds video manifests; data.name={cfg.data.name} is an image dataset")
    for split in ("train", "test"):
        dataset, classes = DATASETS.get(cfg.data.name)(cfg.data, split, None)
        print(f"{cfg.data.name} {split}: {len(dataset)} videos indexed, {len(dataset.skipped)} skipped, "
              f"{len(classes)} classes")  # fmt: skip
    return 0


def cmd_data_flow(args: argparse.Namespace) -> int:
    from actdistill.data.flow import extract_flow_tree

    counts = extract_flow_tree(args.videos, args.out, method=args.method, bound=args.bound, workers=args.workers)
    print(f"optical flow into {args.out}: {counts['done']} done, {counts['skipped']} already there, "
          f"{counts['failed']} failed; train with data.modality=flow data.flow_root={args.out}")  # fmt: skip
    return 1 if counts["failed"] and not counts["done"] else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actdistill",
        description="Knowledge distillation for human action recognition: small, fast students from big teachers.",
    )
    parser.add_argument("--version", action="version", version=f"actdistill {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="paper 1 end to end on built-in synthetic data (teacher, student, student+KD, report)",
        description="Generate the synthetic Stanford-40-layout dataset, train a small ConvNeXt teacher and a small "
        "PVT-v2 student without and with KD, and write report.md with a Table-I-style table and curves.",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo); its runs are replaced")
    p.add_argument("--seed", type=int, default=0, help="seed for data generation and training (default: 0)")
    p.add_argument("--full", action="store_true", help="more data and paper-length schedules (slower)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "train",
        help="train a model (with or without a teacher) from a YAML recipe",
        description="Train from a recipe; `section.key=value` arguments override the recipe.",
        epilog=EPILOG_TRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="YAML recipe (see configs/); optional when overrides say everything")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. optim.lr=0.01")
    p.add_argument("--resume", action="store_true", help="continue the run in train.out_dir from checkpoints/last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in train.out_dir")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on the test split",
        description="Evaluate a run's checkpoint (best.pt / last.pt) on the test split of the dataset it was trained "
        "on; override e.g. data.root=... to point at another copy.",
    )
    p.add_argument("checkpoint", help="path to checkpoints/best.pt or last.pt")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides (e.g. data.root=/data/Stanford40)")
    p.add_argument("--out", help="write the full JSON report (per-class AP, confusion matrix) here")
    p.add_argument(
        "--fuse-flow", metavar="FLOW_CHECKPOINT", help="video: fuse with this flow run's scores (two-stream)"
    )
    p.add_argument(
        "--fusion", default="softmax", choices=["softmax", "logits", "p2"],
        help="two-stream fusion: mean of softmax (default), mean of logits, or paper 2's per-step rule",
    )  # fmt: skip
    p.add_argument("--rgb-weight", type=float, default=0.5, help="two-stream: weight of the RGB stream (default 0.5)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("list", help="list registered models, methods or datasets")
    p.add_argument("what", choices=["models", "methods", "datasets"])
    p.add_argument("--sizes", action="store_true", help="models: parameters and GMACs at each model's standard input")
    p.add_argument("--input", type=int, nargs="+", help="with --sizes: input shape without batch, e.g. 3 16 112 112")
    p.add_argument("--num-classes", type=int, default=101, help="with --sizes: classifier size (default: 101)")
    p.add_argument("--models", nargs="+", help="with --sizes: only these models")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    s = data_sub.add_parser(
        "synth",
        help="write a learnable synthetic action dataset in a real dataset layout",
        description="--kind image writes stick-figure actions in the Stanford 40 layout (JPEGImages/, ImageSplits/, "
        "XMLAnnotations/; docs/synthetic_data.md); --kind video writes moving figures in the UCF101 layout, with "
        "class pairs told apart only by motion direction or speed (docs/video_data.md).",
    )
    s.add_argument(
        "--kind", default="image", choices=["image", "video", "detection"],
        help="image: Stanford 40 layout; video: UCF101 layout (class folders of .avi + ucfTrainTestlist/)",
    )  # fmt: skip
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--classes", type=int, default=0, help="number of action classes (default: 10 image, 8 video)")
    s.add_argument(
        "--train-per-class",
        type=int,
        default=0,
        help="images (image, 60) or videos (video, 16) per class",
    )
    s.add_argument("--frames", type=int, default=32, help="video: frames per video (default: 32)")
    s.add_argument("--test-per-class", type=int, default=30, help="test images per class (default: 30)")
    s.add_argument("--size", type=int, default=64, help="image side in pixels (default: 64)")
    s.add_argument("--seed", type=int, default=0, help="seed; the same seed writes the same bytes (default: 0)")
    s.add_argument("--workers", type=int, default=1, help="processes used to draw images (default: 1)")
    s.set_defaults(func=cmd_data_synth)
    s = data_sub.add_parser(
        "index",
        help="probe a video dataset once (frame counts, fps) and cache its manifest, in parallel",
        description="Build the cached manifest of the recipe's video dataset (train and test splits) so that training "
        "never probes videos at start-up; data.num_workers processes probe in parallel.",
    )
    s.add_argument("config", nargs="?", help="recipe YAML (optional when overrides say everything)")
    s.add_argument("overrides", nargs="*", help="section.key=value, e.g. data.name=ucf101 data.root=/data/UCF101")
    s.set_defaults(func=cmd_data_index)
    s = data_sub.add_parser(
        "flow",
        help="extract TV-L1 optical flow into the two-stream frame layout (resumable)",
        description="Writes flow_x_%%05d.jpg / flow_y_%%05d.jpg per video (OpenCV contrib: pip install "
        "'actdistill[flow]'); videos already done are skipped.",
    )
    s.add_argument("videos", help="video root (class folders of videos or img_%%05d.jpg frame folders)")
    s.add_argument("out", help="flow root (mirrors the video tree)")
    s.add_argument("--method", default="tvl1", choices=["tvl1", "farneback"], help="flow algorithm (default: tvl1)")
    s.add_argument("--bound", type=float, default=20.0, help="clip |flow| at this many pixels before quantising")
    s.add_argument("--workers", type=int, default=1, help="processes (default: 1)")
    s.set_defaults(func=cmd_data_flow)

    from actdistill.analysis import analyze, bench, html_report, motion_pairs
    from actdistill.deploy import export, predict
    from actdistill.detect import cli as detect_cli
    from actdistill.engine import cache_build, compare
    from actdistill.ssl import grid as ssl_grid

    for module in (
        analyze, html_report, export, predict, bench, cache_build, compare, detect_cli, motion_pairs, ssl_grid,
    ):  # fmt: skip
        module.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `actdistill` console script."""
    import logging

    from actdistill.engine.logging import setup_console_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_console_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        _register_all()
        return args.func(args)
    except ActdistillError as exc:
        print(f"actdistill: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("actdistill: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
