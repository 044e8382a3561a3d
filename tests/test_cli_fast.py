"""Issue 18: `actdistill --help`, every `--help` and `actdistill list` answer without importing torch.

Each case runs in a fresh interpreter (this worktree first on the path) that calls `actdistill.cli.main` and then
asserts that neither `torch` nor any other heavy library was imported on the way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from actdistill.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "timm", "numpy", "PIL", "cv2", "matplotlib")

# `main(argv)` in a child; prints a JSON line with the exit status and any heavy module that got imported.
CHILD = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from actdistill.cli import main
    argvs, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    results = []
    for argv in argvs:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
        results.append({"argv": argv, "code": code, "out": out.getvalue()})
    loaded = sorted(name for name in heavy if name in sys.modules)
    print(json.dumps({"results": results, "loaded": loaded}))
    """
)


def _run_cli(argvs: list[list[str]]) -> tuple[list[dict], list[str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(argvs), json.dumps(HEAVY)],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report["results"], report["loaded"]


def _subcommands() -> list[list[str]]:
    """Every command path of the parser: ["train"], ["data", "synth"], ["detect", "eval"], ..."""
    import argparse

    paths: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    paths.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return paths


def test_every_help_answers_without_torch():
    commands = _subcommands()
    assert {"train", "eval", "list", "compare", "cache", "detect"} <= {c[0] for c in commands}
    assert ["detect", "eval"] in commands and ["cache", "build"] in commands and ["data", "synth"] in commands
    results, loaded = _run_cli([["--help"], *([*c, "--help"] for c in commands)])
    assert loaded == [], f"--help imported {loaded}"
    for r in results:
        assert r["code"] == 0, r
        assert r["out"].startswith("usage: actdistill"), r
    top = results[0]["out"]
    assert all(name in top for name in ("train", "eval", "list", "compare", "detect"))


@pytest.mark.parametrize(
    "what, names",
    [
        ("methods", ("kd", "pcl_kd", "detection_generative_kd", "crd")),
        ("models", ("pcl", "temporal_detector", "video3d_demo", "pvt_v2_demo")),
        ("datasets", ("stanford40", "ucf101", "pcl_ucf101", "detection_features")),
    ],
)
def test_list_answers_without_torch(what, names):
    (result,), loaded = _run_cli([["list", what]])
    assert loaded == [], f"`actdistill list {what}` imported {loaded}"
    assert result["code"] == 0, result
    listed = {line.split()[0] for line in result["out"].splitlines() if line.strip() and not line.startswith(" ")}
    assert set(names) <= listed, sorted(listed)
    if what == "methods":
        line = next(x for x in result["out"].splitlines() if x.split()[0] == "pcl_kd")
        assert "task=pcl" in line and "kd_temperature=4.0" in line, line
