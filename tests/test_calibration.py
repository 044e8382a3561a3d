"""Tests for actdistill.analysis.calibration: ECE by hand, calibrated synthetic data, bins, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from actdistill.analysis.calibration import expected_calibration_error, reliability_bins


def _hand_case() -> tuple[torch.Tensor, torch.Tensor]:
    # Confidences 0.9, 0.9, 0.6, 0.6 (predicted class 0 each time); correct, wrong, correct, correct.
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 0, 0])
    return probs, labels


def test_ece_hand_computed() -> None:
    probs, labels = _hand_case()
    # 4 bins (0,.25], (.25,.5], (.5,.75], (.75,1]; no confidence lies on an edge.
    #   bin (.75,1]: samples 1-2, acc = 1/2 = 0.5, conf = 0.9 -> |0.5 - 0.9| = 0.4, weight 2/4
    #   bin (.5,.75]: samples 3-4, acc = 2/2 = 1.0, conf = 0.6 -> |1.0 - 0.6| = 0.4, weight 2/4
    # ECE = 0.5 * 0.4 + 0.5 * 0.4 = 0.4
    assert expected_calibration_error(probs, labels, n_bins=4) == pytest.approx(0.4, abs=1e-6)
    # One bin: acc = 3/4, mean conf = 0.75 -> ECE = 0 (over- and under-confidence cancel).
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(0.0, abs=1e-6)


def test_reliability_bins_hand_computed() -> None:
    probs, labels = _hand_case()
    bins = reliability_bins(probs, labels, n_bins=4)
    np.testing.assert_allclose(bins["edges"], [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_array_equal(bins["counts"], [0, 0, 2, 2])
    np.testing.assert_allclose(bins["accuracy"][2:], [1.0, 0.5])
    np.testing.assert_allclose(bins["confidence"][2:], [0.6, 0.9], atol=1e-6)
    assert np.isnan(bins["accuracy"][:2]).all() and np.isnan(bins["confidence"][:2]).all()
    assert bins["n"] == 4 and bins["ece"] == pytest.approx(0.4, abs=1e-6)


def test_bins_are_closed_on_the_right() -> None:
    # Confidence exactly 0.5 belongs to (0.25, 0.5], not (0.5, 0.75]; 1.0 to the last bin.
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    bins = reliability_bins(probs, torch.tensor([0, 0]), n_bins=4)
    np.testing.assert_array_equal(bins["counts"], [0, 1, 0, 1])


def test_ece_small_for_calibrated_synthetic_data() -> None:
    g = torch.Generator().manual_seed(0)
    n = 200_000
    conf = 0.5 + 0.5 * torch.rand(n, generator=g, dtype=torch.float64)
    probs = torch.stack([conf, 1.0 - conf], dim=1)
    # Class 0 is predicted; it is the true class with probability equal to the confidence.
    labels = (torch.rand(n, generator=g, dtype=torch.float64) >= conf).long()
    assert expected_calibration_error(probs, labels) < 0.01
    # The same data with every label wrong is maximally over-confident: ECE = mean confidence = 0.75.
    assert expected_calibration_error(probs, torch.ones(n, dtype=torch.long)) == pytest.approx(0.75, abs=0.01)


def test_from_logits_matches_probabilities() -> None:
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(500, 10, generator=g)
    labels = torch.randint(0, 10, (500,), generator=g)
    expected = expected_calibration_error(logits.softmax(dim=1), labels)
    assert expected_calibration_error(logits, labels, from_logits=True) == pytest.approx(expected, abs=1e-6)
    assert expected_calibration_error(logits.softmax(1).numpy(), labels.numpy()) == pytest.approx(expected, abs=1e-6)
    assert 0.0 <= expected <= 1.0 and not math.isnan(expected)


def test_input_checks() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(8, 4, generator=g)
    labels = torch.randint(0, 4, (8,), generator=g)
    with pytest.raises(ValueError, match="from_logits=True"):
        expected_calibration_error(logits, labels)
    with pytest.raises(ValueError, match=r"\(7,\)"):
        expected_calibration_error(logits, labels[:7], from_logits=True)
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        expected_calibration_error(logits, labels + 4, from_logits=True)
    with pytest.raises(ValueError, match="integer"):
        expected_calibration_error(logits, labels.float(), from_logits=True)
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(logits, labels, n_bins=0, from_logits=True)
