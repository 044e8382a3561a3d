"""Evaluators: a model and a loader in, a report dict out. One per task; each names the metrics it reports.

Every evaluator is called as `evaluator(model, loader, device=..., amp_dtype=..., replicas=...)`, where `model` is
the method's predictor (`Distiller.predictor()`, or the one rebuilt from a checkpoint by `engine.predictor`), so
training-time and stand-alone evaluation score the same network. With several processes each evaluates its shard
and the results are gathered: the report is the whole set's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Subset

from actdistill.config import EvalConfig
from actdistill.detect.dataset import FeatureSequences
from actdistill.detect.detector import decode_segments
from actdistill.distill.base import Batch
from actdistill.engine.distributed import Replicas
from actdistill.eval.detection import detection_map
from actdistill.eval.metrics import ClassificationMeter
from actdistill.utils.runtime import autocast

log = logging.getLogger("actdistill")


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Move every tensor of the batch to `device` (non-blocking from pinned memory)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def pool_scores(scores: Tensor, pooling: str, views: int = 1) -> Tensor:
    """Clip outputs `(B·V, K)` or per-step `(B·V, K, T')` → video scores `(B, K)` whose softmax is the prediction.

    `mean_logits`: logits averaged over time, then over the V test views. `sum_softmax` (paper 2's official test
    code): per-step softmax summed over time and views; returned as log-probabilities so that metrics computed on a
    softmax (mAP) see exactly that distribution.
    """
    scores = scores.float()
    if pooling == "sum_softmax":
        probs = scores.softmax(dim=1)
        probs = probs.sum(dim=2) if probs.dim() == 3 else probs
        probs = probs.unflatten(0, (-1, views)).sum(dim=1)
        return (probs / probs.sum(dim=1, keepdim=True)).clamp_min(torch.finfo(probs.dtype).tiny).log()
    logits = scores.mean(dim=2) if scores.dim() == 3 else scores
    return logits.unflatten(0, (-1, views)).mean(dim=1)


class ClassificationEvaluator:
    """Top-1/5, mean class accuracy, per-class AP, mAP and the confusion matrix of a classifier.

    `inputs`: the batch entries passed to the model (two-stream fusion: `("input", "input_flow")`). A 6-D video
    input `(B, V, C, T, H, W)` holds V test views per video; their scores are pooled by `pool_scores`.
    """

    metrics = ("top1", "top5", "mean_class_accuracy", "mAP")
    shown = ("top1", "mAP")  # in the per-epoch log line
    lower_is_better: tuple[str, ...] = ()

    def __init__(
        self, class_names: list[str], temporal_pooling: str = "mean_logits", inputs: tuple[str, ...] = ("input",)
    ) -> None:
        self.class_names, self.pooling, self.inputs = list(class_names), temporal_pooling, inputs

    @torch.no_grad()
    def __call__(
        self,
        model: nn.Module,
        loader: Iterable[Batch],
        *,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        replicas: Replicas | None = None,
    ) -> dict[str, Any]:
        meter, skipped = ClassificationMeter(), 0
        for batch in loader:
            skipped += int(batch.pop("skipped", 0))
            if "input" not in batch:
                continue
            batch = to_device(batch, device)
            xs = [batch[key] for key in self.inputs]
            views = xs[0].shape[1] if xs[0].dim() == 6 else 1
            xs = [x.flatten(0, 1) if x.dim() == 6 else x for x in xs]
            with autocast(device, amp_dtype):
                out = model(*xs)
            meter.update(pool_scores(out, self.pooling, views), batch["label"])
        if replicas is not None and replicas.world > 1:
            meter = replicas.gather_meter(meter)
            skipped = int(replicas.sum_values({"skipped": float(skipped)})["skipped"])
        if len(meter) == 0:
            return {**{k: float("nan") for k in self.metrics}, "skipped": skipped, "num_samples": 0}
        report = meter.compute(self.class_names)
        report["skipped"] = skipped
        for key in self.metrics:
            if isinstance(report[key], float) and math.isnan(report[key]):
                log.warning("evaluation: %s is NaN (no samples?)", key)
        return report


class PretextEvaluator:
    """Paper 3's metric: 5-way pretext accuracy of a PCL network on fixed validation tuples, and its mean CE."""

    metrics = ("pretext_acc", "pretext_loss")
    shown = metrics
    lower_is_better = ("pretext_loss",)

    @torch.no_grad()
    def __call__(
        self,
        model: nn.Module,
        loader: Iterable[Batch],
        *,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        replicas: Replicas | None = None,
    ) -> dict[str, Any]:
        sums = {"correct": 0.0, "loss": 0.0, "count": 0.0, "skipped": 0.0}
        for batch in loader:
            sums["skipped"] += int(batch.pop("skipped", 0))
            if "input" not in batch:
                continue
            batch = to_device(batch, device)
            with autocast(device, amp_dtype):
                logits = model(batch["input"]).float()
            sums["loss"] += float(F.cross_entropy(logits, batch["label"], reduction="sum"))
            sums["correct"] += float((logits.argmax(1) == batch["label"]).sum())
            sums["count"] += batch["label"].numel()
        if replicas is not None and replicas.world > 1:
            sums = replicas.sum_values(sums)
        n = max(sums["count"], 1.0)
        return {
            "pretext_acc": sums["correct"] / n if sums["count"] else float("nan"),
            "pretext_loss": sums["loss"] / n if sums["count"] else float("nan"),
            "num_samples": int(sums["count"]),
            "skipped": int(sums["skipped"]),
        }


class DetectionEvaluator:
    """mAP at each tIoU and their average (`detection_map`, under `eval.protocol`) of a temporal detector.

    Whole videos; (soft-)NMS per class as `eval` says. Each process decodes its shard of the videos and the
    predictions are gathered, so the report is the whole set's. Also returns `predictions` (seconds) and per-class AP.
    """

    metrics = ("average_map",)
    shown = metrics
    lower_is_better: tuple[str, ...] = ()

    def __init__(self, class_names: list[str], eval_cfg: EvalConfig) -> None:
        self.class_names, self.cfg = list(class_names), eval_cfg

    @torch.no_grad()
    def __call__(
        self,
        model: nn.Module,
        loader: Any,
        *,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        replicas: Replicas | None = None,
    ) -> dict[str, Any]:
        dataset, videos = _feature_dataset(loader.dataset)
        cfg, preds = self.cfg, []
        for batch in loader:
            if "input" not in batch:
                continue
            x, mask = batch["input"].to(device), batch["mask"].to(device)
            with autocast(device, amp_dtype):
                heads = model(x, mask)
            for b, video in enumerate(batch["video"]):
                segs, scores, labels = decode_segments(
                    model, heads, b, pre_nms_threshold=cfg.pre_nms_threshold, nms=cfg.nms,
                    iou_threshold=cfg.iou_threshold, sigma=cfg.sigma, max_segments=cfg.max_segments,
                )  # fmt: skip
                duration = dataset.index["videos"][video]["duration"]
                seconds = dataset.to_seconds(segs.float().cpu()).clamp(0, duration)
                for (s, e), sc, lab in zip(seconds.tolist(), scores.tolist(), labels.tolist()):
                    if e > s:
                        preds.append(
                            {"video": video, "start": s, "end": e, "label": self.class_names[lab], "score": sc}
                        )
        if replicas is not None and replicas.world > 1:
            preds = replicas.gather_objects(preds)
        rows = [r for r in dataset.rows if str(r["video"]) in videos]
        result = detection_map(rows, preds, list(cfg.tiou), cfg.protocol)
        return {
            "average_map": result["average_map"],
            "map": {f"{t:g}": v for t, v in result["map"].items()},
            "per_class_ap": {
                str(c): {f"{t:g}": v for t, v in aps.items()} for c, aps in result["per_class_ap"].items()
            },
            "protocol": cfg.protocol,
            "num_samples": len(videos),
            "predictions": preds,
        }


def _feature_dataset(dataset: Any) -> tuple[FeatureSequences, set[str]]:
    """The `FeatureSequences` behind `dataset` (a `Subset` of one, for a carved validation split) and its videos."""
    indices = None
    while isinstance(dataset, Subset):
        indices = [dataset.indices[i] for i in indices] if indices is not None else list(dataset.indices)
        dataset = dataset.dataset
    videos = dataset.videos if indices is None else [dataset.videos[i] for i in indices]
    return dataset, set(videos)
