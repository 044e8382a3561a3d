"""Split parsers on the real UCF101/HMDB51 files, their error messages, and custom path,label lists."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from actdistill.data import hmdb51, ucf101
from actdistill.data.lists import read_list, scan_class_folders, validate_list
from actdistill.errors import ActdistillError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
UCF = SHARED / "ucf101_splits"
HMDB = SHARED / "hmdb51_splits"
needs_ucf = pytest.mark.skipif(not UCF.is_dir(), reason=f"real UCF101 split files not found at {UCF}")
needs_hmdb = pytest.mark.skipif(not HMDB.is_dir(), reason=f"real HMDB51 split files not found at {HMDB}")


@needs_ucf
def test_ucf101_real_split1_counts_and_labels():
    classes = ucf101.read_classes(UCF)
    assert len(classes) == 101 and classes[0] == "ApplyEyeMakeup" and classes[-1] == "YoYo"
    train, test = ucf101.read_split(UCF, 1, "train"), ucf101.read_split(UCF, 1, "test")
    assert (len(train), len(test)) == (9537, 3783)
    assert train[0] == ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0)
    assert test[0] == ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", 0)  # label derived from the folder
    assert all("\r" not in p and " " not in p for p, _ in train + test)
    assert set(Counter(label for _, label in train)) == set(range(101))
    # The real folder name is kept even though the file names spell HandStand.
    assert ("HandstandPushups/v_HandStandPushups_g01_c01.avi", classes.index("HandstandPushups")) in test


@needs_ucf
@pytest.mark.parametrize("split", [1, 2, 3])
def test_ucf101_train_and_test_are_group_disjoint(split):
    train, test = ucf101.read_split(UCF, split, "train"), ucf101.read_split(UCF, split, "test")
    assert len(train) + len(test) == 13320
    assert not {p for p, _ in train} & {p for p, _ in test}
    assert not {ucf101.group_of(p) for p, _ in train} & {ucf101.group_of(p) for p, _ in test}


@needs_hmdb
def test_hmdb51_real_split_counts():
    classes = hmdb51.read_classes(HMDB)
    assert len(classes) == 51 and classes == sorted(classes) and "brush_hair" in classes
    for split in (1, 2, 3):
        train, test = hmdb51.read_split(HMDB, split, "train"), hmdb51.read_split(HMDB, split, "test")
        assert set(Counter(lab for _, lab in train).values()) == {70}
        assert set(Counter(lab for _, lab in test).values()) == {30}
        assert not {p for p, _ in train} & {p for p, _ in test}
    assert train[0][0].startswith("brush_hair/") and train[0][0].endswith(".avi") and train[0][1] == 0


def _write_ucf(tmp: Path, train: str, test: str = "") -> Path:
    ann = tmp / "ucfTrainTestlist"
    ann.mkdir()
    (ann / "classInd.txt").write_bytes(b"1 Jump\r\n2 HandstandPushups\r\n")
    (ann / "trainlist01.txt").write_bytes(train.encode())
    (ann / "testlist01.txt").write_bytes(test.encode())
    return ann


def test_ucf101_quirks_and_errors(tmp_path):
    ann = _write_ucf(
        tmp_path,
        "Jump/v_Jump_g08_c01.avi 1  \r\nHandStandPushups/v_HandStandPushups_g08_c01.avi 2\r\n\r\n",
        "handstandpushups/v_HandStandPushups_g01_c01.avi\r\n",
    )
    assert ucf101.read_split(ann, 1, "train") == [
        ("Jump/v_Jump_g08_c01.avi", 0),
        ("HandstandPushups/v_HandStandPushups_g08_c01.avi", 1),
    ]
    assert ucf101.read_split(ann, 1, "test") == [("HandstandPushups/v_HandStandPushups_g01_c01.avi", 1)]
    (ann / "testlist01.txt").write_bytes(b"Jump/v_Jump_g01_c01.avi\r\nSwim/v_Swim_g01_c01.avi\r\n")
    with pytest.raises(ActdistillError, match=r"testlist01\.txt:2: class folder 'Swim' is not in .*classInd\.txt"):
        ucf101.read_split(ann, 1, "test")
    (ann / "trainlist01.txt").write_bytes(b"Jump/v_Jump_g08_c01.avi 2\r\n")
    with pytest.raises(ActdistillError, match=r"trainlist01\.txt:1: label 2 disagrees"):
        ucf101.read_split(ann, 1, "train")
    with pytest.raises(ActdistillError, match=r"trainlist02\.txt not found; expected the official layout ucfTrain"):
        ucf101.read_split(ann, 2, "train")


def test_hmdb51_errors(tmp_path):
    with pytest.raises(ActdistillError, match="not found; expected testTrainMulti_7030_splits"):
        hmdb51.read_split(tmp_path / "nope")
    with pytest.raises(ActdistillError, match=r"no HMDB51 split files '\*_test_split1\.txt'"):
        hmdb51.read_split(tmp_path)
    (tmp_path / "kick_ball_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    (tmp_path / "clap_test_split1.txt").write_text("d.avi 2 \ne.avi 3 \n")
    with pytest.raises(ActdistillError, match=r"clap_test_split1\.txt:2: expected '<video>\.avi <0\|1\|2>'"):
        hmdb51.read_split(tmp_path, 1, "test")
    (tmp_path / "clap_test_split1.txt").write_text("d.avi 2 \n")
    assert hmdb51.read_classes(tmp_path) == ["clap", "kick_ball"]
    assert hmdb51.read_split(tmp_path, 1, "test") == [("clap/d.avi", 0), ("kick_ball/b.avi", 1)]
    assert hmdb51.read_split(tmp_path, 1, "train") == [("kick_ball/a.avi", 1)]


def test_list_names_indices_and_header(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text("path,label\n# comment\nrun/a.mp4,run\n\nwave/b.mp4,wave\nrun/c.mp4,run\n")
    assert read_list(f) == ([("run/a.mp4", 0), ("wave/b.mp4", 1), ("run/c.mp4", 0)], ["run", "wave"])
    t = tmp_path / "test.tsv"
    t.write_text("x y.mp4\t1\nz.mp4\t0\n")
    assert read_list(t, classes=["run", "wave"]) == ([("x y.mp4", 1), ("z.mp4", 0)], ["run", "wave"])
    w = tmp_path / "list.txt"
    w.write_text("a.avi 2\nb.avi 0\n")
    assert read_list(w) == ([("a.avi", 2), ("b.avi", 0)], ["0", "1", "2"])


def test_list_validator_names_file_and_line(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("a.mp4,run\nb.mp4\na.mp4,run\nc.mp4,3\n")
    problems = validate_list(f)
    assert any(p.startswith(f"{f}:2: expected 2 fields") for p in problems)
    assert any(p.startswith(f"{f}:3: 'a.mp4' already listed on line 1") for p in problems)
    assert any(p.startswith(f"{f}:4: mixes class names and class indices") for p in problems)
    with pytest.raises(ActdistillError, match=r"bad\.csv:2: expected 2 fields .* more problems"):
        read_list(f)
    g = tmp_path / "g.csv"
    g.write_text("a.mp4,run\nb.mp4,swim\n")
    with pytest.raises(ActdistillError, match=r"g\.csv:2: unknown class 'swim'"):
        read_list(g, classes=["run", "wave"])
    g.write_text("a.mp4,0\nb.mp4,5\n")
    with pytest.raises(ActdistillError, match=r"g\.csv:2: label 5 outside 0\.\.1"):
        read_list(g, classes=["run", "wave"])
    (tmp_path / "a.mp4").write_bytes(b"")
    assert validate_list(g, root=tmp_path, classes=["a", "b", "c", "d", "e", "f"]) == [
        f"{g}:2: 'b.mp4' not found under {tmp_path}; fix the path or data.root"
    ]


def test_class_folders(tmp_path):
    for rel in ("wave/a.avi", "wave/notes.txt", "run/b.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "run" / "c").mkdir()
    (tmp_path / "run" / "c" / "img_00001.jpg").write_bytes(b"")
    assert scan_class_folders(tmp_path) == ([("run/b.mp4", 0), ("run/c", 0), ("wave/a.avi", 1)], ["run", "wave"])
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ActdistillError, match="no videos found under .*empty; expected"):
        scan_class_folders(tmp_path / "empty")
    with pytest.raises(ActdistillError, match="is not a folder"):
        scan_class_folders(tmp_path / "missing")
