"""The engine end to end on tiny synthetic data: run folder, resume, frozen teacher, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from actdistill.config import load_config
from actdistill.data.synthetic_image import write_synthetic_stanford40
from actdistill.distill.logit import KD
from actdistill.engine.evaluate import evaluate_checkpoint
from actdistill.engine.fit import fit
from actdistill.errors import ActdistillError
from actdistill.models import create_model
from actdistill.utils.checkpoint import load_checkpoint, load_weights

TEACHER, STUDENT = "convnext_demo", "pvt_v2_demo"


@pytest.fixture(scope="module")
def data_root(tiny_stanford40):
    return tiny_stanford40


def _cfg(data_root, out, *overrides):
    base = [
        f"data.root={data_root}",
        "data.image_size=32",
        "data.batch_size=8",
        "data.num_workers=0",
        "train.epochs=2",
        "train.progress=false",
        "train.tensorboard=false",
        "train.precision=fp32",
        f"train.out_dir={out}",
        "optim.name=adamw",
        "optim.lr=0.002",
        "sched.name=step",
        "sched.step_size=1",
        "sched.gamma=0.5",
        f"student.name={TEACHER}",
    ]
    return load_config(None, base + list(overrides))


@pytest.fixture(scope="module")
def teacher_run(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "teacher"
    results = fit(_cfg(data_root, out, "data.val_fraction=0.25"))
    return out, results


def test_run_folder_contents(teacher_run):
    out, results = teacher_run
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "results.json",
        "student_last.safetensors",
        "student_best.safetensors",
    ):
        assert (out / name).is_file(), name
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "checkpoints" / "best.pt").is_file()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    saved = json.loads((out / "results.json").read_text())
    assert saved["last"] == results["last"] and len(saved["class_names"]) == 3
    assert 0.0 <= saved["last"]["top1"] <= 1.0 and len(saved["confusion_matrix"]) == 3
    assert saved["params_m"] > 0 and saved["gmacs"] > 0
    assert saved["history"][1]["lr"] == pytest.approx(0.001)  # StepLR(1, 0.5) from 0.002


def test_student_weights_load_with_create_model(teacher_run, data_root):
    out, _ = teacher_run
    model = create_model(TEACHER, 3, pretrained=str(out / "student_last.safetensors")).eval()
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    ref = create_model(TEACHER, 3).eval()
    ref.load_state_dict(ckpt["student"])
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), ref(x))


def test_eval_command_matches_training_report(teacher_run):
    out, results = teacher_run
    report = evaluate_checkpoint(out / "checkpoints" / "last.pt")
    assert report["top1"] == pytest.approx(results["last"]["top1"])
    assert report["mAP"] == pytest.approx(results["last"]["mAP"])


def test_existing_run_is_not_overwritten(teacher_run, data_root):
    out, _ = teacher_run
    with pytest.raises(ActdistillError, match="already holds a run.*--resume.*--overwrite"):
        fit(_cfg(data_root, out))


def test_resume_reproduces_uninterrupted_run(data_root, tmp_path, teacher_run):
    """Stop after epoch 1, resume to epoch 2: same epoch-2 losses and bitwise-identical weights (CPU, fp32)."""
    teacher_ckpt = teacher_run[0] / "checkpoints" / "last.pt"
    extra = [f"student.name={STUDENT}", "method.name=kd", "method.temperature=4", f"teacher.checkpoint={teacher_ckpt}"]
    full = fit(_cfg(data_root, tmp_path / "full", *extra))
    fit(_cfg(data_root, tmp_path / "part", *extra, "train.epochs=1"))
    resumed = fit(_cfg(data_root, tmp_path / "part", *extra), resume=True)
    assert resumed["history"][1]["train"]["loss"] == full["history"][1]["train"]["loss"]
    assert resumed["history"][1]["train"]["kd"] == full["history"][1]["train"]["kd"]
    a = load_weights(tmp_path / "full" / "student_last.safetensors")
    b = load_weights(tmp_path / "part" / "student_last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_teacher_bitwise_unchanged_by_a_kd_step(teacher_run):
    teacher = create_model(TEACHER, 3, pretrained=str(teacher_run[0] / "student_last.safetensors"))
    student = create_model(STUDENT, 3)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    method = KD(student, teacher, temperature=4.0, alpha=0.5).train()
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
    out = method({"input": torch.randn(4, 3, 32, 32), "label": torch.tensor([0, 1, 2, 0])})
    out.loss.backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())


def test_kd_refuses_teacher_with_other_class_count(data_root, tmp_path, teacher_run):
    other = write_synthetic_stanford40(
        tmp_path / "four", num_classes=4, train_per_class=4, test_per_class=2, image_size=32, seed=1
    )
    teacher_ckpt = teacher_run[0] / "checkpoints" / "last.pt"
    cfg = _cfg(
        other, tmp_path / "kd4", f"student.name={STUDENT}", "method.name=kd", f"teacher.checkpoint={teacher_ckpt}"
    )
    with pytest.raises(ActdistillError, match="predicts other classes than the dataset: only in the teacher"):
        fit(cfg)
    with pytest.raises(ActdistillError, match="predicts other classes than the dataset"):
        evaluate_checkpoint(teacher_ckpt, [f"data.root={other}"])


def test_unknown_method_hyperparameter(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path / "bad", "method.name=kd", "method.temperatur=4")
    with pytest.raises(ActdistillError, match="no hyper-parameter 'temperatur'.*Did you mean: temperature"):
        fit(cfg)


def test_unreadable_image_is_skipped_and_counted(tmp_path, caplog):
    root = write_synthetic_stanford40(
        tmp_path / "d", num_classes=3, train_per_class=8, test_per_class=4, image_size=32, seed=2
    )
    broken = sorted((root / "JPEGImages").glob("*_001.jpg"))[0]
    broken.write_bytes(b"\xff\xd8 this is not a jpeg")
    cfg = _cfg(root, tmp_path / "run", "train.epochs=1", "data.batch_size=4")
    with caplog.at_level("WARNING", logger="actdistill"):
        results = fit(cfg)
    skipped = results["history"][0]["train"]["skipped"] + (1 if broken.name.split("_")[0] else 0) * 0
    assert skipped + sum(1 for r in caplog.records if broken.name in r.getMessage()) >= 1
    assert any(broken.name in r.getMessage() for r in caplog.records)
