"""Frame-index sampling: dense clips (paper 2), multi-view test clips, TSN segments; edge cases."""

from __future__ import annotations

import pytest
import torch

from actdistill.data.sampling import dense_clip_indices, multi_view_indices, segment_indices


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_dense_train_is_consecutive_and_in_range():
    g = _gen()
    starts = set()
    for _ in range(200):
        idx = dense_clip_indices(100, 64, 1, "train", g)
        assert len(idx) == 64 and idx == list(range(idx[0], idx[0] + 64))
        assert 0 <= idx[0] <= 100 - 64
        starts.add(idx[0])
    assert min(starts) == 0 and max(starts) == 36  # the whole range [0, n − 64] is reachable


def test_dense_test_is_centred_paper2():
    # two-stream-pytorch's datasets/ucf101.py (used by paper 2's code): centred start (n − 64 + 1) // 2.
    assert dense_clip_indices(100, 64, mode="test")[0] == (100 - 64 + 1) // 2 == 18
    assert dense_clip_indices(64, 64, mode="test") == list(range(64))
    assert dense_clip_indices(65, 64, mode="test")[0] == 1


def test_dense_interval_and_span():
    idx = dense_clip_indices(40, 8, 4, "test")  # span 29, start (40 − 29 + 1) // 2 = 6
    assert idx == [6 + 4 * k for k in range(8)]


@pytest.mark.parametrize("mode", ["train", "test"])
def test_short_video_loops(mode):
    assert dense_clip_indices(5, 12, 1, mode, _gen()) == [k % 5 for k in range(12)]
    assert dense_clip_indices(1, 4, 1, mode, _gen()) == [0, 0, 0, 0]
    # Stride pushes the span past the end: indices wrap cyclically and stay inside the video.
    idx = dense_clip_indices(10, 4, 5, mode, _gen())
    assert idx == [0, 5, 0, 5] and max(idx) < 10


def test_zero_frames_and_bad_params_raise():
    with pytest.raises(ValueError, match="at least one frame"):
        dense_clip_indices(0, 16)
    with pytest.raises(ValueError):
        dense_clip_indices(10, 0)
    with pytest.raises(ValueError):
        multi_view_indices(0, 8)
    with pytest.raises(ValueError):
        segment_indices(0, 3)


def test_train_sampling_is_reproducible_per_seed():
    a = [dense_clip_indices(300, 16, 2, "train", _gen(7)) for _ in range(3)]
    b = [dense_clip_indices(300, 16, 2, "train", _gen(7)) for _ in range(3)]
    assert a == b
    torch.manual_seed(3)
    c = dense_clip_indices(300, 16)
    torch.manual_seed(3)
    assert dense_clip_indices(300, 16) == c  # the global generator is what SeededView seeds


def test_multi_view_even_spacing():
    views = multi_view_indices(100, 16, 1, 4)  # valid starts 0..84 → chunk 21.25, centred
    assert [v[0] for v in views] == [int((k + 0.5) * 85 / 4) for k in range(4)] == [10, 31, 53, 74]
    assert all(v == list(range(v[0], v[0] + 16)) for v in views)
    assert multi_view_indices(100, 16, 2, 1) == [dense_clip_indices(100, 16, 2, "test")]


def test_multi_view_short_video_loops_from_spread_starts():
    views = multi_view_indices(6, 8, 1, 3)
    assert [v[0] for v in views] == [0, 2, 4]
    assert all(0 <= i < 6 for v in views for i in v)


def test_segments_tsn():
    test = segment_indices(30, 3, "test")
    assert test == [5, 15, 25]  # segment centres
    g = _gen()
    for _ in range(50):
        train = segment_indices(30, 3, "train", g)
        assert [i // 10 for i in train] == [0, 1, 2]  # one frame inside each segment
    snippets = segment_indices(30, 3, "test", new_length=5)
    assert len(snippets) == 15 and snippets[:5] == list(range(snippets[0], snippets[0] + 5))
    assert max(snippets) < 30


def test_segments_short_video():
    assert segment_indices(2, 4, "test") == [0, 0, 1, 1]
    assert sorted(segment_indices(6, 4, "train", _gen())) == segment_indices(6, 4, "train", _gen())
    assert all(0 <= i < 3 for i in segment_indices(3, 8, "train", _gen()))
    assert segment_indices(1, 3, "train", _gen()) == [0, 0, 0]
