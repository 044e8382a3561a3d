"""Temporal detection mAP: hand-worked ActivityNet and THUMOS14-kit cases, and the real THUMOS14 annotations."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert detection_map(truth, preds, (0.5,), "activitynet")["map"][0.5] == pytest.approx(0.5)  # input order
    assert detection_map(truth, preds, (0.5,), "thumos14")["map"][0.5] == 1.0  # kit ranks TPs first
    assert detection_map(truth, preds, (0.5,), "thumos14_updated")["map"][0.5] == pytest.approx(0.5)  # video order


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
