"""Train and evaluate a temporal detector on per-video feature files (`features.py`) and THUMOS-style annotations.

A recipe is a flat YAML with the sections of `DEFAULTS`. Training takes random crops of `data.crop_len` feature
steps from long videos; evaluation runs whole videos, decodes with (soft-)NMS and scores with `detection_map`
(mAP at each tIoU and their average). Methods with several `stages()` (paper 2's generative KD) run each stage as a
full pass over the training set per epoch, with its own optimiser, as the main engine does. Each run folder gets
`config.yaml`, `metrics.jsonl` (one line per epoch),
`checkpoints/last.pt`, `checkpoints/best.pt` (best average mAP; written atomically) and `predictions.json`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from actdistill.config import merge, parse_overrides
from actdistill.detect.annotations import load_annotations
from actdistill.detect.detector import DetectorConfig, TemporalDetector, build_detector, decode_segments
from actdistill.detect.distill import build_method
from actdistill.detect.features import INDEX
from actdistill.distill.base import Stage
from actdistill.engine.loop import only_stage_trainable
from actdistill.errors import ActdistillError
from actdistill.eval.detection import AMBIGUOUS, THUMOS14_TIOU_THRESHOLDS, detection_map
from actdistill.utils.checkpoint import atomic_save, load_checkpoint

log = logging.getLogger("actdistill.detect")

DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {
        "features": "",  # folder written by `actdistill detect extract` (features.json + <video>.npy)
        "teacher_features": "",  # the teacher's features when it used another backbone (same stride)
        "annotations": "",  # folder of <Class>_<subset>.txt files or an ActionFormer-style .json
        "classes": "",  # classes.txt (one a line) or a list; empty: the training labels, sorted
        "train_subset": "val",
        "test_subset": "test",
        "crop_len": 128,  # feature steps per training crop (0: whole videos)
        "batch_size": 4,
    },
    "model": {"preset": "small", "attention": False},  # plus any DetectorConfig field (embed_dim, levels, ...)
    "teacher": {"checkpoint": ""},
    "method": {"name": "vanilla"},  # plus the method's hyper-parameters (temperature, kd_weight, gamma, ...)
    "optim": {"lr": 1.0e-3, "weight_decay": 1.0e-4, "grad_clip": 1.0, "warmup_epochs": 2},
    "train": {"epochs": 30, "seed": 0, "out_dir": "runs/detect", "eval_every": 5, "device": "cpu", "progress": False},
    "eval": {
        "protocol": "thumos14",
        "tiou": list(THUMOS14_TIOU_THRESHOLDS),
        "nms": "soft",
        "iou_threshold": 0.5,
        "sigma": 0.5,
        "max_segments": 200,
        "pre_nms_threshold": 0.001,
    },
}
_OPEN = ("model", "method")  # sections whose extra keys are passed on


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Recipe dict: `DEFAULTS` ← YAML file ← `section.key=value` overrides, with unknown keys rejected."""
    raw: dict[str, Any] = {}
    where = "overrides"
    if path:
        path = Path(path)
        if not path.is_file():
            raise ActdistillError(f"detection recipe {path} not found; recipes live in configs/detection/")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ActdistillError(f"{path}: a recipe must be a mapping of sections")
        where = str(path)
    raw = merge(raw, parse_overrides(overrides or []))
    return resolve(raw, where)


def resolve(raw: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """Fill defaults and check section/key names of a raw recipe dict."""
    cfg: dict[str, Any] = {"name": str(raw.get("name", "detection"))}
    for section, defaults in DEFAULTS.items():
        given = raw.get(section) or {}
        if not isinstance(given, dict):
            raise ActdistillError(f"{where}: section '{section}' must be a mapping")
        unknown = set(given) - set(defaults)
        if unknown and section not in _OPEN:
            raise ActdistillError(
                f"{where}: unknown key(s) {', '.join(sorted(unknown))} in '{section}'; known: {', '.join(defaults)}"
            )
        cfg[section] = {**defaults, **given}
    extra = set(raw) - set(DEFAULTS) - {"name"}
    if extra:
        raise ActdistillError(f"{where}: unknown section(s) {', '.join(sorted(extra))}; known: {', '.join(DEFAULTS)}")
    return cfg


def read_index(folder: str | Path) -> dict[str, Any]:
    """The `features.json` of a feature folder."""
    path = Path(folder) / INDEX
    if not path.is_file():
        raise ActdistillError(f"{path} not found; run `actdistill detect extract --out {folder}` first")
    return json.loads(path.read_text())


def resolve_classes(spec: Any, rows: list[dict[str, Any]]) -> list[str]:
    """Class names from a list, a classes.txt file, or (empty) the sorted non-Ambiguous labels of `rows`."""
    if isinstance(spec, (list, tuple)) and spec:
        return [str(c) for c in spec]
    if spec:
        path = Path(spec)
        if not path.is_file():
            raise ActdistillError(f"classes file {path} not found; give a file with one class a line, or a list")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return sorted({str(r["label"]) for r in rows} - {AMBIGUOUS})


class FeatureSequences(Dataset):
    """Videos with features and annotations → dicts of `input` `(C, T)`, `segments` `(N, 2)` grid, `labels` `(N,)`."""

    def __init__(
        self,
        feature_dir: str | Path,
        rows: list[dict[str, Any]],
        classes: list[str],
        crop_len: int = 0,
        teacher_dir: str | Path = "",
    ) -> None:
        self.dir, self.teacher_dir = Path(feature_dir), Path(teacher_dir) if teacher_dir else None
        self.index = read_index(feature_dir)
        self.fps, self.stride = float(self.index["fps"]), int(self.index["stride"])
        self.classes, self.crop_len = classes, crop_len
        self.rows = rows
        annotated = sorted({str(r["video"]) for r in rows})
        missing = [v for v in annotated if v not in self.index["videos"]]
        if missing:
            raise ActdistillError(
                f"{len(missing)} annotated videos have no features in {self.dir} (e.g. {missing[0]}); "
                "run `actdistill detect extract` on their folder into it"
            )
        self.videos = annotated
        self.class_id = {c: i for i, c in enumerate(classes)}

    def __len__(self) -> int:
        return len(self.videos)

    def to_grid(self, seconds: np.ndarray) -> np.ndarray:
        """Seconds → level-0 grid coordinate x, where x stands for `(x + 0.5)·stride / fps` (features.py)."""
        return seconds * self.fps / self.stride - 0.5

    def to_seconds(self, grid: Tensor) -> Tensor:
        """Level-0 grid coordinates → seconds."""
        return (grid + 0.5) * self.stride / self.fps

    def feature_stats(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean and std `(C,)` of the student features over every step of every video."""
        total, sq, n = 0.0, 0.0, 0
        for video in self.videos:
            x = self._load(self.dir, video).double()
            total, sq, n = total + x.sum(1), sq + (x**2).sum(1), n + x.shape[1]
        mean = total / n
        return mean.float(), (sq / n - mean**2).clamp_min(0).sqrt().float()

    def _load(self, folder: Path, video: str) -> Tensor:
        path = folder / f"{video}.npy"
        if not path.is_file():
            raise ActdistillError(f"feature file {path} not found; (re-)run `actdistill detect extract` for it")
        return torch.from_numpy(np.load(path).astype(np.float32)).T.contiguous()  # (C, T)

    def __getitem__(self, i: int) -> dict[str, Any]:
        video = self.videos[i]
        x = self._load(self.dir, video)
        xt = self._load(self.teacher_dir, video) if self.teacher_dir else None
        if xt is not None and xt.shape[1] != x.shape[1]:
            raise ActdistillError(
                f"{video}: student features have {x.shape[1]} steps, teacher features {xt.shape[1]}; "
                "extract both with the same --fps and --stride"
            )
        own = [r for r in self.rows if str(r["video"]) == video and r["label"] in self.class_id]
        seg = self.to_grid(np.asarray([[r["start"], r["end"]] for r in own], np.float64).reshape(-1, 2))
        labels = np.asarray([self.class_id[r["label"]] for r in own], np.int64)
        offset = 0
        if self.crop_len and x.shape[1] > self.crop_len:
            offset = int(torch.randint(0, x.shape[1] - self.crop_len + 1, ()))
            x = x[:, offset : offset + self.crop_len]
            xt = xt[:, offset : offset + self.crop_len] if xt is not None else None
            clipped = np.clip(seg - offset, 0, self.crop_len - 1)
            lengths = np.maximum(seg[:, 1] - seg[:, 0], 1e-6)
            # ActionFormer's truncation rule: keep a segment when more than half of it lies inside the crop.
            keep = (clipped[:, 1] - clipped[:, 0]) / lengths > 0.5
            seg, labels = clipped[keep], labels[keep]
        item = {
            "video": video,
            "input": x,
            "segments": torch.from_numpy(seg).float(),
            "labels": torch.from_numpy(labels),
        }
        if xt is not None:
            item["input_t"] = xt
        item["offset"] = offset
        return item


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad `input` (and `input_t`) to the longest sequence: `(B, C, T)`, with `mask` `(B, T)` bool."""
    length = max(it["input"].shape[1] for it in items)
    batch: dict[str, Any] = {"video": [it["video"] for it in items]}
    for key in ("input", "input_t"):
        if key in items[0]:
            x = torch.zeros(len(items), items[0][key].shape[0], length)
            for b, it in enumerate(items):
                x[b, :, : it[key].shape[1]] = it[key]
            batch[key] = x
    mask = torch.zeros(len(items), length, dtype=torch.bool)
    for b, it in enumerate(items):
        mask[b, : it["input"].shape[1]] = True
    batch["mask"] = mask
    batch["segments"] = [it["segments"] for it in items]
    batch["labels"] = [it["labels"] for it in items]
    return batch


@torch.no_grad()
def predict(model: TemporalDetector, dataset: FeatureSequences, eval_cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Detections `{video, start, end, label, score}` (seconds) for every video of `dataset`, whole videos."""
    model.eval()
    rows = []
    for i in range(len(dataset)):
        item = dataset[i]
        heads = model(item["input"][None])
        segs, scores, labels = decode_segments(
            model,
            heads,
            0,
            pre_nms_threshold=eval_cfg["pre_nms_threshold"],
            nms=eval_cfg["nms"],
            iou_threshold=eval_cfg["iou_threshold"],
            sigma=eval_cfg["sigma"],
            max_segments=eval_cfg["max_segments"],
        )
        duration = dataset.index["videos"][item["video"]]["duration"]
        seconds = dataset.to_seconds(segs).clamp(0, duration)
        for (s, e), sc, lab in zip(seconds.tolist(), scores.tolist(), labels.tolist()):
            if e > s:
                rows.append({"video": item["video"], "start": s, "end": e, "label": dataset.classes[lab], "score": sc})
    return rows


def evaluate_detector(
    model: TemporalDetector, dataset: FeatureSequences, eval_cfg: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`(detection_map result, predictions)` of `model` on `dataset` (ground truth: its annotation rows)."""
    preds = predict(model, dataset, eval_cfg)
    result = detection_map(dataset.rows, preds, eval_cfg["tiou"], eval_cfg["protocol"])
    return result, preds


def _datasets(cfg: dict[str, Any]) -> tuple[FeatureSequences, FeatureSequences, list[str]]:
    data = cfg["data"]
    for key in ("features", "annotations"):
        if not data[key]:
            raise ActdistillError(f"set data.{key} in the recipe (see configs/detection/)")
    train_rows = load_annotations(data["annotations"], data["train_subset"])
    test_rows = load_annotations(data["annotations"], data["test_subset"])
    classes = resolve_classes(data["classes"], train_rows)
    train = FeatureSequences(data["features"], train_rows, classes, data["crop_len"], data["teacher_features"])
    test = FeatureSequences(data["features"], test_rows, classes, 0, data["teacher_features"])
    return train, test, classes


def load_detector(path: str | Path) -> tuple[TemporalDetector, dict[str, Any]]:
    """A detector and its checkpoint dict from a detection run's `checkpoints/*.pt`."""
    ckpt = load_checkpoint(path)
    if "detector" not in ckpt:
        raise ActdistillError(f"{path} is not a detection checkpoint (no 'detector' entry); use a detect train run's")
    model = TemporalDetector(DetectorConfig(**ckpt["detector"]))
    model.load_state_dict(ckpt["student"])
    return model.eval(), ckpt


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up then cosine decay to 0 (per optimiser step)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _stage_optimizer(stage: Stage, opt_cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW with the recipe's lr / weight decay, or the stage's own `optim` override (name, lr, betas, wd)."""
    params = list(stage.parameters())
    if not params:
        raise ActdistillError(f"stage '{stage.name}' has no trainable parameters")
    override = getattr(stage, "optim", None)
    if not override:
        return torch.optim.AdamW(params, lr=opt_cfg["lr"], weight_decay=opt_cfg["weight_decay"])
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if override.get("name", "adamw") not in kinds:
        raise ActdistillError(f"stage '{stage.name}': optimiser {override['name']!r} is not adam or adamw")
    return kinds[override.get("name", "adamw")](
        params,
        lr=override.get("lr", opt_cfg["lr"]),
        betas=tuple(override.get("betas", (0.9, 0.999))),
        weight_decay=override.get("weight_decay", opt_cfg["weight_decay"]),
    )


def _jsonable(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "map": {f"{t:g}": v for t, v in result["map"].items()},
        "average_map": result["average_map"],
        "per_class_ap": {str(c): {f"{t:g}": v for t, v in aps.items()} for c, aps in result["per_class_ap"].items()},
    }


def train_detection(cfg: dict[str, Any], overwrite: bool = False) -> dict[str, Any]:
    """Run a recipe (see `DEFAULTS`); returns the final evaluation `{map, average_map, per_class_ap, epoch}`."""
    tr = cfg["train"]
    torch.manual_seed(tr["seed"])
    np.random.seed(tr["seed"])
    out = Path(tr["out_dir"])
    if (out / "metrics.jsonl").exists() and not overwrite:
        raise ActdistillError(f"{out} already holds a run; pass --overwrite (or train.out_dir=another folder)")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").write_text("")
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    train_set, test_set, classes = _datasets(cfg)
    model_cfg = dict(cfg["model"])
    preset = model_cfg.pop("preset")
    in_channels = int(train_set.index["feature_dim"])
    student = build_detector(preset, in_channels, len(classes), **model_cfg)
    student.set_input_stats(*train_set.feature_stats())
    teacher, t_ckpt = None, {}
    if cfg["teacher"]["checkpoint"]:
        teacher, t_ckpt = load_detector(cfg["teacher"]["checkpoint"])
        if t_ckpt.get("classes") != classes:
            raise ActdistillError(
                f"teacher {cfg['teacher']['checkpoint']} was trained on classes {t_ckpt.get('classes')}, "
                f"this run uses {classes}; train the teacher on the same annotations"
            )
    hparams = {k: v for k, v in cfg["method"].items() if k != "name"}
    method = build_method(cfg["method"]["name"], student, teacher, **hparams)
    if teacher is not None and hasattr(method, "load_teacher_extras"):
        # generative_kd: the teacher CVAE of a generative_teacher run (else trained in stage 1, with a warning).
        method.load_teacher_extras(t_ckpt.get("method_state", {}).get("extras", {}), cfg["teacher"]["checkpoint"])
    device = torch.device(tr["device"])
    method.to(device)
    opt_cfg = cfg["optim"]
    loader = DataLoader(train_set, batch_size=cfg["data"]["batch_size"], shuffle=True, collate_fn=collate)
    total = tr["epochs"] * len(loader)
    warmup = opt_cfg["warmup_epochs"] * len(loader)
    # One optimiser (and warm-up + cosine schedule) per stage, as the main engine does (engine/fit.py): a stage may
    # carry its own settings (paper 2's CVAE stage: Adam 1e-4, betas (0.8, 0.999), no weight decay).
    stages = method.stages()
    multi = len(stages) > 1
    optimizers = {s.name: _stage_optimizer(s, opt_cfg) for s in stages}
    scheds = {
        n: torch.optim.lr_scheduler.LambdaLR(o, lambda s: _lr_factor(s, warmup, total)) for n, o in optimizers.items()
    }
    best, final = -1.0, {}
    for epoch in range(1, tr["epochs"] + 1):
        start = time.time()
        method.train()
        method.on_epoch(epoch)
        sums: dict[str, float] = {}
        for stage in stages:
            prefix = f"{stage.name}/" if multi else ""
            optimizer, sched = optimizers[stage.name], scheds[stage.name]
            params = list(stage.parameters())
            with only_stage_trainable(method, stage, multi):
                for batch in loader:
                    batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
                    step = stage.forward(batch)
                    optimizer.zero_grad(set_to_none=True)
                    step.loss.backward()
                    if opt_cfg["grad_clip"]:
                        torch.nn.utils.clip_grad_norm_(params, opt_cfg["grad_clip"])
                    optimizer.step()
                    sched.step()
                    for k, v in {"loss": step.loss, **step.parts}.items():
                        sums[prefix + k] = sums.get(prefix + k, 0.0) + float(v.detach())
        line: dict[str, Any] = {"epoch": epoch, **{k: v / len(loader) for k, v in sums.items()}}
        line["lr"] = optimizers[stages[-1].name].param_groups[0]["lr"]
        if epoch % tr["eval_every"] == 0 or epoch == tr["epochs"]:
            result, preds = evaluate_detector(method.student, test_set, cfg["eval"])
            line.update(_jsonable(result))
            if result["average_map"] > best:
                best = result["average_map"]
                _save(out / "checkpoints" / "best.pt", method, cfg, classes, train_set.index, epoch, line)
                (out / "predictions.json").write_text(json.dumps(preds))
            final = {**_jsonable(result), "epoch": epoch}
        line["time_s"] = round(time.time() - start, 2)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
        _save(out / "checkpoints" / "last.pt", method, cfg, classes, train_set.index, epoch, line)
        if tr["progress"] or "average_map" in line:
            loss = line["loss"] if "loss" in line else line[f"{stages[-1].name}/loss"]
            log.info("epoch %d loss %.4f%s", epoch, loss, f" mAP {line['average_map']:.4f}" if "map" in line else "")
    return final


def _save(path: Path, method: Any, cfg: dict, classes: list[str], index: dict, epoch: int, metrics: dict) -> None:
    settings = {k: index.get(k) for k in ("backbone", "fps", "window", "stride", "size", "tap", "feature_dim")}
    atomic_save(
        {
            "student": method.student.state_dict(),
            "detector": method.student.describe(),
            "classes": classes,
            "features": settings,
            "config": cfg,
            "epoch": epoch,
            "metrics": metrics,
            "method_state": method.student_state(),
        },
        path,
    )


def evaluate_checkpoint(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Evaluate a detection checkpoint on its recipe's test subset (overrides e.g. `eval.protocol=activitynet`)."""
    model, ckpt = load_detector(path)
    cfg = resolve(merge(ckpt["config"], parse_overrides(overrides or [])), where=str(path))
    _, test_set, classes = _datasets(cfg)
    if classes != ckpt["classes"]:
        raise ActdistillError(f"{path} was trained on classes {ckpt['classes']}, the recipe's data gives {classes}")
    result, preds = evaluate_detector(model, test_set, cfg["eval"])
    return {**_jsonable(result), "protocol": cfg["eval"]["protocol"], "predictions": preds}
