"""Classification metrics: hand-worked values, agreement with scikit-learn, and the accumulating meter."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from actdistill.errors import ActdistillError
from actdistill.eval.metrics import (
    ClassificationMeter,
    average_precision,
    classification_report,
    confusion_matrix,
    mean_average_precision,
    mean_class_accuracy,
    per_class_ap,
    topk_accuracy,
)

# ---------------------------------------------------------------------------------------------- average precision


def test_ap_hand_worked() -> None:
    # Positives at ranks 1 and 3: precisions 1 and 2/3 at the two recall steps of 1/2.
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([True, False, True, False])) == (
        pytest.approx(0.8333333333)
    )


def test_ap_all_positives_first_is_one() -> None:
    assert average_precision([0.1, 0.9, 0.8, 0.2, 0.7], [0, 1, 1, 0, 1]) == 1.0


def test_ap_last_positive() -> None:
    assert average_precision([4.0, 3.0, 2.0, 1.0], [0, 0, 0, 1]) == pytest.approx(0.25)


def test_ap_ties_form_one_threshold() -> None:
    # Groups {0.9}: 1 TP of 1 seen -> P=1, R=1/2; {0.5, 0.5}: 2 TP of 3 seen -> P=2/3, R=1.
    expected = 0.5 * 1 + 0.5 * 2 / 3
    assert average_precision([0.9, 0.5, 0.5, 0.1], [1, 0, 1, 0]) == pytest.approx(expected)
    # The order inside a tie does not matter.
    assert average_precision([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(expected)
    # All scores equal: a single point, precision = prevalence.
    assert average_precision([0.3, 0.3, 0.3, 0.3], [0, 1, 0, 0]) == pytest.approx(0.25)


def test_ap_without_positives_is_nan() -> None:
    assert math.isnan(average_precision([0.3, 0.2], [0, 0]))


def test_ap_rejects_bad_input() -> None:
    with pytest.raises(ActdistillError):
        average_precision([0.1, 0.2], [1])
    with pytest.raises(ActdistillError):
        average_precision([0.1, float("nan")], [1, 0])


@pytest.mark.parametrize("seed", range(20))
def test_ap_matches_sklearn_with_ties(seed: int) -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 200))
    # One decimal produces many ties.
    scores = np.round(rng.random(n), 1 if seed % 2 else 3)
    positives = rng.random(n) < rng.uniform(0.05, 0.7)
    positives[rng.integers(n)] = True
    expected = sklearn_metrics.average_precision_score(positives, scores)
    assert average_precision(scores, positives) == pytest.approx(expected, abs=1e-12)


def test_per_class_ap_and_map_match_sklearn() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    n, k = 300, 7
    labels = rng.integers(0, k - 1, size=n)  # class k-1 never occurs
    scores = np.round(rng.random((n, k)), 2)
    aps = per_class_ap(scores, labels)
    for c in range(k - 1):
        assert aps[c] == pytest.approx(sklearn_metrics.average_precision_score(labels == c, scores[:, c]), abs=1e-12)
    assert math.isnan(aps[k - 1])
    assert mean_average_precision(scores, labels) == pytest.approx(np.mean(aps[: k - 1]))


# ------------------------------------------------------------------------------------- accuracy-type metrics


def test_topk_hand_example() -> None:
    logits = torch.tensor(
        [
            [0.1, 0.5, 0.2, 0.9],  # label 3: rank 0
            [0.8, 0.1, 0.7, 0.0],  # label 2: rank 1
            [0.1, 0.2, 0.3, 0.4],  # label 0: rank 3
        ]
    )
    labels = torch.tensor([3, 2, 0])
    acc = topk_accuracy(logits, labels, ks=(1, 2, 3, 5))
    assert acc == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: pytest.approx(2 / 3), 5: 1.0}


def test_topk_ties_go_to_lower_index() -> None:
    logits = np.zeros((2, 4))
    assert topk_accuracy(logits, [0, 3], ks=(1, 3)) == {1: 0.5, 3: 0.5}


def test_topk_matches_torch_topk_without_ties() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=gen)
    labels = torch.randint(0, 10, (500,), generator=gen)
    acc = topk_accuracy(logits, labels)
    for k in (1, 5):
        ref = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).float().mean().item()
        assert acc[k] == pytest.approx(ref)


def test_mean_class_accuracy_imbalanced() -> None:
    labels = [0, 0, 0, 0, 1]
    preds = [0, 0, 0, 0, 0]
    # Accuracy is 0.8, but class 1 is never recalled; class 2 is absent and does not count.
    assert mean_class_accuracy(preds, labels, num_classes=3) == pytest.approx(0.5)
    logits = np.eye(3)[preds]
    assert mean_class_accuracy(logits, labels, num_classes=3) == pytest.approx(0.5)


def test_confusion_matrix_rows_are_true_class() -> None:
    cm = confusion_matrix([0, 2, 2, 1, 0], [0, 0, 2, 1, 1], num_classes=3)
    expected = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64
    assert cm.sum() == 5


def test_label_out_of_range_is_user_error() -> None:
    with pytest.raises(ActdistillError, match="outside"):
        confusion_matrix([0, 1], [0, 3], num_classes=3)
    with pytest.raises(ActdistillError):
        topk_accuracy(np.zeros((2, 3)), [0, 1, 2])


# ----------------------------------------------------------------------------------------- report and meter


def _random_problem(n: int = 64, k: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (n,), generator=gen)
    logits = torch.randn(n, k, generator=gen) + 2.0 * torch.nn.functional.one_hot(labels, k)
    return logits, labels, [f"class_{i}" for i in range(k)]


def test_report_contents_and_json() -> None:
    logits, labels, names = _random_problem()
    report = classification_report(logits, labels, names)
    assert set(report) == {
        "num_samples",
        "top1",
        "top5",
        "mean_class_accuracy",
        "mAP",
        "per_class_ap",
        "confusion_matrix",
    }
    assert report["num_samples"] == 64
    assert report["top1"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert list(report["per_class_ap"]) == names
    probs = torch.softmax(logits.double(), dim=1)
    assert report["mAP"] == pytest.approx(mean_average_precision(probs, labels))
    assert np.array(report["confusion_matrix"]).sum() == 64
    json.dumps(report, allow_nan=False)


def test_report_absent_class_is_null() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    report = classification_report(logits, torch.tensor([0, 1]), ["a", "b", "c"])
    assert report["per_class_ap"] == {"a": 1.0, "b": 1.0, "c": None}
    assert report["mAP"] == 1.0
    json.dumps(report, allow_nan=False)


def test_report_validates_class_names() -> None:
    logits, labels, names = _random_problem()
    with pytest.raises(ActdistillError, match="class names"):
        classification_report(logits, labels, names[:-1])
    with pytest.raises(ActdistillError, match="unique"):
        classification_report(logits, labels, ["x"] * len(names))


def test_meter_equals_one_shot_report() -> None:
    logits, labels, names = _random_problem(n=100)
    meter = ClassificationMeter()
    for start in range(0, 100, 32):
        meter.update(logits[start : start + 32].half().double(), labels[start : start + 32])
    assert len(meter) == 100
    assert meter.logits.dtype == torch.float32 and meter.labels.dtype == torch.int64
    expected = classification_report(logits.half().float(), labels, names)
    assert meter.compute(names) == expected


def test_meter_merge_and_state() -> None:
    logits, labels, names = _random_problem(n=90)
    a, b = ClassificationMeter(), ClassificationMeter()
    a.update(logits[:40], labels[:40])
    b.update(logits[40:], labels[40:])
    a.merge(b.state())
    assert torch.equal(a.logits, logits) and torch.equal(a.labels, labels)
    restored = ClassificationMeter.from_state(a.state())
    assert restored.compute(names) == classification_report(logits, labels, names)
    c = ClassificationMeter()
    c.merge(restored)
    c.merge(ClassificationMeter())  # merging an empty meter is a no-op
    assert len(c) == 90


def test_meter_errors() -> None:
    meter = ClassificationMeter()
    with pytest.raises(ActdistillError, match="empty"):
        meter.compute(["a"])
    meter.update(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ActdistillError, match="classes"):
        meter.update(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ActdistillError):
        meter.update(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
