"""Snippet features for detection: a video backbone over sliding windows → one `(T_feat, C)` `.npy` per video.

Feature i is the pooled last `forward_features` map of the `window`-frame clip centred on frame `i·stride + stride/2`
(frames resampled to `fps`, clamped at the video ends), so feature i stands for time `(i + 0.5)·stride / fps` and a
video of N frames gives `ceil(N / stride)` features. `features.json` records these settings for the detector.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from actdistill.data.decode import VIDEO_EXTENSIONS, count_folder_frames, read_frames
from actdistill.errors import ActdistillError
from actdistill.models import create_model
from actdistill.utils.checkpoint import load_checkpoint

log = logging.getLogger("actdistill.detect")
INDEX = "features.json"
_SETTINGS = ("backbone", "fps", "window", "stride", "size", "tap")

__all__ = ["INDEX", "extract_features", "feature_times", "list_videos", "load_backbone", "window_frames"]


def load_backbone(spec: str, num_classes: int = 400, **model_kwargs: Any) -> nn.Module:
    """A video model in eval mode: an actdistill checkpoint (`.pt` with a 'model' entry) or a `create_model` name
    (`pretrained=` in `model_kwargs`: its weights — a Kinetics file such as pytorch-i3d's `rgb_imagenet.pt`)."""
    path = Path(spec).expanduser()
    if path.suffix in (".pt", ".pth") or path.is_file():
        ckpt = load_checkpoint(path)
        model_spec = ckpt.get("model")
        if not isinstance(model_spec, dict) or "name" not in model_spec:
            raise ActdistillError(f"{path}: no 'model' entry naming the architecture; pass a run's checkpoints/best.pt")
        kwargs = {**model_spec.get("kwargs", {}), **model_kwargs}
        model = create_model(model_spec["name"], model_spec["num_classes"], pretrained=False, **kwargs)
        model.load_state_dict(ckpt["student"])
    else:
        pretrained = model_kwargs.pop("pretrained", False)
        model = create_model(spec, num_classes, pretrained=pretrained, **model_kwargs)
    if not hasattr(model, "forward_features"):
        raise ActdistillError(f"backbone {spec!r} has no forward_features(); use a video model such as i3d or top_i3d")
    return model.eval()


def window_frames(num_frames: int, window: int, stride: int) -> np.ndarray:
    """Frame indices `(T_feat, window)` of every window, clamped to `[0, num_frames)`; T_feat = ceil(N / stride)."""
    centres = np.arange(math.ceil(num_frames / stride)) * stride + stride // 2
    offsets = np.arange(window) - window // 2
    return np.clip(centres[:, None] + offsets[None, :], 0, num_frames - 1)


def feature_times(num_features: int, stride: int, fps: float) -> np.ndarray:
    """Time in seconds `(T_feat,)` each feature stands for: `(i + 0.5)·stride / fps`."""
    return (np.arange(num_features) + 0.5) * stride / fps


def list_videos(folder: str | Path) -> list[Path]:
    """Video files (by extension) and frame folders directly inside `folder`, sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise ActdistillError(f"video folder {root} not found; pass the folder holding the videos (e.g. DATA/videos)")
    found = [p for p in sorted(root.iterdir()) if p.suffix.lower() in VIDEO_EXTENSIONS or p.is_dir()]
    if not found:
        raise ActdistillError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) or frame folders in {root}")
    return found


def _source_frames(path: Path, fps: float) -> list[int]:
    """Native frame indices that resample the video to `fps` (frame folders are taken to be at `fps` already)."""
    if path.is_dir():
        return list(range(count_folder_frames(path)))
    from actdistill.data.manifest import probe_video

    n, native = probe_video(path)
    native = native or fps
    count = max(1, int(math.floor(n * fps / native + 1e-6)))
    return [min(int(round(k * native / fps)), n - 1) for k in range(count)]


def _pool(feature: Tensor) -> Tensor:
    """`(B, C, ...)` → `(B, C)` by averaging every axis after the channels."""
    return feature.flatten(2).mean(-1) if feature.dim() > 2 else feature


@torch.no_grad()
def _video_features(
    model: nn.Module, path: Path, fps: float, window: int, stride: int, size: int, tap: int, batch_size: int
) -> np.ndarray:
    cfg = getattr(model, "pretrained_cfg", None)
    mean = torch.tensor(getattr(cfg, "mean", (0.5, 0.5, 0.5)), dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(getattr(cfg, "std", (0.25, 0.25, 0.25)), dtype=torch.float32).view(1, -1, 1, 1)
    source = _source_frames(path, fps)
    frames = read_frames(path, sorted(set(source))).contiguous()  # (N', C, H, W) uint8
    lookup = {idx: k for k, idx in enumerate(sorted(set(source)))}
    frames = frames[[lookup[i] for i in source]].float().div_(255.0)
    if frames.shape[-2:] != (size, size):
        frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    frames = (frames - mean) / std  # (N, C, size, size)
    idx = torch.from_numpy(window_frames(len(source), window, stride))
    out = []
    for b in range(0, len(idx), batch_size):
        clips = frames[idx[b : b + batch_size]].permute(0, 2, 1, 3, 4)  # (B, C, window, H, W)
        out.append(_pool(model.forward_features(clips)[tap]).float())
    return torch.cat(out).numpy()


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def extract_features(
    model: nn.Module,
    videos: str | Path,
    out_dir: str | Path,
    *,
    backbone: str = "",
    fps: float = 10.0,
    window: int = 16,
    stride: int = 4,
    size: int = 112,
    tap: int = -1,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Write `<out>/<video>.npy` `(T_feat, C)` float32 per video plus `features.json`; videos already done are skipped.

    Returns the index. Re-running into a folder made with other settings raises (mixing them would be silent junk).
    """
    if window < 1 or stride < 1 or fps <= 0:
        raise ActdistillError(f"need window ≥ 1, stride ≥ 1, fps > 0; got window={window} stride={stride} fps={fps}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"backbone": backbone, "fps": fps, "window": window, "stride": stride, "size": size, "tap": tap}
    index: dict[str, Any] = {**settings, "feature_dim": None, "videos": {}}
    if (out / INDEX).is_file():
        old = json.loads((out / INDEX).read_text())
        changed = [k for k in _SETTINGS if old.get(k) != settings[k]]
        if changed:
            raise ActdistillError(
                f"{out / INDEX} was written with other settings ({', '.join(f'{k}={old.get(k)!r}' for k in changed)});"
                " use a new --out folder or the same settings to resume"
            )
        index = old
    model.eval()
    paths = list_videos(videos)
    for path in tqdm(paths, desc="features", disable=not progress):
        name = path.stem if path.is_file() else path.name
        target = out / f"{name}.npy"
        if target.is_file():
            feats = np.load(target, mmap_mode="r")
        else:
            feats = _video_features(model, path, fps, window, stride, size, tap, batch_size)
            _atomic_write(target, lambda f, a=feats: np.save(f, a))
        index["feature_dim"] = int(feats.shape[1])
        n_frames = len(_source_frames(path, fps))
        index["videos"][name] = {"num_features": len(feats), "num_frames": n_frames, "duration": n_frames / fps}
        _atomic_write(out / INDEX, lambda f: f.write(json.dumps(index, indent=1).encode()))
    log.info("features of %d videos in %s (dim %s)", len(paths), out, index["feature_dim"])
    return index
