"""`teacher.prefetch`: the teacher's logits one batch ahead in a background thread; bitwise the online run."""

import threading

import pytest
import torch
from conftest import TINY_RUN
from torch import nn

import actdistill.engine.build as build_module
from actdistill.cli import main
from actdistill.config import check_values, load_config
from actdistill.distill.base import Distiller
from actdistill.engine.fit import fit
from actdistill.engine.teacher_prefetch import TeacherPrefetch
from actdistill.errors import ActdistillError
from actdistill.utils.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def teacher_ckpt(tiny_stanford40, tmp_path_factory):
    """A `resnet_demo` teacher trained one epoch on the tiny data."""
    out = tmp_path_factory.mktemp("teacher")
    args = ["train", *TINY_RUN, "student.name=resnet_demo", f"data.root={tiny_stanford40}", f"train.out_dir={out}"]
    assert main(args) == 0
    return out / "checkpoints" / "last.pt"


def _kd(root, ckpt, out, *extra):
    return [*TINY_RUN, f"data.root={root}", "data.batch_size=8", "method.name=kd", f"teacher.checkpoint={ckpt}",
            "train.epochs=2", f"train.out_dir={out}", *extra]  # fmt: skip


@pytest.fixture
def teacher_threads(monkeypatch):
    """Names of the threads every teacher forward of the runs built in this test ran in."""
    threads: list[str] = []
    load = build_module.load_teacher

    def recording_load(cfg, classes, extra_kwargs):
        teacher, spec = load(cfg, classes, extra_kwargs)
        teacher.register_forward_hook(lambda *_: threads.append(threading.current_thread().name))
        return teacher, spec

    monkeypatch.setattr(build_module, "load_teacher", recording_load)
    return threads


def test_prefetched_kd_is_bitwise_the_online_run(tiny_stanford40, teacher_ckpt, tmp_path, teacher_threads):
    online = fit(load_config(None, _kd(tiny_stanford40, teacher_ckpt, tmp_path / "online")))
    online_threads = list(teacher_threads)
    teacher_threads.clear()
    prefetched = fit(load_config(None, _kd(tiny_stanford40, teacher_ckpt, tmp_path / "pre", "teacher.prefetch=true")))
    # Online: the training thread runs the teacher (plus the precision probe's and the size count's forwards);
    # prefetched: every training-step forward ran in the prefetch thread.
    steps = 2 * -(-24 // 8)
    assert online_threads.count("MainThread") >= steps
    assert sum(name.startswith("actdistill-teacher") for name in teacher_threads) == steps
    assert teacher_threads.count("MainThread") == online_threads.count("MainThread") - steps
    for a, b in zip(online["history"], prefetched["history"], strict=True):
        assert a["train"]["loss"] == b["train"]["loss"] and a["train"]["kd"] == b["train"]["kd"]
        assert a["test"] == b["test"]
    weights = [load_checkpoint(tmp_path / d / "checkpoints" / "last.pt")["student"] for d in ("online", "pre")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["method.name=vanilla"], "method 'vanilla' trains without a teacher"),
        (["method.name=fitnet"], "method 'fitnet' .* runs its teacher in other ways: drop teacher.prefetch"),
        (["teacher.cache=somewhere"], "teacher.prefetch and teacher.cache both replace the online teacher"),
    ],
)
def test_prefetch_refused_where_it_cannot_serve(tiny_stanford40, teacher_ckpt, tmp_path, extra, message):
    cfg_args = _kd(tiny_stanford40, teacher_ckpt, tmp_path / "run", "teacher.prefetch=true", *extra)
    with pytest.raises(ActdistillError, match=message):
        fit(load_config(None, cfg_args))
    assert not list((tmp_path / "run").rglob("*.pt"))  # refused before the first batch


def test_student_prefetch_is_not_a_setting():
    with pytest.raises(ActdistillError, match="student.prefetch is not a setting"):
        check_values(load_config(None, ["student.prefetch=true"]))


class _Linear(Distiller):
    """A toy method; `runs_teacher` makes its forward run the teacher itself (as a feature method would)."""

    def __init__(self, runs_teacher: bool = False) -> None:
        super().__init__(nn.Linear(3, 2), nn.Linear(3, 2))
        self.runs_teacher = runs_teacher

    def forward(self, batch):
        return self.teacher(batch["input"]) if self.runs_teacher else self.student(batch["input"])


def _batches(n: int, empty_at: int = -1):
    g = torch.Generator().manual_seed(0)
    return [{"skipped": 4} if i == empty_at else {"input": torch.randn(4, 3, generator=g), "n": i} for i in range(n)]


def test_prefetch_yields_every_batch_in_order_with_its_teacher_logits():
    method = _Linear()
    batches = _batches(5, empty_at=2)
    with TeacherPrefetch(method, torch.device("cpu"), None) as prefetch:
        out = list(prefetch(iter(batches)))
    assert [b.get("n") for b in out] == [0, 1, None, 3, 4]
    assert "teacher_logits" not in out[2] and out[2]["skipped"] == 4  # an empty batch passes through
    for b in (out[i] for i in (0, 1, 3, 4)):
        assert torch.equal(b["teacher_logits"], method.teacher(b["input"]))
        assert not b["teacher_logits"].requires_grad


def test_a_method_that_runs_the_teacher_itself_is_stopped_and_the_guard_removed():
    method = _Linear(runs_teacher=True)
    with pytest.raises(ActdistillError, match="ran the teacher itself .* drop teacher.prefetch"):
        with TeacherPrefetch(method, torch.device("cpu"), None) as prefetch:
            for batch in prefetch(iter(_batches(3))):
                method(batch)
    method(_batches(1)[0])  # the guard is gone once the context closes


def test_a_consumer_that_stops_early_leaves_no_thread_behind():
    method = _Linear()
    with TeacherPrefetch(method, torch.device("cpu"), None) as prefetch:
        for i, _ in enumerate(prefetch(iter(_batches(10)))):
            if i == 1:
                break
    assert not any(t.name.startswith("actdistill-teacher") for t in threading.enumerate())
