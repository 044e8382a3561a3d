"""Synthetic detection set layout and feature extraction (shapes, index, resume)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from actdistill.detect.annotations import load_actionformer_json, load_annotations
from actdistill.detect.features import extract_features, feature_times, load_backbone, window_frames
from actdistill.detect.synthetic import write_synthetic_detection
from actdistill.errors import ActdistillError

torch.set_num_threads(1)
SMALL = {"num_val": 3, "num_test": 2, "size": 16, "seconds": (4.0, 6.0), "segment_seconds": (1.0, 2.0)}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_synthetic_detection(tmp_path_factory.mktemp("det") / "synth", seed=3, **SMALL)


def test_synthetic_layout_and_annotations(synth, tmp_path):
    names = sorted(p.name for p in (synth / "videos").iterdir())
    assert names == [f"video_test_000000{i}.avi" for i in (1, 2)] + [
        f"video_validation_000000{i}.avi" for i in (1, 2, 3)
    ]
    classes = (synth / "classes.txt").read_text().split()
    for subset in ("val", "test"):
        for c in (*classes, "Ambiguous"):
            assert (synth / "annotations" / f"{c}_{subset}.txt").is_file()
    listing = [line.split() for line in (synth / "video_list.txt").read_text().splitlines()]
    assert len(listing) == 5 and all(int(frames) >= 40 for _, _, frames, _, _ in listing)
    for subset, json_subset in (("val", "Validation"), ("test", "Test")):
        rows = load_annotations(synth / "annotations", subset)
        assert rows and {r["label"] for r in rows} <= {*classes, "Ambiguous"}
        key = lambda r: (r["video"], r["start"])  # noqa: E731
        from_json = sorted(load_actionformer_json(synth / "annotations.json", json_subset), key=key)
        assert [(r["video"], r["label"]) for r in sorted(rows, key=key)] == [
            (r["video"], r["label"]) for r in from_json
        ]
        durations = {name: float(d) for name, _, _, _, d in listing}
        assert all(0 <= r["start"] < r["end"] <= durations[r["video"]] + 1e-6 for r in rows)
    # Deterministic per seed.
    again = write_synthetic_detection(tmp_path / "again", seed=3, **SMALL)
    assert (again / "annotations.json").read_text() == (synth / "annotations.json").read_text()
    with pytest.raises(ActdistillError, match="classes must be among"):
        write_synthetic_detection(tmp_path / "bad", classes=("Nope",))


def test_window_frames_and_times():
    idx = window_frames(10, window=4, stride=4)
    assert idx.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 9, 9]]  # centres 2, 6, 10; clamped at the end
    assert np.allclose(feature_times(3, 4, 10.0), [0.2, 0.6, 1.0])


def test_extract_shapes_index_and_resume(synth, tmp_path):
    model = load_backbone("i3d", 5, channel_scale=0.0625)
    out = tmp_path / "feats"
    index = extract_features(model, synth / "videos", out, backbone="i3d", size=16, window=8, stride=4, progress=False)
    assert index["feature_dim"] == model.feature_info[-1].channels
    listing = {line.split()[0]: int(line.split()[2]) for line in (synth / "video_list.txt").read_text().splitlines()}
    for name, frames in listing.items():
        feats = np.load(out / f"{name}.npy")
        assert feats.shape == (-(-frames // 4), index["feature_dim"]) and feats.dtype == np.float32
        assert index["videos"][name]["num_features"] == feats.shape[0]
    assert json.loads((out / "features.json").read_text())["stride"] == 4
    # Resume: a finished video is not recomputed, a missing one is.
    kept, redo = out / "video_test_0000001.npy", out / "video_test_0000002.npy"
    stamp, before = kept.stat().st_mtime_ns, np.load(redo)
    redo.unlink()
    extract_features(model, synth / "videos", out, backbone="i3d", size=16, window=8, stride=4, progress=False)
    assert kept.stat().st_mtime_ns == stamp
    assert np.allclose(np.load(redo), before, atol=1e-6)
    with pytest.raises(ActdistillError, match="other settings"):
        extract_features(model, synth / "videos", out, backbone="i3d", size=16, window=8, stride=2, progress=False)
