"""Evaluating PCL features: nearest-neighbour clip retrieval, a linear probe, and fine-tuning (PCL's released code).

Retrieval follows PCL/VCOP `retrieve_clips.py`: each video gives `clips_per_video` uniformly spaced clips, their
pooled backbone features (residual input, as in pre-training) are averaged, test videos query train videos by cosine
similarity, and a query is a hit at k when any of its k nearest train videos has its class (k = 1, 5, 10, 20, 50).
The linear probe is multinomial logistic regression on the same frozen features. Fine-tuning (`apps/ssl_grid.py`)
trains the backbone with the main engine behind `residual_input` (models/pcl_net.py), which feeds residual frames to
the backbone as PCL's `ft_classify.py --modality res` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actdistill.data.decode import read_frames
from actdistill.data.manifest import VideoRecord
from actdistill.data.video_transforms import CenterCrop, Resize, ToNormalizedClip, VideoCompose, VideoTransform
from actdistill.errors import ActdistillError
from actdistill.models.pcl_net import PCLNet

RETRIEVAL_KS = (1, 5, 10, 20, 50)


class EvalClipDataset(torch.utils.data.Dataset):
    """`(clips (N, C, T, S, S) float, label)` per video: N uniformly spaced clips, [resize →] centre crop S."""

    def __init__(
        self,
        root: str | Path,
        records: Sequence[VideoRecord],
        clip_len: int = 16,
        clips_per_video: int = 10,
        crop: int = 112,
        resize: Sequence[int] | None = (128, 171),
    ) -> None:
        self.root = Path(root)
        self.records = [r for r in records if r.num_frames >= clip_len]
        if not self.records:
            raise ActdistillError(f"{self.root}: no video has the {clip_len} frames an evaluation clip needs")
        self.clip_len, self.clips_per_video = clip_len, clips_per_video
        steps: list[VideoTransform] = [Resize(list(resize))] if resize else []
        self.transform = VideoCompose([*steps, CenterCrop(crop), ToNormalizedClip()])

    def __len__(self) -> int:
        return len(self.records)

    def starts(self, num_frames: int) -> list[int]:
        """Clip starts spread evenly over `[0, num_frames − clip_len]` (VCOP's uniform clip sampling)."""
        last = num_frames - self.clip_len
        if self.clips_per_video == 1:
            return [last // 2]
        return [round(i * last / (self.clips_per_video - 1)) for i in range(self.clips_per_video)]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        rec = self.records[index]
        starts = self.starts(rec.num_frames)
        wanted = sorted({s + t for s in starts for t in range(self.clip_len)})
        frames = dict(zip(wanted, read_frames(self.root / rec.path, wanted).unbind(0), strict=True))
        clips = [self.transform(torch.stack([frames[s + t] for t in range(self.clip_len)])) for s in starts]
        return torch.stack(clips), rec.label


@torch.no_grad()
def extract_features(
    model: PCLNet, dataset: EvalClipDataset, device: str | torch.device = "cpu", batch_size: int = 8
) -> tuple[Tensor, Tensor]:
    """Video features `(V, D)` (mean of the clips' pooled `PCLNet.embed` features) and labels `(V,)`."""
    model = model.to(device).eval()
    feats, labels = [], []
    for clips, y in torch.utils.data.DataLoader(dataset, batch_size):
        b, n = clips.shape[:2]
        f = model.embed(clips.flatten(0, 1).to(device)).view(b, n, -1).mean(1)
        feats.append(f.float().cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def retrieval_topk(
    query: Tensor, query_labels: Tensor, gallery: Tensor, gallery_labels: Tensor, ks: Sequence[int] = RETRIEVAL_KS
) -> dict[int, float]:
    """Top-k retrieval accuracy: query `(Q, D)` vs gallery `(G, D)` by cosine similarity; a query is a hit at k
    when any of its k most similar gallery items has its label. k larger than G is clamped to G."""
    if query.shape[1] != gallery.shape[1]:
        raise ActdistillError(f"query features are {query.shape[1]}-d but gallery ones {gallery.shape[1]}-d")
    sim = F.normalize(query.float(), dim=1) @ F.normalize(gallery.float(), dim=1).t()  # (Q, G)
    order = sim.argsort(dim=1, descending=True)
    same = gallery_labels[order] == query_labels.view(-1, 1)  # (Q, G), neighbours by rank
    return {k: same[:, : min(k, gallery.shape[0])].any(1).float().mean().item() for k in ks}


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    steps: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> dict[str, float]:
    """Multinomial logistic regression on frozen features `(N, D)`, standardised with the train statistics.

    Full-batch Adam for `steps` steps on the mean cross-entropy, L2 penalty `weight_decay`; the gradient of this
    convex objective is written out (`Xᵀ(softmax(XW + b) − Y) / N`), so no autograd graph is built. Returns train
    and test accuracy in [0, 1].
    """
    gen = torch.Generator().manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0, unbiased=False).clamp_min(1e-6)
    xs, xt = ((train_x - mean) / std).float(), ((test_x - mean) / std).float()
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    weight = nn.Parameter(torch.randn(num_classes, xs.shape[1], generator=gen) * 0.01)
    bias = nn.Parameter(torch.zeros(num_classes))
    opt = torch.optim.Adam([weight, bias], lr=lr, weight_decay=weight_decay)
    target = F.one_hot(train_y, num_classes).float()
    with torch.no_grad():
        for _ in range(steps):
            error = ((xs @ weight.T + bias).softmax(dim=1) - target) / xs.shape[0]  # d(mean CE)/d(logits)
            weight.grad, bias.grad = error.T @ xs, error.sum(dim=0)
            opt.step()
        train_acc = ((xs @ weight.T + bias).argmax(1) == train_y).float().mean().item()
        test_acc = ((xt @ weight.T + bias).argmax(1) == test_y).float().mean().item()
    return {"train_acc": train_acc, "test_acc": test_acc}


def evaluate_features(
    model: PCLNet,
    root: str | Path,
    train_records: Sequence[VideoRecord],
    test_records: Sequence[VideoRecord],
    *,
    clip_len: int = 16,
    clips_per_video: int = 10,
    crop: int = 112,
    resize: Sequence[int] | None = (128, 171),
    ks: Sequence[int] = RETRIEVAL_KS,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
) -> dict[str, Any]:
    """Retrieval top-k (test queries train) and a linear probe on `model`'s frozen features."""
    common = dict(clip_len=clip_len, clips_per_video=clips_per_video, crop=crop, resize=resize)
    train_f, train_y = extract_features(model, EvalClipDataset(root, train_records, **common), device, batch_size)
    test_f, test_y = extract_features(model, EvalClipDataset(root, test_records, **common), device, batch_size)
    retrieval = retrieval_topk(test_f, test_y, train_f, train_y, ks)
    return {
        "retrieval": {f"top{k}": v for k, v in retrieval.items()},
        "linear_probe": linear_probe(train_f, train_y, test_f, test_y),
    }
