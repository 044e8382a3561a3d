"""The README's commands that take under a minute run verbatim (issue 18): copied from its code blocks, not retyped."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
# Commands cheap enough for CI (each well under a minute on 2 cores); every README line starting with one runs.
CHEAP = ("actdistill list ", "actdistill --help", "actdistill data synth ")


def readme_commands() -> list[str]:
    """Shell lines of the README's bash blocks (comments stripped, `\\` continuations joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


CHEAP_COMMANDS = [c for c in readme_commands() if c.startswith(CHEAP)]


def test_the_readme_has_cheap_commands_to_run():
    assert len(CHEAP_COMMANDS) >= 4, CHEAP_COMMANDS  # list models/methods, image synth (two layouts), video synth


@pytest.mark.parametrize("command", CHEAP_COMMANDS)
def test_readme_command_runs_verbatim(command, tmp_path):
    """Run in a scratch folder (relative outputs land there) with this interpreter's `actdistill`."""
    argv = shlex.split(command)
    assert argv[0] == "actdistill"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "actdistill", *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    for flag, value in zip(argv, argv[1:]):
        if flag == "--out":  # the data the command says it writes is there
            assert any((tmp_path / value).iterdir()), value
