"""Temporal detection mAP: hand-worked ActivityNet and THUMOS14-kit cases, and the real THUMOS14 annotations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from actdistill.errors import ActdistillError
from actdistill.eval.detection import (
    PROTOCOLS,
    THUMOS14_TIOU_THRESHOLDS,
    detection_map,
    load_thumos14_annotations,
    temporal_iou,
)

THRESHOLDS = THUMOS14_TIOU_THRESHOLDS
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
THUMOS_TEST = SHARED_DATA / "thumos14_annotations" / "annotations_test"


def gt(video: str, start: float, end: float, label: str = "A") -> dict:
    return {"video": video, "start": start, "end": end, "label": label}


def det(video: str, start: float, end: float, score: float, label: str = "A") -> dict:
    return {"video": video, "start": start, "end": end, "label": label, "score": score}


def maps(result: dict) -> list[float]:
    return [result["map"][t] for t in result["tiou_thresholds"]]


# -------------------------------------------------------------------------------------------------------- tIoU


def test_temporal_iou_edge_cases() -> None:
    assert temporal_iou([[0, 5]], [[5, 10]])[0, 0] == 0.0  # touching
    assert temporal_iou([[0, 5]], [[6, 10]])[0, 0] == 0.0  # disjoint
    assert temporal_iou([[0, 10]], [[0, 10]])[0, 0] == 1.0
    assert temporal_iou([[0, 10]], [[2, 4]])[0, 0] == pytest.approx(0.2)
    assert temporal_iou([[0, 10]], [[5, 15]])[0, 0] == pytest.approx(5 / 15)
    assert temporal_iou([[5, 5]], [[4, 6]])[0, 0] == 0.0  # zero-length ground truth
    assert temporal_iou([[5, 5]], [[5, 5]])[0, 0] == 0.0  # empty union is defined as 0
    assert temporal_iou([[0, 10], [20, 30]], [[0, 5], [25, 30], [40, 50]]).shape == (2, 3)


# ----------------------------------------------------------------------------------------- shared behaviour


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_perfect_predictions_score_one(protocol: str) -> None:
    truth = [gt("v1", 0, 10), gt("v1", 20, 30), gt("v2", 5, 6, "B"), gt("v3", 1, 2.5, "C")]
    preds = [dict(g, score=0.5 + 0.1 * i) for i, g in enumerate(truth)]
    result = detection_map(truth, preds, protocol=protocol)
    assert maps(result) == [1.0] * 5
    assert result["average_map"] == 1.0
    assert result["per_class_ap"] == {c: dict.fromkeys(THRESHOLDS, 1.0) for c in "ABC"}
    assert (result["num_ground_truth"], result["num_predictions"], result["ignored_ground_truth"]) == (4, 4, 0)
    assert result["protocol"] == protocol and result["tiou_thresholds"] == list(THRESHOLDS)
    json.dumps(result)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_wrong_class_scores_nothing(protocol: str) -> None:
    result = detection_map([gt("v1", 0, 10, "A")], [det("v1", 0, 10, 0.9, "B")], protocol=protocol)
    assert maps(result) == [0.0] * 5
    assert list(result["per_class_ap"]) == ["A"]  # B has no ground truth: not a class
    assert result["num_predictions"] == 1
    # With B in the ground truth too, the B detection is a false positive for B and A still has no hit.
    result = detection_map(
        [gt("v1", 0, 10, "A"), gt("v2", 0, 10, "B")], [det("v1", 0, 10, 0.9, "B")], protocol=protocol
    )
    assert maps(result) == [0.0] * 5


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_duplicate_detection_is_false_positive(protocol: str) -> None:
    # Same segment twice; the duplicate outranks the second true positive: TP, FP, TP.
    truth = [gt("v1", 0, 10), gt("v1", 20, 30)]
    preds = [det("v1", 0, 10, 0.9), det("v1", 0, 10, 0.8), det("v1", 20, 30, 0.7)]
    expected = {
        "activitynet": 0.5 * 1 + 0.5 * 2 / 3,  # interpolated precision 1 up to R=1/2, then 2/3
        "thumos14": (6 * 1 + 5 * 2 / 3) / 11,  # 11-point: recall points 0..0.5 -> 1, 0.6..1 -> 2/3
        "thumos14_updated": (1 + 2 / 3) / 2,  # precision at each TP / #GT
    }[protocol]
    assert maps(detection_map(truth, preds, protocol=protocol)) == pytest.approx([expected] * 5)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_prediction_in_video_without_ground_truth_is_false_positive(protocol: str) -> None:
    truth = [gt("v1", 0, 10)]
    preds = [det("v9", 0, 10, 0.9), det("v1", 0, 10, 0.5)]
    assert maps(detection_map(truth, preds, protocol=protocol)) == pytest.approx([0.5] * 5)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_class_without_predictions_counts_as_zero(protocol: str) -> None:
    truth = [gt("v1", 0, 10, "A"), gt("v1", 20, 30, "B")]
    result = detection_map(truth, [det("v1", 0, 10, 0.9, "A")], protocol=protocol)
    assert result["per_class_ap"]["B"] == dict.fromkeys(THRESHOLDS, 0.0)
    assert maps(result) == [0.5] * 5


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_zero_length_ground_truth_cannot_be_matched(protocol: str) -> None:
    truth = [gt("v1", 5, 5), gt("v1", 20, 30)]
    preds = [det("v1", 4, 6, 0.9), det("v1", 5, 5, 0.8), det("v1", 20, 30, 0.7)]
    result = detection_map(truth, preds, protocol=protocol)
    assert result["num_ground_truth"] == 2  # still counted: the best reachable recall is 1/2
    expected = {"activitynet": 0.5 / 3, "thumos14": (6 / 3) / 11, "thumos14_updated": (1 / 3) / 2}[protocol]
    assert maps(result) == pytest.approx([expected] * 5)


# ----------------------------------------------------------------------------------- hand-worked, per protocol

# Class A: v1 has g1=[0,10], g2=[20,30]; v2 has g3=[0,10]. Detections by score:
#   .90 v1 [0,10]  -> g1 (tIoU 1)
#   .85 v1 [0,9]   -> duplicate on g1 (tIoU .9 with a used GT, 0 with g2): FP
#   .80 v1 [21,31] -> g2 (tIoU 9/11)
#   .70 v2 [0,4]   -> g3 with tIoU exactly 0.4: a match at thresholds <= 0.4 (ActivityNet: >=), < 0.4 (kit: >)
#   .50 v3 [0,5]   -> video without ground truth: FP
HAND_GT = [gt("v1", 0, 10), gt("v1", 20, 30), gt("v2", 0, 10)]
HAND_PRED = [
    det("v1", 0, 10, 0.9),
    det("v1", 0, 9, 0.85),
    det("v1", 21, 31, 0.8),
    det("v2", 0, 4, 0.7),
    det("v3", 0, 5, 0.5),
]


def test_hand_worked_activitynet() -> None:
    # t <= 0.4: TP FP TP TP FP -> P = 1, .5, 2/3, .75, .6 at R = 1/3, 1/3, 2/3, 1, 1.
    #   Interpolated: 1/3 * 1 + 1/3 * .75 + 1/3 * .75 = 5/6.
    # t = 0.5: TP FP TP FP FP -> 1/3 * 1 + 1/3 * 2/3 = 5/9.
    result = detection_map(HAND_GT, HAND_PRED, protocol="activitynet")
    assert maps(result) == pytest.approx([5 / 6] * 4 + [5 / 9])
    assert result["average_map"] == pytest.approx((4 * 5 / 6 + 5 / 9) / 5)
    assert result["ignored_predictions"] == dict.fromkeys(THRESHOLDS, 0)


def test_hand_worked_thumos14_kit() -> None:
    # t <= 0.3: same ranking TP FP TP TP FP; 11-point: recall points 0..0.3 -> 1, 0.4..1 -> .75: (4 + 7*.75)/11.
    # t = 0.4 (0.4 is not > 0.4) and 0.5: TP FP TP FP FP; points 0..0.3 -> 1, 0.4..0.6 -> 2/3, 0.7..1 -> 0.
    result = detection_map(HAND_GT, HAND_PRED, protocol="thumos14")
    assert maps(result) == pytest.approx([9.25 / 11] * 3 + [6 / 11] * 2)
    assert result["average_map"] == pytest.approx((3 * 9.25 / 11 + 2 * 6 / 11) / 5)


def test_hand_worked_thumos14_updated() -> None:
    # Σ precision at each TP / 3: (1 + 2/3 + 3/4) / 3 for t <= 0.3, (1 + 2/3) / 3 above.
    result = detection_map(HAND_GT, HAND_PRED, protocol="thumos14_updated")
    assert maps(result) == pytest.approx([(1 + 2 / 3 + 0.75) / 3] * 3 + [(1 + 2 / 3) / 3] * 2)


def test_tiou_equal_to_threshold() -> None:
    truth, preds = [gt("v1", 0, 10)], [det("v1", 0, 5, 0.9)]  # tIoU exactly 0.5
    assert detection_map(truth, preds, (0.5,), "activitynet")["map"][0.5] == 1.0
    assert detection_map(truth, preds, (0.5,), "thumos14")["map"][0.5] == 0.0
    assert detection_map(truth, preds, (0.49,), "thumos14")["map"][0.49] == 1.0


def test_kit_matches_ground_truth_to_largest_overlap_not_highest_score() -> None:
    # The high-scored detection overlaps 0.6, the low-scored one 0.9.
    truth = [gt("v1", 0, 10)]
    preds = [det("v1", 0, 6, 0.9), det("v1", 0, 9, 0.5)]
    assert detection_map(truth, preds, (0.5,), "activitynet")["map"][0.5] == 1.0  # score-first: .9 matches
    assert detection_map(truth, preds, (0.5,), "thumos14")["map"][0.5] == pytest.approx(0.5)  # FP then TP
    assert detection_map(truth, preds, (0.5,), "thumos14_updated")["map"][0.5] == pytest.approx(0.5)


def test_equal_scores_tie_handling() -> None:
    # An FP (video 'a', no ground truth) and a TP (video 'b') with the same score, the FP listed first.
    truth = [gt("b", 0, 10)]
    preds = [det("a", 0, 10, 0.5), det("b", 0, 10, 0.5)]
    # ActivityNet ranks by score.argsort()[::-1]: of two equal scores the later-listed prediction comes first.
    assert detection_map(truth, preds, (0.5,), "activitynet")["map"][0.5] == 1.0
    assert detection_map(truth, preds[::-1], (0.5,), "activitynet")["map"][0.5] == pytest.approx(0.5)
    assert detection_map(truth, preds, (0.5,), "thumos14")["map"][0.5] == 1.0  # kit ranks TPs first
    assert detection_map(truth, preds, (0.5,), "thumos14_updated")["map"][0.5] == pytest.approx(0.5)  # video order


def test_activitynet_equal_tiou_takes_the_later_ground_truth() -> None:
    # p1 = [5, 15] overlaps g1 = [0, 10] and g2 = [10, 20] with tIoU 5/15 each (bit-identical). ActivityNet visits
    # the ground truths in tiou.argsort()[::-1] order, so p1 takes g2; p2 = [10, 20] then finds g2 locked and g1
    # below the threshold: TP, FP -> AP 1/2. Trying equal tIoUs in input order would give TP, TP -> 1.
    truth = [gt("v1", 0, 10), gt("v1", 10, 20)]
    preds = [det("v1", 5, 15, 0.9), det("v1", 10, 20, 0.8)]
    assert detection_map(truth, preds, (0.3,), "activitynet")["map"][0.3] == pytest.approx(0.5)
    # Listing the ground truths the other way round swaps which one p1 takes: now p2 finds its g2 free.
    assert detection_map(truth[::-1], preds, (0.3,), "activitynet")["map"][0.3] == 1.0


def test_kit_equal_overlaps_take_the_first_listed_of_equal_scores() -> None:
    # TH14eventdetpr.m: detections sorted by a stable sort of -conf, then each ground truth takes `max` over the
    # free ones, i.e. the first of equal overlaps. d1 = [0, 5] and d2 = [5, 10] overlap g = [0, 10] by 0.5 each; the
    # one left over is an FP unless it touches the Ambiguous segment [9, 12] (only d2 does), then it is dropped.
    truth = [gt("v1", 0, 10), gt("v1", 9, 12, "Ambiguous")]
    d1, d2 = det("v1", 0, 5, 0.5), det("v1", 5, 10, 0.5)
    for protocol in ("thumos14", "thumos14_updated"):
        assert detection_map(truth, [d1, d2], (0.4,), protocol)["ignored_predictions"] == {0.4: 1}  # d1 matched
        assert detection_map(truth, [d2, d1], (0.4,), protocol)["ignored_predictions"] == {0.4: 0}  # d2 matched
        # Among equal overlaps a higher score wins whatever the listing order.
        hi_d2 = [d1, dict(d2, score=0.6)]
        assert detection_map(truth, hi_d2, (0.4,), protocol)["ignored_predictions"] == {0.4: 0}


def test_kit_matches_ground_truth_in_annotation_order() -> None:
    # g1 = [0, 10], g2 = [3, 13]; da = [2, 12] overlaps g1 .667 and g2 .818; db = [6, 16] overlaps g1 .25, g2 .538.
    # Ground truth first, in annotation order: g1 takes da, g2 takes db -> TP, TP. The other way round g2 takes da
    # and g1 is left with db below 0.3 -> TP, FP.
    g1, g2 = gt("v1", 0, 10), gt("v1", 3, 13)
    preds = [det("v1", 2, 12, 0.9), det("v1", 6, 16, 0.8)]
    assert detection_map([g1, g2], preds, (0.3,), "thumos14_updated")["map"][0.3] == 1.0
    assert detection_map([g2, g1], preds, (0.3,), "thumos14_updated")["map"][0.3] == pytest.approx(0.5)
    # ActivityNet is score-first: da takes g2 (its best), db is an FP either way.
    for order in ([g1, g2], [g2, g1]):
        assert detection_map(order, preds, (0.3,), "activitynet")["map"][0.3] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------- Ambiguous


def test_detection_on_ambiguous_segment() -> None:
    truth = [gt("v1", 0, 10), gt("v1", 20, 25, "Ambiguous")]
    preds = [det("v1", 19, 24, 0.95), det("v1", 0, 10, 0.9)]
    anet = detection_map(truth, preds, protocol="activitynet")
    assert maps(anet) == pytest.approx([0.5] * 5)  # an FP ranked above the only TP
    assert anet["ignored_ground_truth"] == 1 and anet["num_ground_truth"] == 1
    assert list(anet["per_class_ap"]) == ["A"]
    for protocol in ("thumos14", "thumos14_updated"):
        kit = detection_map(truth, preds, protocol=protocol)
        assert maps(kit) == [1.0] * 5  # the detection on the Ambiguous segment is neither TP nor FP
        assert kit["ignored_predictions"] == dict.fromkeys(THRESHOLDS, 1)
        assert kit["ignored_ground_truth"] == 1


def test_ambiguous_rule_needs_positive_overlap_and_same_video() -> None:
    truth = [gt("v1", 0, 10), gt("v1", 20, 25, "Ambiguous")]
    preds = [det("v1", 25, 30, 0.95), det("v2", 20, 25, 0.94), det("v1", 0, 10, 0.9)]
    # Touching the Ambiguous segment or lying in another video does not protect a false positive.
    kit = detection_map(truth, preds, (0.5,), "thumos14_updated")
    assert kit["map"][0.5] == pytest.approx(1 / 3)
    assert kit["ignored_predictions"] == {0.5: 0}


def test_matched_detection_on_ambiguous_segment_stays_true_positive() -> None:
    truth = [gt("v1", 0, 10), gt("v1", 8, 12, "Ambiguous")]
    result = detection_map(truth, [det("v1", 0, 10, 0.9)], (0.5,), "thumos14")
    assert result["map"][0.5] == 1.0 and result["ignored_predictions"] == {0.5: 0}


# ---------------------------------------------------------------------------------------------- validation


def test_validation_errors_name_row_and_key() -> None:
    with pytest.raises(ActdistillError, match=r"predictions\[1\] is missing key 'score'"):
        detection_map([gt("v1", 0, 1)], [det("v1", 0, 1, 0.5), gt("v1", 0, 1)])
    with pytest.raises(ActdistillError, match=r"ground_truth\[0\] is missing key 'end'"):
        detection_map([{"video": "v1", "start": 0, "label": "A"}], [])
    with pytest.raises(ActdistillError, match=r"ground_truth\[1\]: 'start' \(5\) is after 'end' \(4\)"):
        detection_map([gt("v1", 0, 1), gt("v1", 5, 4)], [])
    with pytest.raises(ActdistillError, match=r"predictions\[0\]: 'score'"):
        detection_map([gt("v1", 0, 1)], [det("v1", 0, 1, float("nan"))])
    with pytest.raises(ActdistillError, match="protocol"):
        detection_map([gt("v1", 0, 1)], [], protocol="thumos")
    with pytest.raises(ActdistillError, match="outside"):
        detection_map([gt("v1", 0, 1)], [], tiou_thresholds=(0.5, 1.5))
    with pytest.raises(ActdistillError, match="Ambiguous"):
        detection_map([gt("v1", 0, 1, "Ambiguous")], [])


# ------------------------------------------------------------------------------------------------- loading


def test_loader_parses_official_format(tmp_path: Path) -> None:
    (tmp_path / "Diving_test.txt").write_bytes(b"video_test_1  1.5 3.0 \r\nvideo_test_2\t0.0\t2.2\r\n\r\n")
    (tmp_path / "Ambiguous_test.txt").write_text("video_test_1 3.0 3.4\n")
    (tmp_path / "Diving_val.txt").write_text("video_validation_1 0 1\n")
    (tmp_path / "readme.txt").write_text("not an annotation\n")
    rows = load_thumos14_annotations(tmp_path, "test")
    assert rows == [
        {"video": "video_test_1", "start": 3.0, "end": 3.4, "label": "Ambiguous"},
        {"video": "video_test_1", "start": 1.5, "end": 3.0, "label": "Diving"},
        {"video": "video_test_2", "start": 0.0, "end": 2.2, "label": "Diving"},
    ]
    assert load_thumos14_annotations(tmp_path, "val") == [
        {"video": "video_validation_1", "start": 0.0, "end": 1.0, "label": "Diving"}
    ]


def test_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(ActdistillError, match="not found"):
        load_thumos14_annotations(tmp_path / "missing")
    with pytest.raises(ActdistillError, match=r"no '\*_test.txt' files"):
        load_thumos14_annotations(tmp_path)
    (tmp_path / "Diving_test.txt").write_text("video_test_1 1.5 3.0\nvideo_test_2 0.0\n")
    with pytest.raises(ActdistillError, match=r"Diving_test.txt:2"):
        load_thumos14_annotations(tmp_path)
    with pytest.raises(ActdistillError, match="subset"):
        load_thumos14_annotations(tmp_path, "train")


@pytest.fixture(scope="module")
def thumos_test_rows() -> list[dict]:
    if not THUMOS_TEST.is_dir():
        pytest.skip(f"THUMOS14 test annotations not found at {THUMOS_TEST} (shared/ must sit beside the repo)")
    return load_thumos14_annotations(THUMOS_TEST, "test")


def test_real_thumos14_test_annotations(thumos_test_rows: list[dict]) -> None:
    actions = [r for r in thumos_test_rows if r["label"] != "Ambiguous"]
    assert len(actions) == 3358
    assert len({r["label"] for r in actions}) == 20
    assert len({r["video"] for r in actions}) == 212
    cliff = {(r["video"], r["start"], r["end"]) for r in actions if r["label"] == "CliffDiving"}
    diving = {(r["video"], r["start"], r["end"]) for r in actions if r["label"] == "Diving"}
    assert cliff and cliff <= diving


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_real_annotations_perfect_predictions(thumos_test_rows: list[dict], protocol: str) -> None:
    preds = [dict(r, score=1.0) for r in thumos_test_rows if r["label"] != "Ambiguous"]
    result = detection_map(thumos_test_rows, preds, protocol=protocol)
    assert maps(result) == pytest.approx([1.0] * 5)
    assert result["num_ground_truth"] == 3358
    assert result["ignored_ground_truth"] == len(thumos_test_rows) - 3358
    assert len(result["per_class_ap"]) == 20


# ---------------------------------------------------- ActivityNet reference, written out, on the real annotations
# compute_average_precision_detection, segment_iou and interpolated_prec_rec as in ActivityNet's
# Evaluation/eval_detection.py and Evaluation/utils.py (github.com/activitynet/ActivityNet), restated with plain
# lists instead of pandas frames: same sorts (numpy's default argsort, reversed), same loops, same arithmetic.


def _anet_segment_iou(target: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    tt1 = np.maximum(target[0], candidates[:, 0])
    tt2 = np.minimum(target[1], candidates[:, 1])
    inter = (tt2 - tt1).clip(0)
    union = (candidates[:, 1] - candidates[:, 0]) + (target[1] - target[0]) - inter
    return inter.astype(float) / union


def _anet_interpolated_prec_rec(prec: np.ndarray, rec: np.ndarray) -> float:
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    for i in range(len(mprec) - 1)[::-1]:
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def _anet_class_ap(truth: list[dict], preds: list[dict], thresholds, stable_ties: bool = False) -> np.ndarray:
    """One class. `stable_ties=True` is the deviation this module used to have (equal values in input order)."""
    ap = np.zeros(len(thresholds))
    if not preds:
        return ap
    npos = float(len(truth))
    lock_gt = np.ones((len(thresholds), len(truth))) * -1
    scores = np.array([p["score"] for p in preds], dtype=np.float64)
    sort_idx = np.argsort(-scores, kind="stable") if stable_ties else scores.argsort()[::-1]
    preds = [preds[i] for i in sort_idx]
    tp = np.zeros((len(thresholds), len(preds)))
    fp = np.zeros((len(thresholds), len(preds)))
    by_video: dict[str, list[int]] = {}
    for i, g in enumerate(truth):
        by_video.setdefault(g["video"], []).append(i)
    for idx, pred in enumerate(preds):
        if pred["video"] not in by_video:
            fp[:, idx] = 1
            continue
        ids = by_video[pred["video"]]
        segs = np.array([[truth[i]["start"], truth[i]["end"]] for i in ids], dtype=np.float64)
        tiou_arr = _anet_segment_iou(np.array([pred["start"], pred["end"]], dtype=np.float64), segs)
        tiou_sorted_idx = np.argsort(-tiou_arr, kind="stable") if stable_ties else tiou_arr.argsort()[::-1]
        for tidx, thr in enumerate(thresholds):
            for jdx in tiou_sorted_idx:
                if tiou_arr[jdx] < thr:
                    fp[tidx, idx] = 1
                    break
                if lock_gt[tidx, ids[jdx]] >= 0:
                    continue
                tp[tidx, idx] = 1
                lock_gt[tidx, ids[jdx]] = idx
                break
            if fp[tidx, idx] == 0 and tp[tidx, idx] == 0:
                fp[tidx, idx] = 1
    tp_cumsum = np.cumsum(tp, axis=1).astype(float)
    fp_cumsum = np.cumsum(fp, axis=1).astype(float)
    recall = tp_cumsum / npos
    precision = tp_cumsum / (tp_cumsum + fp_cumsum)
    for tidx in range(len(thresholds)):
        ap[tidx] = _anet_interpolated_prec_rec(precision[tidx, :], recall[tidx, :])
    return ap


def _anet_reference(truth: list[dict], preds: list[dict], thresholds, stable_ties: bool = False) -> dict:
    """{label: AP per threshold} over the ground-truth classes (Ambiguous rows already removed)."""
    labels = sorted({g["label"] for g in truth})
    return {
        c: _anet_class_ap(
            [g for g in truth if g["label"] == c], [p for p in preds if p["label"] == c], thresholds, stable_ties
        )
        for c in labels
    }


def _tie_heavy_predictions(rows: list[dict], seed: int) -> tuple[list[dict], list[dict], int]:
    """THUMOS14 ground truth with exact tIoU ties built in, and random predictions over it.

    Ties: (1) duplicated ground-truth rows (any prediction overlapping one overlaps its copy with the same tIoU);
    (2) segments straddling two neighbouring same-class ground truths symmetrically (equal tIoUs when the two have
    the same length); (3) scores quantised to 0.05, so long runs of equal scores. Also jittered and exact copies of
    the ground truth, and false positives in random videos.
    Returns (ground truth, predictions, number of predictions whose best tIoU is tied and ≥ 0.1).
    """
    rng = np.random.default_rng(seed)
    actions = [dict(r) for r in rows if r["label"] != "Ambiguous"]
    dup = rng.choice(len(actions), size=len(actions) // 8, replace=False)
    truth = actions + [dict(actions[i]) for i in dup]  # copies listed after the originals
    by_key: dict[tuple[str, str], list[dict]] = {}
    for g in truth:
        by_key.setdefault((g["video"], g["label"]), []).append(g)
    videos = sorted({g["video"] for g in truth})
    preds: list[dict] = []

    def add(video: str, start: float, end: float, label: str) -> None:
        score = round(float(rng.integers(0, 21)) * 0.05, 2)
        preds.append({"video": video, "start": start, "end": end, "label": label, "score": score})

    for g in truth:
        length = g["end"] - g["start"]
        r = rng.random()
        if r < 0.3:
            add(g["video"], g["start"], g["end"], g["label"])  # exact copy
        elif r < 0.8:
            s = g["start"] + rng.normal(0, 0.25) * length
            e = g["end"] + rng.normal(0, 0.25) * length
            s, e = round(min(s, e), 1), round(max(s, e), 1)
            add(g["video"], s, e, g["label"])
        if rng.random() < 0.15:  # a false positive in a random video
            add(str(rng.choice(videos)), *sorted(rng.uniform(0, 200, 2).round(1)), g["label"])
    for (video, label), group in by_key.items():  # (2) segments straddling two neighbours symmetrically
        group = sorted(group, key=lambda g: g["start"])
        for a, b in zip(group, group[1:]):
            if b["start"] >= a["end"]:
                add(video, a["start"], b["end"], label)  # tie when both have the same length
                for x in (0.5, 1.0):
                    add(video, a["end"] - x, b["start"] + x, label)
    # Count predictions whose maximal tIoU (≥ 0.1) is shared by two ground truths: the ties under test.
    tied = 0
    for p in preds:
        group = by_key.get((p["video"], p["label"]), [])
        if len(group) < 2:
            continue
        segs = np.array([[g["start"], g["end"]] for g in group])
        t = _anet_segment_iou(np.array([p["start"], p["end"]]), segs)
        tied += int(t.max() >= 0.1 and (t == t.max()).sum() > 1)
    order = rng.permutation(len(preds))
    return truth, [preds[i] for i in order], tied


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_activitynet_protocol_equals_the_reference_with_ties(thumos_test_rows: list[dict], seed: int) -> None:
    truth, preds, tied = _tie_heavy_predictions(thumos_test_rows, seed)
    assert tied > 200  # the data really exercises tIoU ties
    thresholds = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7)
    ours = detection_map(truth, preds, thresholds, "activitynet")
    reference = _anet_reference(truth, preds, thresholds)
    assert set(ours["per_class_ap"]) == set(reference)
    for label, aps in reference.items():
        got = [ours["per_class_ap"][label][t] for t in thresholds]
        np.testing.assert_allclose(got, aps, rtol=0, atol=1e-9, err_msg=label)
    ref_map = np.mean(list(reference.values()), axis=0)
    np.testing.assert_allclose(maps(ours), ref_map, rtol=0, atol=1e-9)
    # The ties matter: breaking them in input order (this module's old rule) moves the mAP.
    stable = np.mean(list(_anet_reference(truth, preds, thresholds, stable_ties=True).values()), axis=0)
    assert np.abs(stable - ref_map).max() > 1e-6
