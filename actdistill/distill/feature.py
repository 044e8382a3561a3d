"""Feature-based methods: FitNets, AT, FN, MGD and SimKD (original papers; paper 2, Table 1 for the video use).

Feature taps are chosen per method with `student_layer`/`teacher_layer` (or `*_layers` lists for AT): a stage index
(negative allowed), a `feature_info` name or `module:<dotted.name>` (see `taps.py`). Each method probes the tap
shapes once at construction (one no-grad forward of each model on a dummy input) so that its adapters, projectors and
generators exist before the optimiser is built. Those trainable modules are children of the method: they are
optimised with the student, saved by `student_state()` and never part of the exported student.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actdistill.distill.adapters import FeatureAdapter, build_adapter
from actdistill.distill.base import Batch, Distiller, StepOutput, make_output
from actdistill.distill.functional import at_loss, fn_loss, hint_loss, mgd_loss, simkd_loss
from actdistill.distill.generative import (
    AttentionModule,
    AttentionPredictor,
    attention_weighted_feature,
    feature_shape,
)
from actdistill.distill.logit import class_logits
from actdistill.distill.taps import (
    ModelRun,
    Tap,
    cached_run,
    classifier_weights,
    find_classifier,
    has_contract,
    head_only,
    probe_shapes,
    resolve_tap,
    run_model,
)
from actdistill.errors import ActdistillError
from actdistill.models._contract import prefixed_stages
from actdistill.registry import register_method

LayerSpec = int | str


class FeatureDistiller(Distiller):
    """Base of the tapping methods: resolves taps, probes their shapes, builds adapters and runs both models once.

    `student_taps`/`teacher_taps` list every tap the method reads (a `combo` prefetches their union in one forward).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        super().__init__(student, teacher)
        self.student_taps: tuple[Tap, ...] = ()
        self.teacher_taps: tuple[Tap, ...] = ()

    def _taps(self, student_spec: LayerSpec, teacher_spec: LayerSpec) -> tuple[Tap, Tap]:
        tap_s, tap_t = resolve_tap(self.student, student_spec), resolve_tap(self.teacher, teacher_spec)
        self.student_taps += (tap_s,)
        self.teacher_taps += (tap_t,)
        return tap_s, tap_t

    def _pair(
        self, student_spec: LayerSpec, teacher_spec: LayerSpec, **adapter: str
    ) -> tuple[Tap, Tap, FeatureAdapter]:
        """Resolve a student/teacher tap pair and build the `FeatureAdapter` for their probed shapes."""
        tap_s, tap_t = self._taps(student_spec, teacher_spec)
        (shape_s,), (shape_t,) = probe_shapes(self.student, [tap_s]), probe_shapes(self.teacher, [tap_t])
        try:
            return tap_s, tap_t, build_adapter(shape_s, shape_t, **adapter)  # type: ignore[arg-type]
        except ActdistillError as exc:
            raise ActdistillError(f"{type(self).__name__.lower()}: student {tap_s} ↔ teacher {tap_t}: {exc}") from None

    def _runs(self, batch: Batch) -> tuple[ModelRun, ModelRun]:
        """The student's forward (with grad) and the teacher's (no grad) with every tap this method reads."""
        run_s = run_model(self.student, batch["input"], self.student_taps)
        run_t = cached_run(batch, self.teacher_taps)  # maps stored by `actdistill cache build`, when present
        if run_t is None:
            with torch.no_grad():
                run_t = run_model(self.teacher, self.teacher_input(batch), self.teacher_taps)
        return run_s, run_t

    def _ce(self, logits: Tensor, batch: Batch, weight: float) -> dict[str, Tensor]:
        return {"ce": weight * F.cross_entropy(logits.float(), batch["label"])}


def layer_pairs(
    student: nn.Module,
    teacher: nn.Module,
    student_layers: Sequence[LayerSpec] | None,
    teacher_layers: Sequence[LayerSpec] | None,
) -> list[tuple[LayerSpec, LayerSpec]]:
    """Tap pairs for multi-layer methods: given lists (one may be omitted: it copies the other), else the last
    `min(#stages_s, #stages_t)` stages of both models, paired from the end."""
    if student_layers is None and teacher_layers is None:
        n = min(len(getattr(student, "feature_info", [])), len(getattr(teacher, "feature_info", [])))
        student_layers = teacher_layers = list(range(-n, 0))
    student_layers = list(student_layers if student_layers is not None else teacher_layers)  # type: ignore[arg-type]
    teacher_layers = list(teacher_layers if teacher_layers is not None else student_layers)
    if not student_layers or len(student_layers) != len(teacher_layers):
        raise ActdistillError(
            f"student_layers {student_layers} and teacher_layers {teacher_layers} must be non-empty and equally long"
        )
    return list(zip(student_layers, teacher_layers, strict=True))


class AttentionTaps(nn.Module):
    """AT's per-layer terms (ICLR-17) for a list of tap pairs; the adapters only align layouts (no parameters)."""

    def __init__(self, method: FeatureDistiller, pairs: list[tuple[LayerSpec, LayerSpec]]) -> None:
        super().__init__()
        built = [method._pair(s, t, project="never", resize="none", time="pool") for s, t in pairs]
        self.taps = [(tap_s, tap_t) for tap_s, tap_t, _ in built]
        self.adapters = nn.ModuleList(adapter for _, _, adapter in built)
        for (tap_s, tap_t), adapter in zip(self.taps, self.adapters):
            if adapter.out_rank == 2:
                raise ActdistillError(f"attention transfer needs maps, but {tap_s} / {tap_t} give vectors")

    def forward(self, run_s: ModelRun, run_t: ModelRun, p: float, mode: str) -> list[Tensor]:
        """One unweighted AT term per pair: `mean (q_s − q_t)²` (mode "code") over (T·)H·W attention maps."""
        terms = []
        for (tap_s, tap_t), adapter in zip(self.taps, self.adapters):
            s, t = adapter(run_s.get(tap_s), run_t.get(tap_t))
            terms.append(at_loss(s, t, p=p, mode=mode))
        return terms


@register_method(
    "fitnet",
    paper="FitNets, Romero et al. ICLR-15",
    knowledge="feature",
    source="Romero et al. ICLR-15; RepDistiller -a 0 -b 100, mdistiller FITNET.LOSS.FEAT_WEIGHT=100",
)
class FitNet(FeatureDistiller):
    """Hint learning (FitNets, Romero et al. ICLR-15): `L = w_ce·CE + w·MSE_mean(r(F_s), F_t)`, one joint stage.

    The regressor r is a 1×1 (1×1×1) conv C_s→C_t followed by resizing to the teacher's (T×)H×W (adaptive pooling or
    interpolation; `adapters.py`) instead of ConvReg's stride-dependent kernels, so any size ratio, token maps and
    2D↔3D pairs work; no BN/ReLU, so teacher maps with negative values (ConvNeXt, ViTs) can be matched. Default tap:
    stage 2, the third of four stages (RepDistiller's hint_layer=2 is a middle stage).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        student_layer: LayerSpec = 2,
        teacher_layer: LayerSpec = 2,
        weight: float = 100.0,
        ce_weight: float = 1.0,
    ) -> None:
        super().__init__(student, teacher)
        self.weight, self.ce_weight = float(weight), float(ce_weight)
        self.tap_s, self.tap_t, self.regressor = self._pair(
            student_layer, teacher_layer, project="always", resize="teacher"
        )

    def forward(self, batch: Batch) -> StepOutput:
        run_s, run_t = self._runs(batch)
        s, t = self.regressor(run_s.get(self.tap_s), run_t.get(self.tap_t))
        hint = hint_loss(s, t)
        logits = class_logits(run_s.logits)
        parts = {**self._ce(logits, batch, self.ce_weight), "hint": self.weight * hint}
        return make_output(logits, parts, {"hint_raw": hint.detach()})


@register_method(
    "at",
    paper="Attention Transfer, Zagoruyko & Komodakis ICLR-17",
    knowledge="feature",
    source="Zagoruyko & Komodakis ICLR-17; RepDistiller -a 0 -b 1000, mdistiller AT.LOSS.FEAT_WEIGHT=1000",
)
class AT(FeatureDistiller):
    """Attention transfer (ICLR-17): `L = w_ce·CE + β·Σ_layers mean_{b,n}(q_s − q_t)²`, q = L2-normalised mean_c F².

    Works on `(B, C, H, W)` and `(B, C, T, H, W)` maps (for video one spatio-temporal map over T·H·W); the larger
    extent is average-pooled to the smaller, and a 2-D student against a 3-D teacher pools the teacher's time.
    Default taps: the last min(#stages) stages of both models. Parts `ce`, `at`; metrics `at_<i>` raw per layer.

    `student_attention=True` is paper 2's Table-1 setting for AT (its AT row costs 47.4 G = Top-I3D + attention
    head): the student's classification goes through paper 2's attention module (eq. 8, `generative.AttentionModule`)
    and attention-weighted feature (eqs. 9-10, `attention_weighted_feature`; σ over the whole batch as paper 2's code,
    `per_sample_sigma=True` per sample): `logits = forward_head(F′)`, F′ = (F ⊙ A)·ΣF/Σ(F ⊙ A), F the student's last
    map. CE (and `predict`) use those logits; AT still compares the un-weighted maps. The attention module is the
    trainable extra `attention_head`, sized for clips `input_size` = [T, H, W] (probed on meta tensors; a video
    student following the model contract is needed). The exported student alone does not contain it.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        student_layers: Sequence[LayerSpec] | None = None,
        teacher_layers: Sequence[LayerSpec] | None = None,
        beta: float = 1000.0,
        ce_weight: float = 1.0,
        p: float = 2.0,
        mode: str = "code",
        student_attention: bool = False,
        input_size: Sequence[int] = (64, 224, 224),
        per_sample_sigma: bool = False,
    ) -> None:
        super().__init__(student, teacher)
        self.beta, self.ce_weight, self.p, self.mode = float(beta), float(ce_weight), float(p), mode
        self.attention = AttentionTaps(self, layer_pairs(student, teacher, student_layers, teacher_layers))
        self.per_sample_sigma = bool(per_sample_sigma)
        self.attention_head: nn.Module | None = None
        if student_attention:
            if not has_contract(student) or not getattr(student, "feature_info", None):
                raise ActdistillError("at: student_attention needs a video student following the model contract")
            in_channels = int(getattr(student.pretrained_cfg, "input_size", (3,))[0])
            c, t, h, w = feature_shape(student, input_size, in_channels)
            self.attention_head = AttentionModule(c, t, spatial_kernel=(h, w))
            self.last_tap = Tap("stage", len(student.feature_info) - 1)
            self.student_taps += (self.last_tap,)

    def _attended_logits(self, feature: Tensor) -> Tensor:
        """Student logits (per step for I3D heads) from paper 2's attention-weighted last map."""
        assert self.attention_head is not None
        weighted = attention_weighted_feature(feature, self.attention_head(feature), self.per_sample_sigma)
        return self.student.forward_head(weighted)

    def forward(self, batch: Batch) -> StepOutput:
        run_s, run_t = self._runs(batch)
        terms = self.attention(run_s, run_t, self.p, self.mode)
        if self.attention_head is None:
            logits = class_logits(run_s.logits)
        else:
            logits = class_logits(self._attended_logits(run_s.get(self.last_tap)))
        parts = {**self._ce(logits, batch, self.ce_weight), "at": self.beta * torch.stack(terms).sum()}
        return make_output(logits, parts, {f"at_{i}": term.detach() for i, term in enumerate(terms)})

    def predictor(self) -> nn.Module:
        """The student; with `student_attention`, student + attention head (as in training)."""
        if self.attention_head is None:
            return self.student
        return AttentionPredictor(self.student, self.attention_head, self.per_sample_sigma)

    def predictor_spec(self, student_spec: dict[str, Any], teacher_spec: dict[str, Any] | None) -> dict[str, Any]:
        if self.attention_head is None:
            return student_spec
        head = self.attention_head
        kwargs = {"student": student_spec, "channels": head.channels, "time_steps": head.time_steps}
        kwargs.update(spatial=list(head.conv3d.kernel_size[1:]), per_sample_sigma=self.per_sample_sigma)
        return {"name": "attention_predictor", "num_classes": student_spec["num_classes"], "kwargs": kwargs}


@register_method(
    "fn",
    paper="Feature-normalised KD, Xu et al. ECCV-20",
    knowledge="feature",
    source="Xu et al. ECCV-20; paper 2 Table 1; aztc/FNKD train_gluon_script_cifar.py (norm=2, norm_distill_w=9)",
)
class FN(FeatureDistiller):
    """Feature-normalised KD (ECCV-20): `L = w_ce·CE(W f + b, y) + λ·H(softmax(z_t), softmax(W·f̂ + b))`.

    f is the pooled last feature map as the student's own classifier (found by `find_classifier`) receives it
    *without dropout*, the penultimate feature of FNKD's ResNets (aztc/FNKD) and the pooled Mixed_5c that paper 2's
    FN baseline reads. For a model following the contract it is taken from a second, eval-mode run of
    `forward_head` on the last `forward_features` map (dropout off, gradients kept; a BatchNorm inside a head would
    use its running statistics there), so a head's dropout (I3D's p=0.5, timm's `drop_rate`) does not zero half of
    f; the CE term uses the training logits as usual. A model without the contract falls back to the classifier's
    input as seen in the training forward (a pre-hook). f̂ = f·min(‖f‖, τ)/‖f‖, the teacher at T=1. Video: an I3D
    head gives `(B, D, T', 1, 1)` (avg-pooled Mixed_5c per step) and a per-frame model `(B·T, D)`: one row per time
    step, distilled towards the teacher's logits of the same step when the teacher has as many steps, else the
    time-averaged ones. Parts `ce`, `fn`.
    """

    reads_only_teacher_logits = True  # the student's features, the teacher's logits: a logit cache serves it

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        fn_weight: float = 9.0,
        norm_cap: float = 2.0,
        ce_weight: float = 1.0,
    ) -> None:
        super().__init__(student, teacher)
        self.fn_weight, self.norm_cap, self.ce_weight = float(fn_weight), float(norm_cap), float(ce_weight)
        self.classifier_path, _ = find_classifier(student)  # a path, not the module: it must not become an extra
        if has_contract(student) and getattr(student, "feature_info", None):
            self.tap = Tap("stage", len(student.feature_info) - 1)  # the map forward_head pools
        else:
            self.tap = Tap("input", self.classifier_path)
        self.student_taps = (self.tap,)

    def pooled_feature(self, last_map: Tensor) -> Tensor:
        """The classifier's input for `forward_head(last_map)` run with the whole student in eval mode (no dropout),
        with autograd; every module's mode is restored afterwards."""
        store: list[Tensor] = []
        classifier = self.student.get_submodule(self.classifier_path)
        handle = classifier.register_forward_pre_hook(lambda _m, args: store.append(args[0]) if not store else None)
        modes = [(m, m.training) for m in self.student.modules()]
        self.student.eval()
        try:
            self.student.forward_head(last_map)
        finally:
            handle.remove()
            for module, mode in modes:
                module.training = mode
        if not store:
            raise ActdistillError(f"fn: {type(self.student).__name__}.forward_head never called {self.classifier_path}")
        return store[0]

    def forward(self, batch: Batch) -> StepOutput:
        run_s = run_model(self.student, batch["input"], self.student_taps)
        if "teacher_logits" in batch:
            logits_t = batch["teacher_logits"].float()
        else:
            with torch.no_grad():
                logits_t = run_model(self.teacher, self.teacher_input(batch)).logits.float()
        f = self.pooled_feature(run_s.get(self.tap)) if self.tap.kind == "stage" else run_s.get(self.tap)
        rows = f if f.dim() == 2 else f.movedim(1, -1).reshape(-1, f.shape[1])
        b = batch["label"].shape[0]
        steps = rows.shape[0] // b
        if logits_t.dim() == 3 and logits_t.shape[-1] == steps:
            target = logits_t.transpose(1, 2).reshape(b * steps, -1)
        else:
            target = class_logits(logits_t).repeat_interleave(steps, dim=0)
        weight, bias = classifier_weights(self.student.get_submodule(self.classifier_path))
        fn = fn_loss(rows, weight, bias, target, self.norm_cap)
        logits = class_logits(run_s.logits)
        return make_output(logits, {**self._ce(logits, batch, self.ce_weight), "fn": self.fn_weight * fn})


def _conv(rank: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    if rank not in (4, 5):
        raise ActdistillError(f"this method needs (B, C, H, W) or (B, C, T, H, W) maps, not rank-{rank} features")
    return nn.Conv2d if rank == 4 else nn.Conv3d


@register_method(
    "mgd",
    paper="Masked Generative Distillation, Yang et al. ECCV-22",
    knowledge="feature",
    source="Yang et al. ECCV-22; paper 2 Table 1; yzd-v/MGD cls/configs/distillers/mgd/res34_distill_res18_img.py",
)
class MGD(FeatureDistiller):
    """MGD (ECCV-22): `L = w_ce·CE + α·Σ (G(align(F_s) ⊙ M) − F_t)² / B`, M a channel mask dropping with prob. λ.

    align: 1×1 (1×1×1) conv when channels differ, plus resizing to the teacher's size (`adapters.py`); G: Conv3×3 →
    ReLU → Conv3×3 (C_t→C_t), 2-D or 3-D (3×3×3 for video) by the rank of the aligned maps. Parts `ce`, `mgd`.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        student_layer: LayerSpec = -1,
        teacher_layer: LayerSpec = -1,
        alpha_mgd: float = 7e-5,
        lambda_mgd: float = 0.15,
        mask: str = "channel",
        ce_weight: float = 1.0,
    ) -> None:
        super().__init__(student, teacher)
        self.alpha_mgd, self.lambda_mgd, self.mask, self.ce_weight = (
            float(alpha_mgd),
            float(lambda_mgd),
            mask,
            ce_weight,
        )
        self.tap_s, self.tap_t, self.align = self._pair(student_layer, teacher_layer, project="auto", resize="teacher")
        conv, c = _conv(self.align.out_rank), self.align.out_channels
        self.generation = nn.Sequential(conv(c, c, 3, padding=1), nn.ReLU(inplace=True), conv(c, c, 3, padding=1))

    def forward(self, batch: Batch) -> StepOutput:
        run_s, run_t = self._runs(batch)
        s, t = self.align(run_s.get(self.tap_s), run_t.get(self.tap_t))
        mgd = mgd_loss(s, t, self.generation, self.lambda_mgd, self.alpha_mgd, self.mask)
        logits = class_logits(run_s.logits)
        return make_output(logits, {**self._ce(logits, batch, self.ce_weight), "mgd": mgd})


def simkd_projector(c_in: int, c_out: int, factor: int, rank: int) -> nn.Sequential:
    """SimKD's projector (Chen et al. CVPR-22): Conv1×1 → BN → ReLU → Conv3×3 → BN → ReLU → Conv1×1 → BN → ReLU,
    bias-free, hidden width C_t/factor; Conv3d with a 3×3×3 middle kernel for 5-D maps."""
    conv, bn = _conv(rank), nn.BatchNorm2d if rank == 4 else nn.BatchNorm3d
    mid = max(1, c_out // factor)
    return nn.Sequential(
        conv(c_in, mid, 1, bias=False),
        bn(mid),
        nn.ReLU(inplace=True),
        conv(mid, mid, 3, padding=1, bias=False),
        bn(mid),
        nn.ReLU(inplace=True),
        conv(mid, c_out, 1, bias=False),
        bn(c_out),
        nn.ReLU(inplace=True),
    )


@register_method(
    "simkd",
    paper="SimKD, Chen et al. CVPR-22",
    knowledge="feature",
    source="Chen et al. CVPR-22; paper 2 Table 1; DefangChen/SimKD README (-c 0 -d 0 -b 1), models/util.py (factor 2)",
    notes="predict and deployable() = student + projector + frozen teacher head",
)
class SimKD(FeatureDistiller):
    """SimKD (CVPR-22): `L = w·MSE_mean(P(F_s), F_t) [+ w_ce·CE(head_t(P(F_s)), y)]`, no CE by default.

    F_s/F_t: the last stage maps (the teacher tap must be its last stage: its head is reused). A per-frame or 2-D
    student is laid out like the teacher first (time pooled, or a time axis of 1 for a 2-D student and a 3-D
    teacher); the larger extent is pooled to the smaller inside the loss. Predictions, in training (`logits`) and
    in `predict`, are the teacher's frozen `forward_head` applied to P(F_s), averaged over time for video heads:
    `(B, K)`. The deployable student is therefore student + projector + teacher head: `deployable()`.
    Parts `simkd` (and `ce` when `ce_weight` ≠ 0).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        student_layer: LayerSpec = -1,
        teacher_layer: LayerSpec = -1,
        factor: int = 2,
        weight: float = 1.0,
        ce_weight: float = 0.0,
    ) -> None:
        super().__init__(student, teacher)
        if not has_contract(teacher):
            raise ActdistillError("simkd reuses the teacher's forward_head; the teacher must follow the model contract")
        self.weight, self.ce_weight = float(weight), float(ce_weight)
        self.student_layer, self.teacher_layer, self.factor = student_layer, teacher_layer, int(factor)
        self.tap_s, self.tap_t, self.layout = self._pair(
            student_layer, teacher_layer, project="never", resize="none", time="tile"
        )
        last = len(teacher.feature_info) - 1
        if self.tap_t != Tap("stage", last):
            raise ActdistillError(f"simkd reuses the teacher head, so teacher_layer must be its last stage ({last})")
        c_t = self.layout.plan.teacher_channels
        self.projector = simkd_projector(self.layout.out_channels, c_t, int(factor), self.layout.out_rank)

    def project(self, feat_s: Tensor, batch_size: int) -> Tensor:
        """P(F_s) in the teacher's layout: `(B, C_t, [T,] h, w)`."""
        return self.projector(self.layout.student_layout(feat_s, batch_size))

    def head(self, projected: Tensor) -> Tensor:
        """The frozen teacher head on projected features → `(B, K)` logits."""
        return class_logits(self.teacher.forward_head(projected))

    def forward(self, batch: Batch) -> StepOutput:
        run_s, run_t = self._runs(batch)
        projected = self.project(run_s.get(self.tap_s), batch["input"].shape[0])
        logits = self.head(projected)
        parts = {"simkd": self.weight * simkd_loss(projected, self.layout.teacher_layout(run_t.get(self.tap_t)))}
        if self.ce_weight:
            parts.update(self._ce(logits, batch, self.ce_weight))
        return make_output(logits, parts)

    def predictor(self) -> nn.Module:
        """`(B, K)`: teacher head on the projected student feature (`deployable()`)."""
        return self.deployable()

    def predictor_spec(self, student_spec: dict[str, Any], teacher_spec: dict[str, Any] | None) -> dict[str, Any]:
        if teacher_spec is None:
            raise ActdistillError("simkd: the teacher's model spec is needed to rebuild the predictor")
        kwargs = {"student": student_spec, "teacher": teacher_spec, "factor": self.factor}
        kwargs.update(student_layer=self.student_layer, teacher_layer=self.teacher_layer)
        return {"name": "simkd_predictor", "num_classes": student_spec["num_classes"], "kwargs": kwargs}

    def deployable(self) -> nn.Module:
        """A standalone module computing `predict`: the student, this projector and a copy of the teacher pruned to the
        modules its `forward_head` calls (no teacher backbone)."""
        return SimKDStudent(self, head_only(self.teacher, probe_shapes(self.teacher, [self.tap_t])[0]))


class SimKDStudent(nn.Module):
    """What SimKD deploys: student → layout → projector → frozen teacher head; `(B, 3, [T,] H, W)` → `(B, K)`."""

    def __init__(self, method: SimKD, teacher_head: nn.Module) -> None:
        super().__init__()
        self.student, self.layout, self.projector, self.teacher_head = (
            method.student,
            method.layout,
            method.projector,
            teacher_head,
        )
        self.tap = method.tap_s
        self.pretrained_cfg = getattr(method.student, "pretrained_cfg", None)  # the input it takes is the student's
        self.num_classes = getattr(method.student, "num_classes", None)
        self.feature_info = prefixed_stages(method.student, "student.")

    def forward(self, x: Tensor) -> Tensor:
        return simkd_predict(self.student, self.tap, self.layout, self.projector, self.teacher_head, x)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The student's stage maps (the model contract); `forward_head` reads the tapped one (the last by default)."""
        return self.student.forward_features(x)

    def forward_head(self, feature: Tensor) -> Tensor:
        """Teacher head on the projected student map → `(B, K)`."""
        projected = self.projector(self.layout.student_layout(feature, feature.shape[0]))
        return class_logits(self.teacher_head.forward_head(projected))


def simkd_predict(
    student: nn.Module, tap: Tap, layout: FeatureAdapter, projector: nn.Module, teacher: nn.Module, x: Tensor
) -> Tensor:
    """`class_logits(teacher.forward_head(P(layout(F_s))))` for an input batch `x`: `(B, K)`."""
    feat = run_model(student, x, (tap,)).get(tap)
    return class_logits(teacher.forward_head(projector(layout.student_layout(feat, x.shape[0]))))
