"""Detection annotation readers/writers on the real THUMOS14 files and on a written ActionFormer-style JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actdistill.detect.annotations import (
    load_actionformer_json,
    load_annotations,
    video_durations,
    write_thumos_annotations,
)
from actdistill.errors import ActdistillError
from actdistill.eval.detection import load_thumos14_annotations

THUMOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "thumos14_annotations"


def _need_thumos(subset: str) -> Path:
    folder = THUMOS / f"annotations_{subset}"
    if not folder.is_dir():
        pytest.skip(f"THUMOS14 annotations not found at {folder} (shared/ must sit beside the repo)")
    return folder


@pytest.mark.parametrize("subset", ["val", "test"])
def test_real_thumos_folder_round_trips_through_the_writer(tmp_path, subset):
    folder = _need_thumos(subset)
    rows = load_annotations(folder, subset)
    assert rows == load_thumos14_annotations(folder, subset)
    assert load_annotations(THUMOS, subset) == rows  # the release's parent folder with annotations_<subset>/
    assert {r["label"] for r in rows} >= {"Ambiguous", "BaseballPitch", "VolleyballSpiking"}
    assert len({r["label"] for r in rows}) == 21  # 20 classes + Ambiguous
    paths = write_thumos_annotations(rows, tmp_path, subset)
    assert sorted(p.name for p in paths) == sorted(p.name for p in folder.glob(f"*_{subset}.txt"))
    back = load_thumos14_annotations(tmp_path, subset)
    key = lambda r: (r["label"], r["video"], r["start"], r["end"])  # noqa: E731
    assert sorted(back, key=key) == sorted(rows, key=key)


def test_real_thumos_test_counts():
    rows = load_annotations(_need_thumos("test"), "test")
    clean = [r for r in rows if r["label"] != "Ambiguous"]
    # One row per non-blank line of the official per-class files (CliffDiving instances also appear as Diving).
    assert len(rows) == sum(
        1
        for p in (THUMOS / "annotations_test").glob("*_test.txt")
        for line in p.read_text().splitlines()
        if line.split()
    )
    assert all(r["end"] >= r["start"] for r in clean)


def _json(tmp_path: Path) -> Path:
    db = {
        "video_validation_1": {
            "subset": "Validation",
            "duration": 30.0,
            "fps": 30,
            "annotations": [{"segment": [1.5, 4.0], "label": "Jump"}, {"segment": [10, 12.25], "label": "Wave"}],
        },
        "video_test_1": {"subset": "Test", "duration": 20.0, "annotations": [{"segment": [0.0, 2.0], "label": "Jump"}]},
        "video_test_2": {"subset": "Test", "duration": 9.0, "annotations": []},
    }
    path = tmp_path / "thumos.json"
    path.write_text(json.dumps({"version": "x", "database": db}))
    return path


def test_actionformer_json_rows_subsets_and_durations(tmp_path):
    path = _json(tmp_path)
    assert load_actionformer_json(path, "validation") == [
        {"video": "video_validation_1", "start": 1.5, "end": 4.0, "label": "Jump"},
        {"video": "video_validation_1", "start": 10.0, "end": 12.25, "label": "Wave"},
    ]
    assert len(load_actionformer_json(path)) == 3
    assert load_annotations(path, "val") == load_actionformer_json(path, "Validation")
    assert load_annotations(path, "test") == [{"video": "video_test_1", "start": 0.0, "end": 2.0, "label": "Jump"}]
    assert video_durations(path, "test") == {"video_test_1": 20.0, "video_test_2": 9.0}
    write_thumos_annotations(load_annotations(path, "test"), tmp_path / "ann", "test", classes=["Jump", "Wave"])
    assert (tmp_path / "ann" / "Jump_test.txt").read_text() == "video_test_1 0.00 2.00\n"
    assert (tmp_path / "ann" / "Wave_test.txt").read_text() == ""


def test_bad_json_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"videos": {}}))
    with pytest.raises(ActdistillError, match="bad.json.*database"):
        load_actionformer_json(bad)
    bad.write_text(json.dumps({"database": {"v": {"annotations": [{"segment": [3, 1], "label": "A"}]}}}))
    with pytest.raises(ActdistillError, match="start 3 > end 1"):
        load_actionformer_json(bad)
    with pytest.raises(ActdistillError, match="folder of THUMOS14"):
        load_annotations(tmp_path / "x.csv")
