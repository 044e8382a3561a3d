"""Tests for actdistill.analysis.plots: each figure is written, readable, shaped sensibly; bad labels raise."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from actdistill.analysis import plots
from actdistill.analysis.calibration import reliability_bins

_MIN_BYTES = 10_000  # a blank 120-dpi canvas compresses to a few kB; real content is well above this


def _read(path: Path) -> np.ndarray:
    assert path.exists() and path.suffix == ".png"
    assert path.stat().st_size > _MIN_BYTES
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    # Not a uniform canvas: some pixels are drawn.
    assert image[..., :3].std() > 0.05
    return image


def _aspect(image: np.ndarray) -> float:
    return image.shape[1] / image.shape[0]  # width / height


def test_similarity_heatmap(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    matrix = rng.uniform(0, 1, size=(3, 5))
    matrix[0, 4] = np.nan
    out = plots.plot_similarity_heatmap(
        matrix,
        ["t.layer2", "t.layer3", "t.layer4"],
        [f"s.stage{i}" for i in range(5)],
        tmp_path / "sub" / "h.png",
        title="ResNet-50 teacher vs PVT student",
    )
    assert out == tmp_path / "sub" / "h.png"
    assert _aspect(_read(out)) > 1.2  # 5 student columns, 3 teacher rows: wider than tall
    with pytest.raises(ValueError, match="3 row names"):
        plots.plot_similarity_heatmap(matrix, ["a", "b", "c"], ["x"], tmp_path / "bad.png", title="t")
    with pytest.raises(ValueError, match="2 row names"):
        plots.plot_similarity_heatmap(matrix, ["a", "b"], list("vwxyz"), tmp_path / "bad.png", title="t")
    assert not (tmp_path / "bad.png").exists()


def test_similarity_comparison(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    mats = {"student (plain)": rng.uniform(0, 0.6, (4, 4)), "student (KD)": rng.uniform(0.3, 1, (4, 4))}
    names_t, names_s = [f"t{i}" for i in range(4)], [f"s{i}" for i in range(4)]
    out = plots.plot_similarity_comparison(mats, names_t, names_s, tmp_path / "cmp.png")
    assert _aspect(_read(out)) > 1.5  # two panels side by side
    out = plots.plot_similarity_comparison(mats, names_t, names_s, tmp_path / "cmp_diff.png", difference=True)
    assert _aspect(_read(out)) > 2.0  # three panels
    with pytest.raises(ValueError, match="column names"):
        plots.plot_similarity_comparison(mats, names_t, names_s[:3], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="exactly two"):
        plots.plot_similarity_comparison(
            {"a": mats["student (KD)"]}, names_t, names_s, tmp_path / "bad.png", difference=True
        )


def test_curves(tmp_path: Path) -> None:
    curves = {"PVT student": [40.1, 55.3, 61.0, 63.2, 64.0], "PVT student + KD": [44.0, 58.9, 65.2, 67.1, 68.3, 68.9]}
    out = plots.plot_curves(curves, tmp_path / "curves.png", title="Stanford 40 test mAP", ylabel="test mAP (%)")
    assert 1.2 < _aspect(_read(out)) < 2.0
    with pytest.raises(ValueError, match="empty"):
        plots.plot_curves({}, tmp_path / "bad.png", title="t", ylabel="y")


def test_confusion_matrix(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    k = 12
    cm = rng.integers(0, 5, (k, k)) + np.diag(rng.integers(20, 40, k))
    cm[3] = 0  # a class with no samples must not produce NaN/warnings
    names = [f"action_{i:02d}" for i in range(k)]
    for normalize in (True, False):
        out = plots.plot_confusion_matrix(cm, names, tmp_path / f"cm_{normalize}.png", normalize=normalize)
        assert 0.9 < _aspect(_read(out)) < 1.5  # roughly square plus colour bar
    with pytest.raises(ValueError, match="11 row names"):
        plots.plot_confusion_matrix(cm, names[:11], tmp_path / "bad.png")


def test_reliability_diagram(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    logits = 2.5 * torch.randn(2000, 10, generator=g)
    labels = torch.where(torch.rand(2000, generator=g) < 0.7, logits.argmax(1), torch.randint(0, 10, (2000,)))
    bins = reliability_bins(logits, labels, n_bins=10, from_logits=True)
    out = plots.plot_reliability_diagram(bins, tmp_path / "rel.png", title="PVT student + KD")
    assert _aspect(_read(out)) < 1.0  # two stacked panels: taller than wide
    with pytest.raises(ValueError, match="missing"):
        plots.plot_reliability_diagram({"edges": bins["edges"]}, tmp_path / "bad.png")


def test_per_class_bar(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    values = {f"class_{i:02d}": float(v) for i, v in enumerate(rng.normal(1.0, 3.0, 40))}
    out = plots.plot_per_class_bar(values, tmp_path / "gain.png", title="AP gain from KD", ylabel="AP gain (points)")
    assert _aspect(_read(out)) < 1.0  # 40 classes: a tall figure
    with pytest.raises(ValueError, match="empty"):
        plots.plot_per_class_bar({}, tmp_path / "bad.png", title="t", ylabel="y")
