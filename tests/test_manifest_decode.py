"""Decoding (real sample clip, frame folders, seek vs decode-all, damaged files), manifests and video datasets."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import actdistill.data.video_dataset  # noqa: F401  (registers the video datasets)
from actdistill.data import decode, manifest
from actdistill.data.collate import collate_skip_broken
from actdistill.data.decode import VideoDecodeError, count_folder_frames, read_frames
from actdistill.data.manifest import (
    VideoRecord,
    build_manifest,
    cached_manifest,
    load_manifest,
    probe_video,
    save_manifest,
)
from actdistill.data.synthetic_video import encode_video, render_video, write_frame_folders, write_synthetic_ucf101
from actdistill.data.ucf101 import read_split
from actdistill.data.video_dataset import VideoClipDataset
from actdistill.errors import ActdistillError
from actdistill.registry import DATASETS

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "sample_videos"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"real sample clip not found at {SAMPLE}")
CLASSES = ["SitDown", "StandUp", "Wave"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ucf") / "UCF-101"
    return write_synthetic_ucf101(root, classes=CLASSES, videos_per_class=3, groups=3, frames=12, size=32)


@pytest.fixture(scope="module")
def keyframed(tmp_path_factory) -> dict[str, Path]:
    """60-frame clips with a keyframe every 8 frames, as MPEG-4/AVI and H.264/MP4 (no B-frames)."""
    out = tmp_path_factory.mktemp("keyframed")
    frames = render_video("RunRight", np.random.default_rng(0), 60, 32)
    paths = {}
    for ext in ("avi", "mp4"):
        encode_video(frames, out / f"clip.{ext}", gop=8)
        paths[ext] = out / f"clip.{ext}"
    return paths


@needs_sample
def test_real_sample_decodes_and_seek_matches_sequential():
    path = SAMPLE / "mmaction2_test.avi"
    assert probe_video(path) == (164, 25.0)
    everything = read_frames(path, range(164), strategy="sequential")
    assert everything.shape == (164, 3, 240, 320) and everything.dtype == torch.uint8
    idx = [100, 50, 50, 163, 7]  # unsorted, repeated
    assert torch.equal(read_frames(path, idx, strategy="seek"), everything[idx])  # falls back: B-frame AVI
    assert torch.equal(read_frames(path, idx), everything[idx])


@pytest.mark.parametrize("ext", ["avi", "mp4"])
def test_seek_equals_decode_all(keyframed, ext, monkeypatch):
    path = keyframed[ext]
    everything = read_frames(path, range(60), strategy="sequential")
    assert everything.shape == (60, 3, 32, 32)
    cases = [list(range(45, 53)), [59, 30, 30, 41], [17], [1, 2]]
    seq = [read_frames(path, idx, strategy="sequential") for idx in cases]

    def no_fallback(*args, **kwargs):
        raise AssertionError("seek fell back to decoding from the start")

    monkeypatch.setattr(decode, "_decode_from_start", no_fallback)
    for idx, expected in zip(cases, seq):
        got = read_frames(path, idx, strategy="seek")
        assert torch.equal(got, expected) and torch.equal(got, everything[idx])


@pytest.mark.parametrize("ext", ["avi", "mp4"])
def test_reused_reformatter_gives_the_per_frame_conversion(keyframed, ext):
    """`read_frames` converts through one reused swscale context per video: same pixels as converting each frame
    on its own (PyAV's `frame.reformat`), and every returned frame is its own copy (no reused output buffer)."""
    import av

    path = keyframed[ext]
    with av.open(str(path)) as container:
        ref = np.stack([f.reformat(format="rgb24").to_ndarray() for f in container.decode(video=0)])
    idx = [3, 4, 5, 40, 41, 4]
    for strategy in ("seek", "sequential"):
        got = read_frames(path, idx, strategy=strategy)
        assert np.array_equal(got.permute(0, 2, 3, 1).numpy(), ref[idx])
    assert not np.shares_memory(got[0].numpy(), got[1].numpy())


@needs_sample
def test_real_frame_folder_rgb_and_flow():
    folder = SAMPLE / "rawframes"
    assert count_folder_frames(folder) == 10 and count_folder_frames(folder, "flow") == 5
    rgb = read_frames(folder, [0, 3, 3, 9])
    assert rgb.shape == (4, 3, 240, 320) and torch.equal(rgb[1], rgb[2])
    video = read_frames(SAMPLE / "mmaction2_test.avi", [0, 3])
    assert (rgb[:2].float() - video.float()).abs().mean() < 3  # the folder holds the clip's first frames
    flow = read_frames(folder, [4, 0], modality="flow")  # mmaction2's x_00001.jpg / y_00001.jpg
    assert flow.shape == (2, 2, 240, 320)
    with pytest.raises(VideoDecodeError, match="img_00011.jpg missing"):
        read_frames(folder, [10])


@needs_sample
def test_damaged_videos_raise_decode_error(tmp_path):
    data = (SAMPLE / "mmaction2_test.avi").read_bytes()
    half = tmp_path / "half.avi"
    half.write_bytes(data[: len(data) // 2])
    assert read_frames(half, [0, 5]).shape == (2, 3, 240, 320)  # the surviving start still decodes
    with pytest.raises(VideoDecodeError, match=r"half\.avi: only \d+ frames decodable but frame 150"):
        read_frames(half, [0, 150])
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty file"):
        read_frames(empty, [0])
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(2000))
    with pytest.raises(VideoDecodeError, match="junk.mp4"):
        read_frames(junk, [0])
    with pytest.raises(VideoDecodeError, match="file not found"):
        read_frames(tmp_path / "missing.avi", [0])


def test_manifest_skips_and_counts_unreadable(tree, tmp_path, caplog):
    entries = read_split(tree / "ucfTrainTestlist", 1, "train")
    root = tmp_path / "root"
    shutil.copytree(tree, root)
    (root / "Wave" / "v_Wave_g09_c01.avi").write_bytes(b"")
    bad = entries + [("Wave/v_Wave_g09_c01.avi", 2), ("Wave/v_Wave_g09_c02.avi", 2)]
    with caplog.at_level(logging.WARNING, logger="actdistill.data"):
        records = build_manifest(root, bad, workers=2, progress=False)
    assert len(records) == len(entries) and all(r.num_frames == 12 and r.fps == 25.0 for r in records)
    assert [rel for rel, _ in records.skipped] == ["Wave/v_Wave_g09_c01.avi", "Wave/v_Wave_g09_c02.avi"]
    assert "skipped 2 of" in caplog.text and "v_Wave_g09_c01.avi (empty file)" in caplog.text
    with pytest.raises(ActdistillError, match="none of the 1 listed videos"):
        build_manifest(root, [("Nope/v.avi", 0)], progress=False)


def test_manifest_cache_is_reused_and_invalidated(tree, tmp_path, monkeypatch):
    ann = tree / "ucfTrainTestlist"
    split_file = tmp_path / "trainlist01.txt"
    shutil.copy(ann / "trainlist01.txt", split_file)
    entries = read_split(ann, 1, "train")
    cache = tmp_path / "cache" / "m.jsonl"
    first = cached_manifest(tree, entries, cache, [split_file], progress=False)
    assert cache.is_file() and len(first) == len(entries)

    def boom(*args, **kwargs):
        raise AssertionError("probed although the cache is fresh")

    monkeypatch.setattr(manifest, "probe", boom)
    assert cached_manifest(tree, entries, cache, [split_file], progress=False) == first
    st = split_file.stat()
    os.utime(split_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the split file changed: rebuild
    with pytest.raises(AssertionError, match="probed"):
        cached_manifest(tree, entries, cache, [split_file], progress=False)
    with pytest.raises(AssertionError, match="probed"):
        cached_manifest(tree, entries[:-1], cache, progress=False)


def test_manifest_roundtrip(tmp_path):
    m = manifest.Manifest([VideoRecord("a/b.avi", 3, 40, 29.97)], [("a/c.avi", "empty file")])
    save_manifest(m, tmp_path / "m.jsonl", {"k": 1})
    back = load_manifest(tmp_path / "m.jsonl", {"k": 1})
    assert back == m and back.skipped == [("a/c.avi", "empty file")]
    assert load_manifest(tmp_path / "m.jsonl", {"k": 2}) is None
    assert load_manifest(tmp_path / "missing.jsonl") is None


@needs_sample
def test_dataset_skips_broken_video_with_warning(tmp_path, caplog):
    data = (SAMPLE / "mmaction2_test.avi").read_bytes()
    (tmp_path / "ok.avi").write_bytes(data)
    (tmp_path / "half.avi").write_bytes(data[: len(data) // 2])
    records = [VideoRecord("ok.avi", 0, 164, 25.0), VideoRecord("half.avi", 1, 164, 25.0)]
    ds = VideoClipDataset(records, tmp_path, clip_len=4, frame_interval=2, mode="test")
    assert ds[0]["input"].shape == (3, 4, 240, 320) and ds[0]["index"] == 0
    with caplog.at_level(logging.WARNING, logger="actdistill.data"):
        assert ds[1] is None
        batch = collate_skip_broken([ds[0], ds[1]])
    assert "half.avi" in caplog.text
    assert batch["skipped"] == 1 and batch["input"].shape == (1, 3, 4, 240, 320)


def test_registered_ucf101_builder(tree):
    cfg = SimpleNamespace(root=str(tree), image_size=24, clip_len=8, num_workers=1, num_clips=2)
    train, classes = DATASETS.get("ucf101")(cfg, "train", None)
    test, _ = DATASETS.get("ucf101")(cfg, "test", None)
    assert classes == CLASSES and (len(train), len(test)) == (6, 3)
    sample = train[0]
    assert sample["input"].shape == (3, 8, 24, 24) and sample["label"] == 0 and sample["index"] == 0
    assert test[2]["input"].shape == (2, 3, 8, 24, 24)  # two test views
    assert (tree / ".actdistill" / "ucf101_train1_rgb.jsonl").is_file()


def test_hmdb51_folder_and_list_builders(tree, tmp_path):
    videos = sorted(tree.glob("*/*.avi"))
    hm = tmp_path / "hmdb"
    splits = hm / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for cls in ("sit", "wave"):
        (hm / cls).mkdir()
        lines = []
        for k, src in enumerate(videos[:3] if cls == "sit" else videos[-3:]):
            shutil.copy(src, hm / cls / f"{cls}_{k}.avi")
            lines.append(f"{cls}_{k}.avi {1 if k < 2 else 2} ")
        (splits / f"{cls}_test_split1.txt").write_text("\n".join(lines) + "\n")
    cfg = SimpleNamespace(root=str(hm), image_size=24, clip_len=4, num_workers=1)
    ds, classes = DATASETS.get("hmdb51")(cfg, "test", None)
    assert classes == ["sit", "wave"] and [r.path for r in ds.records] == ["sit/sit_2.avi", "wave/wave_2.avi"]
    assert ds[1]["input"].shape == (3, 4, 24, 24) and ds[1]["label"] == 1

    folder = tmp_path / "folder"
    for subset, picks in (("train", videos[:2] + videos[-2:]), ("test", videos[2:3] + videos[-1:])):
        for src in picks:
            dst = folder / subset / src.parent.name / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    cfg = SimpleNamespace(root=str(folder), image_size=24, clip_len=4, num_workers=1)
    ds, classes = DATASETS.get("video_folder")(cfg, "train", None)
    assert classes == ["SitDown", "Wave"] and len(ds) == 4 and ds[3]["label"] == 1

    (tree / "train.csv").write_text(
        "path,label\n" + "".join(f"{v.relative_to(tree)},{v.parent.name}\n" for v in videos)
    )
    (tree / "test.csv").write_text(f"{videos[0].relative_to(tree)},SitDown\n")
    cfg = SimpleNamespace(root=str(tree), image_size=24, clip_len=4, num_workers=1)
    ds, classes = DATASETS.get("video_list")(cfg, "test", None)
    assert classes == sorted(CLASSES) and len(ds) == 1 and ds[0]["label"] == 0
    with pytest.raises(ActdistillError, match="data.root"):
        DATASETS.get("ucf101")(SimpleNamespace(root=str(tmp_path / "nope")), "train", None)
    with pytest.raises(ActdistillError, match="'ucfTrainTestlist' not found in .* set data.annotation_dir"):
        DATASETS.get("ucf101")(SimpleNamespace(root=str(folder)), "train", None)


def test_rgb_plus_flow_frame_folders(tree, tmp_path):
    frames_root = tmp_path / "frames"
    write_frame_folders(tree, frames_root)
    for folder in frames_root.glob("*/*"):
        n = count_folder_frames(folder)
        for k in range(1, n):  # N − 1 flow pairs, as extract_flow writes them
            for axis, value in (("x", 200), ("y", 60)):
                Image.fromarray(np.full((32, 32), value, np.uint8)).save(folder / f"flow_{axis}_{k:05d}.jpg")
    entries = read_split(tree / "ucfTrainTestlist", 1, "test")
    records = build_manifest(frames_root, entries, modality="rgb+flow", progress=False)
    assert all(r.num_frames == 11 for r in records)
    ds = VideoClipDataset(records, frames_root, clip_len=4, mode="test", modality="rgb+flow")
    sample = ds[0]
    assert sample["input"].shape == (3, 4, 32, 32) and sample["input_flow"].shape == (2, 4, 32, 32)
    assert abs(sample["input_flow"][0].mean().item() - 200 / 255) < 0.02
    flow_only = VideoClipDataset(records, frames_root, clip_len=4, mode="test", modality="flow")
    assert flow_only[0]["input"].shape == (2, 4, 32, 32)
