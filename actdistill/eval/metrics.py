"""Classification metrics: top-k accuracy, mean class accuracy, non-interpolated AP / mAP, confusion matrix.

All functions take torch tensors, numpy arrays or nested sequences and return plain Python numbers, lists or
numpy arrays, so their results can go straight into `results.json`. Fractions are in [0, 1], not percent.

AP is a toolkit decision (paper 1, §III-A, reports mAP without defining AP): non-interpolated, identical to
`sklearn.metrics.average_precision_score` (AP = Σ_n (R_n − R_{n−1}) · P_n over the distinct score thresholds,
highest first, with equal scores forming one threshold). Unlike scikit-learn, a class with no positive sample has
AP = NaN (scikit-learn warns and returns 0), and `mean_average_precision` averages over the classes that do have
positives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from actdistill.errors import ActdistillError

ArrayLike = Tensor | np.ndarray | Sequence[Any]

__all__ = [
    "ClassificationMeter",
    "average_precision",
    "classification_report",
    "confusion_matrix",
    "mean_average_precision",
    "mean_class_accuracy",
    "per_class_ap",
    "topk_accuracy",
]


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _scores_2d(scores: ArrayLike, name: str = "logits") -> np.ndarray:
    s = _to_numpy(scores)
    if s.ndim != 2:
        raise ActdistillError(f"{name} must have shape (N, K), got shape {tuple(s.shape)}.")
    if s.shape[1] == 0:
        raise ActdistillError(f"{name} has zero classes (shape {tuple(s.shape)}).")
    s = s.astype(np.float64, copy=False)
    if not np.isfinite(s).all():
        raise ActdistillError(f"{name} contains NaN or infinite values.")
    return s


def _labels_1d(labels: ArrayLike, n: int, num_classes: int | None) -> np.ndarray:
    y = _to_numpy(labels)
    if y.ndim != 1:
        raise ActdistillError(f"labels must have shape (N,), got shape {tuple(y.shape)}.")
    if y.shape[0] != n:
        raise ActdistillError(f"labels has {y.shape[0]} entries but the predictions have {n} rows.")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ActdistillError("labels must be integer class indices.")
    y = y.astype(np.int64, copy=False)
    if y.size and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise ActdistillError(f"label {bad} is outside the valid class range [0, {num_classes}).")
    return y


def _predictions_1d(preds: ArrayLike, num_classes: int) -> np.ndarray:
    p = _to_numpy(preds)
    if p.ndim == 2:
        if p.shape[1] != num_classes:
            raise ActdistillError(f"logits have {p.shape[1]} columns but num_classes is {num_classes}.")
        return _argmax(_scores_2d(p))
    if p.ndim != 1:
        raise ActdistillError(f"predictions must have shape (N,) or logits (N, K), got shape {tuple(p.shape)}.")
    p = p.astype(np.int64, copy=False)
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ActdistillError(f"predicted class {int(p.max())} is outside [0, {num_classes}).")
    return p


def _argmax(scores: np.ndarray) -> np.ndarray:
    # np.argmax returns the first maximum, so ties go to the lowest class index (deterministic).
    return scores.argmax(axis=1).astype(np.int64)


def topk_accuracy(logits: ArrayLike, labels: ArrayLike, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of samples whose label is among the k highest of `logits` (N, K) for each k; k is clipped to K.

    Ties in the scores are broken towards the lower class index, so the result is deterministic.
    """
    s = _scores_2d(logits)
    n, num_classes = s.shape
    y = _labels_1d(labels, n, num_classes)
    if n == 0:
        raise ActdistillError("topk_accuracy needs at least one sample.")
    for k in ks:
        if int(k) < 1:
            raise ActdistillError(f"top-k needs k >= 1, got {k}.")
    # Rank of the true class = number of classes that beat it (strictly higher, or equal with a lower index).
    true_score = s[np.arange(n), y][:, None]
    cols = np.arange(num_classes)[None, :]
    rank = ((s > true_score) | ((s == true_score) & (cols < y[:, None]))).sum(axis=1)
    return {int(k): float((rank < min(int(k), num_classes)).mean()) for k in ks}


def mean_class_accuracy(preds: ArrayLike, labels: ArrayLike, num_classes: int) -> float:
    """Mean over classes present in `labels` (N,) of per-class recall; `preds` are class ids (N,) or logits (N, K)."""
    p = _predictions_1d(preds, num_classes)
    y = _labels_1d(labels, p.shape[0], num_classes)
    if y.size == 0:
        raise ActdistillError("mean_class_accuracy needs at least one sample.")
    support = np.bincount(y, minlength=num_classes)
    correct = np.bincount(y[p == y], minlength=num_classes)
    present = support > 0
    return float((correct[present] / support[present]).mean())


def average_precision(scores: ArrayLike, positives: ArrayLike) -> float:
    """Non-interpolated AP of `scores` (N,) against boolean `positives` (N,), as scikit-learn; NaN if no positive.

    AP = Σ_n (R_n − R_{n−1}) · P_n over the distinct score values in decreasing order; samples with equal scores
    are one threshold (they enter the precision/recall curve together), exactly like `average_precision_score`.
    """
    s = _to_numpy(scores).astype(np.float64, copy=False)
    t = _to_numpy(positives)
    if s.ndim != 1 or t.ndim != 1 or s.shape != t.shape:
        raise ActdistillError(f"scores and positives must both have shape (N,), got {s.shape} and {t.shape}.")
    if not np.isfinite(s).all():
        raise ActdistillError("scores contain NaN or infinite values.")
    t = t.astype(bool)
    n_pos = int(t.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order]
    # Last index of each run of equal scores: the curve only has a point after a whole tie group.
    last_of_group = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tp = np.cumsum(t)[last_of_group].astype(np.float64)
    seen = (last_of_group + 1).astype(np.float64)
    precision = tp / seen
    recall = tp / n_pos
    recall_gain = np.diff(np.r_[0.0, recall])
    return float(np.sum(recall_gain * precision))


def per_class_ap(scores: ArrayLike, labels: ArrayLike) -> list[float]:
    """One-vs-rest non-interpolated AP for each column of `scores` (N, K) given `labels` (N,); NaN where no positive."""
    s = _scores_2d(scores, "scores")
    y = _labels_1d(labels, s.shape[0], s.shape[1])
    return [average_precision(s[:, c], y == c) for c in range(s.shape[1])]


def mean_average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Mean of `per_class_ap(scores (N, K), labels (N,))` over the classes with at least one positive sample."""
    aps = [ap for ap in per_class_ap(scores, labels) if not math.isnan(ap)]
    if not aps:
        raise ActdistillError("mean_average_precision needs at least one sample.")
    return float(np.mean(aps))


def confusion_matrix(preds: ArrayLike, labels: ArrayLike, num_classes: int) -> np.ndarray:
    """Counts (K, K) int64: row = true class, column = predicted class; `preds` are ids (N,) or logits (N, K)."""
    p = _predictions_1d(preds, num_classes)
    y = _labels_1d(labels, p.shape[0], num_classes)
    counts = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification_report(logits: ArrayLike, labels: ArrayLike, class_names: Sequence[str]) -> dict[str, Any]:
    """All classification metrics for `logits` (N, K) and `labels` (N,), JSON-serialisable (for results.json).

    Keys: `num_samples`; `top1`, `top5` (k clipped to K); `mean_class_accuracy`; `mAP` (mean one-vs-rest AP of
    the softmax scores, computed in float64, over classes with a positive); `per_class_ap` (name → AP, or None
    for a class absent from `labels`); `confusion_matrix` (K×K list of lists, row = true class, in the order of
    `class_names`).
    """
    s = _scores_2d(logits)
    n, num_classes = s.shape
    names = [str(c) for c in class_names]
    if len(names) != num_classes:
        raise ActdistillError(f"got {len(names)} class names for logits with {num_classes} classes.")
    if len(set(names)) != len(names):
        dup = sorted({c for c in names if names.count(c) > 1})
        raise ActdistillError(f"class names must be unique; repeated: {', '.join(dup)}.")
    y = _labels_1d(labels, n, num_classes)
    if n == 0:
        raise ActdistillError("classification_report needs at least one sample.")
    topk = topk_accuracy(s, y, ks=(1, 5))
    aps = per_class_ap(_softmax(s), y)
    valid = [ap for ap in aps if not math.isnan(ap)]
    return {
        "num_samples": int(n),
        "top1": topk[1],
        "top5": topk[5],
        "mean_class_accuracy": mean_class_accuracy(s, y, num_classes),
        "mAP": float(np.mean(valid)),
        "per_class_ap": {name: (None if math.isnan(ap) else ap) for name, ap in zip(names, aps)},
        "confusion_matrix": confusion_matrix(s, y, num_classes).tolist(),
    }


class ClassificationMeter:
    """Accumulates logits (N, K) and labels (N,) over batches on the CPU and reports `classification_report`.

    `state()` returns `{"logits": (N, K) float32, "labels": (N,) int64}`; `merge()` appends another meter's
    state (e.g. gathered from other processes), so the metrics are computed once over the whole set.
    """

    def __init__(self) -> None:
        self._logits: list[Tensor] = []
        self._labels: list[Tensor] = []
        self._num_classes: int | None = None

    def __len__(self) -> int:
        return sum(t.shape[0] for t in self._labels)

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._logits.clear()
        self._labels.clear()
        self._num_classes = None

    def update(self, logits: ArrayLike, labels: ArrayLike) -> None:
        """Append a batch: `logits` (B, K) are detached and stored as CPU float32, `labels` (B,) as int64."""
        lg = torch.as_tensor(logits).detach().to(device="cpu", dtype=torch.float32)
        lb = torch.as_tensor(labels).detach().to(device="cpu")
        if lg.ndim != 2:
            raise ActdistillError(f"logits must have shape (B, K), got shape {tuple(lg.shape)}.")
        if lb.ndim != 1 or lb.shape[0] != lg.shape[0]:
            raise ActdistillError(f"labels must have shape ({lg.shape[0]},), got shape {tuple(lb.shape)}.")
        if lb.is_floating_point():
            raise ActdistillError("labels must be integer class indices.")
        if self._num_classes is None:
            self._num_classes = int(lg.shape[1])
        elif lg.shape[1] != self._num_classes:
            raise ActdistillError(f"logits have {lg.shape[1]} classes; earlier batches had {self._num_classes}.")
        self._logits.append(lg.clone())
        self._labels.append(lb.to(torch.int64).clone())

    @property
    def logits(self) -> Tensor:
        """All accumulated logits, (N, K) float32 (N = 0 and K = 0 when empty)."""
        if not self._logits:
            return torch.zeros(0, self._num_classes or 0)
        if len(self._logits) > 1:
            self._logits = [torch.cat(self._logits)]
        return self._logits[0]

    @property
    def labels(self) -> Tensor:
        """All accumulated labels, (N,) int64."""
        if not self._labels:
            return torch.zeros(0, dtype=torch.int64)
        if len(self._labels) > 1:
            self._labels = [torch.cat(self._labels)]
        return self._labels[0]

    def state(self) -> dict[str, Tensor]:
        """`{"logits": (N, K) float32, "labels": (N,) int64}`, suitable for `torch.save` or an all-gather."""
        return {"logits": self.logits, "labels": self.labels}

    def merge(self, other: ClassificationMeter | Mapping[str, Tensor]) -> None:
        """Append the samples of another meter or of a `state()` dict to this one."""
        state = other.state() if isinstance(other, ClassificationMeter) else other
        missing = {"logits", "labels"} - set(state)
        if missing:
            raise ActdistillError(f"meter state is missing {', '.join(sorted(missing))}.")
        if state["labels"].shape[0] == 0:
            return
        self.update(state["logits"], state["labels"])

    @classmethod
    def from_state(cls, state: Mapping[str, Tensor]) -> ClassificationMeter:
        """A meter holding the samples of a `state()` dict."""
        meter = cls()
        meter.merge(state)
        return meter

    def compute(self, class_names: Sequence[str]) -> dict[str, Any]:
        """`classification_report` over everything accumulated (same keys)."""
        if len(self) == 0:
            raise ActdistillError("ClassificationMeter is empty: call update() with at least one batch first.")
        return classification_report(self.logits, self.labels, class_names)
