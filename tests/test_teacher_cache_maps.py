"""Feature-map methods replay the teacher's maps from the cache: same losses as online within the storage precision,
and the teacher never runs (issue 19: cached KD for FitNet, AT, MGD, SimKD and paper 2's attention distillation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_RUN

from actdistill.apps.cache_build import build_teacher_cache
from actdistill.config import load_config
from actdistill.distill.cache import TeacherCache
from actdistill.engine.fit import fit
from actdistill.errors import ActdistillError

TEACHER = "convnext_demo"
METHODS = {
    "fitnet": ["method.name=fitnet"],
    "at": ["method.name=at"],
    "mgd": ["method.name=mgd"],
    "simkd": ["method.name=simkd"],
}


@pytest.fixture(scope="module")
def teacher_ckpt(tiny_stanford40, tmp_path_factory):
    out = tmp_path_factory.mktemp("maps") / "teacher"
    fit(
        load_config(
            None, [f"data.root={tiny_stanford40}", *TINY_RUN, f"student.name={TEACHER}", f"train.out_dir={out}"]
        )
    )
    return out / "checkpoints" / "last.pt"


def _overrides(root, teacher_ckpt, out, method):
    return [f"data.root={root}", *TINY_RUN, "data.batch_size=8", f"teacher.checkpoint={teacher_ckpt}",
            f"train.out_dir={out}", "train.epochs=2", *METHODS[method]]  # fmt: skip


@pytest.mark.parametrize("method", sorted(METHODS))
def test_cached_feature_maps_give_the_online_losses(method, tiny_stanford40, teacher_ckpt, tmp_path):
    base = _overrides(tiny_stanford40, teacher_ckpt, tmp_path / "online", method)
    online = fit(load_config(None, base))
    cache = build_teacher_cache(load_config(None, base), tmp_path / "cache", epochs=2)
    assert TeacherCache(cache).map_taps  # the maps the method reads were stored
    # Later overrides win; the teacher's forward raises if it is called (the engine's guard with teacher.cache).
    cached = fit(load_config(None, [*base, f"train.out_dir={tmp_path / 'cached'}", f"teacher.cache={cache}"]))
    for a, b in zip(online["history"], cached["history"]):
        for key, value in a["train"].items():
            if key.endswith("_time_s"):
                continue
            assert b["train"][key] == pytest.approx(value, rel=2e-2, abs=2e-3), key  # fp16 maps


def test_int8_maps_are_close_and_smaller(tiny_stanford40, teacher_ckpt, tmp_path):
    base = _overrides(tiny_stanford40, teacher_ckpt, tmp_path / "x", "fitnet")
    half = TeacherCache(build_teacher_cache(load_config(None, base), tmp_path / "c16", epochs=1))
    int8 = TeacherCache(build_teacher_cache(load_config(None, base), tmp_path / "c8", epochs=1, maps_dtype="int8"))
    a, b = half.maps(1, 3), int8.maps(1, 3)
    for tap in a:
        scale = a[tap].flatten(1).abs().amax(dim=1).view(-1, *([1] * (a[tap].dim() - 1)))
        assert torch.all((a[tap] - b[tap]).abs() <= scale / 127 * 0.5 + 1e-3 * scale)  # half a quantisation step
    assert np.load(int8.path / "map_0.npy", mmap_mode="r").dtype == np.int8
    assert (int8.path / "map_0.npy").stat().st_size < (half.path / "map_0.npy").stat().st_size


def test_a_cache_without_the_methods_maps_is_refused(tiny_stanford40, teacher_ckpt, tmp_path):
    kd = [f"data.root={tiny_stanford40}", *TINY_RUN, f"teacher.checkpoint={teacher_ckpt}", "method.name=kd",
          f"train.out_dir={tmp_path / 'kd'}"]  # fmt: skip
    cache = build_teacher_cache(load_config(None, kd), tmp_path / "logits_only", epochs=1)
    fitnet = _overrides(tiny_stanford40, teacher_ckpt, tmp_path / "f", "fitnet")
    with pytest.raises(ActdistillError, match="reads the teacher maps .* holds no maps; rebuild it"):
        fit(load_config(None, [*fitnet, f"teacher.cache={cache}"]))
