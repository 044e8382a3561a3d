"""Two-stream evaluation: an RGB and a flow run fused late (`actdistill eval RGB --fuse-flow FLOW`)."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY_RUN
from PIL import Image

from actdistill.cli import main
from actdistill.config import load_config
from actdistill.data.build import DATASETS, build_transforms
from actdistill.data.synthetic_video import write_synthetic_ucf101
from actdistill.engine.evaluate import evaluate_fused
from actdistill.errors import ActdistillError
from actdistill.models import create_model
from actdistill.utils.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def two_stream_runs(tmp_path_factory):
    """A tiny UCF101-layout set with flow frame folders, and one RGB and one flow R3D run trained 1 epoch on it."""
    tmp = tmp_path_factory.mktemp("two_stream")
    root = write_synthetic_ucf101(tmp / "UCF", num_classes=3, videos_per_class=3, groups=3, frames=12, size=32)
    rng = np.random.default_rng(0)
    flow_root = tmp / "flow"
    for video in sorted(root.glob("*/*.avi")):
        folder = flow_root / video.parent.name / video.stem
        folder.mkdir(parents=True)
        for k in range(1, 12):  # N − 1 flow pairs, the layout `actdistill data flow` writes
            for axis in "xy":
                Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(
                    folder / f"flow_{axis}_{k:05d}.jpg"
                )
    common = [f"data.root={root}", "data.name=ucf101", "data.clip_len=4", "data.image_size=32", "data.batch_size=4",
              "student.name=r3d_10", "student.kwargs={channel_scale: 0.125}", *TINY_RUN[1:-1]]  # fmt: skip
    assert main(["train", *common, f"train.out_dir={tmp / 'rgb'}"]) == 0
    flow = [
        "data.modality=flow",
        f"data.flow_root={flow_root}",
        "student.kwargs={channel_scale: 0.125, in_channels: 2}",
    ]
    # The flow run gets its own folder: the flow frames' folder is data, never a run folder.
    assert main(["train", *common, *flow, f"train.out_dir={tmp / 'flow_run'}"]) == 0
    assert not (flow_root / "checkpoints").exists()
    return tmp / "rgb" / "checkpoints" / "last.pt", tmp / "flow_run" / "checkpoints" / "last.pt", root, flow_root


def _by_hand(rgb_ckpt, flow_ckpt, root, flow_root, fuse):
    """Top-1 of the fused scores computed sample by sample from the two models, without LateFusion or `evaluate`."""
    cfg = load_config(None, [f"data.root={root}", "data.name=ucf101", "data.clip_len=4", "data.image_size=32",
                             "data.modality=rgb+flow", f"data.flow_root={flow_root}"])  # fmt: skip
    test, classes = DATASETS.get("ucf101")(cfg.data, "test", None)
    models = []
    for path in (rgb_ckpt, flow_ckpt):
        ckpt = load_checkpoint(path)
        model = create_model(ckpt["model"]["name"], len(classes), **ckpt["model"]["kwargs"])
        model.load_state_dict(ckpt["student"])
        models.append(model.eval())
    test.transform = build_transforms(cfg.data, models[0].pretrained_cfg.mean, models[0].pretrained_cfg.std)[1]
    correct = 0
    with torch.no_grad():
        for i in range(len(test)):
            sample = test[i]
            z_rgb = models[0](sample["input"].unsqueeze(0))
            z_flow = models[1](sample["input_flow"].unsqueeze(0))
            correct += int(fuse(z_rgb, z_flow).argmax().item() == sample["label"])
    return correct / len(test)


def test_fused_accuracy_matches_a_hand_fusion(two_stream_runs):
    rgb, flow, root, flow_root = two_stream_runs
    report = evaluate_fused(rgb, flow)
    mean_softmax = _by_hand(rgb, flow, root, flow_root, lambda a, b: a.softmax(-1) + b.softmax(-1))
    assert report["top1"] == pytest.approx(mean_softmax)
    assert report["fusion"]["mode"] == "softmax" and report["num_samples"] == 3
    rgb_only = evaluate_fused(rgb, flow, mode="logits", rgb_weight=1.0)
    assert rgb_only["top1"] == pytest.approx(_by_hand(rgb, flow, root, flow_root, lambda a, b: a))


def test_fused_cli_and_wrong_order(two_stream_runs, tmp_path, capsys):
    rgb, flow, _, _ = two_stream_runs
    out = tmp_path / "fused.json"
    assert main(["eval", str(rgb), "--fuse-flow", str(flow), "--fusion", "p2", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["fusion"]["mode"] == "p2"
    with pytest.raises(ActdistillError, match="needs an RGB run .* and a flow run"):
        evaluate_fused(flow, rgb)


def test_data_index_and_flow_commands(two_stream_runs, tmp_path, capsys):
    _, _, root, _ = two_stream_runs
    shutil.rmtree(root / ".actdistill")  # the manifest cache of a writable root (rebuilt on demand)
    assert main(["data", "index", "data.name=ucf101", f"data.root={root}", "data.num_workers=1"]) == 0
    out = capsys.readouterr().out
    assert "ucf101 train: 6 videos indexed, 0 skipped, 3 classes" in out and "ucf101 test: 3 videos" in out
    assert len(list((root / ".actdistill").glob("*.jsonl"))) == 2  # train and test manifests
    pytest.importorskip("cv2", reason="OpenCV is optional: pip install opencv-contrib-python-headless")
    assert main(["data", "flow", str(root), str(tmp_path / "flow"), "--method", "farneback"]) == 0
    assert len(list((tmp_path / "flow").rglob("flow_x_00001.jpg"))) == 9
