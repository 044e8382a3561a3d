"""Data parallelism: a 2-process gloo run equals a 1-process run with the same global batch; rank 0 alone writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import engine_run, train_epoch

from actdistill.config import load_config
from actdistill.data.build import EpochBatchSampler, shard_range
from actdistill.distill.base import Distiller, Stage, make_output
from actdistill.distill.relation import CRD
from actdistill.engine.distributed import DistContext, Replicas, unused_parameters
from actdistill.engine.fit import fit
from actdistill.errors import ActdistillError
from actdistill.models import create_model
from actdistill.utils.checkpoint import load_weights

COMMON = [
    "data.image_size=32",
    "data.num_workers=0",
    "train.epochs=2",
    "train.progress=false",
    "train.precision=fp32",
    "train.device=cpu",
    "optim.name=adamw",
    "optim.lr=0.002",
    "sched.name=step",
    "sched.step_size=1",
    "sched.gamma=0.5",
    "student.name=pvt_v2_demo",
    "teacher.name=convnext_demo",
    "method.name=kd",
]


@pytest.fixture(scope="module")
def data_root(tiny_stanford40):
    return tiny_stanford40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def test_sharded_batches_are_the_single_process_batches():
    one = EpochBatchSampler(26, 8, seed=3)
    two = [EpochBatchSampler(26, 4, seed=3, rank=r, world=2) for r in range(2)]
    for epoch in (1, 2):
        for s in (one, *two):
            s.set_epoch(epoch)
        joined = [a + b for a, b in zip(*(list(s) for s in two))]
        assert joined == list(one) and len(joined) == 3  # 26 = 3 × 8 + 2: the incomplete batch is dropped
    epoch2 = list(one)
    one.set_epoch(1)
    assert list(one) != epoch2  # each epoch has its own order
    one.resume_at(2)
    resumed = list(one)
    assert resumed == list(one)[2:] and len(list(one)) == 3  # skips once, then full passes again
    tiny = [list(EpochBatchSampler(5, 4, rank=r, world=2)) for r in range(2)]
    assert sorted(tiny[0][0] + tiny[1][0]) == list(range(5))  # the only batch is kept and split evenly
    blocks = [shard_range(11, r, 3) for r in range(3)]
    assert [i for b in blocks for i in b] == list(range(11))  # test shards: no padding, no duplicates


def test_two_processes_match_one_process(data_root, tmp_path):
    """2 processes × batch 4 vs 1 process × batch 8, KD with a LayerNorm student, fp32 on CPU.

    The global batches are identical (each is sharded in two), DDP averages the two half-batch mean gradients,
    which is the full-batch mean; only the order of float additions differs. Measured: the total loss agrees to
    ~2e-6 relative, the KD part (a KL between nearly equal distributions, so a difference of close numbers) to
    ~1.3e-5, weights after 6 AdamW steps to ~2e-5 absolute (AdamW's normalisation magnifies tiny differences of
    near-zero gradients). Tolerances: 1e-4 relative on losses, 1e-4 absolute on weights; a real error (summed
    instead of averaged gradients, a different sample order) moves them by 1e-2 or more. Validation and test metrics
    are gathered from the shards and must equal the single-process ones exactly; best.pt is chosen on the validation
    split (carved out of train the same way in every process).
    """
    root = f"data.root={data_root}"
    common = [*COMMON, "data.val_fraction=0.25"]
    single = fit(load_config(None, [root, *common, "data.batch_size=8", f"train.out_dir={tmp_path / 'one'}"]))
    out = tmp_path / "two"
    args = [root, *common, "data.batch_size=4", f"train.out_dir={out}", "train.tensorboard=true"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1"]
    cmd += ["--master-port", str(_free_port()), "-m", "actdistill", "train", *args]
    proc = subprocess.run(cmd, env=_child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    double = json.loads((out / "results.json").read_text())
    assert double["world_size"] == 2 and double["global_batch"] == 8 == single["global_batch"]
    assert double["selected_on"] == single["selected_on"] == "val"
    assert double["best"]["epoch"] == single["best"]["epoch"]
    for a, b in zip(single["history"], double["history"]):
        for key in ("loss", "ce", "kd", "acc"):
            assert b["train"][key] == pytest.approx(a["train"][key], rel=1e-4), key
        assert b["val"] == pytest.approx(a["val"], abs=1e-9)
        assert b["test"] == pytest.approx(a["test"], abs=1e-9)
    assert double["per_class_ap"] == pytest.approx(single["per_class_ap"], abs=1e-9)
    assert double["confusion_matrix"] == single["confusion_matrix"]
    wa, wb = load_weights(tmp_path / "one" / "student_last.safetensors"), load_weights(out / "student_last.safetensors")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-4
    # Rank 0 alone wrote and logged: one metrics line per epoch, one TensorBoard file, one log line per epoch.
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    logs = proc.stdout + proc.stderr
    assert logs.count("epoch 1/2 loss") == 1 and logs.count("last epoch top1") == 1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "best.pt",
        "epoch_0001.pt",
        "epoch_0002.pt",
        "last.pt",
    ]


def test_gradient_accumulation_equals_the_large_batch(data_root, tmp_path):
    root = f"data.root={data_root}"
    big = fit(load_config(None, [root, *COMMON, "data.batch_size=8", f"train.out_dir={tmp_path / 'a'}"]))
    acc = [root, *COMMON, "data.batch_size=4", "train.accumulate_steps=2", f"train.out_dir={tmp_path / 'b'}"]
    small = fit(load_config(None, acc))
    assert small["global_batch"] == 8
    for a, b in zip(big["history"], small["history"]):
        assert b["train"]["loss"] == pytest.approx(a["train"]["loss"], rel=1e-5)
    wa, wb = (
        load_weights(tmp_path / "a" / "student_last.safetensors"),
        load_weights(tmp_path / "b" / "student_last.safetensors"),
    )
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-4
    with pytest.raises(ActdistillError, match="accumulate_steps must be at least 1"):
        fit(load_config(None, [root, *COMMON, "train.accumulate_steps=0", f"train.out_dir={tmp_path / 'c'}"]))


class _Unused(Distiller):
    uses_teacher = False

    def __init__(self, student, teacher=None) -> None:
        super().__init__(student, None)
        self.spare = torch.nn.Linear(2, 2)  # a trainable extra the loss never reaches

    def forward(self, batch):
        logits = self.student(batch["input"])
        return make_output(logits, {"ce": torch.nn.functional.cross_entropy(logits, batch["label"])})


def test_probe_finds_unused_parameters_and_leaves_state_alone():
    method = _Unused(create_model("pvt_v2_demo", 3)).train()
    batch = {"input": torch.randn(2, 3, 32, 32), "label": torch.tensor([0, 1])}
    rng = torch.get_rng_state()
    names = unused_parameters(method, method.stages()[0], batch, torch.device("cpu"), None)
    assert names == ["spare.weight", "spare.bias"]
    assert torch.equal(rng, torch.get_rng_state()) and all(p.grad is None for p in method.parameters())


class _TwoStage(Distiller):
    """Stage 1 trains the student on CE; stage 2 trains a second head on the (then frozen) student."""

    uses_teacher = False

    def __init__(self, student, teacher=None) -> None:
        super().__init__(student, None)
        self.head2 = torch.nn.Linear(3, 3)

    def forward(self, batch):
        logits = self.student(batch["input"])
        return make_output(logits, {"ce": torch.nn.functional.cross_entropy(logits, batch["label"])})

    def second(self, batch):
        logits = self.head2(self.student(batch["input"]))
        return make_output(logits, {"ce2": torch.nn.functional.cross_entropy(logits, batch["label"])})

    def stages(self):
        return [
            Stage("student", self.student.parameters, self.forward),
            Stage("head", self.head2.parameters, self.second),
        ]


def _two_stage_run(replicas: Replicas, batches: list[dict]) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    method = _TwoStage(create_model("pvt_v2_demo", 3))
    # Plain SGD (no momentum, no Adam: keeps the differences at float noise); each stage leaves the other's
    # parameters without gradients, hence find_unused.
    run = engine_run(method, batches, lr=0.05, optim={"momentum": 0.0}, replicas=replicas, find_unused=True,
                     accumulate_steps=2)  # fmt: skip
    for epoch in (1, 2):
        train_epoch(run, epoch)
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


def _worker(rank: int, port: int, out: str) -> None:
    """Rank `rank` of 2: CRD banks after steps on different samples, and a two-stage run with accumulation."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        replicas = Replicas(DistContext(rank=rank, world=2), torch.device("cpu"))
        torch.manual_seed(0)
        student, teacher = create_model("pvt_v2_demo", 3), create_model("convnext_demo", 3)
        method = CRD(student, teacher, nce_k=4, feat_dim=8, num_data=16).train()
        replicas.wrap(method, find_unused=False)
        before = method.memory.memory_s.clone()
        opt = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
        torch.manual_seed(10 + rank)  # ranks draw different negatives: the banks must still agree
        for step in range(2):
            index = torch.arange(4) + 4 * rank + 8 * step
            batch = {"input": torch.randn(4, 3, 32, 32), "label": index % 3, "index": index}
            step_out = replicas.step(batch, 0)
            opt.zero_grad()
            step_out.loss.backward()
            opt.step()
        replicas.sync_buffers(method)
        banks = [torch.empty_like(method.memory.memory_s) for _ in range(2)]
        dist.all_gather(banks, method.memory.memory_s)

        g = torch.Generator().manual_seed(1)
        global_batches = [
            {"input": torch.randn(4, 3, 32, 32, generator=g), "label": torch.randint(0, 3, (4,), generator=g)}
            for _ in range(5)  # 5 batches with accumulate_steps=2: the last group is a single batch
        ]
        shards = [{k: v[2 * rank : 2 * rank + 2] for k, v in b.items()} for b in global_batches]
        two = _two_stage_run(replicas, shards)
        every = [None, None]
        dist.all_gather_object(every, two)
        if rank == 0:
            one = _two_stage_run(Replicas(), global_batches)
            torch.save({"banks": banks, "before": before, "two": every, "one": one}, out)
    finally:
        dist.destroy_process_group()


def test_two_ranks_keep_crd_banks_and_two_stage_training_in_step(tmp_path):
    out = tmp_path / "result.pt"
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    saved = torch.load(out)
    a, b = saved["banks"]
    assert torch.equal(a, b)  # CRD: every rank's bank saw every rank's samples
    assert (a != saved["before"]).any(dim=1).tolist() == [True] * 16
    rank0, rank1 = saved["two"]
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # both stages stayed synchronised
    for k, v in saved["one"].items():  # and equal the single-process run with the same global batches
        torch.testing.assert_close(rank0[k], v, rtol=0, atol=1e-5, msg=k)


def test_other_ranks_do_not_create_the_run_folder(tmp_path):
    from actdistill.engine.fit import prepare_run_dir

    run = prepare_run_dir(tmp_path / "run", resume=False, overwrite=False, create=False)
    assert not Path(run).exists()
