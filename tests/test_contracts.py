"""Contract tests over the registries (issue 15, item 9): every registered model, dataset and task, by name.

A newly registered thing is tested here without editing a list:
  * model contract (models/_contract.py): every `MODELS` name is built and run on the meta device (shapes only: no
    memory, no arithmetic), at its registered input size: `forward`, `forward_features` / `feature_info`,
    `forward_head`, `pretrained_cfg`, `num_classes`; task-specific networks (`pcl`, `temporal_detector`) their form;
  * dataset contract (docs/architecture.md "A dataset"): every `DATASETS` name builds both splits from a tiny tree
    and yields sample dicts with batch-contract keys (`actdistill.batch.BATCH_KEYS`); a new dataset must add its
    tiny tree to `TINY_DATA` (the test says so);
  * task contract (engine/tasks.py): through each dataset, its task builds the run's data, every batch holds the
    task's keys (`TASK_KEYS`), the MAC-counting input shape is the data's, and the evaluator reports the task's
    metrics for a fresh student.
Methods have their contract tests in test_methods.py (parametrised over `METHODS` by task).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY_DETECTION_RUN, TINY_PCL_RUN, TINY_RUN, detection_data_overrides

from actdistill.batch import BATCH_KEYS, TASK_KEYS
from actdistill.config import load_config
from actdistill.data.build import SeededView, build_split, dataset_targets, make_loader
from actdistill.engine.tasks import TASKS, task_for
from actdistill.errors import ActdistillError
from actdistill.models import create_model
from actdistill.registry import DATASETS, METHODS, MODELS

# --- models ------------------------------------------------------------------------------------------------------

# Models that cannot be built from (num_classes) alone: the keyword arguments a test build needs.
MODEL_KWARGS: dict[str, dict[str, Any]] = {
    "attention_predictor": {
        "student": {"name": "top_i3d", "num_classes": 3, "kwargs": {}}, "channels": 1024, "time_steps": 8,
    },
    "frames": {"image_model": "pvt_v2_demo"},
    "simkd_predictor": {
        "student": {"name": "pvt_v2_demo", "num_classes": 3, "kwargs": {}},
        "teacher": {"name": "convnext_demo", "num_classes": 3, "kwargs": {}},
    },
}  # fmt: skip


def _input_size(name: str, model: torch.nn.Module) -> tuple[int, ...]:
    size = MODELS.meta(name).get("input_size") or getattr(model, "pretrained_cfg", None)
    size = size.input_size if hasattr(size, "input_size") else size
    return tuple(size or (3, 224, 224))


@pytest.mark.parametrize("name", MODELS.names())
def test_model_contract_on_the_meta_device(name: str) -> None:
    model = _build_meta(name)
    size = _input_size(name, model)
    x = torch.empty(2, *size, device="meta")
    with torch.no_grad():
        if name == "temporal_detector":  # `forward(x (B, C, T), mask) -> heads`: one entry per pyramid level
            heads = model(x, torch.ones(2, size[1], dtype=torch.bool, device="meta"))
            levels = model.config.levels
            assert len(heads["cls"]) == len(heads["reg"]) == len(heads["masks"]) == levels
            assert [t.shape[:2] for t in heads["cls"]] == [(2, 3)] * levels
            assert [t.shape[2] for t in heads["cls"]] == [p.numel() for p in model.points(size[1], "meta")]
            return
        logits = model(x)
        assert logits.shape[:2] == (2, 3)  # (B, K), or (B, K, T') per-step logits (I3D family)
        if name == "pcl":  # `forward(tuple) -> pretext logits`; the method reads `forward_tuple`
            out = model.forward_tuple(x)
            assert out.logits.shape == (2, 3) and out.features.shape == (2, 3, model.feat_dim)
            return
        feats = model.forward_features(x)
        head = model.forward_head(feats[-1])
    assert model.num_classes == 3 and len(model.pretrained_cfg.mean) == len(model.pretrained_cfg.std)
    assert tuple(model.pretrained_cfg.input_size)[0] == size[0]
    assert isinstance(feats, list) and len(feats) == len(model.feature_info) >= 1
    modules = dict(model.named_modules())
    for f, info in zip(feats, model.feature_info):
        assert f.dim() == len(size) + 1  # (B, C, H, W) or (B, C, T, H, W): transformer tokens as maps
        # the stage's module (wrappers such as residual_input and attention_predictor keep their inner model's
        # names, relative to that model: B6)
        assert info.name in modules or any(m.endswith("." + info.name) for m in modules), info
        assert f.shape[1] == info.channels, info
        assert f.shape[-1] == math.ceil(size[-1] / info.stride), (info, tuple(f.shape))
    assert head.shape == logits.shape


def _build_meta(name: str) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, 3, **MODEL_KWARGS.get(name, {})).eval()


def test_every_model_kind_has_a_task() -> None:
    """Model metadata the CLI and the reports read: a task-specific network says its task."""
    for name in MODELS.names():
        task = MODELS.meta(name).get("task")
        assert task in (None, "video", "detection"), (name, task)
    assert MODELS.meta("temporal_detector")["task"] == "detection"


# --- datasets and tasks ------------------------------------------------------------------------------------------


def _link_tree(src: Path, dst: Path, videos: list[tuple[str, str]]) -> None:
    """Symlink `src/<rel>` to `dst/<new>` for each (rel, new)."""
    for rel, new in videos:
        (dst / new).parent.mkdir(parents=True, exist_ok=True)
        (dst / new).symlink_to(src / rel)


def _ucf_entries(ucf: Path, subset: str) -> list[tuple[str, str]]:
    """(relative path, class) of split 1's `subset` videos of a UCF101-layout root."""
    lines = (ucf / "ucfTrainTestlist" / f"{subset}list01.txt").read_text().split("\n")
    return [(p, p.split("/")[0]) for p in (ln.split()[0] for ln in lines if ln.strip())]


@pytest.fixture(scope="module")
def video_layouts(tiny_ucf, tmp_path_factory) -> dict[str, Path]:
    """The tiny UCF101 videos in the other video layouts: HMDB51 splits, class folders, path,label lists."""
    base = tmp_path_factory.mktemp("layouts")
    train, test = _ucf_entries(tiny_ucf, "train"), _ucf_entries(tiny_ucf, "test")
    hmdb = base / "hmdb"
    _link_tree(tiny_ucf, hmdb, [(p, p) for p, _ in train + test])
    splits = hmdb / "testTrainMulti_7030_splits"
    splits.mkdir()
    for cls in sorted({c for _, c in train}):
        coded = [("1", p) for p, c in train if c == cls] + [("2", p) for p, c in test if c == cls]
        rows = [f"{Path(p).name} {code}" for code, p in coded]
        (splits / f"{cls}_test_split1.txt").write_text("\n".join(rows) + "\n")
    folder = base / "folder"
    _link_tree(tiny_ucf, folder, [(p, f"{subset}/{p}") for subset, entries in (("train", train), ("test", test))
                                  for p, _ in entries])  # fmt: skip
    lists = base / "lists"
    _link_tree(tiny_ucf, lists, [(p, p) for p, _ in train + test])
    for subset, entries in (("train", train), ("test", test)):
        with (lists / f"{subset}.csv").open("w", newline="") as f:
            csv.writer(f).writerows([("path", "label"), *entries])
    return {"hmdb51": hmdb, "video_folder": folder, "video_list": lists}


@pytest.fixture(scope="module")
def tiny_image_folder(tmp_path_factory) -> Path:
    from actdistill.data.synthetic_image import write_synthetic_stanford40

    root = tmp_path_factory.mktemp("image_folder") / "data"
    return write_synthetic_stanford40(
        root, num_classes=3, train_per_class=4, test_per_class=2, image_size=32, seed=0, layout="image_folder"
    )


VIDEO = ["data.clip_len=4", "data.batch_size=2", "student.name=r3d_10", "student.kwargs={channel_scale: 0.0625}"]
# Dataset name → overrides of a one-epoch tiny run on a tiny tree (from the fixtures). A new dataset adds its own.
TINY_DATA = {
    "stanford40": lambda f: [*TINY_RUN, f"data.root={f('tiny_stanford40')}", "data.batch_size=4"],
    "image_folder": lambda f: [*TINY_RUN, f"data.root={f('tiny_image_folder')}", "data.batch_size=4"],
    "ucf101": lambda f: [*TINY_RUN, *VIDEO, f"data.root={f('tiny_ucf')}"],
    "hmdb51": lambda f: [*TINY_RUN, *VIDEO, f"data.root={f('video_layouts')['hmdb51']}"],
    "video_folder": lambda f: [*TINY_RUN, *VIDEO, f"data.root={f('video_layouts')['video_folder']}"],
    "video_list": lambda f: [*TINY_RUN, *VIDEO, f"data.root={f('video_layouts')['video_list']}"],
    "pcl_ucf101": lambda f: [*TINY_PCL_RUN, f"data.root={f('tiny_ucf')}"],
    "detection_features": lambda f: [*TINY_DETECTION_RUN, *detection_data_overrides(f("tiny_detection"))],
}


def _cfg(name: str, request: pytest.FixtureRequest, tmp_path: Path):
    if name not in TINY_DATA:
        pytest.fail(f"dataset '{name}' has no tiny tree in tests/test_contracts.py TINY_DATA: add one so that its "
                    "dataset and task contracts are tested")  # fmt: skip
    overrides = TINY_DATA[name](request.getfixturevalue)
    return load_config(None, [*overrides, f"data.name={name}", f"train.out_dir={tmp_path / 'run'}"])


def test_every_dataset_declares_a_known_task() -> None:
    for name in DATASETS.names():
        assert DATASETS.meta(name).get("task") in TASKS, name
    # Every task of the engine has a dataset and methods (so its contract is exercised here and in test_methods).
    tasks = {TASKS[DATASETS.meta(n)["task"]].name for n in DATASETS.names()}
    assert tasks == set(TASK_KEYS) == {METHODS.meta(n).get("task", "classification") for n in METHODS.names()}


@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_contract(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    cfg = _cfg(name, request, tmp_path)
    task = task_for(cfg)
    lengths = {}
    for split in ("train", "test"):
        dataset, classes = build_split(cfg.data, split, None)
        lengths[split] = len(dataset)
        assert lengths[split] > 0 and classes and all(isinstance(c, str) for c in classes)
        sample = dataset[0]
        assert isinstance(sample, dict) and "input" in sample, type(sample)
        assert set(sample) <= set(BATCH_KEYS), set(sample) - set(BATCH_KEYS)
        if task.name != "detection":
            assert 0 <= int(sample["label"]) < len(classes)
    if task.name == "classification":  # stratified validation splits need every sample's class, read from lists
        dataset, classes = build_split(cfg.data, "train", None)
        targets = dataset_targets(dataset)
        assert targets is not None and len(targets) == len(dataset) and set(targets) <= set(range(len(classes)))
        assert targets[0] == int(dataset[0]["label"])
    assert task.class_names(cfg) == list(build_split(cfg.data, "train", None)[1])


@pytest.mark.parametrize("name", DATASETS.names())
def test_task_contract(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """What the engine asks of the dataset's task: checks, data, batch keys, input shape, evaluator and metrics."""
    from actdistill.engine.fit import check_config

    cfg = _cfg(name, request, tmp_path)
    task = check_config(cfg)  # ranges, the task, its method, its metric names
    assert task is not None and cfg.train.best_metric in task.metrics and task.default_best in task.metrics
    assert not task.default_monitor or task.default_monitor in task.metrics
    assert set(task.lower_is_better) <= set(task.metrics)
    classes = task.class_names(cfg)
    torch.manual_seed(0)
    student = create_model(cfg.student.name, len(classes), **{**task.student_kwargs(cfg), **cfg.student.kwargs})
    data = task.build_data(cfg, student)
    task.prepare_student(student, data)
    assert isinstance(data.train, SeededView) and data.classes == classes and len(data.test) > 0
    assert data.val is None or data.val is data.test or len(data.val) > 0
    data.train.set_epoch(1)
    device = torch.device("cpu")
    loader = make_loader(data.train, cfg.data, train=True, device=device, collate=data.collate)
    loader.batch_sampler.set_epoch(1)
    batch = next(iter(loader))
    assert TASK_KEYS[task.name] <= set(batch) <= set(BATCH_KEYS), set(batch) ^ TASK_KEYS[task.name]
    assert batch["index"].dtype == torch.long and len(batch["index"]) == len(batch["input"])  # SeededView's
    shape = task.input_shape(cfg)
    if task.name == "detection":  # (1, C, T): the time axis is the crop's or the video's
        assert shape[1] == batch["input"].shape[1]
    else:  # the MAC count sees one sample of what the student is trained on
        assert tuple(shape[1:]) == tuple(batch["input"].shape[1:]), (shape, tuple(batch["input"].shape))
    evaluator = task.evaluator(cfg, classes)
    assert tuple(evaluator.metrics) == tuple(task.metrics)
    test_loader = make_loader(data.test, cfg.data, train=False, device=device, collate=data.collate)
    report = evaluator(student.eval(), test_loader, device=device, amp_dtype=None)
    assert set(task.metrics) <= set(report) and report["num_samples"] == len(data.test)
    for metric in task.metrics:
        value = float(report[metric])
        assert math.isnan(value) or 0.0 <= value <= (math.inf if metric in task.lower_is_better else 1.0), metric


def test_unknown_dataset_task_is_refused(monkeypatch) -> None:
    cfg = load_config(None, ["data.name=stanford40"])
    monkeypatch.setitem(DATASETS._meta, "stanford40", {**DATASETS.meta("stanford40"), "task": "segmentation"})
    with pytest.raises(ActdistillError, match="unknown task 'segmentation'"):
        task_for(cfg)


def test_pcl_clips_have_the_side_the_task_reports(tiny_ucf, tmp_path) -> None:
    cfg = load_config(None, [*TINY_PCL_RUN, "data.image_size=16", f"data.root={tiny_ucf}"])  # 32² videos
    task = task_for(cfg)
    data = task.build_data(cfg, create_model(cfg.student.name, 5, **cfg.student.kwargs))
    data.train.set_epoch(1)
    assert tuple(data.train[0]["input"].shape) == task.input_shape(cfg)[1:]
