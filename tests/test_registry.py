"""Registries: any registered name works in a fresh interpreter, the catalogue matches them, metadata is consistent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from actdistill.engine.tasks import TASKS
from actdistill.errors import ActdistillError
from actdistill.registry import CATALOG, DATASETS, METHODS, MODELS, build_catalog

REPO = Path(__file__).resolve().parents[1]


def _fresh_python(code: str) -> subprocess.Popen:
    """Start `code` in a new interpreter that imports nothing of actdistill beforehand (this worktree first)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_names_resolve_in_a_fresh_interpreter():
    """Each lookup is the first thing its interpreter does with actdistill: the providers are imported on demand.

    (Two interpreters, started together: the model lookups, and the method and dataset lookups.)
    """
    models = _fresh_python(
        """
        import sys
        from actdistill.models import create_model
        assert "actdistill.models.pcl_net" not in sys.modules  # nothing registered yet: the lookup imports it
        m = create_model("residual_input", 4, backbone="r3d_10", channel_scale=0.125)
        assert sum(p.numel() for p in m.parameters()) > 0
        p = create_model("pcl", 5, backbone="c3d")
        assert type(p).__name__ == "PCLNet", type(p)
        print("models ok", type(m).__name__, type(p).__name__)
        """
    )
    registries = _fresh_python(
        """
        import sys
        from actdistill.registry import METHODS, DATASETS
        assert "actdistill.ssl.methods" not in sys.modules
        cls = METHODS.get("pcl_kd")
        assert cls.__name__ == "PCLKD" and METHODS.meta("pcl_kd")["task"] == "pcl", cls
        builder = DATASETS.get("detection_features")
        assert callable(builder) and DATASETS.meta("detection_features")["task"] == "detection"
        print("registries ok")
        """
    )
    for proc, expected in ((models, "models ok"), (registries, "registries ok")):
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        assert expected in out


def test_catalog_matches_the_registries():
    shipped = json.loads(CATALOG.read_text())
    live = json.loads(json.dumps(build_catalog()))  # the JSON form (tuples → lists) that write_catalog stores
    for what in ("models", "methods", "datasets"):
        missing, extra = sorted(set(live[what]) - set(shipped[what])), sorted(set(shipped[what]) - set(live[what]))
        assert not missing and not extra, (
            f"actdistill/catalog.json is out of date ({what}: missing {missing}, stale {extra}); "
            "run `python -m actdistill.registry`"
        )
    assert shipped == live, "actdistill/catalog.json is out of date; run `python -m actdistill.registry`"


def test_every_method_names_a_task_the_engine_has():
    task_names = {cls.name for cls in TASKS.values()}
    assert task_names == {"classification", "pcl", "detection"}
    wrong = {name: METHODS.meta(name).get("task") for name in METHODS.names()}
    wrong = {name: task for name, task in wrong.items() if task not in task_names}
    assert not wrong, f"methods whose task is not one of {sorted(task_names)}: {wrong}"
    kinds = {name: DATASETS.meta(name).get("task") for name in DATASETS.names()}
    assert all(kind in TASKS for kind in kinds.values()), kinds  # every dataset maps to a task
    assert {METHODS.meta(n)["task"] for n in ("pcl", "pcl_kd", "detection_generative_kd", "kd")} == task_names


def test_unknown_hyper_parameter_is_refused_with_a_suggestion():
    with pytest.raises(ActdistillError) as err:
        METHODS.check_params("kd", {"temprature": 4}, "recipe.yaml")
    assert str(err.value) == (
        "recipe.yaml: method 'kd' has no hyper-parameter 'temprature'. Did you mean: temperature? "
        "Its hyper-parameters: alpha, temperature."
    )
    METHODS.check_params("pcl_kd", {"kd_temperature": 2.0, "k": 8, "contrast": "bank"})  # its own: accepted
    with pytest.raises(ActdistillError, match=r"method 'pcl_kd' has no hyper-parameter 'kd_temprature'\. "
                                              r"Did you mean: kd_temperature"):  # fmt: skip
        METHODS.check_params("pcl_kd", {"kd_temprature": 2.0})


def test_unknown_names_suggest_close_ones():
    with pytest.raises(ActdistillError, match=r"unknown method 'pcl_kdd'\. Did you mean: pcl_kd"):
        METHODS.get("pcl_kdd")
    with pytest.raises(
        ActdistillError, match=r"unknown dataset 'detection_feature'\. Did you mean: detection_features"
    ):
        DATASETS.get("detection_feature")
    with pytest.raises(ActdistillError, match=r"Run `actdistill list models`"):
        MODELS.get("no_such_model_xyz")
