"""Synthetic action videos: UCF101 layout, group-disjoint splits, determinism, motion-only class pairs."""

from __future__ import annotations

import numpy as np
import pytest

from actdistill.data import ucf101
from actdistill.data.decode import count_folder_frames, read_frames
from actdistill.data.manifest import probe_video
from actdistill.data.synthetic_video import (
    MOTION_PAIRS,
    VIDEO_ACTIONS,
    render_video,
    write_frame_folders,
    write_synthetic_ucf101,
)
from actdistill.errors import ActdistillError

CLASSES = ["SitDown", "StandUp", "WalkSlow", "WalkFast", "Wave"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "UCF-synth"
    kw = dict(classes=CLASSES, videos_per_class=4, groups=4, frames=10, size=32, seed=3)
    return write_synthetic_ucf101(root, **kw), kw


def test_layout_and_official_format(synth):
    root, _ = synth
    ann = root / "ucfTrainTestlist"
    assert ann.joinpath("classInd.txt").read_bytes() == b"".join(
        f"{i + 1} {c}\r\n".encode() for i, c in enumerate(CLASSES)
    )
    assert (root / "SitDown" / "v_SitDown_g01_c01.avi").is_file()
    assert ann.joinpath("trainlist01.txt").read_bytes().startswith(b"SitDown/v_SitDown_g02_c01.avi 1\r\n")
    assert ucf101.read_classes(ann) == CLASSES
    for split in (1, 2, 3):
        train, test = ucf101.read_split(ann, split, "train"), ucf101.read_split(ann, split, "test")
        assert len(train) + len(test) == 20 and len(test) == 5  # 1 of 4 groups held out per split
        assert not {ucf101.group_of(p) for p, _ in train} & {ucf101.group_of(p) for p, _ in test}
        assert {lab for _, lab in test} == set(range(5))
    frames, fps = probe_video(root / train[0][0])
    assert (frames, fps) == (10, 25.0)
    assert read_frames(root / train[0][0], [0, 9]).shape == (2, 3, 32, 32)


def test_deterministic_per_seed(synth, tmp_path):
    root, kw = synth
    again = write_synthetic_ucf101(tmp_path / "again", **kw)
    rel = "Wave/v_Wave_g02_c01.avi"
    assert (again / rel).read_bytes() == (root / rel).read_bytes()
    other = render_video("Wave", np.random.default_rng([4, 4, 2, 1]), 10, 32)
    assert not np.array_equal(other, render_video("Wave", np.random.default_rng([3, 4, 2, 1]), 10, 32))


def test_motion_pairs_share_frames():
    # StandUp is SitDown played backwards: the same frames, so only their order tells them apart.
    a = render_video("SitDown", np.random.default_rng(5), 12, 32)
    b = render_video("StandUp", np.random.default_rng(5), 12, 32)
    assert np.array_equal(a[::-1], b)
    c = render_video("RunRight", np.random.default_rng(6), 12, 32)
    d = render_video("RunLeft", np.random.default_rng(6), 12, 32)
    assert np.array_equal(c[::-1], d)
    assert {x for pair in MOTION_PAIRS for x in pair} <= set(VIDEO_ACTIONS)
    # The figure moves: consecutive frames differ for every class.
    for name in VIDEO_ACTIONS:
        v = render_video(name, np.random.default_rng(0), 8, 32).astype(np.int16)
        assert np.abs(np.diff(v, axis=0)).mean() > 0.5, name


def test_frame_folders(synth, tmp_path):
    root, _ = synth
    out = tmp_path / "frames"
    assert write_frame_folders(root / "Wave", out) == 4
    folder = out / "v_Wave_g01_c01"
    assert count_folder_frames(folder) == 10 and (folder / "img_00001.jpg").is_file()
    video = read_frames(root / "Wave" / "v_Wave_g01_c01.avi", [0, 5]).float()
    jpeg = read_frames(folder, [0, 5]).float()
    assert (video - jpeg).abs().mean() < 4  # the same frames, up to JPEG error
    assert write_frame_folders(root / "Wave", out) == 0  # complete folders are kept


def test_bad_arguments(tmp_path):
    with pytest.raises(ActdistillError, match="synthetic video has the classes"):
        write_synthetic_ucf101(tmp_path, classes=["Swim"])
    with pytest.raises(ActdistillError, match="at least 3 groups"):
        write_synthetic_ucf101(tmp_path, videos_per_class=2, groups=2)
    with pytest.raises(ActdistillError, match="even frame sizes"):
        write_synthetic_ucf101(tmp_path, num_classes=1, videos_per_class=3, groups=3, size=33)
