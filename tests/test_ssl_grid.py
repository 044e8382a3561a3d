"""`actdistill ssl-grid`: paper 3's run plan, up-front checks, resumable runs and the convergence report (§3-§4).

Every grid run is an ordinary PCL run through `engine.fit.fit` (task `pcl`); the grid file is `base` recipe sections
plus architectures (configs/ssl/synth_grid.yaml).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from actdistill.apps import ssl_grid as grid
from actdistill.apps.ssl_grid import GridRun, load_grid, plan_runs, run_config, run_grid, select_runs
from actdistill.cli import main, parse
from actdistill.errors import ActdistillError

ROOT = Path(__file__).resolve().parents[1]


def test_plan_has_baselines_same_arch_students_and_the_cross_grid() -> None:
    plan = plan_runs(["c3d", "r3d", "r21d"])
    assert len(plan) == 12 and len({r.name for r in plan}) == 12
    baselines = [r for r in plan if r.group == "baseline"]
    assert [(r.name, r.student, r.teacher) for r in baselines] == [
        ("base_c3d", "c3d", None),
        ("base_r3d", "r3d", None),
        ("base_r21d", "r21d", None),
    ]
    same = {(r.teacher, r.student) for r in plan if r.group == "same"}
    assert same == {("c3d", "c3d"), ("r3d", "r3d"), ("r21d", "r21d")}
    cross = {(r.teacher, r.student) for r in plan if r.group == "cross"}
    assert len(cross) == 6 and all(t != s for t, s in cross)
    pairs = {(r.teacher, r.student) for r in plan if r.teacher}
    assert pairs == {(t, s) for t in ("c3d", "r3d", "r21d") for s in ("c3d", "r3d", "r21d")}  # the 3×3 grid
    order = [r.name for r in plan]
    for r in plan:
        assert r.name == (f"kd_{r.teacher}_to_{r.student}" if r.teacher else f"base_{r.student}")
        if r.teacher:  # the teacher's baseline trains first
            assert order.index(f"base_{r.teacher}") < order.index(r.name)


def test_select_runs_by_architecture_or_run_name() -> None:
    plan = plan_runs(["c3d", "r3d", "r21d"])
    assert [r.name for r in select_runs(plan, ["r3d"], "g")] == ["base_r3d", "kd_r3d_to_r3d"]
    assert [r.name for r in select_runs(plan, ["kd_c3d_to_r21d"], "g")] == ["base_c3d", "kd_c3d_to_r21d"]
    assert len(select_runs(plan, None, "g")) == 12
    with pytest.raises(ActdistillError, match="neither architectures"):
        select_runs(plan, ["resnet"], "g")


def test_recipes_load_and_follow_the_paper() -> None:
    ucf = load_grid(ROOT / "configs/ssl/ucf101_grid.yaml")
    base = ucf["base"]
    data, method, optim, train = base["data"], base["method"], base["optim"], base["train"]
    assert (optim["lr"], data["batch_size"], train["epochs"], data["clip_len"], data["tuple_interval"]) == (
        0.01, 16, 100, 16, 8,
    )  # fmt: skip
    assert (method["k"], method["temperature"], method["w_con"], train["seed"]) == (1024, 0.07, 0.5, 632)
    assert data["augment"]["crop"] == 112 and data["augment"]["resize"] == [128, 171] and ucf["threshold"] == 0.85
    assert {a["name"] for a in ucf["architectures"].values()} == {"c3d", "r3d_10", "r2plus1d_10"}
    assert ucf["kd"] == {"kd_temperature": 4.0, "kd_weight": 1.0} and ucf["student_epochs"] == 100
    synth = load_grid(ROOT / "configs/ssl/synth_grid.yaml")
    assert synth["synthetic"] and set(synth["architectures"]) == set(ucf["architectures"])
    # Each run's recipe: PCL for the baselines, PCL + KD from the teacher baseline's last checkpoint for the others.
    for spec in (ucf, synth):
        for run in plan_runs(list(spec["architectures"])):
            cfg = run_config(spec, run)
            assert cfg.data.name == "pcl_ucf101" and cfg.student.name == "pcl"
            assert cfg.student.kwargs["backbone"] == spec["architectures"][run.student]["name"]
            assert cfg.train.out_dir == str(Path(spec["out_dir"]) / run.name)
            if run.teacher is None:
                assert cfg.method["name"] == "pcl" and not cfg.teacher.checkpoint
            else:
                assert cfg.method["name"] == "pcl_kd" and cfg.method["kd_temperature"] == 4.0
                assert cfg.method["w_con"] == 0.5 and cfg.train.epochs == spec["student_epochs"]
                assert cfg.teacher.checkpoint == str(Path(spec["out_dir"]) / f"base_{run.teacher}/checkpoints/last.pt")


def _write(tmp_path: Path, **changes) -> Path:
    base = {
        "data": {
            "name": "pcl_ucf101", "root": str(tmp_path / "UCF"), "clip_len": 4, "tuple_interval": 2,
            "remote_min_gap": 2, "batch_size": 4, "num_workers": 0, "image_size": 32,
            "augment": {"enabled": True, "crop": 24},
        },
        "student": {"name": "pcl"},
        "method": {"k": 8},
        "sched": {"name": "none"},
        "train": {"epochs": 1, "seed": 0, "device": "cpu", "precision": "fp32", "progress": False,
                  "tensorboard": False, "keep_last": 1},
    }  # fmt: skip
    spec = {
        "name": "tiny",
        "out_dir": str(tmp_path / "out"),
        "synthetic": {"num_classes": 3, "videos_per_class": 4, "groups": 4, "frames": 20, "size": 32},
        "architectures": {
            "r3d": {"name": "r3d_10", "kwargs": {"channel_scale": 0.0625}},
            "r21d": {"name": "r2plus1d_10", "kwargs": {"channel_scale": 0.0625}},
        },
        "base": base,
        "evaluation": {"enabled": True, "clips_per_video": 2, "crop": 24, "resize": None},
        **changes,
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _no_training(*args, **kwargs):
    raise AssertionError("training must not start")


def _with_data(tmp_path: Path, **changes) -> dict:
    """A loaded grid whose data already exists (written once from its `synthetic:` section, then dropped)."""
    spec = load_grid(_write(tmp_path, **changes))
    grid.ensure_data(spec)
    spec.pop("synthetic")
    return spec


def test_settings_are_checked_before_any_run_trains(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(grid, "fit", _no_training)
    with pytest.raises(ActdistillError, match="unknown key 'optim.learning_rate'"):
        load_grid(_write(tmp_path, base={"data": {"name": "pcl_ucf101"}, "optim": {"learning_rate": 0.1}}))
    with pytest.raises(ActdistillError, match="unknown keys"):
        load_grid(_write(tmp_path, teachers=["r3d"]))
    with pytest.raises(ActdistillError, match=r"architectures\.c3d needs a model `name:`"):
        load_grid(_write(tmp_path, architectures={"c3d": {"kwargs": {}}}))
    with pytest.raises(ActdistillError, match="grid file"):
        load_grid(tmp_path / "missing.yaml")
    with pytest.raises(ActdistillError, match="unknown key 'train.epoch'"):
        load_grid(_write(tmp_path), overrides=["train.epoch=3"])
    with pytest.raises(ActdistillError, match="threshold"):
        load_grid(_write(tmp_path, threshold=85))
    # Every run's config is checked before the first one trains: a hyper-parameter no PCL method has, a value out of
    # range, and a KD setting that only the PCL + KD runs (after the baselines) use.
    spec = _with_data(tmp_path)
    bad = {"method": {"k": 8, "temprature": 0.1}}
    with pytest.raises(ActdistillError, match="no hyper-parameter 'temprature'"):
        run_grid({**spec, "base": {**spec["base"], **bad}})
    with pytest.raises(ActdistillError, match="data.batch_size must be at least 1"):
        run_grid({**spec, "base": {**spec["base"], "data": {**spec["base"]["data"], "batch_size": 0}}})
    with pytest.raises(ActdistillError, match="kd_temperature.*must be > 0"):
        run_grid({**spec, "kd": {"kd_temperature": 0.0, "kd_weight": 1.0}})
    assert not (tmp_path / "out" / "base_r3d").exists()


@pytest.mark.parametrize("case", ["c3d_cannot_take_4_frames", "unknown_model_kwarg", "method_typo_with_synthetic_data"])
def test_every_run_is_refused_before_any_run_trains(tmp_path, monkeypatch, case) -> None:
    monkeypatch.setattr(grid, "fit", _no_training)
    good = {"name": "r3d_10", "kwargs": {"channel_scale": 0.0625}}
    if case == "method_typo_with_synthetic_data":
        spec = load_grid(_write(tmp_path), overrides=["method.temprature=0.1"])
    else:  # the second architecture is broken: nothing may train, not even the first baseline
        bad = {"name": "c3d", "kwargs": {"channel_scale": 0.0625}}
        if case == "unknown_model_kwarg":
            bad = {"name": "r3d_10", "kwargs": {"widths": 3}}
        spec = _with_data(tmp_path, architectures={"r3d": good, "bad": bad})
    with pytest.raises(ActdistillError):
        run_grid(spec)


def test_data_problems_stop_the_grid_before_training(tmp_path) -> None:
    spec = load_grid(_write(tmp_path, synthetic=None))
    spec.pop("synthetic")
    with pytest.raises(ActdistillError, match="ucfTrainTestlist"):
        run_grid(spec)  # no data and no `synthetic:` to write it
    short = load_grid(_write(tmp_path, synthetic={"num_classes": 3, "videos_per_class": 4, "groups": 4,
                                                   "frames": 8, "size": 32}))  # fmt: skip
    with pytest.raises(ActdistillError, match="frames a PCL tuple needs"):
        run_grid(short)  # 8-frame videos cannot hold a 16-frame tuple window
    (tmp_path / "wide").mkdir()
    wide = _with_data(tmp_path / "wide")  # 20-frame videos of 32²
    wide["base"]["data"]["augment"] = {"enabled": True, "crop": 40}
    with pytest.raises(ActdistillError, match="smaller than the crop"):
        run_grid(wide)  # 32² videos, 40² crops and no resize: one line at the first batch
    assert not list(tmp_path.glob("**/results.json")) and not list(tmp_path.glob("**/last.pt"))


def test_tiny_grid_writes_the_report_and_reuses_finished_runs(tmp_path, monkeypatch) -> None:
    spec = load_grid(_write(tmp_path))
    report = run_grid(spec)
    out = tmp_path / "out"
    names = [r.name for r in plan_runs(["r3d", "r21d"])]
    for name in names:
        assert (out / name / "results.json").is_file() and (out / name / "checkpoints" / "last.pt").is_file()
        assert (out / name / "backbone.safetensors").is_file() and (out / name / "grid.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["runs"]) == names
    kd = summary["runs"]["kd_r3d_to_r21d"]
    teacher_final = summary["curves"]["base_r3d"][-1]
    assert kd["teacher"] == "r3d" and kd["teacher_final"] == pytest.approx(teacher_final)
    assert kd["epochs"] == 1 and set(kd["evaluation"]["retrieval"]) == {"top1", "top5", "top10", "top20", "top50"}
    assert summary["runs"]["base_r3d"]["teacher"] is None and "teacher_final" not in summary["runs"]["base_r3d"]
    results = json.loads((out / "kd_r3d_to_r21d" / "results.json").read_text())
    assert results["task"] == "pcl" and results["method"]["name"] == "pcl_kd"
    assert results["history"][0]["val"]["pretext_acc"] == pytest.approx(summary["curves"]["kd_r3d_to_r21d"][0])
    text = report.read_text()
    assert all(f"| {n} |" in text for n in names) and "ep→0.85" in text
    for png in ("curves_baselines.png", "curves_student_r3d.png", "curves_teacher_r21d.png"):
        assert (out / png).stat().st_size > 0

    # second call: every run is finished, so nothing may train; the report is rebuilt identically
    monkeypatch.setattr(grid, "fit", _no_training)
    (out / "summary.json").unlink()
    run_grid(load_grid(_write(tmp_path)))
    assert json.loads((out / "summary.json").read_text())["runs"] == summary["runs"]

    # an interrupted run (no grid.json) is trained (resumed) again; the others are reused
    (out / "kd_r21d_to_r3d" / "grid.json").unlink()
    with pytest.raises(AssertionError, match="must not start"):
        run_grid(load_grid(_write(tmp_path)))


def test_cli_runs_the_grid_subcommand(tmp_path, monkeypatch, capsys) -> None:
    args = parse(["ssl-grid", "g.yaml", "--out-dir", "o", "--only", "r3d", "kd_r3d_to_r21d"])
    assert args.handler == "actdistill.apps.ssl_grid:cmd_ssl_grid"
    assert args.only == ["r3d", "kd_r3d_to_r21d"] and args.out_dir == "o" and args.config == "g.yaml"
    seen = {}
    fake = lambda spec, only=None: seen.update(spec=spec, only=only) or _report(tmp_path)  # noqa: E731
    monkeypatch.setattr(grid, "run_grid", fake)
    path = _write(tmp_path)
    assert main(["ssl-grid", str(path), "--out-dir", str(tmp_path / "o2"), "train.epochs=3"]) == 0
    assert seen["spec"]["out_dir"] == str(tmp_path / "o2") and seen["only"] is None
    assert seen["spec"]["base"]["train"]["epochs"] == 3  # command-line overrides apply to every run's base
    assert "# report" in capsys.readouterr().out


def _report(tmp_path: Path) -> Path:
    path = tmp_path / "report.md"
    path.write_text("# report\n")
    return path


def test_grid_run_is_frozen() -> None:
    run = GridRun("base_x", "x", None, "baseline")
    with pytest.raises(AttributeError):
        run.name = "y"  # type: ignore[misc]
