"""Teacher-output cache (issue 9): replayed views, exact logits, stale caches refused, cached KD = online KD."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY_RUN

import actdistill.engine.build as build_module
import actdistill.engine.fit as fit_module
from actdistill.apps.cache_build import build_teacher_cache
from actdistill.cli import main
from actdistill.config import load_config
from actdistill.data.build import build_datasets, build_transforms
from actdistill.distill.cache import (
    CachedTeacherView,
    TeacherCache,
    estimate_bytes,
    file_digest,
    restore_logits,
    view_fingerprint,
)
from actdistill.engine.build import teacher_for_student
from actdistill.errors import ActdistillError
from actdistill.models import create_model
from actdistill.utils.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def teacher_ckpt(tiny_stanford40, tmp_path_factory):
    """A `resnet_demo` teacher trained one epoch on the tiny data."""
    out = tmp_path_factory.mktemp("teacher")
    assert (
        main(["train", *TINY_RUN, "student.name=resnet_demo", f"data.root={tiny_stanford40}", f"train.out_dir={out}"])
        == 0
    )
    return out / "checkpoints" / "last.pt"


def _overrides(root, ckpt, out, *extra):
    return [*TINY_RUN, f"data.root={root}", "data.batch_size=8", "method.name=kd", f"teacher.checkpoint={ckpt}",
            f"train.out_dir={out}", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def cache_dir(tiny_stanford40, teacher_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "kd_cache"
    cfg = load_config(None, _overrides(tiny_stanford40, teacher_ckpt, "unused"))
    return build_teacher_cache(cfg, out, epochs=2)


@pytest.fixture
def teacher_forwards(monkeypatch):
    """`{"n": forward calls}` of every teacher `fit` loads in this test (a hook added by a wrapped `load_teacher`)."""
    calls = {"n": 0}
    load = build_module.load_teacher

    def counting_load(cfg, classes, extra_kwargs):
        teacher, spec = load(cfg, classes, extra_kwargs)
        teacher.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
        return teacher, spec

    monkeypatch.setattr(build_module, "load_teacher", counting_load)
    return calls


def test_restore_logits_exact_when_all_classes_kept():
    z = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, 1.0]])
    values, classes = z.topk(3, dim=-1)
    assert torch.equal(restore_logits(values, classes, torch.logsumexp(z, -1), 3), z)


def test_restore_logits_topk_keeps_probabilities_and_spreads_the_rest():
    z = torch.tensor([4.0, 1.0, 0.0, -2.0])
    values, classes = z.topk(2)
    restored = restore_logits(values, classes, torch.logsumexp(z, -1), 4)
    p, q = z.softmax(-1), restored.softmax(-1)
    assert torch.allclose(q[:2], p[:2], atol=1e-6)  # top-2 probabilities unchanged
    rest = (p[2] + p[3]) / 2  # hand: the dropped mass shared equally
    assert torch.allclose(q[2:], torch.stack([rest, rest]), atol=1e-6)


def test_fingerprint_sees_flips():
    x = torch.rand(3, 8, 8)
    a, b = view_fingerprint(x), view_fingerprint(x.flip(-1))
    assert torch.isclose(a[0], b[0]) and not torch.isclose(a[1], b[1])
    assert view_fingerprint(torch.rand(3, 4, 8, 8)).shape == (4,)


def test_size_estimate_matches_the_written_arrays(cache_dir):
    cache = TeacherCache(cache_dir)
    arrays = sum(a.nbytes for a in cache.arrays().values())
    assert estimate_bytes(cache.epochs, cache.num_samples, cache.topk, cache.num_classes) == arrays


def test_cached_view_reproduces_live_teacher(tiny_stanford40, teacher_ckpt, cache_dir):
    """Sample i of epoch e replayed from the cache: same pixels as the live view, same teacher logits (fp16)."""
    cfg = load_config(None, _overrides(tiny_stanford40, teacher_ckpt, "unused"))
    student = create_model(cfg.student.name, 3)
    train_tf, test_tf = build_transforms(cfg.data, student.pretrained_cfg.mean, student.pretrained_cfg.std)
    bundle = build_datasets(cfg.data, train_tf, test_tf, seed=cfg.train.seed)
    view = bundle.train
    teacher = teacher_for_student(cfg.teacher, student, list(bundle.classes))[0].eval()
    cached = CachedTeacherView(
        build_datasets(cfg.data, train_tf, test_tf, seed=cfg.train.seed).train, TeacherCache(cache_dir)
    )
    for epoch in (1, 2, 3):  # epoch 3 replays cache epoch 1
        view.set_epoch((epoch - 1) % 2 + 1)
        cached.set_epoch(epoch)
        for index in (0, 5, len(view) - 1):
            live = view[index]["input"]
            sample = cached[index]
            assert torch.equal(sample["input"], live)
            with torch.no_grad():
                expected = teacher(live.unsqueeze(0))[0]
            assert torch.allclose(sample["teacher_logits"], expected, rtol=2e-3, atol=2e-3)
    a, b = TeacherCache(cache_dir).fingerprint(1, 0), TeacherCache(cache_dir).fingerprint(2, 0)
    assert not torch.equal(a, b)  # the two cache epochs hold different views of sample 0


def test_stale_cache_is_refused(tiny_stanford40, teacher_ckpt, cache_dir, tmp_path):
    base = _overrides(tiny_stanford40, teacher_ckpt, tmp_path / "run", f"teacher.cache={cache_dir}")
    with pytest.raises(ActdistillError, match="stale.*image_size.*actdistill cache build"):
        fit_module.fit(load_config(None, [*base, "data.image_size=40"]), overwrite=True)
    with pytest.raises(ActdistillError, match="stale: seed"):
        fit_module.fit(load_config(None, [*base, "train.seed=7"]), overwrite=True)
    other = tmp_path / "other_teacher.pt"
    ckpt = load_checkpoint(teacher_ckpt)
    next(iter(ckpt["student"].values())).add_(1.0)
    torch.save(ckpt, other)
    with pytest.raises(ActdistillError, match="stale: teacher differs in sha256"):
        fit_module.fit(load_config(None, [*base, f"teacher.checkpoint={other}"]), overwrite=True)


def test_feature_method_and_missing_cache_are_refused(tiny_stanford40, teacher_ckpt, cache_dir, tmp_path):
    base = _overrides(tiny_stanford40, teacher_ckpt, tmp_path / "run")
    # A logits-only cache cannot serve a method that reads teacher feature maps: refused, with the rebuild command.
    with pytest.raises(ActdistillError, match=r"method 'at' reads the teacher maps .* holds no maps; rebuild it with "
                                              r"`actdistill cache build"):  # fmt: skip
        fit_module.fit(load_config(None, [*base, "method.name=at", f"teacher.cache={cache_dir}"]), overwrite=True)
    with pytest.raises(ActdistillError, match="not a complete teacher cache.*actdistill cache build"):
        fit_module.fit(load_config(None, [*base, f"teacher.cache={tmp_path / 'nope'}"]), overwrite=True)


def test_changed_view_is_caught_by_the_fingerprint(tiny_stanford40, teacher_ckpt, cache_dir, tmp_path):
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for f in cache_dir.iterdir():
        (tampered / f.name).write_bytes(f.read_bytes())
    views = np.load(tampered / "views.npy")
    views[0, 3, 1] += 100.0
    np.save(tampered / "views.npy", views)
    cfg = load_config(None, _overrides(tiny_stanford40, teacher_ckpt, tmp_path / "run", f"teacher.cache={tampered}"))
    # An edited file is refused by its recorded checksum before anything is read ...
    with pytest.raises(ActdistillError, match="views.npy was modified since the cache was built"):
        fit_module.fit(cfg, overwrite=True)
    # ... and a cache whose files are intact but whose views are not the data's (here: the record updated too) is
    # caught by the per-sample view fingerprint when that sample is loaded.
    meta = json.loads((tampered / "meta.json").read_text())
    meta["files"]["views.npy"] = {"bytes": (tampered / "views.npy").stat().st_size,
                                  "blake2b": file_digest(tampered / "views.npy")}  # fmt: skip
    (tampered / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ActdistillError, match="training sample 3 in epoch 1 differs"):
        fit_module.fit(cfg, overwrite=True)


def test_cached_kd_matches_online_kd_and_never_runs_the_teacher(
    tiny_stanford40, teacher_ckpt, cache_dir, tmp_path, teacher_forwards
):
    calls = teacher_forwards
    common = ["train.epochs=2", "sched.name=none"]
    online = fit_module.fit(load_config(None, _overrides(tiny_stanford40, teacher_ckpt, tmp_path / "online", *common)))
    assert calls["n"] > 0
    calls["n"] = 0
    cached_cfg = _overrides(tiny_stanford40, teacher_ckpt, tmp_path / "cached", *common, f"teacher.cache={cache_dir}")
    cached = fit_module.fit(load_config(None, cached_cfg))
    assert calls["n"] == 0
    for a, b in zip(online["history"], cached["history"], strict=True):
        for key in ("loss", "kd", "ce"):
            assert math.isclose(a["train"][key], b["train"][key], rel_tol=2e-3), (key, a["train"], b["train"])


def test_cli_build_and_info(tiny_stanford40, teacher_ckpt, tmp_path, capsys):
    out = tmp_path / "c"
    args = _overrides(tiny_stanford40, teacher_ckpt, tmp_path / "run")
    assert main(["cache", "build", *args, "--out", str(out), "--epochs", "1", "--topk", "2"]) == 0
    printed = capsys.readouterr().out
    assert "1 epochs × 24 views, top-2 of 3 logits" in printed and str(out) in printed
    assert main(["cache", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["topk"] == 2 and info["epochs"] == 1 and info["num_samples"] == 24
    assert not (tmp_path / "c.partial").exists()


def test_video_cache_replays_clips(tmp_path):
    """The cache keys video views too: clip start and crop are a function of (seed, epoch, index)."""
    from actdistill.data.synthetic_video import write_synthetic_ucf101

    root = write_synthetic_ucf101(tmp_path / "UCF", num_classes=3, videos_per_class=3, groups=3, frames=12, size=32)
    video = [f"data.root={root}", "data.name=ucf101", "data.clip_len=4", "data.image_size=32", "data.batch_size=4",
             "student.name=r3d_10", "student.kwargs={channel_scale: 0.125}", *TINY_RUN[1:-1]]  # fmt: skip
    assert main(["train", *video, f"train.out_dir={tmp_path / 'teacher'}"]) == 0
    ckpt = tmp_path / "teacher" / "checkpoints" / "last.pt"
    kd = [*video, "method.name=kd", f"teacher.checkpoint={ckpt}", "train.epochs=2", "sched.name=none"]
    cfg = load_config(None, [*kd, f"train.out_dir={tmp_path / 'online'}"])
    cache = build_teacher_cache(cfg, tmp_path / "cache", epochs=2)
    online = fit_module.fit(cfg)
    cached = fit_module.fit(load_config(None, [*kd, f"train.out_dir={tmp_path / 'c'}", f"teacher.cache={cache}"]))
    for a, b in zip(online["history"], cached["history"], strict=True):
        assert math.isclose(a["train"]["loss"], b["train"]["loss"], rel_tol=2e-3)


def test_fn_reads_only_teacher_logits_so_the_cache_serves_it(
    tiny_stanford40, teacher_ckpt, cache_dir, tmp_path, teacher_forwards
):
    calls = teacher_forwards
    args = [*_overrides(tiny_stanford40, teacher_ckpt, tmp_path / "fn"), "method.name=fn", f"teacher.cache={cache_dir}"]
    result = fit_module.fit(load_config(None, args))
    assert calls["n"] == 0 and math.isfinite(result["history"][0]["train"]["fn"])


@pytest.mark.parametrize("method", ["rkd", "crd"])
def test_pooled_feature_cache_serves_relation_methods(
    tiny_stanford40, teacher_ckpt, cache_dir, tmp_path, teacher_forwards, method
):
    """`--features -1` stores the teacher's pooled last stage: RKD/CRD then match their online runs without it."""
    calls = teacher_forwards
    common = ["train.epochs=2", "sched.name=none", f"method.name={method}"]
    cfg = load_config(None, _overrides(tiny_stanford40, teacher_ckpt, tmp_path / "online", *common))
    with pytest.raises(ActdistillError, match="holds no pooled features.*--features -1"):
        fit_module.fit(load_config(None, [*_overrides(tiny_stanford40, teacher_ckpt, tmp_path / "x", *common),
                                          f"teacher.cache={cache_dir}"]))  # fmt: skip
    pooled_cache = build_teacher_cache(cfg, tmp_path / "pooled_cache", epochs=2, features="-1")
    assert TeacherCache(pooled_cache).arrays()["pooled"].shape[:2] == (2, 24)
    online = fit_module.fit(cfg)
    calls["n"] = 0
    args = [*_overrides(tiny_stanford40, teacher_ckpt, tmp_path / "cached", *common), f"teacher.cache={pooled_cache}"]
    cached = fit_module.fit(load_config(None, args))
    assert calls["n"] == 0
    for a, b in zip(online["history"], cached["history"], strict=True):
        assert math.isclose(a["train"]["loss"], b["train"]["loss"], rel_tol=5e-3), (a["train"], b["train"])
