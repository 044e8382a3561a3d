"""Manifest: one `VideoRecord(path, label, num_frames, fps)` per readable video, probed once and cached.

Probing reads container metadata (or counts frame-folder files), never decodes whole videos; unreadable or
empty videos are skipped, counted and named in a warning. The cache is a JSON-lines file keyed by the split
files' mtime/size, the root and the entry list, so it is rebuilt when any of them changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from actdistill.data.decode import VideoDecodeError, count_folder_frames
from actdistill.errors import ActdistillError

logger = logging.getLogger("actdistill.data")

Modality = Literal["rgb", "flow", "rgb+flow"]
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class VideoRecord:
    """One video: `path` relative to the dataset root, 0-based `label`, frames available, fps (0 if unknown)."""

    path: str
    label: int
    num_frames: int
    fps: float


class Manifest(list):
    """A list of `VideoRecord`s that also remembers which entries were skipped and why (`skipped`)."""

    def __init__(self, records: Iterable[VideoRecord] = (), skipped: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(records)
        self.skipped: list[tuple[str, str]] = [tuple(s) for s in skipped]  # type: ignore[misc]


def resolve_media(root: str | Path, rel: str) -> Path:
    """The file or frame folder for a listed path: `root/rel`, or `root/rel` without its extension as a folder."""
    path = Path(root) / rel
    if path.exists():
        return path
    folder = path.with_suffix("")
    return folder if folder.is_dir() else path


def probe_video(path: str | Path) -> tuple[int, float]:
    """`(num_frames, fps)` of a video file from stream metadata; counts packets when the count is missing."""
    import av

    from actdistill.data.decode import _open

    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        frames = int(stream.frames or 0)
        if frames <= 0:  # e.g. Matroska/WebM carry no frame count: count packets (demux only, no decoding)
            frames = sum(1 for packet in container.demux(stream) if packet.size)
    except av.FFmpegError as exc:
        raise VideoDecodeError(path, f"cannot read stream metadata ({type(exc).__name__}: {exc})") from None
    finally:
        container.close()
    if frames <= 0:
        raise VideoDecodeError(path, "no video frames")
    return frames, fps


def probe(
    root: str | Path, rel: str, modality: Modality = "rgb", flow_root: str | Path | None = None
) -> tuple[int, float]:
    """`(num_frames, fps)` for one listed video in `modality` (flow: flow pairs in its frame folder; fps 0 unknown)."""
    counts, fps = [], 0.0
    if modality in ("rgb", "rgb+flow"):
        media = resolve_media(root, rel)
        if media.is_dir():
            counts.append(count_folder_frames(media, "rgb"))
        elif media.is_file():
            num, fps = probe_video(media)
            counts.append(num)
        else:
            raise VideoDecodeError(media, "not found")
    if modality in ("flow", "rgb+flow"):
        folder = (Path(flow_root or root) / rel).with_suffix("")
        if not folder.is_dir():
            raise VideoDecodeError(folder, "flow folder not found (run `extract_flow_tree`)")
        counts.append(count_folder_frames(folder, "flow"))
    if min(counts) <= 0:
        raise VideoDecodeError(rel, "no frames")
    return min(counts), fps


def _probe_one(args: tuple[Path, str, int, Modality, Path | None]) -> VideoRecord | tuple[str, str]:
    root, rel, label, modality, flow_root = args
    try:
        num, fps = probe(root, rel, modality, flow_root)
    except VideoDecodeError as exc:
        return rel, exc.reason
    return VideoRecord(rel, int(label), num, fps)


def build_manifest(
    root: str | Path,
    entries: Sequence[tuple[str, int]],
    workers: int = 2,
    *,
    modality: Modality = "rgb",
    flow_root: str | Path | None = None,
    progress: bool = True,
) -> Manifest:
    """Probe every `(relative path, label)` in parallel threads; unreadable/empty videos are skipped and counted."""
    root = Path(root)
    if not root.is_dir():
        raise ActdistillError(f"dataset root {root} is not a folder; set data.root to the folder holding the videos")
    jobs = [(root, rel, label, modality, Path(flow_root) if flow_root else None) for rel, label in entries]
    bar = tqdm(total=len(jobs), desc=f"probing videos in {root.name}", unit="video", disable=not progress)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = []
        for result in pool.map(_probe_one, jobs):
            results.append(result)
            bar.update()
    bar.close()
    records = [r for r in results if isinstance(r, VideoRecord)]
    skipped = [r for r in results if not isinstance(r, VideoRecord)]
    if entries and not records:
        first, reason = skipped[0]
        raise ActdistillError(
            f"none of the {len(entries)} listed videos under {root} is readable (first: {first}: {reason}); "
            "check data.root and that the videos or frame folders are in place"
        )
    if skipped:
        names = ", ".join(f"{rel} ({why})" for rel, why in skipped[:5])
        more = " ..." if len(skipped) > 5 else ""
        logger.warning("skipped %d of %d videos under %s: %s%s", len(skipped), len(entries), root, names, more)
    return Manifest(records, skipped)


def manifest_key(
    root: str | Path, entries: Sequence[tuple[str, int]], sources: Sequence[str | Path] = (), **extra: Any
) -> dict:
    """Cache key: the root, a hash of the entries, each source file's (mtime_ns, size) and any `extra` settings."""
    digest = hashlib.sha1("\n".join(f"{p}\t{lab}" for p, lab in entries).encode()).hexdigest()
    files = {}
    for src in sources:
        st = os.stat(src)
        files[str(Path(src).resolve())] = [st.st_mtime_ns, st.st_size]
    return {
        "version": MANIFEST_VERSION,
        "root": str(Path(root).resolve()),
        "entries": digest,
        "sources": files,
        **extra,
    }


def save_manifest(manifest: Sequence[VideoRecord], path: str | Path, key: dict | None = None) -> None:
    """Write a header line `{"key": ..., "skipped": [...]}` and one JSON record per line (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    skipped = getattr(manifest, "skipped", [])
    lines = [json.dumps({"actdistill_manifest": MANIFEST_VERSION, "key": key or {}, "skipped": skipped})]
    lines += [json.dumps(asdict(r)) for r in manifest]
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def load_manifest(path: str | Path, key: dict | None = None) -> Manifest | None:
    """The cached manifest, or None when the file is missing, unreadable, or was built for another `key`."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
        header = json.loads(lines[0])
        if header.get("actdistill_manifest") != MANIFEST_VERSION or (key is not None and header.get("key") != key):
            return None
        return Manifest((VideoRecord(**json.loads(line)) for line in lines[1:] if line), header.get("skipped", []))
    except (OSError, IndexError, ValueError, TypeError):
        return None


def default_cache_path(root: str | Path, name: str) -> Path:
    """`<root>/.actdistill/<name>.jsonl` when the root is writable, else under `~/.cache/actdistill/`."""
    root = Path(root)
    if os.access(root, os.W_OK):
        return root / ".actdistill" / f"{name}.jsonl"
    tag = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "actdistill" / f"{root.name}-{tag}" / f"{name}.jsonl"


def cached_manifest(
    root: str | Path,
    entries: Sequence[tuple[str, int]],
    cache_path: str | Path,
    sources: Sequence[str | Path] = (),
    workers: int = 2,
    *,
    modality: Modality = "rgb",
    flow_root: str | Path | None = None,
    progress: bool = True,
) -> Manifest:
    """Load the manifest from `cache_path` when its key still matches, else probe the videos and save it."""
    key = manifest_key(root, entries, sources, modality=modality, flow_root=str(flow_root or ""))
    manifest = load_manifest(cache_path, key)
    if manifest is not None:
        if manifest.skipped:
            n = len(manifest.skipped)
            logger.warning("%s: %d listed videos were skipped when the manifest was built", cache_path, n)
        return manifest
    manifest = build_manifest(root, entries, workers, modality=modality, flow_root=flow_root, progress=progress)
    try:
        save_manifest(manifest, cache_path, key)
    except OSError as exc:
        logger.warning("could not cache the manifest at %s (%s); it will be probed again next time", cache_path, exc)
    return manifest
