"""PCL augmentation, feature retrieval, linear probe and the fine-tuning bridge (paper 3; PCL's released code)."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_PCL_RUN

from actdistill.apps.ssl_grid import finetune_config
from actdistill.config import load_config
from actdistill.data.build import SeededView
from actdistill.data.video_transforms import VideoCompose
from actdistill.errors import ActdistillError
from actdistill.models import create_model
from actdistill.models.pcl_net import PCLNet, ResidualInput, backbone_state, residual_frames
from actdistill.ssl.augment import AugmentConfig, build_pcl_augment, clip_generator
from actdistill.ssl.dataset import PCLTupleDataset, _records
from actdistill.ssl.evaluate import EvalClipDataset, extract_features, linear_probe, retrieval_topk
from actdistill.utils.checkpoint import save_weights


def _recs(root, subset: str):
    """The split-1 video records of a UCF101-layout root (what the `pcl_ucf101` dataset reads)."""
    return _records(load_config(None, ["data.name=pcl_ucf101", f"data.root={root}", "data.num_workers=0"]), subset)


def export_backbone(pcl: PCLNet, path):
    """What an ssl-grid run writes for fine-tuning: the PCL backbone's weights (`backbone.safetensors`)."""
    save_weights(backbone_state(pcl), path)
    return path


# --- augmentation (PCL's train_vcp_contrast.py) -----------------------------------------------------------------------


def _always_on() -> AugmentConfig:
    return AugmentConfig(resize=[40, 50], crop=32, jitter_p=1.0, grayscale_p=0.0, blur_p=1.0, flip_p=0.5)


def test_one_draw_shared_by_all_frames_of_a_clip() -> None:
    frame = torch.randint(0, 256, (3, 48, 60), dtype=torch.uint8)
    clip = frame.expand(6, -1, -1, -1).contiguous()  # (T, C, H, W), every frame identical
    aug = build_pcl_augment(_always_on())
    for k in range(4):
        out = aug(clip, clip_generator(123, k))
        assert out.shape == (3, 6, 32, 32) and out.dtype == torch.float32
        assert torch.equal(out, out[:, :1].expand_as(out)), "frames of one clip got different transforms"


def test_draws_differ_between_clips_and_repeat_per_seed() -> None:
    clip = torch.randint(0, 256, (4, 3, 48, 60), dtype=torch.uint8)
    aug = build_pcl_augment(_always_on())
    outs = [aug(clip, clip_generator(7, k)) for k in range(3)]
    assert not torch.equal(outs[0], outs[1]) and not torch.equal(outs[1], outs[2])
    assert torch.equal(outs[0], aug(clip, clip_generator(7, 0)))
    gray = build_pcl_augment(AugmentConfig(crop=48, grayscale_p=1.0, jitter_p=0.0, blur_p=0.0))(clip)
    assert torch.allclose(gray[0] * 0.229 + 0.485, gray[1] * 0.224 + 0.456, atol=1e-5)  # equal channels


class _Recorder(VideoCompose):
    """Keeps every draw the dataset makes, in call order."""

    def __init__(self, inner: VideoCompose) -> None:
        super().__init__(inner.transforms)
        self.draws: list[dict] = []

    def __call__(self, clip: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        steps = []
        for t in self.transforms:  # what VideoCompose does, keeping each step's draw
            params = t.sample_params(clip, rng)
            steps.append(params)
            clip = t.apply(clip, params)
        self.draws.append({"steps": steps})
        return clip


def test_tuple_clips_get_different_draws_seeded_by_seed_epoch_index(tiny_ucf) -> None:
    recs = _recs(tiny_ucf, "train")
    aug = _Recorder(build_pcl_augment(AugmentConfig(crop=24)))
    # Training draws come from the torch RNG that the engine's SeededView seeds per (seed, epoch, index).
    ds = SeededView(PCLTupleDataset(tiny_ucf, recs, clip_len=4, interval=2, min_gap=2, augment=aug), seed=3)
    ds.set_epoch(1)
    clips = ds[1]["input"]
    assert clips.shape == (3, 3, 4, 24, 24)
    first = aug.draws[:3]
    assert first[0] != first[1] and first[1] != first[2] and first[0] != first[2]
    aug.draws.clear()
    torch.rand(3)  # global RNG use in between must not matter
    again = ds[1]["input"]
    assert aug.draws[:3] == first and torch.equal(again, clips)  # same (seed, epoch, index): same tuple
    ds.set_epoch(2)
    aug.draws.clear()
    ds[1]
    assert aug.draws[:3] != first
    off = PCLTupleDataset(tiny_ucf, recs, clip_len=4, interval=2, seed=3, min_gap=2)
    assert off[1]["input"].shape == (3, 3, 4, 32, 32)  # augmentation off: stored size, plain normalisation


def test_augment_config_rejects_bad_settings() -> None:
    with pytest.raises(ActdistillError, match="even"):
        AugmentConfig.from_dict({"crop": 111})
    with pytest.raises(ActdistillError, match="unknown augmentation keys"):
        AugmentConfig.from_dict({"crops": 112})
    with pytest.raises(ActdistillError, match="resize"):
        AugmentConfig.from_dict({"resize": [100, 171], "crop": 112})


# --- retrieval and linear probe (PCL retrieve_clips.py protocol) -----------------------------------------------


def test_retrieval_topk_on_hand_made_features() -> None:
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.7, 0.7]])
    g_labels = torch.tensor([0, 1, 2, 3])
    # Query 0 (label 0) points at gallery 0: hit at k = 1. Query 1 (label 2) ranks the gallery 1, 3, 0, 2 (cosines
    # .98, .83, .20, −.20), so its class-2 item comes last: first hit at k = 4. Query 2's class (5) is absent.
    query = torch.tensor([[2.0, 0.1], [0.2, 1.0], [0.0, -1.0]])
    q_labels = torch.tensor([0, 2, 5])
    acc = retrieval_topk(query, q_labels, gallery, g_labels, ks=(1, 2, 3, 4, 50))
    assert acc == pytest.approx({1: 1 / 3, 2: 1 / 3, 3: 1 / 3, 4: 2 / 3, 50: 2 / 3})
    # cosine: scaling a feature changes nothing
    assert retrieval_topk(query * 5, q_labels, gallery * 0.1, g_labels, ks=(1, 4)) == pytest.approx(
        {1: 1 / 3, 4: 2 / 3}
    )
    with pytest.raises(ActdistillError, match="-d"):
        retrieval_topk(query, q_labels, torch.zeros(4, 3), g_labels)


def test_linear_probe_learns_a_separable_toy_set() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=gen) * 4
    y = torch.arange(3).repeat_interleave(40)
    x = centres[y] + torch.randn(120, 16, generator=gen)
    idx = torch.randperm(120, generator=gen)
    train, test = idx[:90], idx[90:]
    res = linear_probe(x[train], y[train], x[test], y[test], steps=200)
    assert res["train_acc"] == 1.0 and res["test_acc"] >= 0.95
    shuffled = linear_probe(x[train], y[train][torch.randperm(90, generator=gen)], x[test], y[test], steps=200)
    assert shuffled["test_acc"] < 0.7  # labels unrelated to features: near chance


def test_features_are_clip_means_of_the_pcl_embedding(tiny_ucf) -> None:
    torch.manual_seed(0)
    model = PCLNet(create_model("r3d_10", 5, channel_scale=1 / 16)).eval()
    recs = _recs(tiny_ucf, "test")
    ds = EvalClipDataset(tiny_ucf, recs, clip_len=8, clips_per_video=3, crop=24, resize=None)
    assert ds.starts(24) == [0, 8, 16]
    feats, labels = extract_features(model, ds, batch_size=2)
    assert feats.shape == (len(recs), model.feat_dim) and labels.tolist() == [r.label for r in recs]
    clips, _ = ds[0]
    with torch.no_grad():
        expected = model.embed(clips).mean(0)
    assert torch.allclose(feats[0], expected, atol=1e-5)


# --- fine-tuning bridge --------------------------------------------------------------------------------------


def test_exported_backbone_loads_into_residual_input_for_finetuning(tmp_path) -> None:
    torch.manual_seed(0)
    pcl = PCLNet(create_model("r3d_10", 5, channel_scale=1 / 16))
    path = export_backbone(pcl, tmp_path / "backbone.safetensors")
    model = create_model("residual_input", 7, pretrained=path, backbone="r3d_10", channel_scale=1 / 16).eval()
    assert isinstance(model, ResidualInput) and model.num_classes == 7
    src = pcl.backbone.state_dict()
    for key, value in model.backbone.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, src[key]), key
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        feat = pcl.backbone.eval().forward_features(residual_frames(x))[-1]
        assert torch.allclose(model.forward_features(x)[-1], feat, atol=1e-6)
    assert model(x).shape == (2, 7)


def test_finetune_config_is_a_valid_engine_recipe(tmp_path) -> None:
    from actdistill.config import config_from_dict

    raw = finetune_config(
        tmp_path / "b.pth", "c3d", tmp_path / "UCF", tmp_path / "ft", backbone_kwargs={"channel_scale": 0.5}
    )
    cfg = config_from_dict(raw)
    assert cfg.student.name == "residual_input" and cfg.student.kwargs == {"backbone": "c3d", "channel_scale": 0.5}
    assert (cfg.optim.lr, cfg.data.batch_size, cfg.train.epochs, cfg.data.num_clips) == (1e-3, 8, 150, 10)
    plain = config_from_dict(
        finetune_config("b.pth", "r3d_10", "UCF", "ft", residual=False, num_clips=1, overrides={"train": {"epochs": 2}})
    )
    assert plain.student.name == "r3d_10" and plain.train.epochs == 2 and plain.train.seed == 632


def test_finetune_through_the_engine_from_a_pcl_backbone(tiny_ucf, tmp_path) -> None:
    from actdistill.apps.ssl_grid import finetune

    torch.manual_seed(0)
    backbone = export_backbone(
        PCLNet(create_model("r3d_10", 5, channel_scale=1 / 16)), tmp_path / "backbone.safetensors"
    )
    raw = finetune_config(
        backbone,
        "r3d_10",
        tiny_ucf,
        tmp_path / "ft",
        backbone_kwargs={"channel_scale": 1 / 16},
        epochs=1,
        clip_len=8,
        image_size=24,
        resize=0,
        num_clips=2,
        batch_size=4,
        device="cpu",
    )
    with pytest.warns(UserWarning, match="class count differs"):  # the 5-way pretext fc is replaced
        res = finetune(raw)
    assert res["student"] == "residual_input" and res["epochs"] == 1
    assert (tmp_path / "ft" / "results.json").is_file()


def test_validation_repeats_draw_several_tuples_per_video(tiny_ucf) -> None:
    recs = _recs(tiny_ucf, "test")
    one = PCLTupleDataset(tiny_ucf, recs, clip_len=4, interval=2, train=False, seed=1, min_gap=2)
    three = PCLTupleDataset(tiny_ucf, recs, clip_len=4, interval=2, train=False, seed=1, min_gap=2, repeats=3)
    n = len(one)
    assert len(three) == 3 * n
    assert torch.equal(three[0]["input"], one[0]["input"])  # item i < N is exactly the single-tuple validation
    # the same video, other tuples
    draws = {(three[i * n]["label"], three[i * n]["input"].sum().item()) for i in range(3)}
    assert len(draws) > 1
    with pytest.raises(ActdistillError, match="repeats"):
        PCLTupleDataset(tiny_ucf, recs, clip_len=4, interval=2, train=True, repeats=2)


def test_dataloader_workers_and_augmentation_keep_pcl_runs_reproducible(tiny_ucf, tmp_path) -> None:
    """The same PCL run (task `pcl`, through the engine) with 0 or 2 loader workers gives the same losses and
    validation accuracy; turning the augmentation off changes the inputs and so the loss."""
    from actdistill.engine.fit import fit

    def run(out, *extra):
        base = [*TINY_PCL_RUN, f"data.root={tiny_ucf}", f"train.out_dir={tmp_path / out}"]
        return fit(load_config(None, [*base, *extra]))["history"][0]

    augment = "data.augment={crop: 24, resize: null}"
    a = run("a", augment)
    b = run("b", augment, "data.num_workers=2")
    assert a["train"] == pytest.approx({**b["train"], **{k: a["train"][k] for k in a["train"] if k.endswith("_s")}})
    assert a["val"] == b["val"]
    c = run("c")  # augmentation off: other inputs, other loss
    assert c["train"]["loss"] != a["train"]["loss"]
