"""`actdistill demo` at a tiny scale: the runs, the report's labels (seed, synthetic data, published sections), the
HTML report, and the published 5-seed figures that the report quotes."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actdistill.analysis.demo_report import demo_reference, demo_table
from actdistill.analysis.html_report import write_report
from actdistill.demo import FULL, QUICK, DemoScale, demo_configs, demo_design, run_demo
from actdistill.errors import ActdistillError

TINY = DemoScale(
    classes=3,
    teacher_per_class=8,
    student_per_class=4,
    test_per_class=4,
    image_size=32,
    teacher_epochs=1,
    student_epochs=1,
    batch_size=8,
    eval_every=1,
)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """The demo at a tiny scale, its runs trained two at a time in worker processes as `actdistill demo` does."""
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out, seed=3, scale=TINY, workers=2)


def test_demo_runs_and_writes_both_reports(tiny_demo):
    out, result = tiny_demo
    assert set(result["results"]) == {"teacher", "student", "student_kd"}
    for name in result["results"]:
        assert (out / name / "results.json").is_file()
    kd_cfg = (out / "student_kd" / "config.yaml").read_text()
    assert str(out / "teacher" / "checkpoints" / "last.pt") in kd_cfg
    meta = json.loads((out / "demo.json").read_text())
    assert meta == {"seed": 3, "design": demo_design(TINY)}
    assert json.loads((out / "data" / "SYNTHETIC.json").read_text())["generator"] == "actdistill.data.synthetic_image"
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count('<img src="data:image/png;base64,') >= 2
    assert 'src="http' not in page and "<script" not in page


def test_report_says_seed_synthetic_and_keeps_paper_results_apart(tiny_demo):
    out, result = tiny_demo
    md = Path(result["report"]).read_text()
    printed = md.split("\n\n")[2]  # what `actdistill demo` prints
    assert "seed 3" in printed and "vary slightly across machines" in printed
    assert printed.splitlines()[1].startswith("| Network |") and "ViT student + KD" in printed
    assert "synthetic data" in md and "not the real Stanford 40" in md
    # no multi-seed figures are published for this tiny design, and the report says so
    assert "No multi-seed reference is published for this demo scale" in md
    published = md.index("## Published results: paper 1, Table I (real Stanford 40; not produced by this demo)")
    assert md.index(printed) < published and "89.08" in md[published:] and "89.08" not in md[:published]
    page = (out / "report.html").read_text()
    assert "Published results: paper 1, Table I (real Stanford 40; not produced by this demo)" in page
    assert 'class="published"' in page and "seed 3" in page


def test_actdistill_report_labels_synthetic_runs(tiny_demo, tmp_path):
    out, _ = tiny_demo
    paths = write_report([out / "student", out / "student_kd"], tmp_path / "report")
    md = paths["markdown"].read_text()
    table = md.split("\n\n")[2]
    assert "synthetic (stanford40 layout)" in table and "| stanford40 |" not in table
    assert "not on the real dataset: their numbers are not comparable" in md
    assert "synthetic (stanford40 layout)" in paths["html"].read_text()


def test_published_demo_figures_match_the_default_design():
    reference = demo_reference(demo_design(QUICK))
    assert reference is not None, "re-measure with benchmarks/demo_seeds.py --publish after changing the demo design"
    assert demo_reference(demo_design(FULL)) is None and demo_reference(demo_design(TINY)) is None
    rows = {r["run"]: r for r in reference["rows"]}
    assert len(reference["seeds"]) == 5 and rows["student"]["seeds"] == reference["seeds"]
    for run in ("student", "student_kd"):  # the summary is the per-seed figures' mean and sample std
        for key in ("top1", "mAP"):
            values = rows[run][f"{key}_per_seed"]
            assert rows[run][key] == pytest.approx(statistics.mean(values), abs=0.006)
            assert rows[run][f"{key}_std"] == pytest.approx(statistics.stdev(values), abs=0.006)
    kd, plain = rows["student_kd"], rows["student"]
    gains = [k - p for k, p in zip(kd["top1_per_seed"], plain["top1_per_seed"])]
    assert kd["gain_top1_per_seed"] == pytest.approx(gains, abs=0.011)


def test_readme_quotes_the_published_demo_figures():
    """README's demo table is the published 5-seed mean ± std, not one machine's single run."""
    reference = demo_reference(demo_design(QUICK))
    rows = {r["run"]: r for r in reference["rows"]}
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for run in ("student", "student_kd"):
        r = rows[run]
        assert f"{r['top1']:.2f} ± {r['top1_std']:.2f}" in readme and f"{r['mAP']:.2f} ± {r['mAP_std']:.2f}" in readme
    kd = rows["student_kd"]
    assert f"{kd['gain_top1']:+.2f} ± {kd['gain_top1_std']:.2f}" in readme


def test_demo_table_puts_reference_beside_this_run():
    def res(model, top1, mAP):
        return {"student": model, "params_m": 1.0, "gmacs": 0.01, "last": {"top1": top1, "mAP": mAP}}

    results = {"teacher": res("t", 0.9, 0.95), "student": res("s", 0.5, 0.55), "student_kd": res("s", 0.6, 0.62)}
    reference = {
        "seeds": [0, 1, 2, 3, 4],
        "rows": [
            {"run": "student", "top1": 51.0, "top1_std": 2.0, "mAP": 55.0, "mAP_std": 1.5},
            {
                "run": "student_kd",
                **{"top1": 60.0, "top1_std": 1.0, "mAP": 63.0, "mAP_std": 1.0},
                **{"gain_top1": 9.0, "gain_top1_std": 1.5, "gain_mAP": 8.0, "gain_mAP_std": 2.0},
            },
        ],
    }
    header, rows = demo_table(results, reference)
    assert header[-2:] == ["Accuracy, 5 seeds (%)", "mAP, 5 seeds (%)"]
    assert rows[2][3] == "60.00 (+10.00↑)" and rows[2][5] == "60.00 ± 1.00 (+9.00 ± 1.50)"
    assert rows[1][5] == "51.00 ± 2.00" and rows[0][5] == "–"
    header, rows = demo_table(results, None)
    assert len(header) == len(rows[0]) == 5


def test_demo_configs_follow_the_scale(tmp_path):
    cfgs = demo_configs(tmp_path, QUICK, seed=7)
    assert cfgs["student"].data.limit_train == cfgs["student_kd"].data.limit_train == 10 * QUICK.student_per_class
    assert cfgs["teacher"].data.limit_train == 0 and cfgs["student_kd"].method["name"] == "kd"
    assert {c.train.seed for c in cfgs.values()} == {7}
    assert cfgs["student"].train.epochs == QUICK.student_epochs and cfgs["student"].optim.lr == QUICK.student_lr
    # Only the KD student has a teacher to prefetch; the teacher checkpoint is the demo's own.
    assert [n for n, c in cfgs.items() if c.teacher.prefetch] == ["student_kd"]
    assert cfgs["student_kd"].teacher.checkpoint == str(tmp_path / "teacher" / "checkpoints" / "last.pt")


def test_demo_never_deletes_a_data_folder_it_did_not_write(tmp_path):
    data = tmp_path / "data"
    (data / "ImageSplits").mkdir(parents=True)
    (data / "ImageSplits" / "actions.txt").write_text("someone else's data\n")
    with pytest.raises(ActdistillError, match=r"already holds a dataset that is not this demo's.*choose another --out"):
        run_demo(tmp_path, seed=0, scale=TINY, workers=1)
    assert (data / "ImageSplits" / "actions.txt").read_text() == "someone else's data\n"
    assert not (tmp_path / "teacher").exists()


def test_demo_reuses_its_own_data_and_refuses_another_scales(tiny_demo):
    out, _ = tiny_demo
    other = DemoScale(**{**TINY.__dict__, "image_size": 48})
    with pytest.raises(ActdistillError, match="already holds a dataset"):
        run_demo(out, seed=3, scale=other, workers=1)
    assert json.loads((out / "data" / "demo_data.json").read_text())["image_size"] == 32


def _exited(pid: int) -> bool:
    """True once `pid` has ended (gone, or a zombie its new parent has not reaped yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_worker_ends_when_the_demo_process_is_killed(tmp_path):
    """Workers of a killed demo (SIGKILL, or a SIGTERM it did not handle) stop instead of training on."""
    ready = tmp_path / "ready"
    child = (
        "import os, sys, time\n"
        "from actdistill.demo import exit_when_orphaned\n"
        "exit_when_orphaned(os.getppid(), poll_s=0.05)\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "time.sleep(120)\n"
    )
    parent_code = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {child!r}])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists() and not _exited(pid)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while not _exited(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _exited(pid), "the worker outlived its killed parent"
