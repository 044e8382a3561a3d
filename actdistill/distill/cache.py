"""Teacher-output cache: run the teacher once over E epochs of augmented views, then distil without it.

FKD-style (Shen & Xing, ECCV-22 "A Fast Knowledge Distillation Framework"): each stored entry belongs to one
augmented *view*, not to a sample. actdistill's augmentation is a pure function of (seed, epoch, index)
(`SeededView`), so the view of sample `i` in cache epoch `e` is fully determined by that key; a fingerprint of the
view's pixels is stored beside the teacher's outputs and checked when the view is replayed, so a changed dataset or
transform is caught even where the recorded settings look the same. Training epoch `t` replays cache epoch
`(t - 1) mod E + 1`.

On-disk layout of a cache folder (memory-mapped `.npy` files, written to `<path>.partial` and renamed when done;
the space is reserved before the first write, so a full disk fails with a message, not a bus error):
  meta.json      format version, teacher checkpoint sha256, data/transform fingerprint, seed, sizes, and the size and
                 BLAKE2b digest of every array file (checked when the cache is opened)
  logits.npy     (E, N, k) float16: the teacher's top-k class logits per view (k = all classes by default)
  classes.npy    (E, N, k) int16/int32: their class indices
  lse.npy        (E, N) float32: log-sum-exp of all K logits (restores the dropped classes' total mass)
  views.npy      (E, N, 4) float32: view fingerprints (`view_fingerprint`)
  pooled.npy     (E, N, C) float16, optional (`--features LAYER`): the teacher's globally pooled feature of that
                 layer, for methods that distil pooled embeddings (`rkd`, `crd`)
  map_<i>.npy    (E, N, *shape), optional: the teacher feature map of tap i (`meta.json` `maps`) that a feature-map
                 method reads (FitNet, AT, MGD, SimKD, paper 2's attention distillation), float16, or int8 with
  scale_<i>.npy  (E, N, C) float16 per-channel scales (`max|x| / 127` per view and channel) with `--maps-dtype int8`
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from actdistill.distill.adapters import global_pool
from actdistill.distill.logit import class_logits
from actdistill.distill.taps import Tap, probe_shapes, resolve_tap, run_model
from actdistill.errors import ActdistillError
from actdistill.utils.runtime import autocast

log = logging.getLogger("actdistill")

FORMAT_VERSION = 1
PARTIAL_MARKER = ".actdistill-cache-partial"  # inside `<path>.partial` while this toolkit writes it
_FILES = ("meta.json", "logits.npy", "classes.npy", "lse.npy", "views.npy")
# Data settings that change what a training view looks like (everything else, e.g. batch size, does not).
_VIEW_KEYS = (
    "name", "image_size", "crop_person", "scale_min", "limit_train", "split", "clip_len", "frame_interval",
    "modality", "resize", "train_list", "hflip", "val_fraction", "multiscale_offsets",
)  # fmt: skip
MAP_DTYPES = ("float16", "int8")


def view_fingerprint(x: Tensor) -> Tensor:
    """`(4,)` float32 summary of one view `(C, H, W)` or `(C, T, H, W)`: its sum and its moments along W, H and T.

    The ramps make it sensitive to flips and crop offsets, which leave a plain sum unchanged.
    """
    x = x.detach().float()
    w = torch.linspace(-1, 1, x.shape[-1])
    h = torch.linspace(-1, 1, x.shape[-2]).unsqueeze(-1)
    t = torch.linspace(-1, 1, x.shape[1]).view(-1, 1, 1) if x.dim() == 4 else torch.zeros(())
    return torch.stack([x.sum(), (x * w).sum(), (x * h).sum(), (x * t).sum() if x.dim() == 4 else x.new_zeros(())])


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file (the teacher checkpoint a cache was built from)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """BLAKE2b (128-bit) hex digest of a file, read in 4 MiB blocks."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def is_cache(path: Path) -> bool:
    """A folder holding a teacher cache written by this toolkit (its meta.json names a format version)."""
    try:
        return "format_version" in json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return False


def cache_key(data: Mapping[str, Any], teacher: Mapping[str, Any], seed: int, mean: Any, std: Any) -> dict[str, Any]:
    """What must match between a cache and a training run: teacher identity, view settings, seed, normalisation."""
    if teacher.get("checkpoint"):
        teacher_id = {"sha256": file_sha256(teacher["checkpoint"])}
    else:
        teacher_id = {"name": teacher.get("name", ""), "pretrained": str(teacher.get("pretrained", False))}
    view = {k: data.get(k) for k in _VIEW_KEYS}
    view["root"] = str(Path(str(data.get("root", ""))).resolve())
    return {
        "teacher": teacher_id,
        "data": view,
        "seed": int(seed),
        "mean": [round(float(m), 6) for m in mean],
        "std": [round(float(s), 6) for s in std],
    }


def restore_logits(values: Tensor, classes: Tensor, lse: Tensor, num_classes: int) -> Tensor:
    """`(..., K)` float32 logits from stored top-k `values`/`classes` `(..., k)` and the full log-sum-exp `(...)`.

    With k = K this is exact (up to fp16 storage). With k < K the dropped classes share the probability mass the
    top-k leave, `r = 1 − Σ_topk exp(z_i − lse)`, equally (FKD's uniform fill): each gets `lse + log(r / (K − k))`,
    so the T = 1 distribution is preserved on the top-k and in total.
    """
    values, lse = values.float(), lse.float()
    k = values.shape[-1]
    if k == num_classes:
        return torch.empty_like(values).scatter_(-1, classes.long(), values)
    kept = torch.exp(values - lse.unsqueeze(-1)).sum(-1)
    rest = (1.0 - kept).clamp_min(1e-12) / (num_classes - k)
    fill = (lse + torch.log(rest)).unsqueeze(-1).expand(*values.shape[:-1], num_classes)
    return fill.clone().scatter_(-1, classes.long(), values)


class TeacherCache:
    """A built cache, opened read-only through memory maps (safe to share with DataLoader workers)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        missing = [f for f in _FILES if not (self.path / f).exists()]
        if missing:
            partial = self.path.with_name(self.path.name + ".partial")
            hint = f" ({partial} exists: its build was interrupted)" if partial.exists() else ""
            raise ActdistillError(
                f"teacher.cache {self.path} is not a complete teacher cache (missing {', '.join(missing)}){hint}; "
                "build it with `actdistill cache build CONFIG --out PATH`"
            )
        try:
            self.meta = json.loads((self.path / "meta.json").read_text())
            if not isinstance(self.meta, dict):
                raise ValueError("not a mapping")
        except (OSError, ValueError) as exc:
            raise ActdistillError(
                f"teacher.cache {self.path}: meta.json is not valid ({exc.__class__.__name__}); rebuild the cache with "
                "`actdistill cache build CONFIG --out PATH --overwrite`"
            ) from None
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise ActdistillError(
                f"teacher.cache {self.path} has format version {self.meta.get('format_version')}, this actdistill "
                f"reads version {FORMAT_VERSION}; rebuild it with `actdistill cache build`"
            )
        self._verify_files()
        self.epochs, self.num_samples = int(self.meta["epochs"]), int(self.meta["num_samples"])
        self.num_classes, self.topk = int(self.meta["num_classes"]), int(self.meta["topk"])
        self.feature_layer: str | None = self.meta.get("feature_layer")
        self.map_taps: list[str] = [m["tap"] for m in self.meta.get("maps", [])]
        self.map_dtype: str = self.meta.get("map_dtype", "float16")
        self._arrays: dict[str, np.ndarray] | None = None

    def _verify_files(self) -> None:
        """Each array file has the size and digest recorded when it was written (truncated or edited: refused)."""
        for name, record in (self.meta.get("files") or {}).items():
            path = self.path / name
            size = path.stat().st_size if path.is_file() else -1
            if size != record["bytes"] or file_digest(path) != record["blake2b"]:
                what = "is missing" if size < 0 else "is truncated" if size < record["bytes"] else "was modified"
                raise ActdistillError(
                    f"teacher.cache {self.path}: {name} {what} since the cache was built (size or checksum differs); "
                    "rebuild it with `actdistill cache build CONFIG --out PATH --overwrite`"
                )

    def arrays(self) -> dict[str, np.ndarray]:
        """The memory-mapped arrays, opened lazily (each DataLoader worker maps its own)."""
        if self._arrays is None:
            names = ["logits", "classes", "lse", "views"] + (["pooled"] if self.feature_layer is not None else [])
            names += [f"map_{i}" for i in range(len(self.map_taps))]
            names += [f"scale_{i}" for i in range(len(self.map_taps)) if self.map_dtype == "int8"]
            self._arrays = {n: np.load(self.path / f"{n}.npy", mmap_mode="r") for n in names}
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}  # workers re-open the maps instead of pickling them

    def slot(self, epoch: int) -> int:
        """0-based cache epoch replayed in training epoch `epoch` (1-based): views repeat every E epochs."""
        return (epoch - 1) % self.epochs

    def logits(self, epoch: int, index: int) -> Tensor:
        """`(K,)` float32 teacher logits of view (epoch, index)."""
        a, s = self.arrays(), self.slot(epoch)
        return restore_logits(
            torch.from_numpy(np.array(a["logits"][s, index])),
            torch.from_numpy(np.array(a["classes"][s, index])),
            torch.tensor(float(a["lse"][s, index])),
            self.num_classes,
        )

    def pooled(self, epoch: int, index: int) -> Tensor:
        """`(C,)` float32 pooled teacher feature of view (epoch, index) (caches built with `--features`)."""
        return torch.from_numpy(np.array(self.arrays()["pooled"][self.slot(epoch), index], dtype=np.float32))

    def maps(self, epoch: int, index: int) -> dict[str, Tensor]:
        """`{tap: (C, ...) float32}` teacher feature maps of view (epoch, index) (dequantised from int8)."""
        a, s, out = self.arrays(), self.slot(epoch), {}
        for i, tap in enumerate(self.map_taps):
            x = torch.from_numpy(np.array(a[f"map_{i}"][s, index], dtype=np.float32))
            if self.map_dtype == "int8":
                scale = torch.from_numpy(np.array(a[f"scale_{i}"][s, index], dtype=np.float32))
                x = x * scale.view(-1, *([1] * (x.dim() - 1)))
            out[tap] = x
        return out

    def fingerprint(self, epoch: int, index: int) -> Tensor:
        return torch.from_numpy(np.array(self.arrays()["views"][self.slot(epoch), index]))

    def check(self, key: dict[str, Any], num_samples: int, num_classes: int) -> None:
        """Refuse a stale cache: another teacher, other view settings, seed or normalisation, another dataset size."""
        stale = [name for name in key if self.meta["key"].get(name) != key[name]]
        if self.num_samples != num_samples:
            stale.append(f"dataset size ({self.num_samples} cached vs {num_samples} now)")
        if self.num_classes != num_classes:
            stale.append(f"classes ({self.num_classes} cached vs {num_classes} now)")
        if stale:
            details = "; ".join(_describe(name, self.meta["key"].get(name), key.get(name)) for name in stale)
            raise ActdistillError(
                f"teacher.cache {self.path} is stale: {details}. Rebuild it for this run with "
                f"`actdistill cache build CONFIG --out {self.path}` or drop teacher.cache to run the teacher online"
            )


def _describe(name: str, cached: Any, now: Any) -> str:
    if cached is None and now is None:
        return name
    if isinstance(cached, dict) and isinstance(now, dict):
        diff = [k for k in sorted(set(cached) | set(now)) if cached.get(k) != now.get(k)]
        return f"{name} differs in {', '.join(f'{k} ({cached.get(k)!r} cached, {now.get(k)!r} now)' for k in diff)}"
    return f"{name} ({cached!r} cached, {now!r} now)"


class CachedTeacherView(Dataset):
    """A `SeededView` whose samples carry the cached `teacher_logits` `(K,)` of exactly that view.

    Training epoch `t` shows the views of cache epoch `(t − 1) mod E + 1`; every replayed view is checked against
    the stored fingerprint (a mismatch means the data or transform changed since the cache was built).
    """

    def __init__(self, view: Any, cache: TeacherCache, tolerance: float = 1e-3) -> None:
        self.view, self.cache, self.tolerance = view, cache, tolerance
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.view.set_epoch(self.cache.slot(epoch) + 1)

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, index: int) -> Any:
        sample = self.view[index]
        if sample is None:
            return None
        stored = self.cache.fingerprint(self.epoch, index)
        now = view_fingerprint(sample["input"])
        scale = float(stored.abs().max()) + 1.0
        if float((now - stored).abs().max()) > self.tolerance * scale:
            raise ActdistillError(
                f"teacher.cache {self.cache.path}: the view of training sample {index} in epoch {self.epoch} differs "
                f"from the one the teacher saw (fingerprint {now.tolist()} vs {stored.tolist()}); the data or its "
                "transform changed after the cache was built. Rebuild it with `actdistill cache build`"
            )
        sample["teacher_logits"] = self.cache.logits(self.epoch, index)
        if self.cache.feature_layer is not None:
            sample["teacher_pooled"] = self.cache.pooled(self.epoch, index)
        if self.cache.map_taps:
            sample["teacher_maps"] = self.cache.maps(self.epoch, index)
        return sample


def pooled_dim(teacher: torch.nn.Module, feature_layer: str) -> int:
    """Channels C of the pooled `(B, C)` feature of tap `feature_layer` (maps `(B, C, ...)`, tokens `(B, N, C)`)."""
    shape = probe_shapes(teacher, [resolve_tap(teacher, feature_layer)])[0]
    return int(shape[-1] if len(shape) == 3 else shape[1])


def estimate_bytes(
    epochs: int,
    num_samples: int,
    topk: int,
    num_classes: int,
    feature_dim: int = 0,
    map_shapes: Sequence[Sequence[int]] = (),
    map_dtype: str = "float16",
) -> int:
    """Bytes a cache will take: per view fp16 logits + indices, log-sum-exp, fingerprint, fp16 pooled feature, and
    each feature map (2 bytes a value in float16; 1 byte a value plus 2 bytes a channel in int8)."""
    index_bytes = 2 if num_classes <= 2**15 else 4
    per_view = topk * (2 + index_bytes) + 4 + 16 + 2 * feature_dim
    for shape in map_shapes:
        values = math.prod(shape)
        per_view += 2 * values if map_dtype == "float16" else values + 2 * int(shape[0])
    return epochs * num_samples * per_view


def write_cache(
    path: str | Path,
    teacher: torch.nn.Module,
    view: Any,
    loader: Any,
    *,
    epochs: int,
    topk: int,
    num_classes: int,
    key: dict[str, Any],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    extra_meta: dict[str, Any] | None = None,
    feature_layer: str | None = None,
    map_taps: Sequence[Tap] = (),
    map_dtype: str = "float16",
) -> Path:
    """Run `teacher` over `epochs` epochs of `view` (a `SeededView`) and write the cache folder atomically.

    `loader`: an in-order loader over `view` yielding batches with `input` and `index` (iterated once per epoch).
    `feature_layer` (a tap spec as the methods' `teacher_layer`: stage index or name) also stores that layer's
    globally pooled output per view; `map_taps` (a feature-map method's `teacher_taps`) store those maps per view in
    `map_dtype` (float16, or int8 with a per-channel scale).
    """
    if map_dtype not in MAP_DTYPES:
        raise ActdistillError(f"cache build: --maps-dtype must be one of {', '.join(MAP_DTYPES)}, got {map_dtype!r}")
    path = Path(path)
    k = num_classes if topk <= 0 else min(topk, num_classes)
    n = len(view)
    partial = prepare_partial(path)
    index_dtype = np.int16 if num_classes <= 2**15 else np.int32
    shapes: dict[str, tuple[Any, tuple[int, ...]]] = {
        "logits": (np.float16, (epochs, n, k)),
        "classes": (index_dtype, (epochs, n, k)),
        "lse": (np.float32, (epochs, n)),
        "views": (np.float32, (epochs, n, 4)),
    }
    taps: tuple = ()
    if feature_layer is not None:
        taps = (resolve_tap(teacher, feature_layer),)
        shapes["pooled"] = (np.float16, (epochs, n, pooled_dim(teacher, feature_layer)))
    map_shapes = map_shapes_of(teacher, view, map_taps, device) if map_taps else []
    for i, shape in enumerate(map_shapes):
        shapes[f"map_{i}"] = (np.float16 if map_dtype == "float16" else np.int8, (epochs, n, *shape))
        if map_dtype == "int8":
            shapes[f"scale_{i}"] = (np.float16, (epochs, n, shape[0]))
    run_taps = tuple(dict.fromkeys((*taps, *map_taps)))
    arrays = {name: _reserved_memmap(partial / f"{name}.npy", *spec) for name, spec in shapes.items()}
    written = np.zeros((epochs, n), dtype=bool)
    teacher.eval()
    tick = time.perf_counter()
    for epoch in range(1, epochs + 1):
        view.set_epoch(epoch)
        for batch in loader:
            if "input" not in batch:
                continue
            index = batch["index"].numpy()
            with torch.inference_mode(), autocast(device, amp_dtype):
                run = run_model(teacher, batch["input"].to(device, non_blocking=True), run_taps)
                logits = class_logits(run.logits).float().cpu()
                if taps:
                    arrays["pooled"][epoch - 1, index] = global_pool(run.get(taps[0])).float().cpu().half().numpy()
                for i, tap in enumerate(map_taps):
                    _store_map(arrays, i, epoch - 1, index, run.get(tap).float().cpu(), map_dtype)
            values, classes = logits.topk(k, dim=-1)
            arrays["logits"][epoch - 1, index] = values.half().numpy()
            arrays["classes"][epoch - 1, index] = classes.numpy().astype(index_dtype)
            arrays["lse"][epoch - 1, index] = torch.logsumexp(logits, dim=-1).numpy()
            arrays["views"][epoch - 1, index] = torch.stack([view_fingerprint(x) for x in batch["input"]]).numpy()
            written[epoch - 1, index] = True
        log.info(
            "cache epoch %d/%d: %d views (%.0f s)",
            epoch,
            epochs,
            int(written[epoch - 1].sum()),
            time.perf_counter() - tick,
        )
    if not written.all():
        missing = int((~written).sum())
        raise ActdistillError(
            f"cache build: {missing} of {written.size} views could not be read (broken samples, see the warnings); "
            "fix or remove those files, then build again"
        )
    for array in arrays.values():
        array.flush()
    del arrays
    files = {f"{name}.npy": _file_record(partial / f"{name}.npy") for name in shapes}
    meta = {
        "format_version": FORMAT_VERSION,
        "epochs": epochs,
        "num_samples": n,
        "num_classes": num_classes,
        "topk": k,
        "dtype": "float16",
        "key": key,
        "feature_layer": feature_layer,
        "maps": [{"tap": str(t), "shape": list(shape)} for t, shape in zip(map_taps, map_shapes)],
        "map_dtype": map_dtype,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "build_time_s": round(time.perf_counter() - tick, 1),
        "files": files,
        **(extra_meta or {}),
    }
    (partial / "meta.json").write_text(json.dumps(meta, indent=1))
    (partial / PARTIAL_MARKER).unlink()
    replace_cache(partial, path)
    return path


def prepare_partial(path: Path) -> Path:
    """A fresh `<path>.partial` folder to build in; an old one is removed only if this toolkit made it."""
    partial = path.with_name(path.name + ".partial")
    if partial.exists():
        if not (partial / PARTIAL_MARKER).exists():
            raise ActdistillError(f"{partial} exists and was not made by `actdistill cache build`; move it away")
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    (partial / PARTIAL_MARKER).touch()
    return partial


def replace_cache(partial: Path, path: Path) -> None:
    """Move the finished `partial` to `path`; an old cache there (checked by the caller) is swapped out first."""
    if path.exists():
        if not is_cache(path):
            raise ActdistillError(f"{path} appeared during the build and is not a teacher cache; the new cache is "
                                  f"left in {partial}")  # fmt: skip
        old = path.with_name(f"{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(partial, path)
        shutil.rmtree(old)
        return
    os.replace(partial, path)


def map_shapes_of(teacher: torch.nn.Module, view: Any, taps: Sequence[Tap], device: torch.device) -> list[tuple]:
    """Shapes `(C, ...)` of the teacher maps `taps` on one real view (the run's own input size)."""
    view.set_epoch(1)
    sample = next(view[i] for i in range(len(view)) if view[i] is not None)
    with torch.inference_mode():
        run = run_model(teacher.eval(), sample["input"][None].to(device), tuple(taps))
    return [tuple(run.get(tap).shape[1:]) for tap in taps]


def _store_map(arrays: dict[str, np.ndarray], i: int, e: int, index: np.ndarray, x: Tensor, dtype: str) -> None:
    """Write map tap i of a batch `(B, C, ...)`: float16, or int8 with a per-(view, channel) scale max|x| / 127."""
    if dtype == "float16":
        arrays[f"map_{i}"][e, index] = x.half().numpy()
        return
    scale = (x.abs().flatten(2).amax(dim=2) / 127.0).clamp_min(1e-12)  # (B, C)
    q = torch.round(x / scale.view(*scale.shape, *([1] * (x.dim() - 2)))).clamp(-127, 127)
    arrays[f"map_{i}"][e, index] = q.to(torch.int8).numpy()
    arrays[f"scale_{i}"][e, index] = scale.half().numpy()


def _reserved_memmap(path: Path, dtype: Any, shape: tuple[int, ...]) -> np.memmap:
    """`open_memmap` whose disk blocks are allocated now: a full disk raises here, not as a bus error later."""
    array = np.lib.format.open_memmap(path, "w+", dtype, shape)
    try:
        with open(path, "r+b") as stream:
            os.posix_fallocate(stream.fileno(), 0, path.stat().st_size)
    except OSError as exc:
        raise ActdistillError(
            f"cache build: could not reserve {path.stat().st_size} bytes for {path} ({exc.strerror}); free space "
            "there or choose another --out"
        ) from None
    return array


def _file_record(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "blake2b": file_digest(path)}
