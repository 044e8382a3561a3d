"""Issue 15: every task trains under torchrun. 2 gloo processes on CPU equal 1 process with the same global batch.

Two runs, each launched as `python -m torch.distributed.run --nproc-per-node 2 -m actdistill train ...` and compared
with the same run in one process (`fit`) with twice the per-process batch:

* paper 3's PCL + KD (`pcl_kd`, `contrast: bank`) with the group-norm `video3d_demo` backbone: the memory-bank
  updates are all-gathered and the negatives are drawn per sample, so the two processes hold the single process's
  banks; GroupNorm makes a per-process half batch compute exactly what it computes inside the whole batch;
* paper 2's generative detection KD (`detection_generative_kd`, two stages per epoch) from a
  `detection_generative_teacher` run; the detector uses GroupNorm and its loss normalisers are averaged over ranks.

Tolerances: training losses and parts 1e-4 relative (only the order of float additions differs), evaluation metrics
1e-4 (PCL's pretext accuracy is a count: exact), final student weights 1e-4 absolute. A real error (gradients
summed instead of averaged, a rank-local memory bank, per-rank negatives, a normaliser not averaged over ranks)
moves them by 1e-2 or more. Rank 0 alone writes and logs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from actdistill.config import load_config
from actdistill.engine.fit import fit
from actdistill.utils.checkpoint import load_checkpoint, load_weights

REPO = Path(__file__).resolve().parents[1]
QUIET = ["train.progress=false", "train.tensorboard=false", "train.precision=fp32", "train.device=cpu"]


def pcl_overrides(root: Path) -> list[str]:
    """A tiny PCL run on the synthetic UCF101 copy (8-frame clips, 32 px, group-norm backbone, K = 8 negatives)."""
    return [
        "data.name=pcl_ucf101",
        f"data.root={root}",
        "data.clip_len=8",
        "data.tuple_interval=4",
        "data.remote_min_gap=2",
        "data.num_workers=0",
        "data.image_size=32",
        "student.name=pcl",
        "student.kwargs={backbone: video3d_demo, backbone_kwargs: {channel_scale: 0.25, norm: group}}",
        "method.name=pcl",
        "method.k=8",
        "optim.lr=0.01",
        "train.epochs=2",
        *QUIET,
    ]


def detection_overrides(feats: Path, synth: Path) -> list[str]:
    """Data overrides of the synthetic detection set (features of a 1/16-width I3D, 32-step crops).

    32 steps, not 16: the coarsest pyramid level then has 4 positions, not 2. GroupNorm over 2 positions of one
    channel returns ±1 whatever the inputs, and its gradient is so ill-conditioned that float round-off alone
    moves the 1-vs-2-process comparison by 1e-4.
    """
    return [
        f"data.root={feats}",
        f"data.annotations={synth / 'annotations'}",
        f"data.classes={synth / 'classes.txt'}",
        "data.crop_len=32",
        "data.num_workers=0",
        "sched.warmup_epochs=1",
        "train.epochs=2",
        "train.eval_every=1",
        *QUIET,
    ]


def write_pcl_data(root: Path) -> Path:
    from actdistill.data.synthetic_video import write_synthetic_ucf101

    return write_synthetic_ucf101(root, num_classes=4, videos_per_class=8, groups=4, frames=48, size=32, seed=0)


def write_detection_data(root: Path, num_val: int = 4) -> tuple[Path, Path]:
    """(feature folder, synthetic dataset folder): `num_val` training videos, 2 test videos (8-10 s: 40-50 feature
    steps of unequal lengths), 16 px, features of a 1/16-width I3D."""
    from actdistill.detect.features import extract_features, load_backbone
    from actdistill.detect.synthetic import write_synthetic_detection

    synth = write_synthetic_detection(
        root / "synth", num_val=num_val, num_test=2, size=16, seconds=(8.0, 10.0), segment_seconds=(1.0, 3.0), seed=1
    )
    torch.manual_seed(0)
    backbone = load_backbone("i3d", 5, channel_scale=0.0625)
    extract_features(backbone, synth / "videos", root / "feats", backbone="i3d", size=16, window=8, stride=2,
                     progress=False)  # fmt: skip
    return root / "feats", synth


def child_env() -> dict[str, str]:
    """The environment of a launched job: this worktree first, one thread, no torchrun variables, no GPU."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    path = [str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    return {**env, "PYTHONPATH": os.pathsep.join(path), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "-m", "actdistill", "train", *args]  # fmt: skip
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def max_weight_difference(a: Path, b: Path) -> float:
    wa, wb = load_weights(a), load_weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


def assert_only_rank0_wrote(out: Path, proc: subprocess.CompletedProcess, epochs: int, checkpoints: list[str]) -> None:
    """One metrics line and one log line per epoch, one summary line, one set of checkpoints."""
    assert len((out / "metrics.jsonl").read_text().splitlines()) == epochs
    logs = proc.stdout + proc.stderr
    for epoch in range(1, epochs + 1):
        assert logs.count(f"epoch {epoch}/{epochs} ") == 1, logs[-3000:]
    assert logs.count("last epoch ") == 1, logs[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == sorted(checkpoints)


@pytest.fixture(scope="module")
def pcl_teacher(tmp_path_factory):
    """(data root, a one-epoch PCL run's last.pt): the teacher of the PCL + KD runs."""
    base = tmp_path_factory.mktemp("pcl_ddp")
    root = write_pcl_data(base / "UCF")
    out = base / "teacher"
    fit(load_config(None, [*pcl_overrides(root), "data.batch_size=4", "train.epochs=1", f"train.out_dir={out}"]))
    return root, out / "checkpoints" / "last.pt"


def test_pcl_kd_two_processes_match_one_process(pcl_teacher, tmp_path):
    root, teacher = pcl_teacher
    kd = [*pcl_overrides(root), "method.name=pcl_kd", "method.contrast=bank", f"teacher.checkpoint={teacher}"]
    single = fit(load_config(None, [*kd, "data.batch_size=4", f"train.out_dir={tmp_path / 'one'}"]))
    out = tmp_path / "two"
    proc = torchrun([*kd, "data.batch_size=2", f"train.out_dir={out}"])
    assert_only_rank0_wrote(out, proc, 2, ["best.pt", "epoch_0001.pt", "epoch_0002.pt", "last.pt"])
    double = json.loads((out / "results.json").read_text())
    assert double["world_size"] == 2 and double["global_batch"] == 4 == single["global_batch"]
    assert single["world_size"] == 1 and len(single["history"]) == len(double["history"]) == 2
    for a, b in zip(single["history"], double["history"]):
        assert set(a["train"]) == set(b["train"]) and {"ce", "con", "kd"} <= set(a["train"])
        for key in ("loss", "ce", "con", "kd", "acc"):
            assert b["train"][key] == pytest.approx(a["train"][key], rel=1e-4), (b["epoch"], key)
        for split in ("val", "test"):
            assert b[split]["pretext_acc"] == a[split]["pretext_acc"]  # a count over the gathered shards
            assert b[split]["pretext_loss"] == pytest.approx(a[split]["pretext_loss"], rel=1e-4)
    assert double["last"]["pretext_acc"] == single["last"]["pretext_acc"]
    assert max_weight_difference(tmp_path / "one" / "student_last.safetensors", out / "student_last.safetensors") < 1e-4
    # The memory banks (method state) of the 2-process run equal the single process's.
    banks_one = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")["method"]
    banks_two = load_checkpoint(out / "checkpoints" / "last.pt")["method"]
    flat_one, flat_two = _tensors(banks_one), _tensors(banks_two)
    assert flat_one.keys() == flat_two.keys() and any("bank" in k for k in flat_one), sorted(flat_one)
    for key, value in flat_one.items():
        torch.testing.assert_close(flat_two[key].double(), value.double(), rtol=0, atol=1e-4, msg=key)


def _tensors(tree, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _tensors(sub, f"{prefix}/{key}").items()}
    return {}


@pytest.fixture(scope="module")
def detection_teacher(tmp_path_factory):
    """(features, synthetic set, a `detection_generative_teacher` run's last.pt): the generative KD teacher."""
    base = tmp_path_factory.mktemp("det_ddp")
    feats, synth = write_detection_data(base)
    out = base / "teacher"
    cfg = load_config(
        REPO / "configs/detection/synth_teacher_gen.yaml",
        [*detection_overrides(feats, synth), "data.batch_size=2", "train.epochs=1", f"train.out_dir={out}",
         "student.kwargs={preset: large, attention: true, embed_dim: 16}"],
    )  # fmt: skip
    fit(cfg)
    return feats, synth, out / "checkpoints" / "last.pt"


def test_generative_detection_kd_two_processes_match_one_process(detection_teacher, tmp_path):
    """Paper 2's generative detection KD (both stages) from a generative-teacher run, 2 × 1 vs 1 × 2 videos.

    The recipe's AdamW is replaced by SGD for the attention stage (the generative stage keeps the method's Adam):
    the detector's convolution biases feed a one-channel-per-group GroupNorm that cancels them, so their gradient is
    zero up to round-off, and AdamW turns round-off into ±lr steps (measured: 2e-3 apart after 2 epochs with no
    other difference). Test videos have 48 and 47 feature steps: evaluation pads one of them in one process, not
    in two.
    """
    feats, synth, teacher = detection_teacher
    recipe = str(REPO / "configs/detection/synth_student_gen.yaml")
    kd = [
        *detection_overrides(feats, synth),
        "student.kwargs={preset: small, attention: true, embed_dim: 16}",
        f"teacher.checkpoint={teacher}",
        f"method.teacher_extras={teacher}",
        "optim.name=sgd",
        "optim.lr=0.01",
    ]
    single = fit(load_config(recipe, [*kd, "data.batch_size=2", f"train.out_dir={tmp_path / 'one'}"]))
    out = tmp_path / "two"
    proc = torchrun([recipe, *kd, "data.batch_size=1", f"train.out_dir={out}"])
    assert "no CVAE" not in proc.stdout + proc.stderr  # the teacher CVAE came from the teacher run
    assert_only_rank0_wrote(out, proc, 2, ["epoch_0001.pt", "epoch_0002.pt", "last.pt"])
    double = json.loads((out / "results.json").read_text())
    assert double["world_size"] == 2 and double["global_batch"] == 2 == single["global_batch"]
    wrong = []
    for a, b in zip(single["history"], double["history"], strict=True):
        keys = set(a["train"]) - {"skipped", "data_time_s", "step_time_s"}
        assert keys == set(b["train"]) - {"skipped", "data_time_s", "step_time_s"}
        assert {"generative/kd_gen", "attention/att", "attention/cls", "attention/reg"} <= keys, sorted(keys)
        for key in sorted(keys):
            if b["train"][key] != pytest.approx(a["train"][key], rel=1e-4, abs=1e-6):
                wrong.append(
                    f"epoch {a['epoch']} train {key}: 1 process {a['train'][key]:.6g}, 2: {b['train'][key]:.6g}"
                )
        if b["test"]["average_map"] != pytest.approx(a["test"]["average_map"], abs=1e-4):
            wrong.append(f"epoch {a['epoch']} test average_map: 1 process {a['test']['average_map']:.6g}, "
                         f"2: {b['test']['average_map']:.6g}")  # fmt: skip
    weights = max_weight_difference(tmp_path / "one" / "student_last.safetensors", out / "student_last.safetensors")
    if weights >= 1e-4:
        wrong.append(f"final student weights differ by {weights:.3g}")
    assert not wrong, "2 processes differ from 1:\n" + "\n".join(wrong)


# --- what the equality above rests on, checked in one process (fast, and it names the part that breaks it) -------


def test_detector_output_does_not_depend_on_padding():
    """A video's detections must not depend on how much padding its batch adds (the evaluator batches whole test
    videos of different lengths; under torchrun each process pads only its own shard)."""
    from actdistill.models.temporal_detector import build_detector

    torch.manual_seed(0)
    model = build_detector("small", 6, 3, attention=True, embed_dim=16).eval()
    x = torch.randn(1, 6, 27)
    with torch.no_grad():
        alone = model(x, torch.ones(1, 27, dtype=torch.bool))
        padded = model(torch.cat([x, torch.zeros(1, 6, 5)], dim=2), torch.arange(32)[None] < 27)
        for key in ("cls", "reg"):
            for level, (a, b) in enumerate(zip(alone[key], padded[key])):
                diff = float((a - b[..., : a.shape[-1]]).abs().max())
                assert diff < 1e-5, f"{key} level {level}: padding 27 → 32 steps changes the outputs by {diff:.3g}"
        diff = float((alone["attention"] - padded["attention"][..., :27]).abs().max())
        assert diff < 1e-5, f"attention: padding changes it by {diff:.3g}"


def _generative_kd_method():
    from actdistill.engine.build import build_method
    from actdistill.models.temporal_detector import build_detector

    torch.manual_seed(0)
    teacher = build_detector("large", 6, 2, attention=True, embed_dim=16)
    student = build_detector("small", 6, 2, attention=True, embed_dim=16)
    method = build_method({"name": "detection_generative_kd", "bg_weight": 1.0}, student, teacher).train()
    method.on_epoch(1)
    return method


def test_generative_detection_stages_draw_noise_per_sample():
    """Under torchrun each process runs the stage on its half of the global batch with the same seeded RNG; DDP then
    averages the two. That equals the whole batch in one process only if a sample's CVAE noise (the
    reparameterisation ε of eq. 6 and the prior sample of eq. 13) does not depend on its position in the batch."""
    method = _generative_kd_method()
    g = torch.Generator().manual_seed(1)
    batch = {
        "input": torch.randn(2, 6, 16, generator=g),
        "mask": torch.ones(2, 16, dtype=torch.bool),
        # The same segment in both: equal positive counts, so each half's normalisers equal the whole batch's.
        "segments": [torch.tensor([[3.0, 9.0]]), torch.tensor([[3.0, 9.0]])],
        "labels": [torch.tensor([0]), torch.tensor([1])],
        "index": torch.tensor([0, 1]),
    }
    halves = [{k: v[i : i + 1] for k, v in batch.items()} for i in range(2)]
    for stage in method.stages():
        torch.manual_seed(7)
        whole = stage.forward(batch)
        parts = []
        for half in halves:
            torch.manual_seed(7)  # every process seeds its RNG alike
            parts.append(stage.forward(half))
        for key, value in whole.parts.items():
            mean = (float(parts[0].parts[key].detach()) + float(parts[1].parts[key].detach())) / 2
            assert mean == pytest.approx(float(value.detach()), rel=1e-5), (stage.name, key)
