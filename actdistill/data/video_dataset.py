"""Map-style video clip dataset over a manifest, and the `ucf101` / `hmdb51` / `video_folder` / `video_list` builders.

`__init__` only keeps the manifest; each `__getitem__` decodes just the frames its clip needs. A sample is
`{"input": (C, T, H, W) float, "label": int, "index": int}` (`(V, C, T, H, W)` with `num_clips = V > 1`; with
`modality="rgb+flow"` also `"input_flow"`). A video that fails to decode gives `None` and a warning naming the
file on logger `actdistill.data`; `collate_skip_broken` drops it and counts it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from actdistill.data.decode import VideoDecodeError, read_frames
from actdistill.data.manifest import VideoRecord, cached_manifest, default_cache_path, resolve_media
from actdistill.data.sampling import dense_clip_indices, multi_view_indices
from actdistill.data.video_transforms import build_video_transform
from actdistill.errors import ActdistillError
from actdistill.registry import DATASETS

logger = logging.getLogger("actdistill.data")
MODALITIES = ("rgb", "flow", "rgb+flow")


def _to_float(clip: Tensor) -> Tensor:
    """Default transform: `(T, C, H, W)` uint8 → `(C, T, H, W)` float32 in [0, 1]."""
    return clip.permute(1, 0, 2, 3).to(torch.float32, memory_format=torch.contiguous_format).div_(255)


class VideoClipDataset(Dataset):
    """Clips of `clip_len` frames `frame_interval` apart from each video in `records` (see module docstring).

    `mode="train"` draws `num_clips` random-start clips; `mode="test"` takes `num_clips` evenly spaced clips
    (one clip: the centred one, paper 2). RGB comes from `root/<path>` (a video file, or a frame folder named
    like the file without its extension); flow from the frame folder `flow_root/<path without extension>`.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        root: str | Path,
        clip_len: int = 16,
        frame_interval: int = 1,
        transform: Callable[[Tensor], Tensor] | None = None,
        mode: str = "train",
        num_clips: int = 1,
        modality: str = "rgb",
        flow_root: str | Path | None = None,
        flow_transform: Callable[[Tensor], Tensor] | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        if modality not in MODALITIES:
            raise ActdistillError(f"data.modality must be one of {', '.join(MODALITIES)}; got {modality!r}")
        if mode not in ("train", "test"):
            raise ActdistillError(f"dataset mode must be 'train' or 'test'; got {mode!r}")
        if clip_len < 1 or frame_interval < 1 or num_clips < 1:
            raise ActdistillError(
                f"data.clip_len, data.frame_interval and data.num_clips must be ≥ 1; "
                f"got {clip_len}, {frame_interval}, {num_clips}"
            )
        self.records, self.root = list(records), Path(root)
        self.skipped: list[tuple[str, str]] = list(getattr(records, "skipped", []))  # (path, why) left out
        self.clip_len, self.frame_interval, self.mode, self.num_clips = clip_len, frame_interval, mode, num_clips
        self.modality, self.flow_root = modality, Path(flow_root) if flow_root else self.root
        self.transform, self.flow_transform = transform, flow_transform
        self.classes = list(classes) if classes is not None else sorted({str(r.label) for r in self.records})

    def __len__(self) -> int:
        return len(self.records)

    @property
    def targets(self) -> list[int]:
        """Class index of every video, in dataset order (no decoding)."""
        return [int(r.label) for r in self.records]

    def views(self, index: int) -> list[list[int]]:
        """The frame indices of each clip (view) of sample `index`; random in train mode."""
        n = self.records[index].num_frames
        if self.mode == "train":
            return [dense_clip_indices(n, self.clip_len, self.frame_interval, "train") for _ in range(self.num_clips)]
        return multi_view_indices(n, self.clip_len, self.frame_interval, self.num_clips)

    def _load(self, source: Path, views: list[list[int]], modality: str, transform: Callable | None) -> Tensor:
        union = sorted({i for v in views for i in v})
        frames = read_frames(source, union, modality="flow" if modality == "flow" else "rgb")
        where = {f: k for k, f in enumerate(union)}
        clips = [(transform or _to_float)(frames[[where[i] for i in v]]) for v in views]
        return clips[0] if self.num_clips == 1 else torch.stack(clips)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        rec = self.records[index]
        views = self.views(index)
        sample: dict[str, Any] = {"label": rec.label, "index": index}
        try:
            if self.modality in ("rgb", "rgb+flow"):
                sample["input"] = self._load(resolve_media(self.root, rec.path), views, "rgb", self.transform)
            if self.modality in ("flow", "rgb+flow"):
                folder = (self.flow_root / rec.path).with_suffix("")
                flow_tf = self.flow_transform if self.modality == "rgb+flow" else self.transform
                sample["input_flow" if self.modality == "rgb+flow" else "input"] = self._load(
                    folder, views, "flow", flow_tf
                )
        except VideoDecodeError as exc:
            logger.warning("skipping broken video %s: %s", exc.path, exc.reason)
            return None
        return sample


# ---------------------------------------------------------------------------------------------------- builders
# Fields read from DataConfig with getattr (defaults in brackets): root, image_size [224], num_workers [2],
# clip_len [16], frame_interval [1], split [1], annotation_dir [official folder inside root], modality ["rgb"],
# num_clips [1, test only], flow_root [root], resize [0 = none], train_list / test_list (video_list).


def _from_entries(
    cfg: Any,
    split: str,
    transform: Callable | None,
    entries: list[tuple[str, int]],
    classes: list[str],
    cache_name: str,
    sources: Sequence[Path] = (),
) -> tuple[VideoClipDataset, list[str]]:
    root = Path(cfg.root)
    modality = getattr(cfg, "modality", "rgb")
    if modality not in MODALITIES:
        raise ActdistillError(f"data.modality must be one of {', '.join(MODALITIES)}; got {modality!r}")
    flow_root = getattr(cfg, "flow_root", "") or None
    records = cached_manifest(
        root,
        entries,
        default_cache_path(root, f"{cache_name}_{modality.replace('+', '_')}"),
        sources,
        workers=max(1, getattr(cfg, "num_workers", 2)),
        modality=modality,
        flow_root=flow_root,
    )
    train = split == "train"
    size, resize = getattr(cfg, "image_size", 224), getattr(cfg, "resize", 0) or None
    flow_only = modality == "flow"
    if transform is None:
        transform = build_video_transform(train, size, flow=flow_only, resize=resize)
    flow_transform = build_video_transform(train, size, flow=True, resize=resize) if modality == "rgb+flow" else None
    dataset = VideoClipDataset(
        records,
        root,
        clip_len=getattr(cfg, "clip_len", 16),
        frame_interval=getattr(cfg, "frame_interval", 1),
        transform=transform,
        mode="train" if train else "test",
        num_clips=1 if train else getattr(cfg, "num_clips", 1),
        modality=modality,
        flow_root=flow_root,
        flow_transform=flow_transform,
        classes=classes,
    )
    return dataset, classes


def _require_root(cfg: Any, layout: str) -> Path:
    root = Path(getattr(cfg, "root", "") or "")
    if not str(root) or not root.is_dir():
        raise ActdistillError(f"data.root '{root}' is not a folder; set data.root to the dataset folder ({layout})")
    return root


def _annotation_dir(cfg: Any, root: Path, default: str) -> Path:
    """`data.annotation_dir`, else the official split folder inside the root or beside it (as the archives unpack)."""
    given = getattr(cfg, "annotation_dir", "") or ""
    if given:
        return Path(given)
    for candidate in (root / default, root.parent / default):
        if candidate.is_dir():
            return candidate
    raise ActdistillError(
        f"split folder '{default}' not found in {root} or beside it; set data.annotation_dir to the folder "
        "holding the official split files"
    )


@DATASETS.register("ucf101", task="video", paper="UCF101 (Soomro et al. 2012); paper 2, paper 3")
def _ucf101(cfg: Any, split: str, transform: Callable | None) -> tuple[VideoClipDataset, list[str]]:
    from actdistill.data import ucf101

    root = _require_root(cfg, "<root>/<Class>/v_<Class>_gGG_cCC.avi")
    ann = _annotation_dir(cfg, root, "ucfTrainTestlist")
    number = int(getattr(cfg, "split", 1))
    subset = "train" if split == "train" else "test"
    entries = ucf101.read_split(ann, number, subset)
    sources = [ann / "classInd.txt", ann / f"{subset}list0{number}.txt"]
    return _from_entries(cfg, split, transform, entries, ucf101.read_classes(ann), f"ucf101_{subset}{number}", sources)


@DATASETS.register("hmdb51", task="video", paper="HMDB51 (Kuehne et al. 2011); paper 2")
def _hmdb51(cfg: Any, split: str, transform: Callable | None) -> tuple[VideoClipDataset, list[str]]:
    from actdistill.data import hmdb51

    root = _require_root(cfg, "<root>/<class>/<video>.avi")
    ann = _annotation_dir(cfg, root, "testTrainMulti_7030_splits")
    number = int(getattr(cfg, "split", 1))
    subset = "train" if split == "train" else "test"
    entries = hmdb51.read_split(ann, number, subset)
    sources = sorted(ann.glob(f"*_test_split{number}.txt"))
    return _from_entries(
        cfg, split, transform, entries, hmdb51.read_classes(ann, number), f"hmdb51_{subset}{number}", sources
    )


@DATASETS.register("video_folder", task="video", paper="class-per-folder videos: <root>/{train,test}/<class>/<clip>")
def _video_folder(cfg: Any, split: str, transform: Callable | None) -> tuple[VideoClipDataset, list[str]]:
    from actdistill.data.lists import scan_class_folders

    root = _require_root(cfg, "<root>/{train,test}/<class>/<clip file or frame folder>")
    subset = "train" if split == "train" else "test"
    if not (root / subset).is_dir():
        raise ActdistillError(f"{root / subset} not found; video_folder expects {root}/{{train,test}}/<class>/<clip>")
    entries, classes = scan_class_folders(root / subset)
    train_classes = scan_class_folders(root / "train")[1] if subset == "test" else classes
    if classes != train_classes:
        raise ActdistillError(
            f"{root / 'test'} has classes {classes} but {root / 'train'} has {train_classes}; use the same folders"
        )
    entries = [(f"{subset}/{rel}", label) for rel, label in entries]
    return _from_entries(cfg, split, transform, entries, classes, f"video_folder_{subset}")


@DATASETS.register("video_list", task="video", paper="a 'path,label' CSV/TSV per split (docs/video_data.md)")
def _video_list(cfg: Any, split: str, transform: Callable | None) -> tuple[VideoClipDataset, list[str]]:
    from actdistill.data.lists import read_list

    root = _require_root(cfg, "video paths in the list are relative to data.root")
    subset = "train" if split == "train" else "test"
    names = {
        "train": getattr(cfg, "train_list", "") or "train.csv",
        "test": getattr(cfg, "test_list", "") or "test.csv",
    }
    lists = {k: Path(v) if Path(v).is_absolute() else root / v for k, v in names.items()}
    _, classes = read_list(lists["train"])
    entries, _ = read_list(lists[subset], classes=classes)
    return _from_entries(cfg, split, transform, entries, classes, f"video_list_{lists[subset].stem}", [lists[subset]])
