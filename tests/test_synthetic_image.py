import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from actdistill.data.stanford40 import Stanford40, read_actions, read_person_box, read_split
from actdistill.data.synthetic_image import SYNTH_ACTIONS, render_image, write_synthetic_stanford40
from actdistill.errors import ActdistillError

SMALL = dict(num_classes=3, train_per_class=2, test_per_class=1, image_size=32)


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_actions_table():
    names = [a for a, _ in SYNTH_ACTIONS]
    assert len(names) == len(set(names)) == 12
    assert all(desc and "\n" not in desc for _, desc in SYNTH_ACTIONS)


def test_layout_matches_stanford40(tmp_path):
    root = write_synthetic_stanford40(tmp_path / "s", **SMALL)
    splits = root / "ImageSplits"
    assert (splits / "actions.txt").read_text().splitlines()[:2] == ["action_name\tnumber_of_images", "applauding\t3"]
    assert read_actions(root) == [a for a, _ in SYNTH_ACTIONS[:3]]
    for action in read_actions(root):
        assert (splits / f"{action}_train.txt").read_text().split() == [f"{action}_001.jpg", f"{action}_002.jpg"]
        assert (splits / f"{action}_test.txt").read_text().split() == [f"{action}_003.jpg"]
    name = read_split(root, "test")[0][0]
    xml = ET.parse(root / "XMLAnnotations" / f"{name[:-4]}.xml").getroot()
    assert xml.findtext("filename") == name
    assert xml.findtext("object/name") == xml.findtext("object/action") == name.rsplit("_", 1)[0]
    assert len(_files(root / "JPEGImages")) == len(_files(root / "XMLAnnotations")) == 9


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = write_synthetic_stanford40(tmp_path / "a", seed=3, **SMALL)
    b = write_synthetic_stanford40(tmp_path / "b", seed=3, workers=2, **SMALL)
    c = write_synthetic_stanford40(tmp_path / "c", seed=4, **SMALL)
    assert _files(a) == _files(b) == _files(c)
    for f in _files(a):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    jpgs = [f for f in _files(a) if f.suffix == ".jpg"]
    assert all((a / f).read_bytes() != (c / f).read_bytes() for f in jpgs)


@pytest.mark.parametrize("action", [a for a, _ in SYNTH_ACTIONS])
def test_person_box_is_the_extent_of_the_drawn_figure(action):
    # clean=True draws only the figure on flat grey, so every changed pixel belongs to the person
    for k in range(4):
        img, (x0, y0, x1, y1) = render_image(action, np.random.default_rng([7, k]), 64, clean=True)
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        ys, xs = np.nonzero(np.abs(img.astype(int) - 128).max(-1) > 6)
        assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1  # nothing drawn outside
        assert xs.min() - x0 <= 1 and x1 - 1 - xs.max() <= 1 and ys.min() - y0 <= 1 and y1 - 1 - ys.max() <= 1
        assert 0.4 * 64 <= y1 - y0 <= 0.92 * 64  # 45-80 % of the image between joint centres, plus the strokes


def test_written_boxes_lie_inside_the_image(tmp_path):
    root = write_synthetic_stanford40(tmp_path / "s", **SMALL)
    for name, _ in read_split(root, "train") + read_split(root, "test"):
        x0, y0, x1, y1 = read_person_box(root, name)
        assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32 and (x1 - x0) * (y1 - y0) >= 16


@pytest.mark.parametrize("kwargs", [dict(num_classes=13), dict(num_classes=0), dict(train_per_class=0)])
def test_bad_arguments_raise_user_errors(tmp_path, kwargs):
    with pytest.raises(ActdistillError):
        write_synthetic_stanford40(tmp_path, **(SMALL | kwargs))


def _pose_features(img: torch.Tensor) -> torch.Tensor:
    """(3, h, w) uint8 person crop -> (361,) mirror-invariant grey-level edge energy on a 20x20 grid."""
    g = F.interpolate(img[None].float().mean(1, keepdim=True) / 255, size=(20, 20), mode="bilinear", antialias=True)
    e = (g[..., 1:, 1:] - g[..., :-1, 1:]).abs() + (g[..., 1:, 1:] - g[..., 1:, :-1]).abs()
    return (e + e.flip(-1)).flatten()  # figures face left or right at random


def test_labels_are_learnable_from_pixels(tmp_path):
    # A linear probe on the person crop: proves the labels live in the pixels and that the XML box finds the person.
    root = write_synthetic_stanford40(tmp_path / "s", num_classes=6, train_per_class=40, test_per_class=20)
    data = {}
    for split in ("train", "test"):
        ds = Stanford40(root, split, crop_person=True)
        x = torch.stack([_pose_features(ds[i]["input"]) for i in range(len(ds))])
        data[split] = (x, torch.tensor(ds.targets))
    (xtr, ytr), (xte, yte) = data["train"], data["test"]
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    torch.manual_seed(0)
    model = torch.nn.Linear(xtr.shape[1], 6)
    opt = torch.optim.Adam(model.parameters(), 1e-2, weight_decay=1e-3)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(xtr), ytr).backward()
        opt.step()
    acc = (model(xte).argmax(1) == yte).float().mean().item()
    assert 0.5 < acc, f"linear probe on the person crops reached only {acc:.2f} (chance 0.17)"
