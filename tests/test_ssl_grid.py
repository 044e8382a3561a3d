"""`actdistill ssl-grid`: paper 3's run plan, up-front checks, resumable runs and the convergence report (§3-§4)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml
from actdistill.ssl.grid import GridRun, add_cli, load_grid, plan_runs, run_grid, select_runs

from actdistill.errors import ActdistillError
from actdistill.ssl import grid

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
    pcl = ucf["pcl"]
    assert (pcl["lr"], pcl["batch_size"], pcl["epochs"], pcl["clip_len"], pcl["interval"]) == (0.01, 16, 100, 16, 8)
    assert (pcl["k"], pcl["temperature"], pcl["w_con"], pcl["seed"]) == (1024, 0.07, 0.5, 632)
    assert ucf["augment"]["crop"] == 112 and ucf["augment"]["resize"] == [128, 171] and ucf["threshold"] == 0.85
    assert {a["name"] for a in ucf["architectures"].values()} == {"c3d", "r3d_10", "r2plus1d_10"}
    synth = load_grid(ROOT / "configs/ssl/synth_grid.yaml")
    assert synth["data"]["synthetic"] and set(synth["architectures"]) == set(ucf["architectures"])


def _write(tmp_path: Path, **changes) -> Path:
    spec = {
        "name": "tiny",
        "out_dir": str(tmp_path / "out"),
        "data": {
            "root": str(tmp_path / "UCF"),
            "synthetic": {"num_classes": 3, "videos_per_class": 4, "groups": 4, "frames": 20, "size": 32},
        },
        "architectures": {
            "r3d": {"name": "r3d_10", "kwargs": {"channel_scale": 0.0625}},
            "r21d": {"name": "r2plus1d_10", "kwargs": {"channel_scale": 0.0625}},
        },
        "pcl": {"epochs": 1, "clip_len": 4, "interval": 2, "batch_size": 4, "k": 8, "min_gap": 2, "seed": 0},
        "augment": {"enabled": True, "crop": 24},
        "evaluation": {"enabled": True, "clips_per_video": 2, "crop": 24, "resize": None},
        **changes,
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _no_training(*args, **kwargs):
    raise AssertionError("training must not start")


def test_settings_are_checked_before_any_run_trains(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(grid, "train_pcl", _no_training)
    with pytest.raises(ActdistillError, match="unknown keys"):
        load_grid(_write(tmp_path, pcl={"epochs": 1, "learning_rate": 0.1}))
    with pytest.raises(ActdistillError, match="unknown keys"):
        load_grid(_write(tmp_path, teachers=["r3d"]))
    with pytest.raises(ActdistillError, match="grid file"):
        load_grid(tmp_path / "missing.yaml")
    # the second architecture is broken: nothing trains, not even the first baseline
    bad = {"r3d": {"name": "r3d_10"}, "c3d": {"name": "c3d", "kwargs": {"channel_scale": 0.0625}}}
    spec = load_grid(_write(tmp_path, architectures=bad))
    with pytest.raises(ActdistillError, match=r"architectures\.c3d"):
        run_grid(spec)  # C3D cannot take 4-frame clips
    spec = load_grid(_write(tmp_path, architectures={"r3d": {"name": "r3d_10", "kwargs": {"widths": 3}}}))
    with pytest.raises(ActdistillError, match=r"architectures\.r3d"):
        run_grid(spec)
    spec = load_grid(_write(tmp_path, data={"root": str(tmp_path / "nowhere")}))
    with pytest.raises(ActdistillError, match="ucfTrainTestlist"):
        run_grid(spec)
    with pytest.raises(ActdistillError, match="tuple window"):
        load_grid(_write(tmp_path, data={"root": "x", "synthetic": {"frames": 8}}))
    with pytest.raises(ActdistillError, match="smaller than augment.crop"):
        load_grid(_write(tmp_path, augment={"crop": 40}))
    assert not (tmp_path / "out" / "base_r3d").exists()


def test_tiny_grid_writes_the_report_and_reuses_finished_runs(tmp_path, monkeypatch) -> None:
    spec = load_grid(_write(tmp_path))
    report = run_grid(spec)
    out = tmp_path / "out"
    names = [r.name for r in plan_runs(["r3d", "r21d"])]
    for name in names:
        assert (out / name / "results.json").is_file() and (out / name / "pcl.pt").is_file()
        assert (out / name / "backbone.pth").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["runs"]) == names
    kd = summary["runs"]["kd_r3d_to_r21d"]
    teacher_final = summary["curves"]["base_r3d"][-1]
    assert kd["teacher"] == "r3d" and kd["teacher_final"] == pytest.approx(teacher_final)
    assert kd["epochs"] == 1 and set(kd["evaluation"]["retrieval"]) == {"top1", "top5", "top10", "top20", "top50"}
    assert summary["runs"]["base_r3d"]["teacher"] is None and "teacher_final" not in summary["runs"]["base_r3d"]
    text = report.read_text()
    assert all(f"| {n} |" in text for n in names) and "ep→0.85" in text
    for png in ("curves_baselines.png", "curves_student_r3d.png", "curves_teacher_r21d.png"):
        assert (out / png).stat().st_size > 0

    # second call: every run is finished, so nothing may train; the report is rebuilt identically
    monkeypatch.setattr(grid, "train_pcl", _no_training)
    (out / "summary.json").unlink()
    run_grid(load_grid(_write(tmp_path)))
    assert json.loads((out / "summary.json").read_text())["runs"] == summary["runs"]

    # an interrupted run (no results.json) is retrained; the others are reused
    (out / "kd_r21d_to_r3d" / "results.json").unlink()
    with pytest.raises(AssertionError, match="must not start"):
        run_grid(load_grid(_write(tmp_path)))


def test_add_cli_registers_the_subcommand(tmp_path, monkeypatch) -> None:
    parser = argparse.ArgumentParser(prog="actdistill")
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ssl-grid", "g.yaml", "--out-dir", "o", "--only", "r3d", "kd_r3d_to_r21d"])
    assert args.func is grid.cmd_ssl_grid and args.only == ["r3d", "kd_r3d_to_r21d"] and args.out_dir == "o"
    seen = {}
    monkeypatch.setattr(
        grid, "run_grid", lambda spec, only=None: seen.update(spec=spec, only=only) or _report(tmp_path)
    )
    path = _write(tmp_path)
    args = parser.parse_args(["ssl-grid", str(path), "--out-dir", str(tmp_path / "o2")])
    assert args.func(args) == 0
    assert seen["spec"]["out_dir"] == str(tmp_path / "o2") and seen["only"] is None


def _report(tmp_path: Path) -> Path:
    path = tmp_path / "report.md"
    path.write_text("# report\n")
    return path


def test_grid_run_is_frozen() -> None:
    run = GridRun("base_x", "x", None, "baseline")
    with pytest.raises(AttributeError):
        run.name = "y"  # type: ignore[misc]
