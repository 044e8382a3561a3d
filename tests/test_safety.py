"""Issue 16: the bad-input table. One test (or parametrised row) per case; each one failed on the old code.

Case → what the user gets (test):

* `cache build --out` on a non-empty folder that is not a cache → refused, nothing written or deleted
  (test_cache_build_refuses_a_foreign_folder); on an existing cache → refused unless `--overwrite`
  (test_cache_build_replaces_a_cache_only_with_overwrite)
* truncated `logits.npy`, invalid `meta.json`, modified logits → one line (test_damaged_cache_is_refused,
  test_modified_cache_is_refused_by_training)
* compare label with `..` or `/` → refused, nothing written or deleted (test_compare_label_outside_out_dir_is_refused)
* `compare --methods` with an unknown label → refused; an override after `--methods` is an override
  (test_compare_methods_unknown_label_and_trailing_overrides)
* a second run on the same `train.out_dir` → refused naming the first run's PID, nothing deleted
  (test_second_run_on_a_locked_folder_is_refused); the lock dies with a killed run even while its forked loader
  workers live (test_lock_is_not_inherited_by_forked_workers)
* data listing the classes in another order → eval and KD remap by name (test_class_order_is_remapped_by_name);
  other classes → refused naming them (test_other_class_set_is_refused_naming_the_classes)
* bad settings (best metric, eval_every, epochs, batch size, lr, KD temperature) → one line, no files
  (test_bad_setting_is_refused_before_any_work)
* every JPEG missing → one line naming the split file, no results.json (test_every_image_missing_names_the_split_file)
* a class without training samples → refused unless `data.allow_empty_classes=true`
  (test_empty_class_is_refused_unless_allowed)
* read-only `train.out_dir` → one line naming the path (test_read_only_out_dir, skipped as root;
  test_read_only_out_dir_simulated); disk full → one line naming the file, no temp files (test_disk_full_is_one_line)
* orphan `.last.pt.*.tmp` → removed on resume; overrides after `--resume` → accepted
  (test_resume_removes_orphan_temp_files_and_takes_overrides)
* a typo on the command line after a recipe → "command line: unknown key"
  (test_command_line_typo_is_not_blamed_on_the_recipe)
* a run that failed before its first epoch → the corrected rerun needs no `--overwrite`
  (test_failed_start_does_not_block_the_rerun)
* pickled payload in a detection / PCL checkpoint → refused by eval, detect eval, teacher.checkpoint, teacher_extras;
  the payload never runs (test_payload_checkpoints_of_other_tasks_are_refused)
* a rank that never joins a collective → one line after `train.dist_timeout_s`
  (test_rank_that_never_joins_ends_with_a_clear_error)
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_RUN

from actdistill.cli import main
from actdistill.config import parse_overrides
from actdistill.utils.files import MARKER, FolderLock

REPO = Path(__file__).resolve().parents[1]
COMMON = [*TINY_RUN, "data.batch_size=4"]
ERROR = "actdistill: error: "


def _error(capsys, argv: list[str]) -> str:
    """Run the CLI: exit status 2 and exactly one error line on stderr (log lines aside); returns the line."""
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(ERROR)]
    assert len(lines) == 1, lines
    return lines[0]


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes (to show that nothing was written or deleted)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return {**env, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def teacher_run(tiny_stanford40, tmp_path_factory) -> Path:
    """A finished one-epoch run of the tiny student on the tiny data (used as a teacher and as a checkpoint)."""
    out = tmp_path_factory.mktemp("safety") / "teacher"
    assert main(["train", f"data.root={tiny_stanford40}", *COMMON, f"train.out_dir={out}"]) == 0
    return out


@pytest.fixture
def data_copy(tiny_stanford40, tmp_path) -> Path:
    """A private copy of the tiny data that a test may change."""
    return Path(shutil.copytree(tiny_stanford40, tmp_path / "data"))


def _kd(root: Path, teacher_run: Path, *extra: str) -> list[str]:
    return [f"data.root={root}", *COMMON, "method.name=kd", f"teacher.checkpoint={teacher_run / 'checkpoints/last.pt'}",
            *extra]  # fmt: skip


# --- teacher caches -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache(tiny_stanford40, teacher_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safety_cache") / "cache"
    argv = ["cache", "build", *_kd(tiny_stanford40, teacher_run), "--out", str(out), "--epochs", "1"]
    assert main(argv) == 0
    return out


def test_cache_build_refuses_a_foreign_folder(tiny_stanford40, teacher_run, tmp_path, capsys):
    out = tmp_path / "my_results"
    out.mkdir()
    (out / "notes.txt").write_text("months of work")
    (out / "sub").mkdir()
    (out / "sub" / "table.csv").write_text("a,b\n")
    before = _files(tmp_path)
    line = _error(capsys, ["cache", "build", *_kd(tiny_stanford40, teacher_run), "--out", str(out), "--overwrite"])
    assert line == (
        f"{ERROR}cache build: --out {out} is not empty and is not a teacher cache; choose a new folder (nothing was "
        "written or deleted)"
    )
    assert _files(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["my_results"]


def test_cache_build_replaces_a_cache_only_with_overwrite(tiny_stanford40, teacher_run, cache, tmp_path, capsys):
    out = Path(shutil.copytree(cache, tmp_path / "cache"))
    before = _files(out)
    argv = ["cache", "build", *_kd(tiny_stanford40, teacher_run), "--out", str(out), "--epochs", "1"]
    line = _error(capsys, argv)
    assert line == f"{ERROR}cache build: {out} already holds a teacher cache; pass --overwrite to replace it"
    assert _files(out) == before
    (out / "meta.json").write_text(json.dumps({**json.loads((out / "meta.json").read_text()), "recipe": "old"}))
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads((out / "meta.json").read_text())["recipe"] != "old"  # rebuilt
    assert not (tmp_path / "cache.partial").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # same size, other logits
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda c: _truncate(c / "logits.npy"), "logits.npy is truncated since the cache was built (size or "
         "checksum differs); rebuild it with `actdistill cache build CONFIG --out PATH --overwrite`"),
        (lambda c: (c / "meta.json").write_text('{"format_version": 1, "files": '),
         "meta.json is not valid (JSONDecodeError); rebuild the cache with `actdistill cache build CONFIG --out "
         "PATH --overwrite`"),
        (lambda c: _flip_last_byte(c / "logits.npy"), "logits.npy was modified since the cache was built (size or "
         "checksum differs); rebuild it with `actdistill cache build CONFIG --out PATH --overwrite`"),
    ],
    ids=["truncated_logits", "invalid_meta", "modified_logits"],
)  # fmt: skip
def test_damaged_cache_is_refused(cache, tmp_path, capsys, damage, expected):
    damaged = Path(shutil.copytree(cache, tmp_path / "cache"))
    damage(damaged)
    assert _error(capsys, ["cache", "info", str(damaged)]) == f"{ERROR}teacher.cache {damaged}: {expected}"


def test_modified_cache_is_refused_by_training(tiny_stanford40, teacher_run, cache, tmp_path, capsys):
    damaged = Path(shutil.copytree(cache, tmp_path / "cache"))
    _flip_last_byte(damaged / "logits.npy")
    out = tmp_path / "run"
    line = _error(capsys, ["train", *_kd(tiny_stanford40, teacher_run, f"teacher.cache={damaged}",
                                         f"train.out_dir={out}")])  # fmt: skip
    assert line.startswith(f"{ERROR}teacher.cache {damaged}: logits.npy was modified since the cache was built")
    assert not (out / "checkpoints" / "last.pt").exists()


# --- compare --------------------------------------------------------------------------------------------------------


def _comparison(tmp_path: Path, root: Path, methods: list[dict], prepare: dict | None = None) -> Path:
    base = parse_overrides([*COMMON, f"data.root={root}"])
    spec = {
        "name": "tiny",
        "out_dir": str(tmp_path / "cmp"),
        "seeds": [0],
        "datasets": {"synth40": {"root": str(root)}},
        "prepare": prepare or {},
        "base": base,
        "methods": methods,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("label", ["../evil", "a/b", ".."])
def test_compare_label_outside_out_dir_is_refused(tiny_stanford40, tmp_path, capsys, label):
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "keep.txt").write_text("not yours")
    path = _comparison(tmp_path, tiny_stanford40, [{"label": label, "method": {"name": "vanilla"}}])
    before = _files(tmp_path)
    line = _error(capsys, ["compare", str(path)])
    assert line == (
        f"{ERROR}{path}: label '{label}' cannot be a folder name: use letters, digits and _ . + - only (no '/', "
        "no '..')"
    )
    assert _files(tmp_path) == before and not (tmp_path / "cmp").exists()
    prepared = _comparison(tmp_path, tiny_stanford40, [{"method": {"name": "vanilla"}}], prepare={label: {}})
    assert "cannot be a folder name" in _error(capsys, ["compare", str(prepared)])
    assert not (tmp_path / "cmp").exists()


def test_compare_methods_unknown_label_and_trailing_overrides(tiny_stanford40, tmp_path, capsys):
    methods = [{"method": {"name": "vanilla"}}, {"label": "kd_t4", "method": {"name": "kd", "temperature": 4},
                                                   "teacher": {"name": "convnext_demo"}}]  # fmt: skip
    path = _comparison(tmp_path, tiny_stanford40, methods)
    line = _error(capsys, ["compare", str(path), "--methods", "vanilla", "kd_t5"])
    assert line == f"{ERROR}compare: --methods ['kd_t5'] are not method rows of {path}; rows: ['vanilla', 'kd_t4']"
    assert not (tmp_path / "cmp").exists()
    # `optim.lr=0.005` typed after --methods is an override of every run, not a method row.
    assert main(["compare", str(path), "--methods", "kd_t4", "optim.lr=0.005", "data.limit_train=12"]) == 0
    runs = tmp_path / "cmp" / "synth40"
    assert sorted(p.name for p in runs.iterdir()) == ["kd_t4_seed0"]
    saved = yaml.safe_load((runs / "kd_t4_seed0" / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 0.005 and saved["data"]["limit_train"] == 12 and saved["method"]["temperature"] == 4


# --- run folders and locks ------------------------------------------------------------------------------------------

# Hold the lock of a run folder the way a running `actdistill train` does (marker, `.lock` with our PID), then wait.
HOLD_LOCK = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from actdistill.utils.files import MARKER, FolderLock
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).touch()
    lock = FolderLock(folder).acquire()
    if sys.argv[2] == "fork":  # a DataLoader worker: a forked child that outlives a killed parent for a while
        child = os.fork()
        if child == 0:
            time.sleep(60)
            os._exit(0)
        print("worker", child, flush=True)
    print("locked", flush=True)
    time.sleep(120)
    """
)


def _hold_lock(folder: Path, mode: str = "plain") -> tuple[subprocess.Popen, int | None]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder), mode], env=_env(), stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    worker = None
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith("worker"):
            worker = int(line.split()[1])
        if line.startswith("locked"):
            return proc, worker
    raise AssertionError(f"the lock holder ended early (status {proc.wait()})")


def test_second_run_on_a_locked_folder_is_refused(tiny_stanford40, tmp_path, capsys):
    out = tmp_path / "run"
    holder, _ = _hold_lock(out)
    try:
        line = _error(capsys, ["train", f"data.root={tiny_stanford40}", *COMMON, f"train.out_dir={out}"])
        assert line == (
            f"{ERROR}run folder {out} is in use by another run (process {holder.pid}); wait for it to finish, stop it, "
            "or choose another train.out_dir"
        )
        # --overwrite while the first run writes there deletes nothing of it.
        (out / "checkpoints").mkdir()
        (out / "checkpoints" / "last.pt").write_bytes(b"the running run's checkpoint")
        (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
        before = _files(out)
        line = _error(capsys, ["train", f"data.root={tiny_stanford40}", *COMMON, f"train.out_dir={out}", "--overwrite"])
        assert f"is in use by another run (process {holder.pid})" in line
        assert _files(out) == before
    finally:
        holder.kill()
        holder.wait()
    FolderLock(out).acquire().release()  # the holder is gone: the lock went with it


def test_lock_is_not_inherited_by_forked_workers(tmp_path):
    """A run killed with SIGKILL (OOM killer, preemption) while its DataLoader workers (forked children) still live
    must not keep its folder locked: `--resume` right after the kill was refused, naming the dead process."""
    out = tmp_path / "run"
    holder, worker = _hold_lock(out, "fork")
    try:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        try:
            FolderLock(out).acquire().release()
        except Exception as exc:  # noqa: BLE001 - the message is the finding
            pytest.fail(f"the killed run's folder is still locked while its forked worker lives: {exc}")
    finally:
        if worker is not None:
            try:
                os.kill(worker, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_failed_start_does_not_block_the_rerun(tiny_stanford40, tmp_path, capsys):
    out = tmp_path / "run"
    missing = tmp_path / "no_such_teacher.pt"
    argv = ["train", f"data.root={tiny_stanford40}", *COMMON, f"train.out_dir={out}"]
    line = _error(capsys, [*argv, "method.name=kd", f"teacher.checkpoint={missing}"])
    assert line == f"{ERROR}checkpoint {missing} not found; pass the path of a run's checkpoints/best.pt or last.pt"
    assert (out / MARKER).exists()  # the run had started: its folder exists
    assert main(argv) == 0  # corrected, without --overwrite
    assert (out / "results.json").exists()


def test_resume_removes_orphan_temp_files_and_takes_overrides(tiny_stanford40, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", f"data.root={tiny_stanford40}", *COMMON, f"train.out_dir={out}"]) == 0
    orphans = [out / "checkpoints" / ".last.pt.k2j4x9.tmp", out / ".student_last.safetensors.a8b7.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"half a checkpoint")
    keep = out / "checkpoints" / "notes.tmp.txt"
    keep.write_text("not a temp file of ours")
    # Overrides after the flag: `actdistill train CONFIG --resume train.epochs=2`.
    assert main(["train", str(out / "config.yaml"), "--resume", "train.epochs=2"]) == 0
    assert not any(o.exists() for o in orphans) and keep.exists()
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == 2 and [h["epoch"] for h in results["history"]] == [1, 2]
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"] == 2


def test_command_line_typo_is_not_blamed_on_the_recipe(tiny_stanford40, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(parse_overrides([f"data.root={tiny_stanford40}", *COMMON])))
    line = _error(capsys, ["train", str(recipe), "train.epoch=3", f"train.out_dir={tmp_path / 'run'}"])
    assert line.startswith(f"{ERROR}command line: unknown key 'train.epoch'. Did you mean: epochs")
    assert str(recipe) not in line
    line = _error(capsys, ["train", str(recipe), "--resume", "optim.lrr=0.1"])
    assert line.startswith(f"{ERROR}command line: unknown key 'optim.lrr'. Did you mean: lr")
    assert not (tmp_path / "run").exists()


# --- settings -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.best_metric=accuracy", "train.best_metric 'accuracy' is not a metric of the classification task. "
         "Did you mean: mean_class_accuracy? Its metrics: top1, top5, mean_class_accuracy, mAP."),
        ("train.eval_every=0", "config: train.eval_every must be at least 1; got 0"),
        ("train.epochs=0", "config: train.epochs must be at least 1; got 0"),
        ("train.epochs=-1", "config: train.epochs must be at least 1; got -1"),
        ("data.batch_size=0", "config: data.batch_size must be at least 1; got 0"),
        ("optim.lr=-1", "config: optim.lr must be more than 0; got -1.0"),
        ("method.temperature=0", "method.temperature of 'kd' must be > 0; got 0"),
    ],
)  # fmt: skip
def test_bad_setting_is_refused_before_any_work(tiny_stanford40, teacher_run, tmp_path, capsys, override, expected):
    out = tmp_path / "run"
    line = _error(capsys, ["train", *_kd(tiny_stanford40, teacher_run, f"train.out_dir={out}", override)])
    assert line == ERROR + expected
    assert not out.exists()  # no run folder, no checkpoint


# --- data -----------------------------------------------------------------------------------------------------------


def _reorder_actions(root: Path) -> list[str]:
    path = root / "ImageSplits" / "actions.txt"
    header, *rows = path.read_text().splitlines()
    path.write_text("\n".join([header, *reversed(rows)]) + "\n")
    return [r.split()[0] for r in reversed(rows)]


def _rename_class(root: Path, old: str, new: str) -> None:
    splits = root / "ImageSplits"
    for name in ("actions.txt", "train.txt", "test.txt"):
        lines = (splits / name).read_text().splitlines()
        (splits / name).write_text("\n".join(x.replace(old, new, 1) if x.startswith(old) else x for x in lines) + "\n")
    for folder in ("JPEGImages", "XMLAnnotations"):
        for f in (root / folder).glob(f"{old}_*"):
            f.rename(f.with_name(new + f.name[len(old) :]))


def _eval_report(capsys, checkpoint: Path, root: Path) -> dict:
    assert main(["eval", str(checkpoint), f"data.root={root}"]) == 0
    return json.loads(capsys.readouterr().out)


def test_class_order_is_remapped_by_name(tiny_stanford40, teacher_run, data_copy, tmp_path, capsys, caplog):
    order = _reorder_actions(data_copy)
    assert order == ["pointing", "waving_hands", "applauding"]
    ckpt = teacher_run / "checkpoints" / "last.pt"
    original = _eval_report(capsys, ckpt, tiny_stanford40)
    with caplog.at_level(logging.INFO, logger="actdistill"):
        reordered = _eval_report(capsys, ckpt, data_copy)
    assert "lists the dataset's classes in another order; its outputs are remapped by name" in caplog.text
    for key in ("top1", "top5", "mAP", "mean_class_accuracy"):
        assert reordered[key] == pytest.approx(original[key], abs=1e-9), key
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="actdistill"):
        assert main(["train", *_kd(data_copy, teacher_run, f"train.out_dir={tmp_path / 'kd'}")]) == 0
    assert f"teacher.checkpoint {ckpt} lists the classes in another order; its outputs are remapped by name" in (
        caplog.text
    )
    assert json.loads((tmp_path / "kd" / "results.json").read_text())["class_names"] == order


def test_other_class_set_is_refused_naming_the_classes(teacher_run, data_copy, tmp_path, capsys):
    _rename_class(data_copy, "pointing", "jumping")
    ckpt = teacher_run / "checkpoints" / "last.pt"
    expected = (
        "predicts other classes than the dataset: only in the {what}: ['pointing'], only in the dataset: "
        "['jumping']; point data.root at the dataset it was trained on"
    )
    line = _error(capsys, ["eval", str(ckpt), f"data.root={data_copy}"])
    assert line == f"{ERROR}checkpoint {ckpt} " + expected.format(what="checkpoint")
    out = tmp_path / "kd"
    line = _error(capsys, ["train", *_kd(data_copy, teacher_run, f"train.out_dir={out}")])
    assert line == f"{ERROR}teacher.checkpoint {ckpt} " + expected.format(what="teacher.checkpoint")
    assert not (out / "checkpoints" / "last.pt").exists()


def test_every_image_missing_names_the_split_file(data_copy, tmp_path, capsys):
    for jpg in (data_copy / "JPEGImages").glob("*.jpg"):
        jpg.unlink()
    out = tmp_path / "run"
    line = _error(capsys, ["train", f"data.root={data_copy}", *COMMON, f"train.out_dir={out}"])
    assert line == (
        f"{ERROR}none of the 24 images listed in {data_copy}/ImageSplits/train.txt exists under "
        f"{data_copy}/JPEGImages (first: applauding_001.jpg); check data.root"
    )
    assert not (out / "results.json").exists() and not (out / "checkpoints" / "last.pt").exists()


def test_empty_class_is_refused_unless_allowed(data_copy, tmp_path, capsys, caplog):
    split = data_copy / "ImageSplits" / "train.txt"
    split.write_text("".join(f"{x}\n" for x in split.read_text().split() if not x.startswith("pointing")))
    argv = ["train", f"data.root={data_copy}", *COMMON]
    line = _error(capsys, [*argv, f"train.out_dir={tmp_path / 'run'}"])
    assert line == (
        f"{ERROR}dataset 'stanford40' at {data_copy}: 1 class(es) have no training sample (pointing); add their "
        "images or remove them, or set data.allow_empty_classes=true"
    )
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    with caplog.at_level(logging.WARNING, logger="actdistill"):
        assert main([*argv, f"train.out_dir={tmp_path / 'allowed'}", "data.allow_empty_classes=true"]) == 0
    assert "1 class(es) have no training sample (pointing); their AP is undefined" in caplog.text


# --- output folders that cannot be written ----------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; see the simulated test below")
def test_read_only_out_dir(tiny_stanford40, tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        line = _error(capsys, ["train", f"data.root={tiny_stanford40}", *COMMON, f"train.out_dir={parent / 'run'}"])
    finally:
        parent.chmod(0o755)
    assert line.startswith(f"{ERROR}could not write {parent / 'run'}: Permission denied;"), line


def test_read_only_out_dir_simulated(tiny_stanford40, tmp_path, capsys, monkeypatch):
    """What a read-only file system does to the run folder's creation (root ignores chmod, so it is simulated)."""
    out = tmp_path / "run"
    mkdir = pathlib.Path.mkdir

    def read_only(self, *args, **kwargs):
        if self == out or out in self.parents:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    line = _error(capsys, ["train", f"data.root={tiny_stanford40}", *COMMON, f"train.out_dir={out}"])
    assert line == (
        f"{ERROR}could not write {out}: Read-only file system; make it writable or choose another train.out_dir "
        "(continue with --resume once fixed)"
    )


def test_disk_full_is_one_line(tiny_stanford40, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    replace = os.replace

    def disk_full(src, dst, *args, **kwargs):
        if str(out) in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", disk_full)
    line = _error(capsys, ["train", f"data.root={tiny_stanford40}", *COMMON, f"train.out_dir={out}"])
    assert line == (
        f"{ERROR}could not write {out}/checkpoints/last.pt: the disk is full; free space there or choose another "
        "output folder"
    )
    assert not list(out.rglob("*.tmp")) and not (out / "results.json").exists()


# --- checkpoints of the other tasks with a pickled payload ----------------------------------------------------------


class Payload:
    """Unpickling this creates the file `marker`: harmless proof that code from the checkpoint ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def other_tasks_data(tmp_path_factory):
    """(PCL overrides, detection overrides) of tiny synthetic PCL and detection data."""
    from test_engine_tasks_ddp import detection_overrides, pcl_overrides, write_detection_data, write_pcl_data

    base = tmp_path_factory.mktemp("payload_data")
    pcl = [*pcl_overrides(write_pcl_data(base / "UCF")), "data.batch_size=4"]
    det = [
        *detection_overrides(*write_detection_data(base / "det")),
        "data.name=detection_features",
        "student.name=temporal_detector",
        "student.kwargs={preset: small, embed_dim: 16}",
        "data.batch_size=2",
    ]
    return pcl, det


def _poisoned(path: Path, marker: Path, model: dict, overrides: list[str], task: str) -> Path:
    """A plausible run checkpoint of `model` (spec) with a payload added."""
    from actdistill.config import load_config
    from actdistill.models import create_model

    net = create_model(model["name"], model["num_classes"], **model["kwargs"])
    cfg = load_config(None, overrides).to_dict()
    torch.save({"student": net.state_dict(), "model": model, "config": cfg, "task": task, "epoch": 1,
                "extra": Payload(str(marker))}, path)  # fmt: skip
    return path


def test_payload_checkpoints_of_other_tasks_are_refused(other_tasks_data, tmp_path, capsys):
    pcl, det = other_tasks_data
    marker = tmp_path / "payload_ran"
    pcl_spec = {
        "name": "pcl",
        "num_classes": 5,
        "kwargs": {"backbone": "video3d_demo", "backbone_kwargs": {"channel_scale": 0.25, "norm": "group"}},
    }
    det_spec = {"name": "temporal_detector", "num_classes": 4, "kwargs": {"preset": "small", "embed_dim": 16,
                                                                          "in_channels": 64}}  # fmt: skip
    pcl_ckpt = _poisoned(tmp_path / "pcl.pt", marker, pcl_spec, pcl, "pcl")
    det_ckpt = _poisoned(tmp_path / "det.pt", marker, det_spec, det, "detection")
    refused = "holds pickled Python objects, which could run code when opened, so actdistill refuses it"
    runs = [
        ["detect", "eval", str(det_ckpt)],
        ["eval", str(det_ckpt)],
        ["eval", str(pcl_ckpt)],
        ["detect", "eval", str(pcl_ckpt)],
        ["train", *pcl, "method.name=pcl_kd", f"teacher.checkpoint={pcl_ckpt}", f"train.out_dir={tmp_path / 'a'}"],
        ["train", *det, "method.name=detection_kd", f"teacher.checkpoint={det_ckpt}",
         f"train.out_dir={tmp_path / 'b'}"],
        ["train", *det, "student.kwargs={preset: small, embed_dim: 16, attention: true}",
         "method.name=detection_generative_kd", f"teacher.checkpoint={det_ckpt}", f"method.teacher_extras={det_ckpt}",
         f"train.out_dir={tmp_path / 'c'}"],
    ]  # fmt: skip
    for argv in runs:
        line = _error(capsys, argv)
        assert refused in line, (argv[:2], line)
        assert not marker.exists(), f"the payload ran: {argv}"


# --- distributed ----------------------------------------------------------------------------------------------------

# Rank 1 of a 2-process gloo job that joins the process group and then never takes part in a collective.
SILENT_RANK = textwrap.dedent(
    """
    import datetime, time
    import torch.distributed as dist
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    print("joined", flush=True)
    time.sleep(120)
    """
)


def test_rank_that_never_joins_ends_with_a_clear_error(tiny_stanford40, tmp_path):
    """`actdistill train` as rank 0 of 2 with train.dist_timeout_s=5: rank 1 joins the job but never reaches a
    collective; rank 0 must stop within seconds with one line, not hang (30 min default) or print a traceback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank, argv in ((1, ["-c", SILENT_RANK]), (0, ["-m", "actdistill", "train"])):
        env = {**_env(), "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port)}  # fmt: skip
        if rank == 0:
            argv += [
                f"data.root={tiny_stanford40}",
                *COMMON,
                "train.dist_timeout_s=5",
                f"train.out_dir={tmp_path / 'run'}",
            ]
        procs.append(subprocess.Popen([sys.executable, *argv], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))  # fmt: skip
    silent, rank0 = procs
    try:
        started = time.monotonic()
        out, _ = rank0.communicate(timeout=150)
        elapsed = time.monotonic() - started
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    assert rank0.returncode == 2, f"rank 0 ended with {rank0.returncode} after {elapsed:.0f} s:\n{out[-3000:]}"
    errors = [line for line in out.splitlines() if line.startswith(ERROR)]
    assert len(errors) == 1 and "Traceback" not in out, out[-3000:]
    assert errors[0].startswith(f"{ERROR}rank 0: a collective "), errors[0]
    assert "train.dist_timeout_s=5 s (another process stopped or hangs; see its log)" in errors[0], errors[0]
    assert elapsed < 120, f"rank 0 needed {elapsed:.0f} s to give up"
