"""KD, AT, DIST, RKD and CRD against torchdistill's loss classes (torchdistill/losses/mid_level.py, 1.1.5).

Each comparison uses settings where a wrong reduction, temperature or weight would show (batches > 1, T ≠ 1,
unequal weights), and checks that a reference computed with one of those mistakes is far from ours.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _reference_nets import Fixed, ToyNet, far

import actdistill.distill  # noqa: F401  (registers the methods)
from actdistill.distill.adapters import global_pool
from actdistill.distill.feature import AT
from actdistill.distill.functional import at_loss, dist_loss, kd_loss, rkd_loss
from actdistill.distill.logit import DIST, KD
from actdistill.distill.relation import CRD, RKD

mid_level = pytest.importorskip("torchdistill.losses.mid_level", reason="torchdistill (the `dev` extra) is absent")


def _io(**tensors: torch.Tensor) -> dict:
    return {name: {"output": t} for name, t in tensors.items()}


def _logits(seed: int, b: int = 6, k: int = 10, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(b, k, generator=torch.Generator().manual_seed(seed)) * scale


# ------------------------------------------------------------------------------------------------------------ KD


@pytest.mark.parametrize(("temperature", "alpha"), [(4.0, 0.9), (11.0, 0.45)])
def test_kd_matches_torchdistill(temperature: float, alpha: float) -> None:
    zs, zt = _logits(1), _logits(2)
    y = torch.tensor([0, 3, 9, 1, 1, 5])

    def reference(t: float = temperature, a: float = alpha, reduction: str = "batchmean") -> torch.Tensor:
        loss = mid_level.KDLoss("s", "output", "t", "output", temperature=t, alpha=a, reduction=reduction)
        return loss(_io(s=zs), _io(t=zt), targets=y)

    # Paper 1's eq. 2, (1 − α)·T²·KL + α·CE, is torchdistill's α·CE + (1 − α)·T²·KL_batchmean.
    ours = KD(Fixed(zs), Fixed(zt), temperature=temperature, alpha=alpha)({"input": torch.zeros(6), "label": y})
    torch.testing.assert_close(ours.loss, reference(), rtol=1e-5, atol=1e-7)
    # The KL term alone: torchdistill returns it without T² when α = 0.
    soft = mid_level.KDLoss("s", "output", "t", "output", temperature=temperature, alpha=0)(_io(s=zs), _io(t=zt))
    torch.testing.assert_close(kd_loss(zs, zt, temperature), temperature**2 * soft, rtol=1e-5, atol=1e-7)
    # Able to fail: another temperature, reduction or weighting gives another value.
    assert far(ours.loss, reference(t=temperature + 1))
    assert far(ours.loss, reference(reduction="sum"))
    assert far(ours.loss, reference(a=1 - alpha))


def test_kd_video_logits_are_averaged_over_time() -> None:
    zs, zt = torch.randn(4, 5, 7), torch.randn(4, 5, 7)  # per-step I3D logits (B, K, T')
    y = torch.tensor([0, 1, 2, 3])
    ours = KD(Fixed(zs), Fixed(zt), temperature=4.0, alpha=0.1)({"input": torch.zeros(4), "label": y})
    loss = mid_level.KDLoss("s", "output", "t", "output", temperature=4.0, alpha=0.1)
    torch.testing.assert_close(ours.loss, loss(_io(s=zs.mean(-1)), _io(t=zt.mean(-1)), targets=y), rtol=1e-5, atol=0)


# ------------------------------------------------------------------------------------------------------------ AT


@pytest.mark.parametrize("mode", ["code", "paper"])
@pytest.mark.parametrize("video", [False, True])
def test_at_matches_torchdistill(mode: str, video: bool) -> None:
    torch.manual_seed(0)
    # Student 4/8 channels, teacher 6/12, same spatial sizes (torchdistill does not pool).
    student, teacher = ToyNet((4, 8), video=video), ToyNet((6, 12), video=video)
    x = torch.randn(5, 3, 4, 16, 16) if video else torch.randn(5, 3, 16, 16)
    method = AT(student, teacher, beta=1000.0, mode=mode)  # default taps: both stages
    out = method({"input": x, "label": torch.zeros(5, dtype=torch.long)})
    fs, ft = student.forward_features(x), teacher.forward_features(x)
    pairs = {
        f"p{i}": {"student": {"io": "output", "path": f"s{i}"}, "teacher": {"io": "output", "path": f"t{i}"}}
        for i in (0, 1)
    }

    def reference(m: str = mode) -> torch.Tensor:
        at = mid_level.ATLoss(pairs, mode=m)
        return at(_io(s0=fs[0], s1=fs[1]), _io(t0=ft[0], t1=ft[1]))

    torch.testing.assert_close(out.parts["at"], 1000.0 * reference(), rtol=1e-5, atol=1e-8)
    for i in (0, 1):  # per layer, without β
        one = mid_level.ATLoss({"p": pairs[f"p{i}"]}, mode=mode)(_io(**{f"s{i}": fs[i]}), _io(**{f"t{i}": ft[i]}))
        torch.testing.assert_close(at_loss(fs[i], ft[i], mode=mode), one, rtol=1e-5, atol=1e-9)
    # Able to fail: the other mode (squared mean vs per-sample norm) is another number.
    assert far(out.parts["at"], 1000.0 * reference("paper" if mode == "code" else "code"))


# ---------------------------------------------------------------------------------------------------------- DIST


def test_dist_matches_torchdistill() -> None:
    zs, zt = _logits(3, b=8), _logits(4, b=8)
    y = torch.arange(8) % 10

    def reference(beta: float = 1.0, gamma: float = 2.0, tau: float = 4.0) -> torch.Tensor:
        loss = mid_level.DISTLoss("s", "output", "t", "output", beta=beta, gamma=gamma, tau=tau)
        return loss(_io(s=zs), _io(t=zt))

    torch.testing.assert_close(dist_loss(zs, zt, beta=1.0, gamma=2.0, temperature=4.0), reference(), rtol=1e-5, atol=0)
    out = DIST(Fixed(zs), Fixed(zt), kd_weight=2.0, beta=1.0, gamma=2.0, temperature=4.0)(
        {"input": torch.zeros(8), "label": y}
    )
    torch.testing.assert_close(out.parts["dist"], 2.0 * reference(), rtol=1e-5, atol=0)
    assert far(out.parts["dist"], 2.0 * reference(tau=1.0))
    assert far(out.parts["dist"], 2.0 * reference(gamma=1.0))  # another weight of the intra-class term


# ----------------------------------------------------------------------------------------------------------- RKD


def test_rkd_matches_torchdistill() -> None:
    torch.manual_seed(1)
    student, teacher = ToyNet((4, 8)), ToyNet((6, 12))
    x = torch.randn(6, 3, 16, 16)
    out = RKD(student, teacher)({"input": x, "label": torch.zeros(6, dtype=torch.long)})
    emb_s = global_pool(student.forward_features(x)[-1])
    emb_t = global_pool(teacher.forward_features(x)[-1]).detach()

    def reference(dist: float = 25.0, angle: float = 50.0, reduction: str = "mean") -> torch.Tensor:
        loss = mid_level.RKDLoss("s", "t", dist_factor=dist, angle_factor=angle, reduction=reduction)
        return loss(_io(s=emb_s), _io(t=emb_t))

    ours = out.parts["rkd_distance"] + out.parts["rkd_angle"]
    torch.testing.assert_close(ours, reference(), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(rkd_loss(emb_s, emb_t), reference(), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(out.parts["rkd_distance"], reference(angle=0.0), rtol=1e-4, atol=1e-7)
    assert far(ours, reference(reduction="sum"))
    assert far(ours, reference(dist=50.0, angle=25.0))


# ----------------------------------------------------------------------------------------------------------- CRD


def test_crd_matches_torchdistill_with_the_same_memory_and_negatives() -> None:
    """Two training steps: loss, Z constants and both banks after each update equal torchdistill's CRDLoss fed the
    same normalised embeddings, banks and contrast indices (ours drawn from other classes, the authors' sampler)."""
    torch.manual_seed(0)
    n, k, dim = 40, 16, 8
    labels = torch.tensor([i % 4 for i in range(n)])
    student, teacher = ToyNet((4, 8)), ToyNet((6, 12))
    method = CRD(student, teacher, num_data=n, nce_k=k, feat_dim=dim, train_labels=labels.tolist()).train()

    def crd_loss_module(num_samples: int = n) -> torch.nn.Module:
        return mid_level.CRDLoss(
            "s_norm", "s_empty", "t_norm", input_size=dim, output_size=n, num_negative_samples=k,
            num_samples=num_samples, temperature=0.07, momentum=0.5, eps=1e-7,
        )  # fmt: skip

    def run(module: torch.nn.Module, index, contrast_idx, emb_s, emb_t) -> torch.Tensor:
        io_s = {"s_norm": {"output": emb_s}, "s_empty": {"input": {"pos_idx": index, "contrast_idx": contrast_idx}}}
        return module(io_s, {"t_norm": {"output": emb_t}}).reshape(())  # torchdistill returns shape (1,)

    reference = crd_loss_module()
    with torch.no_grad():
        reference.memory_v1.copy_(method.memory.memory_s)  # v1: student bank (updated with the student's embeddings)
        reference.memory_v2.copy_(method.memory.memory_t)
    seen: dict[str, torch.Tensor] = {}
    method.embed_s.register_forward_hook(lambda _m, _a, out: seen.__setitem__("s", out.detach()))
    method.embed_t.register_forward_hook(lambda _m, _a, out: seen.__setitem__("t", out.detach()))
    draw = method.draw_negatives
    method.draw_negatives = lambda index: seen.setdefault("neg", draw(index))  # type: ignore[method-assign]
    for index in (torch.tensor([0, 5, 9, 14, 22, 31]), torch.tensor([1, 2, 3, 38, 39, 20])):
        seen.clear()
        before = {name: buf.clone() for name, buf in reference.named_buffers()}
        batch = {"input": torch.randn(6, 3, 16, 16), "label": labels[index], "index": index}
        out = method(batch)
        neg = seen["neg"]
        assert neg.shape == (6, k) and (labels[neg] != labels[index][:, None]).all()  # other classes only
        contrast_idx = torch.cat([index[:, None], neg], dim=1)
        emb_s, emb_t = F.normalize(seen["s"], dim=1), F.normalize(seen["t"], dim=1)
        expected = run(reference, index, contrast_idx, emb_s, emb_t)
        torch.testing.assert_close(out.parts["crd"], 0.8 * expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(method.memory.z_s, reference.params[2], rtol=1e-6, atol=0)
        torch.testing.assert_close(method.memory.z_t, reference.params[3], rtol=1e-6, atol=0)
        torch.testing.assert_close(method.memory.memory_s, reference.memory_v1, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(method.memory.memory_t, reference.memory_v2, rtol=1e-5, atol=1e-6)
        # Able to fail: other negatives, or P_n = 1/N with the wrong N, give other values.
        for num_samples, idx in ((n, torch.cat([index[:, None], (neg + 1) % n], dim=1)), (2 * n, contrast_idx)):
            control = crd_loss_module(num_samples)
            control.load_state_dict(before)
            assert far(out.parts["crd"], 0.8 * run(control, index, idx, emb_s, emb_t))
