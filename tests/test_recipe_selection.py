"""No shipped recipe picks its `best` checkpoint on the test split unless a user asks for it (paper results are the
last epoch's; choosing on test would report an optimistic number)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actdistill.config import load_config
from actdistill.errors import ActdistillError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RUN_RECIPES = [p for p in sorted(CONFIGS.rglob("*.yaml")) if "select_on" in p.read_text() or "train:" in p.read_text()]


def _loadable(path: Path):
    try:
        return load_config(path)
    except ActdistillError:
        return None  # a grid or comparison file (ssl-grid, compare), not a run recipe


@pytest.mark.parametrize("path", RUN_RECIPES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_recipe_never_selects_on_the_test_split(path: Path) -> None:
    cfg = _loadable(path)
    if cfg is None:
        pytest.skip("not a run recipe")
    assert cfg.train.select_on in ("auto", "val", "none"), f"{path} selects its best checkpoint on the test split"


def test_every_run_recipe_was_checked() -> None:
    loaded = [p for p in RUN_RECIPES if _loadable(p) is not None]
    # every demo, image, detection and video run recipe is a run config; only grids / comparisons are skipped
    assert len(loaded) >= len(list((CONFIGS / "image").glob("*.yaml"))) + len(list((CONFIGS / "demo").glob("*.yaml")))
    assert all(_loadable(p) is not None for p in (CONFIGS / "detection").glob("*.yaml"))
