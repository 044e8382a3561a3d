"""Optical flow: quantisation, output layout and count, direction, resume, and the no-OpenCV fallbacks."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from actdistill.data import flow as flow_mod
from actdistill.data.decode import count_folder_frames, read_frames
from actdistill.data.flow import DONE_MARKER, extract_flow, extract_flow_tree, flow_backend, quantize_flow
from actdistill.data.synthetic_video import encode_video, render_video
from actdistill.errors import ActdistillError


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 5-frame 32² video of a figure running right."""
    root = tmp_path_factory.mktemp("flow_src")
    (root / "Run").mkdir()
    encode_video(render_video("RunRight", np.random.default_rng(1), 5, 32), root / "Run" / "v_a.avi")
    return root


def test_quantize_standard_formula():
    f = np.array([[-30.0, -20.0], [0.0, 10.0], [20.0, 35.0]])
    q = quantize_flow(f, bound=20)
    assert q.dtype == np.uint8
    assert q.tolist() == [[0, 0], [128, 191], [255, 255]]  # (clip(f, −20, 20) + 20) · 255 / 40, rounded
    assert quantize_flow(np.array([7.5]), bound=15).item() == round(22.5 * 255 / 30)


@pytest.mark.parametrize("method", ["tvl1", "farneback"])
def test_extract_flow_layout_and_direction(clip, tmp_path, method):
    pytest.importorskip("cv2", reason="OpenCV is optional: pip install opencv-contrib-python-headless")
    out = tmp_path / "v_a"
    assert extract_flow(clip / "Run" / "v_a.avi", out, method=method) == 4  # N − 1 pairs for N frames
    names = sorted(p.name for p in out.iterdir())
    assert names == [DONE_MARKER] + [f"flow_x_{k:05d}.jpg" for k in range(1, 5)] + [
        f"flow_y_{k:05d}.jpg" for k in range(1, 5)
    ]
    assert json.loads((out / DONE_MARKER).read_text())["pairs"] == 4
    assert count_folder_frames(out, "flow") == 4
    flow = read_frames(out, range(4), modality="flow")
    assert flow.shape == (4, 2, 32, 32)
    x = flow[:, 0].float() - 127.5
    assert x.clamp(min=0).sum() > 3 * (-x).clamp(min=0).sum()  # the figure runs right: mostly positive x


def test_extract_flow_tree_resumes(clip, tmp_path):
    pytest.importorskip("cv2", reason="OpenCV is optional: pip install opencv-contrib-python-headless")
    out = tmp_path / "flow"
    assert extract_flow_tree(clip, out, method="farneback", progress=False) == {"done": 1, "skipped": 0, "failed": 0}
    assert (out / "Run" / "v_a" / "flow_x_00004.jpg").is_file()
    assert extract_flow_tree(clip, out, method="farneback", progress=False) == {"done": 0, "skipped": 1, "failed": 0}


def test_tvl1_falls_back_to_farneback_without_contrib(monkeypatch, caplog):
    cv2 = pytest.importorskip("cv2", reason="OpenCV is optional")
    monkeypatch.delattr(cv2, "optflow", raising=False)
    fn = flow_backend("tvl1")
    assert "TV-L1 is unavailable; using Farneback" in caplog.text
    a = np.zeros((16, 16), np.uint8)
    assert fn(a, a).shape == (16, 16, 2)


def test_clear_error_without_opencv(monkeypatch, clip, tmp_path):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 → ImportError
    with pytest.raises(ActdistillError, match="pip install opencv-contrib-python-headless"):
        extract_flow(clip / "Run" / "v_a.avi", tmp_path / "x")
    with pytest.raises(ActdistillError, match="'tvl1' or 'farneback'"):
        flow_mod.flow_backend("deepflow")
