"""`actdistill.analysis.analyze` on tiny demo models and a tiny synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from actdistill.config import Config
from actdistill.data.synthetic_image import write_synthetic_stanford40
from actdistill.models import create_model


def _save(path: Path, name: str, root: Path, method: str, seed: int) -> Path:
    torch.manual_seed(seed)
    model = create_model(name, 3, pretrained=False)
    cfg = Config().to_dict()
    cfg["data"].update(root=str(root), image_size=32, batch_size=4, num_workers=0)
    cfg["student"]["name"] = name
    cfg["method"] = {"name": method}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"student": model.state_dict(), "model": {"name": name, "num_classes": 3, "kwargs": {}}, "config": cfg}, path
    )
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("analyze")
    root = write_synthetic_stanford40(base / "data", num_classes=3, train_per_class=4, test_per_class=4, image_size=32)
    return {
        "root": Path(root),
        "teacher": _save(base / "teacher/checkpoints/last.pt", "convnext_demo", Path(root), "vanilla", 0),
        "plain": _save(base / "student/checkpoints/last.pt", "pvt_v2_demo", Path(root), "vanilla", 1),
        "kd": _save(base / "student_kd/checkpoints/last.pt", "pvt_v2_demo", Path(root), "kd", 2),
    }


def test_analyze_writes_summary_and_plots(ckpts: dict[str, Path], tmp_path: Path) -> None:
    from actdistill.analysis.analyze import analyze

    torch.set_num_threads(1)
    summary = analyze(ckpts["teacher"], [ckpts["plain"], ckpts["kd"]], tmp_path, max_samples=8)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["num_samples"] == 8
    n_t = len(on_disk["teacher"]["stages"])
    assert [s["label"] for s in on_disk["students"]] == ["student", "student_kd"]
    for s in on_disk["students"]:
        m = s["matrices"]["linear_cka"]
        assert len(m) == n_t and all(len(r) == len(s["stages"]) for r in m)
        assert all(0.0 <= v <= 1.0 + 1e-9 for r in m for v in r if v is not None)
        assert 0.0 <= s["agreement"]["top1_agreement"] <= 1.0
        assert 0.0 <= s["ece"] <= 1.0
        for png in s["plots"]:
            assert (tmp_path / png).stat().st_size > 1000
    assert on_disk["comparisons"][0]["students"] == ["student", "student_kd"]
    assert (tmp_path / on_disk["comparisons"][0]["plot"]).is_file()
    text = (tmp_path / "analysis.md").read_text()
    assert "student_kd" in text and "CKA last–last" in text
    assert summary["teacher"]["label"] == "teacher"


def test_same_checkpoint_gives_cka_one_on_diagonal(ckpts: dict[str, Path], tmp_path: Path) -> None:
    from actdistill.analysis.analyze import analyze

    torch.set_num_threads(1)
    summary = analyze(ckpts["plain"], [ckpts["plain"]], tmp_path, max_samples=6)
    entry = summary["students"][0]
    for key in ("linear_cka", "linear_cka_aligned", "debiased_cka"):
        m = entry["matrices"][key]
        for i in range(len(m)):
            assert m[i][i] == pytest.approx(1.0, abs=1e-5), key
    assert entry["agreement"]["top1_agreement"] == 1.0
    assert entry["agreement"]["kl"] == pytest.approx(0.0, abs=1e-9)


def test_sample_indices_bounded_and_spread() -> None:
    from actdistill.analysis.analyze import pair_grid, sample_indices

    assert sample_indices(10, 0) == list(range(10))
    idx = sample_indices(100, 5)
    assert idx[0] == 0 and idx[-1] == 99 and len(idx) == 5
    assert pair_grid((56, 56), (28, 14), 7) == (7, 7)
    assert pair_grid((4, 4), (2, 8), 7) == (2, 4)


def test_wrong_class_count_is_user_error(ckpts: dict[str, Path], tmp_path: Path) -> None:
    from actdistill.analysis.analyze import analyze
    from actdistill.errors import ActdistillError

    other = write_synthetic_stanford40(
        tmp_path / "d2", num_classes=2, train_per_class=2, test_per_class=2, image_size=32
    )
    with pytest.raises(ActdistillError, match="data.root"):
        analyze(ckpts["teacher"], [ckpts["plain"]], tmp_path / "o", overrides=[f"data.root={other}"], max_samples=4)
