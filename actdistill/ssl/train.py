"""Minimal PCL / PCL+KD training loop (paper 3 §3; PCL's released code) for small runs on CPU or GPU.

Augmentation: `augment=AugmentConfig(...)` (or a dict) applies PCL's per-clip pipeline (`ssl/augment.py`: resize,
random crop, colour jitter, grayscale, blur, flip; one draw per clip, seeded by (seed, epoch, index, clip)); without
it (the default, or `enabled: false`) frames are only scaled to [0, 1] and ImageNet-normalised at the video's own
size, which must be even for the quadrant permutation. `num_workers` decodes in DataLoader workers. Otherwise as
PCL's released code: 5-way pretext label with redraw when no remote clip fits, only the middle clip is transformed,
residual-frame input, memory-bank InfoNCE (or in-batch for tiny sets), `L = CE + 0.5·L_con (+ λ·T²·KL on pretext
logits with a frozen teacher)`, SGD 0.01/0.9/5e-4, ReduceLROnPlateau on validation CE, validation = the test split
with tuple starts and labels seeded by index.

Tiny synthetic set (`write_synthetic_ucf101(out, num_classes=4, videos_per_class=8, frames=48, size=32)`): use
`clip_len=4, interval=2` (tuple window 16 frames; PCL's remote clip needs room on both sides of the window, which
48-frame videos leave on some draws only with a small `min_gap`, e.g. 4). C3D needs `clip_len ≥ 8` (three temporal
pools), and then longer videos (≥ 64 frames).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from actdistill.data.decode import read_frames
from actdistill.data.manifest import VideoRecord, build_manifest
from actdistill.data.ucf101 import read_split
from actdistill.data.video_transforms import IMAGENET_MEAN, IMAGENET_STD, VideoCompose
from actdistill.models import create_model
from actdistill.ssl.augment import AugmentConfig, build_pcl_augment, clip_generator
from actdistill.ssl.pcl import MemoryBank, PCLNet, in_batch_infonce, pcl_contrastive_loss, pcl_kd_loss, pcl_loss
from actdistill.ssl.pretext import NUM_PRETEXT, apply_pretext, remote_clip_start, tuple_starts, tuple_total

log = logging.getLogger("actdistill")


class PCLTupleDataset(torch.utils.data.Dataset):
    """`(clips (3, C, T, H, W) float, pretext label, dataset index)` per video (PCL's datasets/ucf101.py).

    Every random choice is seeded by (`seed`, `epoch`, index); `train=False` ignores `epoch`, so validation tuples
    are fixed across epochs (as PCL's seeded validation).
    Videos shorter than the tuple window are dropped (PCL keeps videos with ≥ 64 frames).
    `augment`: a `(T, C, H, W)` uint8 → `(C, T, H, W)` float pipeline (`build_pcl_augment`), drawn once per clip with
    a generator seeded by (seed, epoch, index, clip number: 0-2, 3 = remote); None = normalisation only.
    `repeats` > 1 (validation only; training indices address the memory banks): `repeats` differently seeded tuples
    per video, item `i` being video `i mod N`, so a small test split gives a less noisy pretext accuracy.
    """

    def __init__(
        self,
        root: str | Path,
        records: list[VideoRecord],
        clip_len: int = 16,
        interval: int = 8,
        tuple_len: int = 3,
        mode: str = "faithful",
        train: bool = True,
        seed: int = 0,
        min_gap: int = 16,
        augment: VideoCompose | None = None,
        repeats: int = 1,
    ) -> None:
        self.root = Path(root)
        self.window = tuple_total(clip_len, interval, tuple_len)
        self.records = [r for r in records if r.num_frames >= self.window]
        if not self.records:
            raise ValueError(f"no video has the {self.window} frames a tuple needs")
        self.clip_len, self.interval, self.tuple_len, self.mode = clip_len, interval, tuple_len, mode
        self.train, self.seed, self.min_gap = train, seed, min_gap
        self.epoch = 0
        self.augment = augment
        if repeats < 1 or (train and repeats != 1):
            raise ValueError(f"repeats must be ≥ 1 and 1 for training (memory-bank indices), got {repeats}")
        self.repeats = repeats
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)

    def __len__(self) -> int:
        return len(self.records) * self.repeats

    def _rng_seed(self, index: int) -> int:
        """Validation: fixed per index; training: new per epoch (set `self.epoch`), reproducible per `seed`."""
        epoch = self.epoch + 1 if self.train else 0
        return (self.seed * 1_000_003 + epoch) * 1_000_003 + index

    def _clip(self, frames: dict[int, Tensor], start: int, base_seed: int, number: int) -> Tensor:
        """Frames `start..start+clip_len−1` → `(C, T, H, W)` float, augmented with clip `number`'s own draw."""
        if self.augment is not None:
            clip = torch.stack([frames[start + t] for t in range(self.clip_len)])  # (T, C, H, W) uint8
            return self.augment(clip, clip_generator(base_seed, number))
        x = torch.stack([frames[start + t] for t in range(self.clip_len)], dim=1).float() / 255  # (C, T, H, W)
        return (x - self.mean) / self.std

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        rec = self.records[index % len(self.records)]
        base_seed = self._rng_seed(index)
        rng = random.Random(base_seed)
        starts = tuple_starts(rec.num_frames, self.clip_len, self.interval, self.tuple_len, self.mode, rng)
        label = rng.randrange(NUM_PRETEXT)
        remote_start = None
        if label == 4:
            remote_start = remote_clip_start(rec.num_frames, starts[0], self.window, self.clip_len, rng, self.min_gap)
            if remote_start is None:
                label = rng.randrange(NUM_PRETEXT - 1)
        clip_starts = starts if remote_start is None else [*starts, remote_start]
        wanted = sorted({s + t for s in clip_starts for t in range(self.clip_len)})
        decoded = read_frames(self.root / rec.path, wanted)
        frames = dict(zip(wanted, decoded.unbind(0), strict=True))
        clips = [self._clip(frames, s, base_seed, k) for k, s in enumerate(starts)]
        remote = self._clip(frames, remote_start, base_seed, 3) if remote_start is not None else None
        clips[1], _ = apply_pretext(clips[1], label, rng, remote)
        return torch.stack(clips), label, index


@dataclass
class PCLRun:
    """Result of `train_pcl`: the trained `model` and per-epoch curves (pretext accuracy in [0, 1])."""

    model: PCLNet
    val_acc: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)


def _records(root: Path, subset: str, split: int) -> list[VideoRecord]:
    entries = read_split(root / "ucfTrainTestlist", split, subset)  # type: ignore[arg-type]
    return list(build_manifest(root, entries, workers=1, progress=False))


@torch.no_grad()
def evaluate_pretext(model: PCLNet, loader: torch.utils.data.DataLoader, device: torch.device) -> tuple[float, float]:
    """(pretext accuracy, mean CE) of `model` over `loader`."""
    model.eval()
    correct, total, loss = 0, 0, 0.0
    for clips, y, _ in loader:
        clips, y = clips.to(device), y.to(device)
        logits = model(clips).logits
        loss += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
        total += y.numel()
    return correct / total, loss / total


def train_pcl(
    student_backbone_name: str,
    data_root: str | Path,
    epochs: int,
    teacher: PCLNet | None = None,
    *,
    clip_len: int = 16,
    interval: int = 8,
    mode: str = "faithful",
    batch_size: int = 16,
    lr: float = 0.01,
    w_con: float = 0.5,
    k: int = 1024,
    temperature: float = 0.07,
    contrast: str = "bank",
    kd_temperature: float = 4.0,
    kd_weight: float = 1.0,
    head: str = "mlp",
    split: int = 1,
    seed: int = 632,
    min_gap: int = 16,
    device: str | torch.device = "cpu",
    backbone_kwargs: dict | None = None,
    augment: AugmentConfig | dict | None = None,
    val_repeats: int = 1,
    num_workers: int = 0,
    on_epoch: Callable[[int, PCLRun], None] | None = None,
) -> PCLRun:
    """PCL-train a fresh `student_backbone_name` backbone on `data_root` (UCF101 layout), optionally with KD.

    `teacher`: a trained PCLNet (any backbone), frozen in `eval()` and fed the same tuple (paper 3, Fig. 2).
    `contrast`: "bank" (PCL's memory banks, K negatives) or "in_batch" (in-batch InfoNCE, for tiny sets).
    `augment`: PCL's per-clip augmentation (`AugmentConfig` or its dict; None = off), used for training and, as in
    PCL, for validation (draws fixed per index there). `device="auto"`: CUDA when available.
    `val_repeats`: seeded tuples per test video (PCL: 1); more gives a steadier accuracy on small test splits.
    `num_workers`: DataLoader worker processes decoding tuples (0: in this process).
    `on_epoch(epoch, run)`: called after each epoch (1-based) with the curves so far (logging, checkpoints).
    Returns the model and per-epoch validation pretext accuracy (`val_acc`, paper 3's accuracy) and more.
    """
    if contrast not in ("bank", "in_batch"):
        raise ValueError(f"contrast must be 'bank' or 'in_batch', got {contrast!r}")
    torch.manual_seed(seed)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    root = Path(data_root)
    if isinstance(augment, dict):
        augment = AugmentConfig.from_dict(augment)
    pipeline = build_pcl_augment(augment) if augment is not None and augment.enabled else None
    common = dict(clip_len=clip_len, interval=interval, mode=mode, seed=seed, min_gap=min_gap, augment=pipeline)
    train_set = PCLTupleDataset(root, _records(root, "train", split), train=True, **common)  # type: ignore[arg-type]
    val_records = _records(root, "test", split)
    val_set = PCLTupleDataset(root, val_records, train=False, repeats=val_repeats, **common)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(seed)
    # Workers are re-created every epoch (not persistent), so they see the dataset's updated `epoch`.
    loading = dict(num_workers=num_workers, pin_memory=device.type == "cuda")
    train_loader = torch.utils.data.DataLoader(train_set, batch_size, shuffle=True, generator=gen, **loading)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size, **loading)

    model = PCLNet(create_model(student_backbone_name, NUM_PRETEXT, **(backbone_kwargs or {})), head=head).to(device)
    proj_dim = model.head(torch.zeros(1, model.feat_dim, device=device)).shape[1]
    bank1 = MemoryBank(len(train_set), proj_dim).to(device)
    bank2 = MemoryBank(len(train_set), proj_dim).to(device)
    if teacher is not None:
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=50, min_lr=1e-5)
    neg_gen = torch.Generator(device=device).manual_seed(seed)

    run = PCLRun(model)
    for epoch in range(epochs):
        started = time.perf_counter()
        train_set.epoch = epoch
        model.train()
        correct, total, loss_sum = 0, 0, 0.0
        for clips, y, index in train_loader:
            clips, y, index = clips.to(device), y.to(device), index.to(device)
            out = model(clips)
            if contrast == "bank":
                con = pcl_contrastive_loss(out.v1, out.v2, index, bank1, bank2, k, temperature, neg_gen)
            else:
                con = in_batch_infonce(out.v1, out.v2, temperature)
            loss = pcl_loss(out.logits, y, con, w_con)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(clips).logits
                loss = loss + pcl_kd_loss(out.logits, t_logits, kd_temperature, kd_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * y.numel()
            correct += int((out.logits.detach().argmax(1) == y).sum())
            total += y.numel()
        val_acc, val_loss = evaluate_pretext(model, val_loader, device)
        sched.step(val_loss)
        run.train_acc.append(correct / total)
        run.train_loss.append(loss_sum / total)
        run.val_acc.append(val_acc)
        run.val_loss.append(val_loss)
        log.info(
            "pcl %s epoch %d/%d: loss %.4f, train acc %.3f, val acc %.3f (%.1f s)",
            student_backbone_name,
            epoch + 1,
            epochs,
            run.train_loss[-1],
            run.train_acc[-1],
            val_acc,
            time.perf_counter() - started,
        )
        if on_epoch is not None:
            on_epoch(epoch + 1, run)
    return run
