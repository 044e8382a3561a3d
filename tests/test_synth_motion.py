"""Issue 4: the 3D/2D video demo models, their synthetic-video recipes and the motion-pair accuracy."""

import json
import math
from pathlib import Path

import pytest
import torch

from actdistill.analysis.motion_pairs import format_table, motion_pair_accuracy, run_motion_pairs
from actdistill.cli import main
from actdistill.config import load_config
from actdistill.data.synthetic_video import write_synthetic_ucf101
from actdistill.errors import ActdistillError
from actdistill.models import count_parameters, create_model
from actdistill.registry import MODELS

RECIPES = [Path(__file__).resolve().parents[1] / "configs" / "video" / f"synth_{k}.yaml" for k in ("3d", "2d")]
CLASSES = ["SitDown", "StandUp", "RunRight", "RunLeft"]


@pytest.mark.parametrize("name", ["video3d_demo", "frame2d_demo"])
def test_demo_models_follow_the_contract(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).eval()
    x = torch.randn(2, 3, 8, 32, 32)
    feats = model.forward_features(x)
    assert model(x).shape == (2, 5)
    assert torch.allclose(model.forward_head(feats[-1]), model(x))
    assert [f.shape[1] for f in feats] == [f.channels for f in model.feature_info]
    assert MODELS.meta(name)["task"] == "video"
    with pytest.raises(ActdistillError, match="no pretrained weights"):
        create_model(name, num_classes=5, pretrained=True)


def test_frame_model_ignores_frame_order_and_matches_size():
    torch.manual_seed(0)
    video, frames = create_model("video3d_demo", 8).eval(), create_model("frame2d_demo", 8).eval()
    x = torch.randn(1, 3, 8, 32, 32)
    reverse = x.flip(2)
    assert torch.allclose(frames(x), frames(reverse), atol=1e-5)  # a per-frame model cannot tell time's arrow
    assert not torch.allclose(video(x), video(reverse), atol=1e-5)
    p3, p2 = count_parameters(video), count_parameters(frames)
    assert abs(p3 - p2) / p3 < 0.02


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "UCF-synth"
    return write_synthetic_ucf101(root, classes=CLASSES, videos_per_class=3, groups=3, frames=8, size=32)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_trains_one_tiny_epoch(recipe, tiny_synth, tmp_path):
    cfg = load_config(recipe)
    assert cfg.data.name == "ucf101" and cfg.student.name in MODELS
    overrides = [
        f"data.root={tiny_synth}",
        f"train.out_dir={tmp_path}",
        "data.clip_len=4",
        "data.image_size=32",
        "data.batch_size=4",
        "train.epochs=1",
        "train.device=cpu",
    ]
    assert main(["train", str(recipe), *overrides]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["student"] == cfg.student.name and 0.0 <= results["last"]["top1"] <= 1.0
    report = run_motion_pairs(tmp_path, ["data.num_workers=0"])
    assert (
        report["n"] == 4 and report["motion_n"] == 4 and set(report["pairs"]) == {"SitDown/StandUp", "RunRight/RunLeft"}
    )
    assert math.isclose(report["top1"], results["last"]["top1"])
    assert "RunRight/RunLeft" in format_table([report])


def test_motion_pair_accuracy_by_hand():
    names = ["SitDown", "StandUp", "Wave", "RunRight", "RunLeft"]
    logits = torch.tensor(
        [
            [2.0, 1.0, 5.0, 0.0, 0.0],  # SitDown: 2-way right (2 > 1), 5-way wrong (Wave)
            [1.0, 3.0, 0.0, 0.0, 0.0],  # StandUp: right both ways
            [0.0, 1.0, 0.0, 0.0, 0.0],  # SitDown: wrong both ways
            [0.0, 0.0, 0.0, 1.0, 1.0],  # RunRight: tie goes to the first class, right both ways
            [0.0, 0.0, 9.0, 2.0, 1.0],  # RunLeft: wrong both ways
            [0.0, 0.0, 1.0, 0.0, 0.0],  # Wave: in no pair
        ]
    )
    labels = torch.tensor([0, 1, 0, 3, 4, 2])
    out = motion_pair_accuracy(logits, labels, names)
    assert out["pairs"]["SitDown/StandUp"] == {"accuracy": 2 / 3, "n": 3}
    assert out["pairs"]["RunRight/RunLeft"] == {"accuracy": 0.5, "n": 2}
    assert "WalkSlow/WalkFast" not in out["pairs"]  # its classes are not in `names`
    assert math.isclose(out["mean_pair_accuracy"], (2 / 3 + 0.5) / 2)
    assert math.isclose(out["motion_top1"], 2 / 5) and out["motion_n"] == 5
    assert math.isclose(out["top1"], 3 / 6) and out["n"] == 6
    custom = motion_pair_accuracy(logits, labels, names, pairs=[("Wave", "RunLeft")])
    assert custom["pairs"]["Wave/RunLeft"] == {"accuracy": 0.5, "n": 2}
    with pytest.raises(ActdistillError, match="5 classes"):
        motion_pair_accuracy(logits, labels, names[:4])


def test_last_width_fixes_the_last_stage_only():
    from actdistill.models import create_model

    thin = create_model("video3d_demo", 8, channel_scale=0.5, last_width=128)
    assert [info.channels for info in thin.feature_info] == [8, 16, 32, 128]
    assert thin(torch.zeros(1, 3, 8, 32, 32)).shape == (1, 8)
