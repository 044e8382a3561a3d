"""Every method has a recipe for the synthetic image demo (issue 3), and each runs end to end via `actdistill train`."""

import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import TINY_RUN

from actdistill.cli import main
from actdistill.registry import METHODS

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "demo"
# Paper 2's generative methods need I3D-family video models (paper 2); they have video recipes instead.
VIDEO_ONLY = {"generative", "generative_teacher"}


def _method_names(recipe: Path) -> set[str]:
    method = yaml.safe_load(recipe.read_text())["method"]
    return {m["name"] for m in method.get("methods", [])} | {method["name"]}


def _classification_methods() -> set[str]:
    """Canonical (non-alias) methods of the classification task: the ones the image demo can run. PCL and detection
    methods train on their own data (configs/ssl, configs/detection; their contract tests are in test_methods.py)."""
    return {
        name
        for name in METHODS.names()
        if not METHODS.meta(name).get("alias_of")
        and METHODS.meta(name).get("task", "classification") == "classification"
    }


def test_every_registered_method_has_a_demo_recipe():
    covered = set().union(*(_method_names(r) for r in RECIPES.glob("*.yaml")))
    classification = _classification_methods()
    assert {"vanilla", "kd", "generative"} <= classification and not {"pcl", "detection_kd"} & classification
    missing = classification - VIDEO_ONLY - covered
    assert not missing, f"methods without a configs/demo recipe: {missing}"
    stray = covered - classification  # a demo recipe names only classification methods
    assert not stray, f"configs/demo recipes name methods that are not classification methods: {stray}"


@pytest.fixture(scope="module")
def tiny_teacher(tiny_stanford40, tmp_path_factory):
    """A `resnet_demo` teacher checkpoint after one epoch on the tiny data (the demo's teacher architecture)."""
    out = tmp_path_factory.mktemp("teacher")
    args = [*TINY_RUN, "student.name=resnet_demo", f"data.root={tiny_stanford40}", f"train.out_dir={out}"]
    assert main(["train", *args]) == 0
    return out / "checkpoints" / "last.pt"


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_demo_recipe_trains(recipe, tiny_stanford40, tiny_teacher, tmp_path):
    overrides = [*TINY_RUN, f"data.root={tiny_stanford40}", "data.limit_train=0", "data.batch_size=8"]
    overrides += ["sched.warmup_epochs=0"]  # the recipes warm up for 3 of their 30 epochs; this run has 1
    overrides += [f"teacher.checkpoint={tiny_teacher}", f"train.out_dir={tmp_path}"]
    assert main(["train", str(recipe), *overrides]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert 0.0 <= results["last"]["top1"] <= 1.0
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == 1 and math.isfinite(logged[0]["train"]["loss"]) and logged[0]["train"]["loss"] > 0


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_demo_recipe_matches_the_demos_students(recipe, tmp_path):
    """Same data subset, crops, size and schedule as `actdistill demo`'s students: a recipe's row compares with them."""
    from actdistill.config import load_config
    from actdistill.demo import QUICK, demo_configs

    student = demo_configs(tmp_path, QUICK, seed=0)["student"]
    cfg = load_config(recipe)
    for section, keys in {
        "data": ("image_size", "scale_min", "limit_train", "batch_size"),
        "optim": ("name", "lr", "weight_decay"),
        "sched": ("name", "warmup_epochs"),
        "train": ("epochs", "precision"),
    }.items():
        for key in keys:
            want, got = getattr(getattr(student, section), key), getattr(getattr(cfg, section), key)
            assert got == want, f"{recipe.name}: {section}.{key} is {got}, the demo's students use {want}"
    assert cfg.student.name == student.student.name
