"""PCL pretext transforms, memory banks, losses, convergence statistics and tiny `pcl` runs through the engine
(paper 3; PCL's released code)."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_PCL_RUN

from actdistill.config import load_config
from actdistill.models import create_model
from actdistill.models.pcl_net import PCLNet, residual_frames
from actdistill.ssl.convergence import convergence_summary, epochs_to
from actdistill.ssl.pcl import MemoryBank, in_batch_infonce, pcl_contrastive_loss, pcl_kd_loss, pcl_loss
from actdistill.ssl.pretext import apply_pretext, permute_quadrants, remote_clip_start, tuple_starts, tuple_total


def _clip(c: int = 2, t: int = 8, h: int = 4, w: int = 6) -> torch.Tensor:
    return torch.arange(c * t * h * w, dtype=torch.float32).view(c, t, h, w)


# --- tuple sampling -------------------------------------------------------------------------------


def test_tuple_starts_faithful_and_clean() -> None:
    assert tuple_total(16, 8, 3) == 64
    for seed in range(5):
        f = tuple_starts(100, mode="faithful", rng=random.Random(seed))
        c = tuple_starts(100, mode="clean", rng=random.Random(seed))
        assert f[0] == c[0] and 0 <= f[0] <= 100 - 64
        assert [s - f[0] for s in f] == [0, 11, 22]
        assert [s - c[0] for s in c] == [0, 24, 48]
    assert tuple_starts(64, rng=random.Random(0))[0] == 0
    with pytest.raises(ValueError):
        tuple_starts(63)
    with pytest.raises(ValueError):
        tuple_starts(100, mode="other")


# PCL's released code, datasets/ucf101.py (`UCF101_PCL_VCP_Dataset.__getitem__` + `load4clips`), restated: the tuple
# start, the label and the remote clip, drawn from one `random` stream in PCL's order.
def _pcl_sample(length: int, rng: random.Random, clip_len=16, interval=8, tuple_len=3, dist=16):
    total = clip_len * tuple_len + interval * (tuple_len - 1)
    start = rng.randint(0, length - total)
    label = rng.randint(0, 4)
    if label != 4:
        return start, label, None
    forward = start - clip_len - dist
    backward = length - start - total - clip_len - dist
    if forward < 0 or backward < 0:
        return start, rng.randint(0, 3), None
    starts = [rng.randint(0, start - clip_len - dist), rng.randint(start + total + dist, length - clip_len)]
    return start, 4, starts[rng.randint(0, 1)]


def _our_sample(length: int, rng: random.Random, rule: str = "both_sides"):
    """What `PCLTupleDataset.__getitem__` does with these functions (16/8/3 tuples, min_gap 16)."""
    start = tuple_starts(length, 16, 8, 3, "faithful", rng)[0]
    label = rng.randrange(5)
    remote = None
    if label == 4:
        remote = remote_clip_start(length, start, tuple_total(16, 8, 3), 16, rng, 16, remote_rule=rule)
        if remote is None:
            label = rng.randrange(4)
    return start, label, remote


def _exact_label4_share(length: int, rule: str) -> float:
    """P(label 4) by enumerating the tuple start, with the room condition written out per rule."""
    total, clip_len, gap = 64, 16, 16
    ok = 0
    for s in range(length - total + 1):
        before, after = s - clip_len - gap >= 0, length - s - total - clip_len - gap >= 0
        ok += (before and after) if rule == "both_sides" else (before or after)
    return 0.2 * ok / (length - total + 1)


def test_remote_clip_draw_for_draw_as_pcl() -> None:
    for length in (64, 100, 150, 186, 240, 400):
        for seed in range(300):
            assert _our_sample(length, random.Random(seed)) == _pcl_sample(length, random.Random(seed))


@pytest.mark.parametrize("length", [150, 186, 240])
def test_remote_clip_label_share_as_pcl(length: int) -> None:
    # Exact shares: ours (by enumerating starts through remote_clip_start) against the rule written out.
    for rule in ("both_sides", "either_side"):
        starts = range(length - 64 + 1)
        room = sum(remote_clip_start(length, s, 64, 16, random.Random(s), remote_rule=rule) is not None for s in starts)
        assert 0.2 * room / len(starts) == pytest.approx(_exact_label4_share(length, rule), abs=1e-12)
    # Pinned values (16/8/3 tuples, gap 16): 186 frames 0.2·59/123 = 0.0959, 150 frames 0.2·23/87 = 0.0529.
    expected = {150: 0.2 * 23 / 87, 186: 0.2 * 59 / 123, 240: 0.2 * 113 / 177}[length]
    assert _exact_label4_share(length, "both_sides") == pytest.approx(expected)
    assert _exact_label4_share(length, "either_side") == pytest.approx(0.2)
    # Simulated shares of the whole sampling (tuple start, label, redraw) match them.
    n, rng = 20_000, random.Random(2024)
    sim = sum(_our_sample(length, rng)[1] == 4 for _ in range(n)) / n
    assert sim == pytest.approx(expected, abs=4 * (expected * (1 - expected) / n) ** 0.5)
    sim = sum(_our_sample(length, rng, "either_side")[1] == 4 for _ in range(n)) / n
    assert sim == pytest.approx(0.2, abs=4 * (0.16 / n) ** 0.5)


def test_remote_clip_side_and_distance() -> None:
    # Window [40, 104) in 200 frames, gap 16: 9 starts before (0..8), 65 after (120..184).
    rng = random.Random(0)
    for rule in ("both_sides", "either_side"):
        draws = [remote_clip_start(200, 40, 64, 16, rng, remote_rule=rule) for _ in range(4000)]
        assert all(r is not None and (0 <= r <= 8 or 120 <= r <= 184) for r in draws)
        before = sum(r <= 8 for r in draws) / len(draws)
        # PCL flips a fair coin between the sides; the looser rule is uniform over all 74 starts.
        assert before == pytest.approx(0.5 if rule == "both_sides" else 9 / 74, abs=0.03)
        assert {r for r in draws if r <= 8} == set(range(9))
    # Room on one side only: PCL redraws the label; the looser rule takes that side.
    assert remote_clip_start(100, 10, 64, 16, rng) is None
    assert remote_clip_start(96, 0, 64, 16, rng) is None
    assert remote_clip_start(96, 0, 64, 16, rng, remote_rule="either_side") == 80  # window 0..64, +16 → 80..96
    assert remote_clip_start(200, 32, 64, 16, rng) in {0, *range(112, 185)}  # exactly room before: start 0
    with pytest.raises(ValueError, match="remote_rule"):
        remote_clip_start(200, 40, 64, remote_rule="one_side")


def test_tuple_dataset_uses_pcls_remote_rule(monkeypatch) -> None:
    import actdistill.ssl.dataset as dataset_mod
    from actdistill.data.manifest import VideoRecord

    def fake_frames(path, indices):
        return torch.zeros(len(list(indices)), 3, 4, 4, dtype=torch.uint8)

    monkeypatch.setattr(dataset_mod, "read_frames", fake_frames)
    records = [VideoRecord(f"v{i}.avi", 0, 150 + (i % 3) * 36, 25.0) for i in range(30)]
    ds = dataset_mod.PCLTupleDataset("/nonexistent", records, train=False)
    labels = [ds[i]["label"] for i in range(len(ds))]
    assert labels == [_pcl_sample(r.num_frames, random.Random(ds._tuple_seed(i)))[1] for i, r in enumerate(records)]
    assert 4 in labels


# --- pretext transforms ---------------------------------------------------------------------------


def test_identity_and_remote() -> None:
    x = _clip()
    y, p = apply_pretext(x, 0, random.Random(0))
    assert torch.equal(y, x) and p == {}
    remote = -x
    y, _ = apply_pretext(x, 4, random.Random(0), remote=remote)
    assert torch.equal(y, remote)
    with pytest.raises(ValueError):
        apply_pretext(x, 4, random.Random(0))
    with pytest.raises(ValueError):
        apply_pretext(x, 5, random.Random(0))


def test_rotation_is_rotation_and_invertible() -> None:
    x = _clip(h=4, w=4)
    seen = set()
    for seed in range(20):
        y, p = apply_pretext(x, 1, random.Random(seed))
        k = p["k"]
        seen.add(k)
        assert k in (1, 2, 3)
        assert not torch.equal(y, x)
        assert torch.equal(torch.rot90(y, -k, dims=(-2, -1)), x)
        if k == 1:  # counter-clockwise quarter turn: out[i, j] = in[j, W-1-i]
            for i in range(4):
                for j in range(4):
                    assert torch.equal(y[..., i, j], x[..., j, 3 - i])
    assert seen == {1, 2, 3}


def test_quadrant_permutation() -> None:
    x = _clip(h=4, w=6)
    y, _ = apply_pretext(x, 2, random.Random(0))
    a, b = x[..., :2, :3], x[..., :2, 3:]
    c, d = x[..., 2:, :3], x[..., 2:, 3:]
    assert torch.equal(y[..., :2, :3], d)
    assert torch.equal(y[..., :2, 3:], c)
    assert torch.equal(y[..., 2:, :3], b)
    assert torch.equal(y[..., 2:, 3:], a)
    assert torch.equal(permute_quadrants(y), x)
    with pytest.raises(ValueError):
        permute_quadrants(_clip(h=3, w=4))


def test_temporal_shuffle_swaps_two_chunks() -> None:
    x = _clip(t=8)
    pairs = set()
    for seed in range(30):
        y, p = apply_pretext(x, 3, random.Random(seed))
        i, j = p["i"], p["j"]
        assert 0 <= i < j < 4
        pairs.add((i, j))
        xc, yc = x.split(2, dim=1), y.split(2, dim=1)
        changed = [m for m in range(4) if not torch.equal(xc[m], yc[m])]
        assert changed == [i, j]
        assert torch.equal(yc[i], xc[j]) and torch.equal(yc[j], xc[i])
    assert len(pairs) == 6


def test_residual_frames_against_loop() -> None:
    x = torch.randn(2, 3, 5, 4, 4)
    r = residual_frames(x)
    t = x.shape[2]
    for k in range(t):
        assert torch.allclose(r[:, :, k], x[:, :, (k - 1) % t] - x[:, :, k])


# --- memory bank and contrastive losses -----------------------------------------------------------


def test_memory_bank_contrast_positive_first() -> None:
    torch.manual_seed(0)
    bank = MemoryBank(10, dim=8)
    bound = 1 / (8 / 3) ** 0.5
    assert bank.memory.abs().max() <= bound
    v = F.normalize(torch.randn(3, 8), dim=1)
    index = torch.tensor([1, 4, 7])
    out = bank.contrast(v, index, k=5, temperature=0.07, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 6)
    assert torch.allclose(out[:, 0], (bank.memory[index] * v).sum(1) / 0.07)
    # every column is a bank row's similarity
    sims = v @ bank.memory.t() / 0.07
    for b in range(3):
        for col in range(6):
            assert torch.isclose(sims[b], out[b, col]).any()


def test_memory_bank_update_momentum_and_norm() -> None:
    torch.manual_seed(0)
    bank = MemoryBank(6, dim=4, momentum=0.5)
    before = bank.memory.clone()
    v = F.normalize(torch.randn(2, 4), dim=1)
    index = torch.tensor([0, 3])
    bank.update(index, v)
    expected = F.normalize(0.5 * before[index] + 0.5 * v, dim=1)
    assert torch.allclose(bank.memory[index], expected)
    assert torch.equal(bank.memory[[1, 2, 4, 5]], before[[1, 2, 4, 5]])
    for _ in range(3):
        bank.update(index, F.normalize(torch.randn(2, 4), dim=1))
    assert torch.allclose(bank.memory[index].norm(dim=1), torch.ones(2))


def test_pcl_contrastive_loss_direct() -> None:
    torch.manual_seed(0)
    b1, b2 = MemoryBank(8, dim=4), MemoryBank(8, dim=4)
    m1, m2 = b1.memory.clone(), b2.memory.clone()
    v1, v2 = F.normalize(torch.randn(2, 4), dim=1), F.normalize(torch.randn(2, 4), dim=1)
    index = torch.tensor([2, 5])
    loss = pcl_contrastive_loss(v1, v2, index, b1, b2, k=3, temperature=0.1, generator=torch.Generator().manual_seed(1))
    idx = b1.sample_indices(index, 3, torch.Generator().manual_seed(1))
    assert torch.equal(idx[:, 0], index)
    expected = torch.tensor(0.0)
    for v, m in ((v1, m2), (v2, m1)):
        logits = (m[idx] @ v.unsqueeze(2)).squeeze(2) / 0.1
        expected = expected - F.log_softmax(logits, dim=1)[:, 0].mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    # banks were updated after the logits
    assert torch.allclose(b1.memory[index], F.normalize(0.5 * m1[index] + 0.5 * v1, dim=1))
    assert torch.allclose(b2.memory[index], F.normalize(0.5 * m2[index] + 0.5 * v2, dim=1))


def test_in_batch_infonce_direct() -> None:
    torch.manual_seed(0)
    v1, v2 = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
    s = v1 @ v2.t() / 0.2
    expected = -(F.log_softmax(s, 1).diag().mean() + F.log_softmax(s.t(), 1).diag().mean())
    assert torch.allclose(in_batch_infonce(v1, v2, 0.2), expected, atol=1e-6)


def test_pcl_loss_and_kd() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 5)
    y = torch.tensor([0, 1, 2, 4])
    con = torch.tensor(2.0)
    assert torch.allclose(pcl_loss(logits, y, con), F.cross_entropy(logits, y) + 1.0)
    assert pcl_kd_loss(logits, logits.clone()).abs() < 1e-6
    t = torch.randn(4, 5)
    kl = F.kl_div(F.log_softmax(logits / 4, 1), F.softmax(t / 4, 1), reduction="batchmean")
    assert torch.allclose(pcl_kd_loss(logits, t, temperature=4.0), 16 * kl, atol=1e-5)
    assert torch.allclose(pcl_kd_loss(logits, t, temperature=4.0, weight=0.5), 8 * kl, atol=1e-5)


# --- network ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["r3d_10", "c3d"])
def test_pclnet_shapes_and_cross_arch_kd(name: str) -> None:
    torch.manual_seed(0)
    student = PCLNet(create_model(name, 5, channel_scale=1 / 16))
    teacher = PCLNet(create_model("r2plus1d_10", 5, channel_scale=1 / 16), head="linear").eval()
    assert student.feat_dim == 32
    clips = [torch.randn(2, 3, 8, 16, 16) for _ in range(3)]
    out = student.forward_tuple(clips)
    assert out.logits.shape == (2, 5) and out.features.shape == (2, 3, 32)
    assert out.v1.shape == (2, 128) and out.v2.shape == (2, 128)
    assert torch.allclose(out.v1.norm(dim=1), torch.ones(2), atol=1e-5)
    with torch.no_grad():
        t_logits = teacher(torch.stack(clips, dim=1))  # the model contract's forward: a (B, 3, C, T, H, W) tuple
        torch.testing.assert_close(t_logits, teacher.forward_tuple(clips).logits)
    loss = pcl_kd_loss(out.logits, t_logits) + pcl_loss(
        out.logits, torch.tensor([0, 3]), in_batch_infonce(out.v1, out.v2)
    )
    loss.backward()
    assert student.pretext_fc.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


# --- convergence -----------------------------------------------------------------------------------


def test_epochs_to_and_summary() -> None:
    curve = [0.2, 0.5, 0.85, 0.9, 0.8]
    assert epochs_to(curve, 0.85) == 3
    assert epochs_to(curve, 0.95) is None
    assert epochs_to([], 0.5) is None
    assert epochs_to(curve, 0.1) == 1
    s = convergence_summary({"teacher": curve, "student": [0.6, 0.9, 0.92]}, teacher_final=0.8)
    assert s["teacher"] == {"epochs_to_threshold": 3, "epochs_to_teacher": 3, "best": 0.9, "final": 0.8, "epochs": 5}
    assert s["student"]["epochs_to_teacher"] == 2 and s["student"]["epochs_to_threshold"] == 2


# --- tiny end-to-end runs on the synthetic video set, through the engine (task `pcl`) --------------------------


def _pcl_cfg(root, out, *extra):
    return load_config(None, [*TINY_PCL_RUN, f"data.root={root}", f"train.out_dir={out}", *extra])


def test_tuple_dataset_draws_and_pixels(tiny_ucf) -> None:
    from actdistill.data.decode import read_frames
    from actdistill.ssl.dataset import build_pcl_data

    _, _, val = build_pcl_data(_pcl_cfg(tiny_ucf, "unused"))
    sample = val[0]
    clips, label = sample["input"], sample["label"]
    assert clips.shape == (3, 3, 4, 32, 32) and 0 <= label < 5
    again = val[0]
    assert torch.equal(clips, again["input"]) and label == again["label"]  # validation tuples are seeded by index
    for i in range(len(val)):  # clips 0 and 2 are the raw frames at the tuple starts (PCL's faithful spacing)
        clips = val[i]["input"]
        starts = tuple_starts(val.records[i].num_frames, 4, 2, 3, "faithful", random.Random(val._tuple_seed(i)))
        for c, s in ((0, starts[0]), (2, starts[2])):
            raw = read_frames(tiny_ucf / val.records[i].path, range(s, s + 4)).permute(1, 0, 2, 3).float() / 255
            assert torch.allclose(clips[c], (raw - val.mean) / val.std, atol=1e-5)


def test_train_pcl_then_pcl_kd_student_through_the_engine(tiny_ucf, tmp_path) -> None:
    import json

    from actdistill.engine.fit import fit

    teacher = fit(_pcl_cfg(tiny_ucf, tmp_path / "teacher"))
    assert teacher["task"] == "pcl" and teacher["selected_on"] == "val"  # PCL validates on the test tuples
    ckpt = tmp_path / "teacher" / "checkpoints" / "last.pt"
    student_kwargs = "student.kwargs={backbone: r2plus1d_10, backbone_kwargs: {channel_scale: 0.0625}}"
    run = fit(_pcl_cfg(tiny_ucf, tmp_path / "student", student_kwargs, "method.name=pcl_kd", "method.contrast=in_batch",
                       "teacher.name=pcl", f"teacher.checkpoint={ckpt}", "train.epochs=2"))  # fmt: skip
    history = run["history"]
    assert len(history) == 2 and all(0.0 <= h["val"]["pretext_acc"] <= 1.0 for h in history)
    assert all(math.isfinite(h["train"][k]) for h in history for k in ("loss", "ce", "con", "kd"))
    assert run["best"]["value"] is not None and (tmp_path / "student" / "checkpoints" / "best.pt").is_file()
    logged = [json.loads(line) for line in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logged] == [1, 2]
