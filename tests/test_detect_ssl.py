"""AFSD's triplet self-supervised term (boundary consistency learning) in the detection methods (`ssl_weight`).

The splice on hand-made sequences (both orders, invalid cases), boundary max pooling by hand, the triplet part
against `F.triplet_margin_loss` on hand-picked features, `att_ssl` on the teacher's spliced features, the seeded
SSL sample of the dataset, an engine run logging `ssl_triplet`, and every detection recipe loading.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import TINY_DETECTION_RUN, detection_batch, detector_pair, engine_run, train_epoch

from actdistill.config import load_config
from actdistill.data.build import SeededView
from actdistill.detect.annotations import write_thumos_annotations
from actdistill.detect.boundary import (
    LEVEL_WEIGHTS,
    Splice,
    boundary_max_pool,
    boundary_regions,
    draw_splice,
    splice_threshold,
)
from actdistill.detect.dataset import FeatureSequences, build_detection_data, collate_sequences
from actdistill.engine.build import build_method
from actdistill.engine.fit import check_config, fit
from actdistill.errors import ActdistillError

torch.set_num_threads(1)
RECIPES = Path(__file__).resolve().parents[1] / "configs" / "detection"


def _steps(length: int = 20) -> torch.Tensor:
    """`(2, T)`: channel 0 holds the step index, channel 1 its negative (a splice must move both)."""
    x = torch.arange(length, dtype=torch.float32)
    return torch.stack([x, -x])


# --- (a) the splice --------------------------------------------------------------------------------------------


def test_splice_action_before_background():
    # Action on steps 2..11, background piece [14, 17) moved to the cut t = 6 (th = 3).
    splice = Splice(first=2, last=11, t=6, b=14, th=3)
    y = splice.apply(_steps())
    expected = [0, 1, 2, 3, 4, 5, 14, 15, 16, 6, 7, 8, 9, 10, 11, 12, 13, 17, 18, 19]
    assert y[0].tolist() == expected and y[1].tolist() == [-v for v in expected]
    # left part 2..5 ends at the cut, right part (old 6..11) now 9..14, the piece 6..8
    assert splice.segments().tolist() == [[2, 5], [9, 14], [6, 8]]


def test_splice_action_after_background():
    # Action on steps 8..17, background piece [2, 5) moved to the cut t = 13 (th = 3): the mirror case.
    splice = Splice(first=8, last=17, t=13, b=2, th=3)
    y = splice.apply(_steps())
    expected = [0, 1, 5, 6, 7, 8, 9, 10, 11, 12, 2, 3, 4, 13, 14, 15, 16, 17, 18, 19]
    assert y[0].tolist() == expected
    # left part (old 8..12) now 5..9, right part 13..17 in place, the piece 10..12
    assert splice.segments().tolist() == [[5, 9], [13, 17], [10, 12]]


def test_draw_splice_stays_inside_action_and_background():
    # One action on grid [2, 11] (steps 2..11) in 20 steps, th = 3: cuts 5..9; background steps 0-1 (too short) and
    # 12..19, so the piece starts in 12..17. Every draw respects that and the draws cover the choices.
    cuts, starts = set(), set()
    for seed in range(60):
        torch.manual_seed(seed)
        splice = draw_splice(np.array([[2.0, 11.0]]), 20, 3)
        assert splice is not None and (splice.first, splice.last, splice.th) == (2, 11, 3) and splice.action_first
        cuts.add(splice.t)
        starts.add(splice.b)
    assert cuts == set(range(5, 10)) and starts == set(range(12, 18))
    torch.manual_seed(0)  # the mirror layout: action on steps 8..17, background 0..7 (18, 19: too short)
    splice = draw_splice(np.array([[8.0, 17.0]]), 20, 3)
    assert splice is not None and not splice.action_first and 11 <= splice.t <= 15 and 0 <= splice.b <= 5


def test_draw_splice_invalid_cases():
    torch.manual_seed(0)
    assert draw_splice(np.array([[2.0, 7.0]]), 20, 5) is None  # no action longer than 2·th
    assert draw_splice(np.zeros((0, 2)), 20, 1) is None  # no action at all
    # a long action (6..18) but background runs of 1, 2 and 1 steps: none longer than th = 2
    segs = np.array([[1.0, 3.0], [6.0, 18.0]])
    assert splice_threshold(segs) == 2 and draw_splice(segs, 20, 2) is None
    # the only background run is covered by an ignored (e.g. Ambiguous) annotation
    assert draw_splice(np.array([[2.0, 11.0]]), 20, 3, occupied=np.array([[12.0, 19.0]])) is None
    assert splice_threshold(np.array([[0.0, 4.2], [1.0, 9.0]])) == 5 and splice_threshold(np.zeros((0, 2))) == 1


# --- (b) boundary max pooling ---------------------------------------------------------------------------------------


def test_boundary_regions_and_max_pooling_by_hand():
    # Steps 2..5 (L = 4): start region [2 − 1, 2 + 1], end region [5 − 1, 5 + 1] (max(L/10, 1) = max(L/4, 1) = 1).
    seg = torch.tensor([[[2, 5]]])
    assert boundary_regions(seg, 1, torch.tensor([10])).tolist() == [[[1, 3, 4, 6]]]
    assert boundary_regions(seg, 2, torch.tensor([5])).tolist() == [[[0, 1, 2, 3]]]  # floor(x / 2)
    # Steps 0..9 (L = 10): start [−1, 2.5 → 2 (half to even)] clamped at 0, end [6.5 → 6, 10] clamped to 8 valid steps.
    assert boundary_regions(torch.tensor([[[0, 9]]]), 1, torch.tensor([8])).tolist() == [[[0, 2, 6, 7]]]
    feat = torch.tensor(
        [
            [
                [0.0, 5, 1, 7, 2, 9, 3, 0, 0, 0],  # start half: max over steps 1..3 = 7
                [0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9],  # 3
                [9.0, 9, 9, 9, 1, 8, 2, 9, 9, 9],  # end half: max over steps 4..6 = 8
                [0.0, -1, -2, -3, -4, -5, -6, -7, -8, -9],  # -4
            ]
        ]
    )
    pooled = boundary_max_pool(feat, torch.tensor([[[1, 3, 4, 6]]]))
    assert pooled.shape == (1, 4, 1) and pooled[0, :, 0].tolist() == [7.0, 3.0, 8.0, -4.0]


# --- (c) the triplet term ---------------------------------------------------------------------------------------


def _ssl_batch(valid=(True, False)) -> dict:
    batch = detection_batch()
    g = torch.Generator().manual_seed(1)
    batch["ssl_input"] = torch.randn(batch["input"].shape, generator=g)
    batch["ssl_segments"] = torch.tensor([[[2, 5], [9, 14], [6, 8]], [[0, 0], [0, 0], [0, 0]]])
    batch["ssl_valid"] = torch.tensor(valid)
    return batch


def _hand_pool(feat: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    return feat[:, lo : hi + 1].amax(dim=1)


def _hand_triplet(heads: dict, segments: list[list[int]], b: int) -> torch.Tensor:
    """AFSD's term for sample `b`, regions written out by hand (floor(round(x) / stride), clamped)."""
    total = torch.zeros(())
    for lv, weight in enumerate(LEVEL_WEIGHTS):
        feat, stride = heads["feats"][lv][b], heads["strides"][lv]
        top = int(heads["masks"][lv][b].sum()) - 1
        half = feat.shape[0] // 2
        pooled = []
        for first, last in segments:
            size = last - first + 1
            inner, outer = max(size / 4, 1.0), max(size / 10, 1.0)
            ends = [round(first - outer), round(first + inner), round(last - inner), round(last + outer)]
            lo_s, hi_s, lo_e, hi_e = (min(max(math.floor(x / stride), 0), top) for x in ends)
            pooled.append((_hand_pool(feat[:half], lo_s, hi_s), _hand_pool(feat[half:], lo_e, hi_e)))
        anchor, positive, negative = pooled[0][1], pooled[1][0], pooled[2][0]
        total = total + weight * F.triplet_margin_loss(anchor[None], positive[None], negative[None])
    return total


@pytest.mark.parametrize("name", ["detection", "detection_attention_kd"])
def test_triplet_part_equals_hand_computed_triplet_margin_loss(name):
    torch.manual_seed(0)
    student, teacher = detector_pair(attention=True)
    method = build_method(
        {"name": name, "ssl_weight": 0.1, "bg_weight": 1.0}, student, teacher if "kd" in name else None
    )
    batch = _ssl_batch()
    out = method(batch)
    with torch.no_grad():
        heads = student(batch["ssl_input"], batch["mask"])
    expected = 0.1 * _hand_triplet(heads, batch["ssl_segments"][0].tolist(), 0)  # mean over the one valid sample
    assert expected > 0 and out.parts["ssl_triplet"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(sum(p.item() for p in out.parts.values()), rel=1e-6)
    # both valid: the mean of the two samples' terms
    both = _ssl_batch(valid=(True, True))
    both["ssl_segments"][1] = torch.tensor([[1, 4], [8, 12], [5, 7]])
    expected2 = 0.05 * (_hand_triplet(heads, both["ssl_segments"][0].tolist(), 0) + _hand_triplet(
        heads, both["ssl_segments"][1].tolist(), 1))  # fmt: skip
    assert method(both).parts["ssl_triplet"].item() == pytest.approx(expected2.item(), rel=1e-5)


def test_att_ssl_reads_the_teachers_spliced_features_on_valid_samples():
    torch.manual_seed(0)
    student, teacher = detector_pair(attention=True)
    method = build_method({"name": "detection_attention_kd", "ssl_weight": 0.1, "gamma": 0.5}, student, teacher)
    batch = _ssl_batch()
    batch["ssl_input_t"] = batch["ssl_input"] * 2 + 1
    out = method(batch)
    with torch.no_grad():
        a_s = student(batch["ssl_input"], batch["mask"])["attention"].mean(dim=1)  # widths 16 / 32: profiles
        a_t = teacher(batch["ssl_input_t"], batch["mask"])["attention"].mean(dim=1)
    steps = batch["mask"][0]  # only sample 0 has an SSL part
    expected = 0.5 * ((a_s[0] - a_t[0])[steps] ** 2).mean()
    assert out.parts["att_ssl"].item() == pytest.approx(expected.item(), rel=1e-5)
    # use_kd_att=false drops att and att_ssl of the generative method; the triplet term stays
    gen = build_method({"name": "detection_generative_kd", "ssl_weight": 0.1, "use_kd_att": False}, student, teacher)
    parts = gen.stages()[1].forward(batch).parts
    assert "ssl_triplet" in parts and not {"att", "att_ssl"} & set(parts)


def test_ssl_weight_zero_is_absent_and_no_valid_sample_is_a_connected_zero():
    torch.manual_seed(0)
    student, teacher = detector_pair(attention=True)
    plain = build_method({"name": "detection_attention_kd"}, student, teacher)  # default ssl_weight 0
    out = plain(detection_batch())  # no SSL keys needed
    assert not {"ssl_triplet", "att_ssl"} & set(out.parts)
    assert plain(_ssl_batch()).loss.item() == pytest.approx(out.loss.item(), rel=1e-6)  # SSL keys ignored
    method = build_method({"name": "detection_attention_kd", "ssl_weight": 0.1}, student, teacher)
    with pytest.raises(ActdistillError, match="needs the SSL clip"):
        method(detection_batch())

    def grads(batch: dict) -> tuple[dict, set]:
        student.zero_grad(set_to_none=True)
        out = method(batch)
        out.loss.backward()
        return out.parts, {n for n, p in student.named_parameters() if p.grad is not None}

    parts, with_ssl = grads(_ssl_batch())
    none_parts, without = grads(_ssl_batch(valid=(False, False)))
    assert none_parts["ssl_triplet"].item() == 0.0 and none_parts["att_ssl"].item() == 0.0
    assert none_parts["ssl_triplet"].requires_grad and parts["ssl_triplet"].item() > 0
    assert with_ssl == without  # the same parameters get gradients either way (DDP ranks stay in step)
    with pytest.raises(ActdistillError, match="ssl_weight must be >= 0"):
        build_method({"name": "detection", "ssl_weight": -1.0}, student, None)


def test_generative_stages_put_the_ssl_terms_in_stage_two_only():
    torch.manual_seed(0)
    student, teacher = detector_pair(attention=True)
    method = build_method({"name": "detection_generative_kd", "ssl_weight": 0.1, "bg_weight": 1.0}, student, teacher)
    batch = _ssl_batch()
    batch["ssl_input_t"] = batch["ssl_input"].clone()
    stats = train_epoch(engine_run(method, [batch], lr=1e-3))
    assert "attention/ssl_triplet" in stats and "attention/att_ssl" in stats and stats["attention/ssl_triplet"] > 0
    assert not [k for k in stats if k.startswith("generative/") and "ssl" in k]


# --- data: the seeded SSL sample, the engine run ----------------------------------------------------------------


def _write_features(root: Path, length: int = 32, channels: int = 6) -> Path:
    """Features at 1 fps, stride 1 (step p = time p + ½ s): 2 training and 1 test video, each with a 4-step action
    (th = 4) and a 12-step one, background runs 0-2, 7-11 and 24-31 (feature value = step index in channel 0)."""
    feats, ann = root / "feats", root / "annotations"
    feats.mkdir(parents=True)
    videos, rows = {}, {"val": [], "test": []}
    for name, subset in (("video_validation_1", "val"), ("video_validation_2", "val"), ("video_test_1", "test")):
        x = np.random.default_rng(len(videos)).normal(size=(length, channels)).astype(np.float32)
        x[:, 0] = np.arange(length)
        np.save(feats / f"{name}.npy", x)
        videos[name] = {"num_features": length, "num_frames": length, "duration": float(length)}
        rows[subset] += [{"video": name, "start": 3.0, "end": 7.0, "label": "A"},
                         {"video": name, "start": 12.0, "end": 24.0, "label": "B"}]  # fmt: skip
    index = {"backbone": "hand", "fps": 1.0, "window": 1, "stride": 1, "size": 0, "tap": "", "feature_dim": channels}
    (feats / "features.json").write_text(json.dumps({**index, "videos": videos}))
    for subset, subset_rows in rows.items():
        write_thumos_annotations(subset_rows, ann, subset, ["A", "B"])
    (root / "classes.txt").write_text("A\nB\n")
    return root


@pytest.fixture(scope="module")
def hand_set(tmp_path_factory) -> Path:
    return _write_features(tmp_path_factory.mktemp("ssl_features"))


def _data_overrides(root: Path) -> list[str]:
    return [f"data.root={root / 'feats'}", f"data.annotations={root / 'annotations'}",
            f"data.classes={root / 'classes.txt'}"]  # fmt: skip


def _train_set(root: Path, crop: int, ssl: bool, teacher: bool = False) -> FeatureSequences:
    cfg = load_config(None, [*TINY_DETECTION_RUN, *_data_overrides(root), f"data.crop_len={crop}",
                             f"method.ssl_weight={0.1 if ssl else 0}"])  # fmt: skip
    if teacher:
        cfg.data.teacher_root = str(root / "feats")
    return build_detection_data(cfg)[0]


def test_ssl_sample_is_a_splice_of_the_crop_and_deterministic_per_seed_epoch_index(hand_set):
    data, plain = (
        SeededView(_train_set(hand_set, 24, True, teacher=True), 7),
        SeededView(_train_set(hand_set, 24, False), 7),
    )
    assert not build_detection_data(load_config(None, [*TINY_DETECTION_RUN, *_data_overrides(hand_set)]))[0].ssl
    seen = set()
    for epoch in range(4):
        data.set_epoch(epoch)
        plain.set_epoch(epoch)
        for i in range(len(data)):
            a, again, base = data[i], data[i], plain[i]
            assert a["offset"] == base["offset"] and torch.equal(a["input"], base["input"])  # the crop is unchanged
            assert "ssl_input" not in base
            for key in ("ssl_input", "ssl_input_t", "ssl_segments"):
                assert torch.equal(a[key], again[key])
            assert a["ssl_valid"] == again["ssl_valid"]
            if not a["ssl_valid"]:
                assert torch.equal(a["ssl_input"], a["input"])
                continue
            steps, (left, right, piece) = a["ssl_input"][0], a["ssl_segments"].tolist()
            assert steps[left[1]] + 1 == steps[right[0]]  # the action continues across the inserted piece
            inserted = steps[piece[0] : piece[1] + 1]  # channel 0 holds the video's step index
            assert piece[1] - piece[0] + 1 == 4 and torch.equal(inserted, inserted[0] + torch.arange(4.0))
            video_steps = set(inserted.long().tolist())
            assert not video_steps & (set(range(3, 7)) | set(range(12, 24)))  # background of the video
            assert torch.equal(a["ssl_input_t"], a["ssl_input"])  # the same splice of the teacher's features
            assert sorted(steps.tolist()) == sorted(a["input"][0].tolist())  # a permutation of the crop
            seen.add((epoch, i, a["offset"], tuple(map(tuple, a["ssl_segments"].tolist()))))
    assert len({s[2:] for s in seen}) > 2  # epochs draw other crops and splices
    batch = collate_sequences([data[0], data[1]])
    assert batch["ssl_input"].shape == batch["input"].shape and batch["ssl_segments"].shape == (2, 3, 2)
    assert batch["ssl_valid"].dtype == torch.bool and batch["ssl_input_t"].shape == batch["input"].shape


def test_engine_run_logs_the_ssl_triplet_part(hand_set, tmp_path):
    overrides = [*TINY_DETECTION_RUN, *_data_overrides(hand_set), "data.crop_len=0", "method.ssl_weight=0.1",
                 f"train.out_dir={tmp_path / 'run'}"]  # fmt: skip
    fit(load_config(None, overrides))
    train = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["train"]
    assert train["ssl_triplet"] > 0  # whole videos: every sample has an SSL part
    assert train["loss"] == pytest.approx(sum(train[k] for k in ("cls", "reg", "bg", "ssl_triplet")), rel=1e-4)


# --- recipes ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_detection_recipes_load_and_check(path):
    cfg = load_config(path)
    check_config(cfg, data_ready=False)  # ranges, the method's own hyper-parameters, metric names
    gen = path.stem in ("thumos14_student_gen", "thumos14_teacher_gen", "thumos14_student_gen_p2")
    assert cfg.method.get("ssl_weight", 0.0) == (0.1 if gen else 0.0)  # AFSD / paper 2's value on THUMOS14 only
    assert not [line for line in path.read_text().splitlines() if "Not implemented" in line and "triplet" in line]


def test_p2_recipe_is_the_gen_recipe_with_paper2s_detection_optimiser():
    gen, p2 = (yaml.safe_load((RECIPES / f"{n}.yaml").read_text()) for n in ("thumos14_student_gen",
                                                                              "thumos14_student_gen_p2"))  # fmt: skip
    assert p2["optim"] == {"name": "adam", "lr": 1.0e-6, "weight_decay": 1.0e-3}
    assert p2["sched"] == {"name": "none"} and p2["data"]["batch_size"] == 1 and p2["train"]["epochs"] == 50
    for section in ("data", "student", "teacher", "method", "train", "eval"):
        differs = {k for k in set(gen[section]) | set(p2[section]) if gen[section].get(k) != p2[section].get(k)}
        assert differs <= {"batch_size", "out_dir"}, (section, differs)


# --- torchrun: a rank without an SSL part keeps in step ------------------------------------------------------------


def _ddp_method():
    from actdistill.models.temporal_detector import build_detector

    torch.manual_seed(0)
    teacher = build_detector("large", 6, 2, attention=True, embed_dim=16)  # same width: no adapter parameters
    student = build_detector("small", 6, 2, attention=True, embed_dim=16)
    return build_method({"name": "detection_attention_kd", "ssl_weight": 0.1, "bg_weight": 1.0}, student, teacher)


def _ddp_batch() -> dict:
    batch = _ssl_batch(valid=(True, False))  # sample 0 has an SSL part, sample 1 none
    batch.pop("video")
    batch["mask"][1] = True
    return batch


def _ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    from actdistill.engine.distributed import DistContext, Replicas

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        method = _ddp_method().train()
        replicas = Replicas(DistContext(rank, world), torch.device("cpu"))
        replicas.wrap(method, find_unused=False)  # every parameter must get a gradient on every rank
        half = {k: v[rank : rank + 1] for k, v in _ddp_batch().items()}
        for _ in range(2):  # a second step fails under DDP if the first left a parameter without gradient
            method.zero_grad(set_to_none=True)
            replicas.step(half, 0).loss.backward()
        if rank == 0:
            torch.save({n: p.grad for n, p in method.student.named_parameters()}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_rank_without_ssl_part_matches_one_process(tmp_path):
    """Two gloo processes, one sample each, only rank 0's with an SSL part, equal one process with both samples: the
    rank without one still runs the SSL forward (a zero term, every parameter gets a gradient) and the count of
    valid samples is averaged over ranks without being clamped to 1 (a share of 0.5 here)."""
    import torch.multiprocessing as mp

    out = tmp_path / "grads.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    method = _ddp_method().train()
    method(_ddp_batch()).loss.backward()
    ddp = torch.load(out)
    for name, p in method.student.named_parameters():
        assert ddp[name] is not None and torch.allclose(ddp[name], p.grad, rtol=1e-4, atol=1e-6), name
