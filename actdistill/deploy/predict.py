"""`actdistill predict`: top-k actions for image and video files, from a checkpoint or an exported ONNX model.

Videos are scored on `num_clips` evenly spaced clips (`multi_view_indices`) whose softmax outputs are averaged.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from actdistill.errors import ActdistillError

__all__ = ["Predictor", "load_predictor", "predict_files"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class Predictor:
    """A model's logits function plus what preprocessing needs: task, input shape, mean/std, class names."""

    run: Callable[[Tensor], np.ndarray]
    task: str
    input_size: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]
    frame_interval: int = 1
    resize: int = 0


def _from_checkpoint(path: Path) -> Predictor:
    from actdistill.deploy.export import ClassLogits, input_shape, load_student

    model, cfg, ckpt = load_student(path)
    wrapped = ClassLogits(model).eval()

    def run(x: Tensor) -> np.ndarray:
        with torch.inference_mode():
            return wrapped(x).float().numpy()

    shape = input_shape(model, cfg)
    classes = ckpt.get("class_names") or [str(i) for i in range(ckpt["model"]["num_classes"])]
    pcfg = model.pretrained_cfg
    task = "video" if len(shape) == 4 else "image"
    return Predictor(run, task, shape, tuple(pcfg.mean), tuple(pcfg.std), list(classes),
                     int(cfg.data.frame_interval), int(cfg.data.resize))  # fmt: skip


def _from_onnx(path: Path) -> Predictor:
    from actdistill.deploy.export import read_metadata, require_onnx

    _, ort = require_onnx("predicting with an ONNX model")
    try:
        meta = read_metadata(path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - protobuf / runtime errors all mean an unusable file
        raise ActdistillError(f"{path}: not a readable ONNX model ({type(exc).__name__}); export it again") from None
    missing = [k for k in ("input_size", "mean", "std", "class_names") if k not in meta]
    if missing:
        raise ActdistillError(f"{path}: no {', '.join(missing)} metadata; export it with `actdistill export`")
    name = session.get_inputs()[0].name
    shape = tuple(json.loads(meta["input_size"]))

    def run(x: Tensor) -> np.ndarray:
        return session.run(None, {name: x.numpy().astype(np.float32)})[0]

    return Predictor(run, meta.get("task", "video" if len(shape) == 4 else "image"), shape,
                     tuple(json.loads(meta["mean"])), tuple(json.loads(meta["std"])), json.loads(meta["class_names"]),
                     int(meta.get("frame_interval", 1)), int(meta.get("resize", 0)))  # fmt: skip


def load_predictor(path: str | Path) -> Predictor:
    """A `Predictor` from an actdistill checkpoint (.pt/.pth) or an ONNX file written by `actdistill export`."""
    path = Path(path)
    if not path.is_file():
        raise ActdistillError(f"model {path} not found; pass a checkpoint (.pt) or an exported .onnx file")
    return _from_onnx(path) if path.suffix.lower() == ".onnx" else _from_checkpoint(path)


def _image_input(pred: Predictor, file: Path) -> Tensor:
    """`(1, 3, S, S)` normalised input for an image file."""
    from actdistill.data.stanford40 import load_image
    from actdistill.data.transforms import build_image_transform

    try:
        img = load_image(file)
    except Exception as exc:  # noqa: BLE001 - PIL raises several types for unreadable files
        raise ActdistillError(f"{file}: cannot read image ({type(exc).__name__}); pass a JPEG or PNG file") from None
    return build_image_transform(False, pred.input_size[-1], pred.mean, pred.std)(img)[None]


def _video_input(pred: Predictor, file: Path, num_clips: int) -> Tensor:
    """`(num_clips, C, T, S, S)` normalised clips, evenly spaced over a video file or frame folder."""
    from actdistill.data.decode import count_folder_frames, read_frames
    from actdistill.data.manifest import probe_video
    from actdistill.data.sampling import multi_view_indices
    from actdistill.data.video_transforms import build_video_transform

    if pred.input_size[0] != 3:
        raise ActdistillError(f"{file}: the model takes {pred.input_size[0]}-channel (flow) input; predict is RGB only")
    frames = count_folder_frames(file) if file.is_dir() else probe_video(file)[0]
    if frames <= 0:
        raise ActdistillError(f"{file}: no frames (expected a video file or a folder of img_00001.jpg ...)")
    views = multi_view_indices(frames, pred.input_size[1], pred.frame_interval, num_clips)
    union = sorted({i for v in views for i in v})
    decoded = read_frames(file, union)
    where = {f: k for k, f in enumerate(union)}
    tf = build_video_transform(False, pred.input_size[-1], pred.mean, pred.std, resize=pred.resize or None)
    return torch.stack([tf(decoded[[where[i] for i in v]]) for v in views])


def predict_file(pred: Predictor, file: str | Path, top_k: int = 5, num_clips: int = 3) -> dict[str, Any]:
    """`{"file", "clips", "top": [{"class", "index", "prob"}, ...]}` for one file, most probable first."""
    file = Path(file)
    if not file.exists():
        raise ActdistillError(f"{file}: no such file")
    is_image = file.suffix.lower() in IMAGE_EXTENSIONS
    if pred.task == "image" and not is_image:
        raise ActdistillError(f"{file}: this is an image model; pass {'/'.join(IMAGE_EXTENSIONS)} files")
    if pred.task == "video" and is_image:
        raise ActdistillError(f"{file}: this is a video model; pass a video file or a frame folder")
    x = _image_input(pred, file) if is_image else _video_input(pred, file, max(1, num_clips))
    logits = torch.from_numpy(np.asarray(pred.run(x), dtype=np.float32))
    probs = logits.softmax(dim=-1).mean(dim=0)  # clip-averaged softmax
    values, indices = probs.topk(min(top_k, probs.numel()))
    top = [{"class": pred.classes[i], "index": int(i), "prob": float(v)} for v, i in zip(values, indices.tolist())]
    return {"file": str(file), "clips": int(x.shape[0]), "top": top}


def predict_files(
    checkpoint_or_onnx: str | Path, files: Sequence[str | Path], top_k: int = 5, num_clips: int = 3
) -> list[dict[str, Any]]:
    """Top-k predictions for each file (images, or videos with `num_clips`-clip averaging)."""
    pred = load_predictor(checkpoint_or_onnx)
    for file in files:  # fail before any model work when a file is missing
        if not Path(file).exists():
            raise ActdistillError(f"{file}: no such file")
    return [predict_file(pred, f, top_k, num_clips) for f in files]


def cmd_predict(args: argparse.Namespace) -> int:
    """Run `actdistill predict`."""
    results = predict_files(args.model, args.files, top_k=args.top_k, num_clips=args.num_clips)
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for res in results:
        clips = f" ({res['clips']} clips)" if res["clips"] > 1 else ""
        print(f"{res['file']}{clips}")
        for rank, t in enumerate(res["top"], 1):
            print(f"  {rank}. {t['class']:<28} {100 * t['prob']:6.2f}%")
    return 0
