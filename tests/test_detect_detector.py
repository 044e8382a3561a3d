"""Temporal detector: shapes, label assignment, losses, decoding and NMS on hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch

from actdistill.detect.detector import (
    assign_targets,
    decode_segments,
    detection_losses,
    diou_loss_1d,
    gap_segments,
    nms_1d,
)
from actdistill.errors import ActdistillError
from actdistill.models.temporal_detector import DetectorConfig, TemporalDetector, build_detector

torch.set_num_threads(1)


@pytest.mark.parametrize("preset", ["small", "large"])
def test_forward_shapes_and_masks(preset):
    model = build_detector(preset, 12, 3, attention=True)
    x, mask = torch.randn(2, 12, 37), torch.ones(2, 37, dtype=torch.bool)
    mask[1, 30:] = False
    out = model(x, mask, background=True)
    lengths = [37, 19, 10, 5]
    assert [t.shape for t in out["cls"]] == [(2, 3, n) for n in lengths]
    assert [t.shape for t in out["reg"]] == [(2, 2, n) for n in lengths]
    assert [t.shape[1] for t in out["masks"]] == lengths and out["masks"][1][1].sum() == 15
    assert out["attention"].shape == (2, model.config.embed_dim, 37)
    assert all((r >= 0).all() for r in out["reg"])
    assert [p.tolist()[:3] for p in model.points(37)] == [[0, 1, 2], [0, 2, 4], [0, 4, 8], [0, 8, 16]]
    with pytest.raises(ActdistillError, match="expects features"):
        model(torch.randn(1, 5, 10))


def test_assignment_centre_sampling_hand_case():
    pts = [torch.arange(10.0)]
    cls, reg, pos = assign_targets(pts, [1], [(0.0, math.inf)], torch.tensor([[2.0, 6.0]]), torch.tensor([1]), 3)
    # Centre 4, radius 1.5: points 3, 4, 5 are positive; targets (p − 2, 6 − p).
    assert pos.nonzero()[:, 0].tolist() == [3, 4, 5]
    assert reg[4].tolist() == [2.0, 2.0] and reg[3].tolist() == [1.0, 3.0]
    assert cls[pos].argmax(1).tolist() == [1, 1, 1] and cls[~pos].sum() == 0


def test_assignment_regression_ranges_send_long_segments_up():
    model = TemporalDetector(DetectorConfig(4, 2, embed_dim=8, levels=2, stem_layers=0, head_layers=0))
    assert model.config.regression_ranges == [(0.0, 4.0), (4.0, math.inf)]
    pts = model.points(24)
    _, reg, pos = assign_targets(
        pts, model.strides, model.config.regression_ranges, torch.tensor([[0.0, 20.0]]), torch.tensor([0]), 2
    )
    # Level 0 (24 points) reaches ≥ 9 > 4: none; level 1 points 8, 10, 12 (within 10 ± 3) reach 12, 10, 12.
    assert pos[:24].sum() == 0
    assert (pts[1][pos[24:]]).tolist() == [8.0, 10.0, 12.0]
    assert reg[24:][pos[24:]].tolist() == [[4.0, 6.0], [5.0, 5.0], [6.0, 4.0]]  # stride-2 units


def test_shortest_segment_wins_and_empty_video():
    pts = [torch.arange(12.0)]
    seg = torch.tensor([[0.0, 11.0], [4.0, 7.0]])
    cls, _, pos = assign_targets(pts, [1], [(0.0, math.inf)], seg, torch.tensor([0, 1]), 2, radius=10)
    assert cls[5].tolist() == [0.0, 1.0] and cls[1].tolist() == [1.0, 0.0]
    cls, reg, pos = assign_targets(pts, [1], [(0.0, math.inf)], torch.zeros(0, 2), torch.zeros(0), 2)
    assert not pos.any() and cls.sum() == 0


def test_gap_segments_and_diou():
    gaps = gap_segments(torch.tensor([[2.0, 4.0], [3.0, 6.0], [8.0, 9.0]]), 12)
    assert gaps.tolist() == [[0.0, 2.0], [6.0, 8.0], [9.0, 11.0]]
    same = diou_loss_1d(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 2.0]]))
    assert same.item() == pytest.approx(0.0)
    # pred (0, 2) vs target (1, 1): IoU 1/3, enclosing 3, centres 1 and 0 → 1 − 1/3 + 1/9.
    assert diou_loss_1d(torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 1.0]])).item() == pytest.approx(7 / 9)


def test_losses_are_finite_and_train():
    torch.manual_seed(0)
    model = build_detector("small", 6, 2)
    x = torch.randn(2, 6, 32)
    segs, labels = [torch.tensor([[4.0, 10.0]]), torch.tensor([[20.0, 28.0]])], [torch.tensor([0]), torch.tensor([1])]
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    first = None
    for _ in range(60):
        losses = detection_losses(model, model(x), segs, labels)
        total = losses["cls"] + losses["reg"]
        first = first if first is not None else float(total.detach())
        opt.zero_grad()
        total.backward()
        opt.step()
    assert float(total.detach()) < 0.5 * first


def _heads(cls: torch.Tensor, reg: torch.Tensor) -> dict:
    return {"cls": [cls], "reg": [reg], "masks": [torch.ones(1, cls.shape[-1], dtype=torch.bool)]}


def test_decode_and_hard_nms_suppress_a_duplicate():
    model = TemporalDetector(DetectorConfig(4, 2, embed_dim=8, levels=1))
    cls = torch.full((1, 2, 10), -20.0)
    cls[0, 0, 4], cls[0, 0, 5], cls[0, 1, 5] = 3.0, 2.0, 1.0
    reg = torch.full((1, 2, 10), 2.0)
    segs, scores, labels = decode_segments(model, _heads(cls, reg), 0, nms="hard", iou_threshold=0.5)
    # [2, 6] (σ(3)) and [3, 7] (σ(2)) overlap with tIoU 3/5 > 0.5: the second goes; class 1 is kept.
    assert segs.tolist() == [[2.0, 6.0], [3.0, 7.0]]
    assert labels.tolist() == [0, 1]
    assert scores.tolist() == pytest.approx(
        [torch.sigmoid(torch.tensor(3.0)).item(), torch.sigmoid(torch.tensor(1.0)).item()]
    )
    segs, scores, labels = decode_segments(model, _heads(cls, reg), 0, nms="soft", sigma=0.5)
    decayed = torch.sigmoid(torch.tensor(2.0)).item() * math.exp(-(0.6**2) / 0.5)
    assert sorted(scores.tolist()) == pytest.approx(
        sorted([torch.sigmoid(torch.tensor(3.0)).item(), torch.sigmoid(torch.tensor(1.0)).item(), decayed])
    )


def test_nms_keeps_disjoint_and_respects_max():
    segs = torch.tensor([[0.0, 1.0], [2.0, 3.0], [0.1, 1.0]])
    kept, scores, labels = nms_1d(segs, torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3, dtype=torch.long))
    assert kept.tolist() == [[0.0, 1.0], [2.0, 3.0]]
    kept, _, _ = nms_1d(segs, torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3, dtype=torch.long), max_segments=1)
    assert len(kept) == 1
