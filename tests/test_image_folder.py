"""Image folders (torchvision's ImageFolder layout): the synthetic writer, the loader, its errors, and a tiny run."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
import torchvision
from conftest import TINY_RUN

from actdistill.config import load_config
from actdistill.data.build import build_split
from actdistill.data.collate import collate_skip_broken
from actdistill.data.image_folder import ImageFolder, read_classes
from actdistill.data.synthetic_image import SYNTH_ACTIONS, write_synthetic_stanford40
from actdistill.data.transforms import build_image_transform
from actdistill.engine.evaluate import evaluate_checkpoint
from actdistill.engine.fit import fit
from actdistill.errors import ActdistillError

N_CLS, N_TRAIN, N_TEST, SIZE = 3, 4, 2, 32
ACTIONS = sorted(a for a, _ in SYNTH_ACTIONS[:N_CLS])  # applauding, pointing, waving_hands


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders") / "synth"
    return write_synthetic_stanford40(
        root, num_classes=N_CLS, train_per_class=N_TRAIN, test_per_class=N_TEST, image_size=SIZE, layout="image_folder"
    )


@pytest.fixture
def copy(tree, tmp_path):
    return shutil.copytree(tree, tmp_path / "copy")


def test_writer_layout_and_bytes(tree, tmp_path):
    assert sorted(p.name for p in tree.iterdir()) == ["train", "val"]
    for split, per_class in (("train", N_TRAIN), ("val", N_TEST)):
        assert sorted(p.name for p in (tree / split).iterdir()) == ACTIONS
        for action in ACTIONS:
            assert len(list((tree / split / action).glob(f"{action}_*.jpg"))) == per_class
    s40 = write_synthetic_stanford40(
        tmp_path / "s40", num_classes=N_CLS, train_per_class=N_TRAIN, test_per_class=N_TEST, image_size=SIZE
    )
    for image in (s40 / "JPEGImages").iterdir():  # the same images, only the layout differs
        action = image.stem.rsplit("_", 1)[0]
        split = "train" if int(image.stem.rsplit("_", 1)[1]) <= N_TRAIN else "val"
        assert (tree / split / action / image.name).read_bytes() == image.read_bytes()
    with pytest.raises(ActdistillError, match="layout must be one of stanford40, image_folder"):
        write_synthetic_stanford40(tmp_path / "x", layout="imagenet")


def test_items_and_splits(tree):
    train, test = ImageFolder(tree, "train"), ImageFolder(tree, "test")
    assert train.classes == test.classes == ACTIONS == read_classes(tree)
    assert len(train) == N_CLS * N_TRAIN and len(test) == N_CLS * N_TEST and test.folder == tree / "val"
    for ds in (train, test):
        for (rel, label), target in zip(ds.samples, ds.targets, strict=True):
            assert rel.split("/")[0] == ds.classes[label] and target == label
    item = test[3]
    assert set(item) == {"input", "label", "index"} and item["index"] == 3 and item["label"] == test.targets[3]
    assert item["input"].dtype == torch.uint8 and item["input"].shape == (3, SIZE, SIZE)
    assert len(ImageFolder(tree, "val")) == len(test)  # "val" names the held-out split too
    tf = ImageFolder(tree, "train", transform=build_image_transform(True, 24, (0.5,) * 3, (0.25,) * 3))
    batch = collate_skip_broken([tf[i] for i in range(3)])
    assert batch["input"].shape == (3, 3, 24, 24) and batch["input"].dtype == torch.float32 and batch["skipped"] == 0


def test_same_classes_and_order_as_torchvision(copy):
    # Case matters in torchvision's order (plain sorted): "Zebra" sorts before "applauding".
    (copy / "train" / "Zebra").mkdir()
    (copy / "val" / "Zebra").mkdir()
    for split in ("train", "val"):
        shutil.copy(next((copy / split / ACTIONS[0]).iterdir()), copy / split / "Zebra" / "z.PNG.jpg")
    (copy / "train" / ACTIONS[1] / "nested").mkdir()  # images in sub-folders belong to the class too
    shutil.copy(next((copy / "train" / ACTIONS[1]).glob("*.jpg")), copy / "train" / ACTIONS[1] / "nested" / "a.JPEG")
    ours = ImageFolder(copy, "train")
    ref = torchvision.datasets.ImageFolder(str(copy / "train"))
    assert ours.classes == ref.classes and ours.classes[0] == "Zebra"
    assert [(str(ours.folder / rel), label) for rel, label in ours.samples] == ref.samples


def test_test_folder_when_there_is_no_val(copy):
    (copy / "val").rename(copy / "test")
    ds = ImageFolder(copy, "test")
    assert ds.folder == copy / "test" and len(ds) == N_CLS * N_TEST


def test_missing_root(tmp_path):
    with pytest.raises(ActdistillError, match=r"root .*nowhere does not exist; set data.root"):
        ImageFolder(tmp_path / "nowhere", "train")


def test_no_train_folder(copy):
    shutil.rmtree(copy / "train")
    with pytest.raises(ActdistillError, match=r"has no train/ folder.*move the training class folders into"):
        ImageFolder(copy, "test")


def test_no_val_or_test_folder(copy):
    shutil.rmtree(copy / "val")
    with pytest.raises(ActdistillError, match=r"has neither val/ nor test/.*put the held-out images in .*val"):
        ImageFolder(copy, "train")


@pytest.mark.parametrize("only_in", ["train", "val"])
def test_class_in_one_split_only(copy, only_in):
    other = "val" if only_in == "train" else "train"
    shutil.rmtree(copy / other / ACTIONS[1])
    with pytest.raises(ActdistillError) as err:
        ImageFolder(copy, "train")
    message = str(err.value)
    assert f"class '{ACTIONS[1]}' has a folder in {copy / only_in} but not in {copy / other}" in message
    assert f"add {copy / other / ACTIONS[1]}/ or remove {copy / only_in / ACTIONS[1]}/" in message
    assert "\n" not in message


def test_empty_class_folder(copy):
    folder = copy / "val" / ACTIONS[2]
    shutil.rmtree(folder)
    folder.mkdir()
    with pytest.raises(ActdistillError, match=rf"class folder {folder} has no images \(no files\); add .jpg/"):
        ImageFolder(copy, "test")
    (folder / "notes.txt").write_text("no images here")
    with pytest.raises(ActdistillError, match=r"has no images \(only 1 file with an unsupported extension\)"):
        ImageFolder(copy, "test")


def test_unsupported_files_are_ignored_and_counted(copy, caplog):
    (copy / "train" / ACTIONS[0] / "labels.csv").write_text("a,b\n")
    (copy / "train" / ACTIONS[1] / "clip.mp4").write_bytes(b"\0")
    (copy / "train" / ACTIONS[1] / "README").write_text("x")
    (copy / "train" / ACTIONS[1] / ".DS_Store").write_bytes(b"\0")  # hidden: skipped silently
    (copy / "train" / ".ipynb_checkpoints").mkdir()  # hidden: not a class
    with caplog.at_level(logging.WARNING, logger="actdistill"):
        ds = ImageFolder(copy, "train")
    assert len(ds) == N_CLS * N_TRAIN and ds.classes == ACTIONS
    assert "ignored 3 files with unsupported extensions" in caplog.text
    assert "(no extension), .csv, .mp4" in caplog.text


def test_corrupt_image_is_skipped_and_counted(copy, caplog):
    ds = ImageFolder(copy, "train")
    ds.image_path(1).write_bytes(b"this is not a jpeg" * 10)
    with caplog.at_level(logging.WARNING, logger="actdistill"):
        assert ds[1] is None
    assert "skipping unreadable image" in caplog.text and ds.samples[1][0] in caplog.text
    batch = collate_skip_broken([ds[i] for i in range(3)])
    assert batch["skipped"] == 1 and batch["input"].shape[0] == 2


def test_bad_split_and_crop_person(tree):
    with pytest.raises(ActdistillError, match="Did you mean: train"):
        ImageFolder(tree, "trian")
    cfg = load_config(None, ["data.name=image_folder", f"data.root={tree}", "data.crop_person=true"])
    with pytest.raises(ActdistillError, match="crop_person"):
        build_split(cfg.data, "train", None)


def test_train_one_epoch_and_evaluate(tree, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(
        None, [*TINY_RUN, "data.batch_size=4", "data.name=image_folder", f"data.root={tree}", f"train.out_dir={out}"]
    )
    results = fit(cfg)
    saved = json.loads((out / "results.json").read_text())
    assert saved["class_names"] == ACTIONS and len(saved["confusion_matrix"]) == N_CLS
    assert len(results["history"]) == 1 and results["history"][0]["train"]["skipped"] == 0
    report = evaluate_checkpoint(out / "checkpoints" / "last.pt")
    assert report["num_samples"] == N_CLS * N_TEST and list(report["per_class_ap"]) == ACTIONS
    assert report["top1"] == pytest.approx(results["last"]["top1"])
