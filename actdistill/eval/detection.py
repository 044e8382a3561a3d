"""Temporal action detection mAP under the ActivityNet protocol or the THUMOS14 evaluation kit.

Rows are plain dicts: ground truth `{video, start, end, label}` and predictions `{video, start, end, label, score}`
with times in seconds. Ground-truth rows labelled `Ambiguous` are never a class of their own. What each protocol
does, and how they differ, is in docs/detection_eval.md; in short:

* `"activitynet"` — ActivityNet `Evaluation/eval_detection.py`: per class, predictions in descending score order
  each take the unmatched ground truth of the same video with the highest tIoU ≥ threshold; AP is the all-point
  interpolated area (VOC 2010+). Equal scores and equal tIoUs are ordered as the reference orders them (numpy's
  default `argsort`, reversed: for small arrays the later index first). `Ambiguous` ground truth is dropped, so
  detections on it are false positives.
* `"thumos14"` — the official THUMOS14 kit (`TH14evaldet.m` / `TH14eventdetpr.m`): per video, each ground truth in
  annotation order takes the still-free detection with the largest overlap if that overlap is *strictly* above
  the threshold; unmatched detections that overlap an `Ambiguous` segment of the video are dropped (neither TP
  nor FP); AP is the 11-point interpolated AP (recall 0, 0.1, …, 1), and equal scores rank TPs before FPs.
* `"thumos14_updated"` — same matching and Ambiguous rule, but AP as in `TH14evalDet_Updated.m` (released with
  S-CNN, used by many THUMOS14 papers): the non-interpolated Σ precision at each TP / #GT, with equal scores kept
  in per-video detection order.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from actdistill.errors import ActdistillError, suggest

AMBIGUOUS = "Ambiguous"
PROTOCOLS = ("activitynet", "thumos14", "thumos14_updated")
THUMOS14_TIOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)

__all__ = [
    "AMBIGUOUS",
    "PROTOCOLS",
    "THUMOS14_TIOU_THRESHOLDS",
    "detection_map",
    "load_thumos14_annotations",
    "temporal_iou",
]


def temporal_iou(
    segments_a: Sequence[Sequence[float]] | np.ndarray, segments_b: Sequence[Sequence[float]] | np.ndarray
) -> np.ndarray:
    """tIoU (N, M) between intervals `segments_a` (N, 2) and `segments_b` (M, 2) given as [start, end].

    tIoU = |a ∩ b| / |a ∪ b| with |a ∪ b| = |a| + |b| − |a ∩ b| (as ActivityNet's `segment_iou`). Touching or
    disjoint intervals give 0; so does a pair whose union has zero length (two identical instants).
    """
    a = np.asarray(segments_a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(segments_b, dtype=np.float64).reshape(-1, 2)
    inter = np.clip(np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0.0, None)
    union = (a[:, None, 1] - a[:, None, 0]) + (b[None, :, 1] - b[None, :, 0]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _kit_overlap(segments_a: np.ndarray, segments_b: np.ndarray) -> np.ndarray:
    """Overlap (N, M) as the THUMOS kit's `intervaloverlapvalseconds`: intersection / hull if intersection > 0."""
    lo = np.maximum(segments_a[:, None, 0], segments_b[None, :, 0])
    hi = np.minimum(segments_a[:, None, 1], segments_b[None, :, 1])
    inter = hi - lo
    hull = np.maximum(segments_a[:, None, 1], segments_b[None, :, 1]) - np.minimum(
        segments_a[:, None, 0], segments_b[None, :, 0]
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / np.where(inter > 0, hull, 1.0), 0.0)


def _validate(rows: Iterable[Mapping[str, Any]], name: str, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ActdistillError(f"{name}[{i}] must be a dict with keys {', '.join(keys)}, got {type(row).__name__}.")
        for key in keys:
            if key not in row:
                raise ActdistillError(f"{name}[{i}] is missing key '{key}' (needs {', '.join(keys)}).")
        clean = {"video": row["video"], "label": row["label"]}
        if not isinstance(clean["video"], Hashable) or not isinstance(clean["label"], Hashable):
            raise ActdistillError(f"{name}[{i}]: 'video' and 'label' must be strings or other hashable values.")
        for key in keys:
            if key in ("video", "label"):
                continue
            value = row[key]
            try:
                number = float(value) if not isinstance(value, (bool, str, bytes)) else math.nan
            except (TypeError, ValueError):
                number = math.nan
            if not math.isfinite(number):
                raise ActdistillError(f"{name}[{i}]: '{key}' must be a finite number, got {value!r}.")
            clean[key] = number
        if clean["start"] > clean["end"]:
            raise ActdistillError(
                f"{name}[{i}]: 'start' ({clean['start']:g}) is after 'end' ({clean['end']:g})"
                f" in video {clean['video']!r}."
            )
        out.append(clean)
    return out


def _interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """All-point interpolated AP (VOC 2010+ / ActivityNet `interpolated_prec_rec`)."""
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def _eleven_point_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """11-point interpolated AP of the THUMOS14 kit's `prap`: mean over t in {0, 0.1, …, 1} of max P(R ≥ t)."""
    total = 0.0
    for t in np.arange(11) / 10.0:
        reached = precision[recall >= t]
        total += float(reached.max()) if reached.size else 0.0
    return total / 11.0


def _activitynet_class_ap(gt: list[dict], preds: list[dict], thresholds: Sequence[float]) -> list[float]:
    n_gt = len(gt)
    if not preds:
        return [0.0] * len(thresholds)
    index_by_video: dict[Hashable, list[int]] = {}
    for idx, row in enumerate(gt):
        index_by_video.setdefault(row["video"], []).append(idx)
    gt_by_video = {
        video: (np.asarray(ids), np.asarray([[gt[i]["start"], gt[i]["end"]] for i in ids], dtype=np.float64))
        for video, ids in index_by_video.items()
    }
    scores = np.asarray([p["score"] for p in preds], dtype=np.float64)
    # ActivityNet's `score.argsort()[::-1]`: numpy's default (unstable) sort, reversed. Calling exactly that on the
    # same array reproduces the reference's order of equal scores, whatever numpy and CPU sort them with.
    order = np.argsort(scores)[::-1]
    tp = np.zeros((len(thresholds), len(preds)))
    locked = np.zeros((len(thresholds), n_gt), dtype=bool)
    for rank, pi in enumerate(order):
        pred = preds[pi]
        if pred["video"] not in gt_by_video:
            continue
        ids, segs = gt_by_video[pred["video"]]
        # ActivityNet's segment_iou: union = |pred| + |gt| - intersection.
        inter = np.clip(np.minimum(pred["end"], segs[:, 1]) - np.maximum(pred["start"], segs[:, 0]), 0.0, None)
        union = (pred["end"] - pred["start"]) + (segs[:, 1] - segs[:, 0]) - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            tiou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        by_tiou = np.argsort(tiou)[::-1]  # ActivityNet's `tiou_arr.argsort()[::-1]`, ties included
        for t, thr in enumerate(thresholds):
            for j in by_tiou:
                if tiou[j] < thr:
                    break
                if not locked[t, ids[j]]:
                    locked[t, ids[j]] = True
                    tp[t, rank] = 1.0
                    break
    tp_cum = np.cumsum(tp, axis=1)
    seen = np.arange(1, len(preds) + 1, dtype=np.float64)
    return [_interpolated_ap(tp_cum[t] / seen, tp_cum[t] / n_gt) for t in range(len(thresholds))]


def _thumos_class_ap(
    gt: list[dict],
    preds: list[dict],
    ambiguous: Mapping[Hashable, np.ndarray],
    thresholds: Sequence[float],
    updated: bool,
) -> tuple[list[float], list[int]]:
    n_gt = len(gt)
    gt_by_video: dict[Hashable, list[dict]] = {}
    for row in gt:
        gt_by_video.setdefault(row["video"], []).append(row)
    pred_by_video: dict[Hashable, list[dict]] = {}
    for row in preds:
        pred_by_video.setdefault(row["video"], []).append(row)
    aps, ignored = [], []
    for thr in thresholds:
        # Per video, (score, is_tp) for every detection that stays in the ranking, in per-video score order.
        per_video: list[tuple[np.ndarray, np.ndarray]] = []
        n_ignored = 0
        for video in sorted(pred_by_video, key=str):
            dets = pred_by_video[video]
            conf = np.asarray([d["score"] for d in dets], dtype=np.float64)
            order = np.argsort(-conf, kind="stable")
            conf = conf[order]
            det_segs = np.asarray([[dets[i]["start"], dets[i]["end"]] for i in order], dtype=np.float64)
            free = np.ones(len(dets), dtype=bool)
            video_gt = gt_by_video.get(video, [])
            if video_gt:
                gt_segs = np.asarray([[g["start"], g["end"]] for g in video_gt], dtype=np.float64)
                ov = _kit_overlap(gt_segs, det_segs)
                # The kit loops over ground truth (annotation order), not detections: each takes the free
                # detection with the largest overlap (first, i.e. highest-scored, among equal overlaps).
                for k in range(ov.shape[0]):
                    candidates = np.flatnonzero(free)
                    if candidates.size == 0:
                        break
                    best = candidates[np.argmax(ov[k, candidates])]
                    if ov[k, best] > thr:
                        free[best] = False
            on_ambiguous = np.zeros(len(dets), dtype=bool)
            if video in ambiguous:
                on_ambiguous = (_kit_overlap(ambiguous[video], det_segs) > 0).any(axis=0)
            keep = ~free | ~on_ambiguous
            n_ignored += int((~keep).sum())
            per_video.append((conf[keep], ~free[keep]))
        ignored.append(n_ignored)
        if updated:
            conf = np.concatenate([c for c, _ in per_video]) if per_video else np.zeros(0)
            is_tp = np.concatenate([m for _, m in per_video]) if per_video else np.zeros(0, dtype=bool)
        else:
            # The original kit concatenates all TP scores, then all FP scores, before a stable sort:
            # equal scores therefore rank TPs first.
            conf = np.concatenate([c[m] for c, m in per_video] + [c[~m] for c, m in per_video] + [np.zeros(0)])
            is_tp = np.concatenate(
                [np.ones(int(m.sum()), bool) for _, m in per_video]
                + [np.zeros(int((~m).sum()), bool) for _, m in per_video]
                + [np.zeros(0, bool)]
            )
        order = np.argsort(-conf, kind="stable")
        is_tp = is_tp[order]
        tp_cum = np.cumsum(is_tp)
        precision = tp_cum / np.arange(1, is_tp.size + 1)
        recall = tp_cum / n_gt
        if updated:
            aps.append(float(precision[is_tp].sum() / n_gt))
        else:
            aps.append(_eleven_point_ap(precision, recall))
    return aps, ignored


def detection_map(
    ground_truth: Iterable[Mapping[str, Any]],
    predictions: Iterable[Mapping[str, Any]],
    tiou_thresholds: Sequence[float] = THUMOS14_TIOU_THRESHOLDS,
    protocol: str = "activitynet",
) -> dict[str, Any]:
    """Per-class AP and mAP at each tIoU threshold for temporal detections.

    `ground_truth`: rows `{video, start, end, label}`; `predictions`: rows `{video, start, end, label, score}`.
    Returns `{"protocol", "tiou_thresholds": [t], "map": {t: mAP}, "average_map": mean over t,
    "per_class_ap": {label: {t: AP}}, "num_ground_truth", "num_predictions", "ignored_ground_truth",
    "ignored_predictions": {t: n}}`. Classes are the non-`Ambiguous` ground-truth labels: a class with ground
    truth but no prediction has AP 0; predictions of labels without ground truth are counted in
    `num_predictions` but belong to no class and change nothing. `num_ground_truth` excludes `Ambiguous` rows,
    which are counted in `ignored_ground_truth`; `ignored_predictions` counts detections dropped by the THUMOS14
    Ambiguous rule (always 0 under `"activitynet"`).
    """
    if protocol not in PROTOCOLS:
        raise ActdistillError(
            f"unknown detection protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}."
            + suggest(str(protocol), PROTOCOLS)
        )
    thresholds = [float(t) for t in tiou_thresholds]
    if not thresholds:
        raise ActdistillError("tiou_thresholds is empty; give at least one threshold, e.g. (0.1, 0.2, 0.3, 0.4, 0.5).")
    for t in thresholds:
        if not 0.0 <= t <= 1.0:
            raise ActdistillError(f"tIoU threshold {t:g} is outside [0, 1].")
    gt_rows = _validate(ground_truth, "ground_truth", ("video", "start", "end", "label"))
    pred_rows = _validate(predictions, "predictions", ("video", "start", "end", "label", "score"))

    ambiguous_rows = [g for g in gt_rows if g["label"] == AMBIGUOUS]
    gt_rows = [g for g in gt_rows if g["label"] != AMBIGUOUS]
    if not gt_rows:
        raise ActdistillError("ground truth has no instances apart from 'Ambiguous' ones; mAP is undefined.")
    ambiguous: dict[Hashable, np.ndarray] = {}
    if protocol != "activitynet":
        for video in {a["video"] for a in ambiguous_rows}:
            ambiguous[video] = np.asarray(
                [[a["start"], a["end"]] for a in ambiguous_rows if a["video"] == video], dtype=np.float64
            )

    gt_by_label: dict[Hashable, list[dict]] = {}
    for row in gt_rows:
        gt_by_label.setdefault(row["label"], []).append(row)
    pred_by_label: dict[Hashable, list[dict]] = {}
    for row in pred_rows:
        pred_by_label.setdefault(row["label"], []).append(row)

    per_class: dict[Hashable, dict[float, float]] = {}
    ignored = dict.fromkeys(thresholds, 0)
    for label in sorted(gt_by_label, key=str):
        gt, preds = gt_by_label[label], pred_by_label.get(label, [])
        if protocol == "activitynet":
            aps = _activitynet_class_ap(gt, preds, thresholds)
        else:
            aps, n_ignored = _thumos_class_ap(gt, preds, ambiguous, thresholds, updated=protocol == "thumos14_updated")
            for t, n in zip(thresholds, n_ignored):
                ignored[t] += n
        per_class[label] = dict(zip(thresholds, aps))

    maps = {t: float(np.mean([aps[t] for aps in per_class.values()])) for t in thresholds}
    return {
        "protocol": protocol,
        "tiou_thresholds": thresholds,
        "map": maps,
        "average_map": float(np.mean(list(maps.values()))),
        "per_class_ap": per_class,
        "num_ground_truth": len(gt_rows),
        "num_predictions": len(pred_rows),
        "ignored_ground_truth": len(ambiguous_rows),
        "ignored_predictions": ignored,
    }


def load_thumos14_annotations(annotation_dir: str | Path, subset: str = "test") -> list[dict[str, Any]]:
    """Rows `{video, start, end, label}` from the official per-class files `<Class>_<subset>.txt` in `annotation_dir`.

    Each line is `video_name start end` (seconds; any whitespace, CRLF and blank lines tolerated); the label is
    the class name from the file name, `Ambiguous_<subset>.txt` included. Rows are ordered by class file name,
    then by line, as the kit reads them. Instances listed in two classes (every CliffDiving instance is also a
    Diving one) appear once per class.
    """
    if subset not in ("test", "val"):
        raise ActdistillError(f"THUMOS14 subset must be 'test' or 'val', got {subset!r}.")
    root = Path(annotation_dir)
    if not root.is_dir():
        raise ActdistillError(f"THUMOS14 annotation folder not found: {root}")
    suffix = f"_{subset}.txt"
    files = sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(suffix) and len(p.name) > len(suffix))
    if not files:
        raise ActdistillError(
            f"no '*{suffix}' files in {root}; pass the folder holding the per-class files (e.g. annotations_{subset}/)."
        )
    rows: list[dict[str, Any]] = []
    for path in files:
        label = path.name[: -len(suffix)]
        for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 3:
                raise ActdistillError(f"{path}:{lineno}: expected 'video_name start end', got {line.strip()!r}.")
            try:
                start, end = float(fields[1]), float(fields[2])
            except ValueError:
                raise ActdistillError(f"{path}:{lineno}: start/end are not numbers: {line.strip()!r}.") from None
            if start > end:
                raise ActdistillError(f"{path}:{lineno}: start {start:g} is after end {end:g}.")
            rows.append({"video": fields[0], "start": start, "end": end, "label": label})
    return rows
