"""Evaluating PCL features: nearest-neighbour clip retrieval, a linear probe, and fine-tuning (PCL's released code).

Retrieval follows PCL/VCOP `retrieve_clips.py`: each video gives `clips_per_video` uniformly spaced clips, their
pooled backbone features (residual input, as in pre-training) are averaged, test videos query train videos by cosine
similarity, and a query is a hit at k when any of its k nearest train videos has its class (k = 1, 5, 10, 20, 50).
The linear probe is multinomial logistic regression on the same frozen features. Fine-tuning exports the backbone as a
plain state dict and trains it with the main engine (`actdistill.engine.fit.fit`), behind `residual_input`, a model
wrapper that feeds residual frames to the backbone as PCL's `ft_classify.py --modality res` does.
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
from actdistill.ssl.pcl import PCLNet
from actdistill.ssl.pretext import residual_frames

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

    Full-batch Adam for `steps` steps, L2 penalty `weight_decay`; returns train and test accuracy in [0, 1].
    """
    gen = torch.Generator().manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0, unbiased=False).clamp_min(1e-6)
    xs, xt = (train_x - mean) / std, (test_x - mean) / std
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    layer = nn.Linear(xs.shape[1], num_classes)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.01)
        layer.bias.zero_()
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(layer(xs), train_y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        train_acc = (layer(xs).argmax(1) == train_y).float().mean().item()
        test_acc = (layer(xt).argmax(1) == test_y).float().mean().item()
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


# --- fine-tuning through the main engine ------------------------------------------------------------------------


class ResidualInput(nn.Module):
    """Contract-following wrapper: `forward_features(x) = backbone.forward_features(residual_frames(x))`.

    `(B, C, T, H, W)` → logits `(B, K)`; weights live under `backbone.`, so a plain backbone state dict loads into it.
    `forward` also takes the engine's multi-clip test input `(B, V, C, T, H, W)` and averages the V clips' logits
    (PCL tests on 10 clips per video).
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = backbone.num_classes
        self.feature_info = backbone.feature_info
        self.pretrained_cfg = backbone.pretrained_cfg

    def forward_features(self, x: Tensor) -> list[Tensor]:
        return self.backbone.forward_features(residual_frames(x))

    def get_classifier(self) -> nn.Module:
        return self.backbone.get_classifier()

    def forward_head(self, feature: Tensor) -> Tensor:
        return self.backbone.forward_head(feature)

    def forward(self, x: Tensor) -> Tensor:
        """Clip `(B, C, T, H, W)` or clips `(B, V, C, T, H, W)` → logits `(B, K)` (mean over the V clips)."""
        if x.dim() == 6:
            b, v = x.shape[:2]
            return self.forward(x.flatten(0, 1)).view(b, v, -1).mean(1)
        return self.forward_head(self.forward_features(x)[-1])


def residual_input(
    num_classes: int, pretrained: bool | str = False, backbone: str = "r3d_10", **kwargs: Any
) -> ResidualInput:
    """`create_model("residual_input", K, pretrained=<backbone state dict>, backbone="c3d", channel_scale=..)`."""
    from actdistill.models import create_model

    return ResidualInput(create_model(backbone, num_classes, pretrained=pretrained or False, **kwargs))


def ensure_residual_input_registered() -> None:
    """Register `residual_input` in MODELS (idempotent; done when this module is imported, e.g. by the CLI)."""
    from actdistill.registry import MODELS

    if "residual_input" not in MODELS:
        MODELS.register(
            "residual_input",
            paper="PCL fine-tuning with residual-frame input (ft_classify.py --modality res)",
            role="fine-tuning wrapper for PCL backbones",
            loads_path=True,
        )(residual_input)


def export_backbone(model: PCLNet, path: str | Path) -> Path:
    """Save `model.backbone.state_dict()` (its 5-way `fc` included; fine-tuning drops it) as a plain `.pth`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}, path)
    return path


def finetune_config(
    backbone_file: str | Path,
    arch: str,
    data_root: str | Path,
    out_dir: str | Path,
    *,
    backbone_kwargs: dict[str, Any] | None = None,
    residual: bool = True,
    epochs: int = 150,
    lr: float = 1e-3,
    batch_size: int = 8,
    clip_len: int = 16,
    image_size: int = 112,
    resize: int = 128,
    num_clips: int = 10,
    split: int = 1,
    device: str = "auto",
    seed: int = 632,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An engine recipe (`config_from_dict` mapping) fine-tuning a PCL backbone for action classification.

    Defaults are PCL's `ft_classify.py` (SGD lr 1e-3, batch 8, 150 epochs, 10 test clips per video);
    `overrides` is merged section by section over the result.
    """
    if num_clips > 1 and not residual:
        raise ActdistillError(
            f"fine-tuning {arch} with num_clips={num_clips} needs residual=True (the residual_input wrapper averages "
            "the clips); set num_clips=1 for a plain backbone"
        )
    kwargs = dict(backbone_kwargs or {})
    student = (
        {"name": "residual_input", "pretrained": str(backbone_file), "kwargs": {"backbone": arch, **kwargs}}
        if residual
        else {"name": arch, "pretrained": str(backbone_file), "kwargs": kwargs}
    )
    raw: dict[str, Any] = {
        "name": f"ft_{arch}",
        "data": {
            "name": "ucf101",
            "root": str(data_root),
            "split": split,
            "clip_len": clip_len,
            "image_size": image_size,
            "resize": resize,
            "num_clips": num_clips,
            "batch_size": batch_size,
            "num_workers": 0,
        },
        "student": student,
        "method": {"name": "vanilla"},
        "optim": {"name": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": 5e-4},
        "sched": {"name": "none"},  # PCL's ReduceLROnPlateau(patience 50) barely fires in 150 epochs
        "train": {
            "epochs": epochs,
            "device": device,
            "seed": seed,
            "out_dir": str(out_dir),
            "best_metric": "top1",
            "precision": "fp32",
            "progress": False,
            "tensorboard": False,
            "keep_last": 1,
        },
    }
    for section, values in (overrides or {}).items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    return raw


def finetune(raw: dict[str, Any], *, overwrite: bool = False) -> dict[str, Any]:
    """Run `finetune_config(...)`'s recipe with `actdistill.engine.fit.fit`; returns fit's results."""
    from actdistill.config import config_from_dict
    from actdistill.engine.fit import fit

    if raw.get("student", {}).get("name") == "residual_input":
        ensure_residual_input_registered()
    return fit(config_from_dict(raw, where="ssl fine-tune recipe"), overwrite=overwrite)


ensure_residual_input_registered()
