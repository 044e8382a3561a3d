import logging
import shutil

import pytest
import torch

from actdistill.data.collate import collate_skip_broken
from actdistill.data.stanford40 import Stanford40, read_actions, read_person_box, read_split
from actdistill.data.synthetic_image import SYNTH_ACTIONS, write_synthetic_stanford40
from actdistill.data.transforms import build_image_transform
from actdistill.errors import ActdistillError

N_CLS, N_TRAIN, N_TEST, SIZE = 3, 4, 2, 32


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("s40")
    return write_synthetic_stanford40(
        root, num_classes=N_CLS, train_per_class=N_TRAIN, test_per_class=N_TEST, image_size=SIZE
    )


@pytest.fixture
def copy(tree, tmp_path):
    return shutil.copytree(tree, tmp_path / "copy")


def test_read_actions_skips_header(tree):
    assert read_actions(tree) == [a for a, _ in SYNTH_ACTIONS[:N_CLS]]


@pytest.mark.parametrize("split, per_class", [("train", N_TRAIN), ("test", N_TEST)])
def test_read_split_counts_and_labels(tree, split, per_class):
    samples = read_split(tree, split)
    actions = read_actions(tree)
    assert len(samples) == N_CLS * per_class
    assert sorted({label for _, label in samples}) == list(range(N_CLS))
    for name, label in samples:
        assert name.startswith(actions[label] + "_")
        assert (tree / "JPEGImages" / name).is_file()
    assert not {n for n, _ in read_split(tree, "train")} & {n for n, _ in read_split(tree, "test")}


def test_read_split_tolerates_crlf_and_trailing_space(copy):
    expected = read_split(copy, "train")
    names = [n for n, _ in expected]
    (copy / "ImageSplits" / "train.txt").write_bytes("".join(f"{n}  \r\n" for n in names).encode() + b"\r\n")
    actions = (copy / "ImageSplits" / "actions.txt").read_text().splitlines()
    (copy / "ImageSplits" / "actions.txt").write_bytes("".join(f"{a} \r\n" for a in actions).encode())
    assert read_split(copy, "train") == expected


def test_class_index_follows_actions_file_order(copy):
    path = copy / "ImageSplits" / "actions.txt"
    header, *rows = path.read_text().splitlines()
    path.write_text("\n".join([header, *reversed(rows)]) + "\n")
    for name, label in read_split(copy, "test"):
        assert name.startswith(SYNTH_ACTIONS[N_CLS - 1 - label][0] + "_")


def test_missing_split_file_names_the_path(copy):
    (copy / "ImageSplits" / "train.txt").unlink()
    with pytest.raises(ActdistillError, match="ImageSplits/train.txt not found") as err:
        read_split(copy, "train")
    assert str(copy / "ImageSplits" / "train.txt") in str(err.value)
    assert "data.root" in str(err.value)


def test_unknown_action_names_file_and_line(copy):
    path = copy / "ImageSplits" / "test.txt"
    lines = path.read_text().splitlines()
    lines.insert(2, "swimming_007.jpg")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ActdistillError, match=r"test\.txt:3: action 'swimming'"):
        read_split(copy, "test")


def test_bad_split_name_suggests(tree):
    with pytest.raises(ActdistillError, match="Did you mean: train"):
        read_split(tree, "trian")


def test_person_box_is_inside_the_image(tree):
    for name, _ in read_split(tree, "train"):
        x0, y0, x1, y1 = read_person_box(tree, name)
        assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
        assert y1 - y0 >= 0.3 * SIZE  # the figure is 45-80% of the image tall


def test_person_box_is_the_union_of_objects(tmp_path):
    (tmp_path / "XMLAnnotations").mkdir()
    box = "<object><bndbox><xmax>{}</xmax><xmin>{}</xmin><ymax>{}</ymax><ymin>{}</ymin></bndbox></object>"
    xml = f"<annotation>{box.format(50, 10, 60, 20)}{box.format(70.0, 30, 40, 5)}</annotation>"
    (tmp_path / "XMLAnnotations" / "a_001.xml").write_text(xml)
    assert read_person_box(tmp_path, "a_001.jpg") == (10, 5, 70, 60)


def test_dataset_items_and_transform(tree):
    ds = Stanford40(tree, "test")
    assert len(ds) == N_CLS * N_TEST and ds.classes == read_actions(tree)
    assert ds.targets == [label for _, label in ds.samples]
    item = ds[1]
    assert set(item) == {"input", "label", "index"} and item["index"] == 1 and item["label"] == ds.targets[1]
    assert item["input"].dtype == torch.uint8 and item["input"].shape == (3, SIZE, SIZE)
    ds_t = Stanford40(tree, "train", transform=build_image_transform(True, 24, (0.5,) * 3, (0.25,) * 3))
    batch = collate_skip_broken([ds_t[i] for i in range(3)])
    assert batch["input"].shape == (3, 3, 24, 24) and batch["input"].dtype == torch.float32
    assert batch["label"].tolist() == ds_t.targets[:3] and batch["skipped"] == 0


def test_init_never_opens_images(copy, monkeypatch):
    """Init only lists (and stats) the images: files of garbage bytes are accepted, nothing is opened or decoded."""
    import builtins

    import PIL.Image

    import actdistill.data.stanford40 as s40

    for jpg in (copy / "JPEGImages").iterdir():
        jpg.write_bytes(b"not a jpeg at all" * 3)
    images = str(copy / "JPEGImages")
    real_open = builtins.open
    opened = []

    def no_image_open(file, *args, **kwargs):
        if str(file).startswith(images):
            opened.append(file)
        return real_open(file, *args, **kwargs)

    def never(*args, **kwargs):
        raise AssertionError("Stanford40.__init__ decoded an image")

    monkeypatch.setattr(builtins, "open", no_image_open)
    monkeypatch.setattr(PIL.Image, "open", never)
    monkeypatch.setattr(s40, "load_image", never)
    ds = Stanford40(copy, "train")
    assert len(ds) == N_CLS * N_TRAIN and not opened
    monkeypatch.undo()
    assert ds[0] is None  # reading the garbage is what fails, and only then (skipped with a warning)


def test_missing_images_are_dropped_at_init_with_a_warning(copy, caplog):
    ds = Stanford40(copy, "train")
    gone = ds.samples[1][0]
    (copy / "JPEGImages" / gone).unlink()
    with caplog.at_level(logging.WARNING, logger="actdistill"):
        fewer = Stanford40(copy, "train")
    assert len(fewer) == len(ds) - 1 and gone not in [name for name, _ in fewer.samples]
    assert fewer.targets == [label for _, label in fewer.samples]
    assert "1 of 12 listed images are missing" in caplog.text and gone in caplog.text
    shutil.rmtree(copy / "JPEGImages")
    with pytest.raises(ActdistillError, match="none of the 12 images listed"):
        Stanford40(copy, "train")


def test_corrupt_jpeg_is_skipped_with_a_warning(copy, caplog):
    ds = Stanford40(copy, "train")
    bad = ds.image_path(2)
    bad.write_bytes(b"this is not a jpeg" * 10)
    with caplog.at_level(logging.WARNING, logger="actdistill.data"):
        assert ds[2] is None
    assert bad.name in caplog.text
    (copy / "JPEGImages" / ds.samples[3][0]).unlink()  # a missing file is skipped the same way
    assert ds[3] is None
    batch = collate_skip_broken([ds[i] for i in range(3)])
    assert batch["skipped"] == 1 and batch["index"].tolist() == [0, 1]


def test_all_broken_batch_has_only_skipped():
    assert collate_skip_broken([None, None]) == {"skipped": 2}


def test_crop_person_gives_the_box_size(tree):
    ds = Stanford40(tree, "train", crop_person=True)
    for i in range(3):
        x0, y0, x1, y1 = read_person_box(tree, ds.samples[i][0])
        assert ds[i]["input"].shape == (3, y1 - y0, x1 - x0)


def test_crop_person_without_annotations_is_a_clear_error(copy):
    shutil.rmtree(copy / "XMLAnnotations")
    with pytest.raises(ActdistillError, match="crop_person"):
        Stanford40(copy, "train", crop_person=True)


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(ActdistillError, match="data.root"):
        Stanford40(tmp_path / "nope")
