"""Methods built from other methods: `combo` (a weighted sum of registered methods) and collaborative teaching."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actdistill.distill.base import Batch, Distiller, StepOutput, make_output
from actdistill.distill.feature import AttentionTaps, FeatureDistiller, LayerSpec, layer_pairs
from actdistill.distill.functional import kd_loss
from actdistill.distill.logit import class_logits
from actdistill.distill.taps import cached_run, run_model, shared_forward
from actdistill.errors import ActdistillError
from actdistill.registry import METHODS, register_method


def _sub_method(cfg: Any, i: int) -> tuple[str, type[Distiller], dict[str, Any], float]:
    """`(name, class, hyper-parameters, weight)` of `combo.methods[i]`, checked against the class's signature."""
    if not isinstance(cfg, Mapping) or "name" not in cfg:
        raise ActdistillError(f"combo.methods[{i}] must be a mapping with a name, e.g. {{name: kd, weight: 1.0}}")
    params = dict(cfg)
    name, weight = str(params.pop("name")).lower(), float(params.pop("weight", 1.0))
    cls = METHODS.get(name)
    if issubclass(cls, Combo):
        raise ActdistillError(f"combo.methods[{i}]: a combo cannot contain another combo; list its methods directly")
    METHODS.check_params(name, params, f"combo.methods[{i}]")
    return name, cls, params, weight


@register_method(
    "combo",
    paper="weighted sum of registered methods (actdistill)",
    knowledge="mixed",
    source="docs/methods.md#combo",
)
class Combo(Distiller):
    """`L = Σ_i w_i·L_i` over the listed methods, which share this student and teacher; parts are `<name>/<part>`.

    `methods`: `[{name: kd, weight: 1.0, temperature: 4}, {name: at, weight: 1.0}]` (each entry: a registered method
    name, an optional `weight`, its hyper-parameters; a repeated name gets its index appended: `kd1`).
    Cross-entropy is counted once: every sub-method calls its hard-label term `ce`; with `ce_weight: null` (default)
    the first sub-method's `ce` part is kept (with that method's own CE weight times its `w_i`) and the others are
    dropped; with a number, every sub-method's `ce` is dropped and one `ce = ce_weight·CE(z̄_s, y)` is added.
    One forward per model per step: the student (and the teacher when a method taps its features) run once with the
    union of the taps all sub-methods read, inside `taps.shared_forward()`, and every sub-method reuses that run
    (`vanilla`, which calls the student directly, and collaborative teaching's scratch teacher run on their own).
    Sub-methods' trainable modules are registered here (`<name>.<module>`), so they are optimised and checkpointed;
    `predict` is the first sub-method's. Metrics are prefixed like the parts. Multi-stage methods cannot be combined.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        methods: Sequence[Mapping[str, Any]] = (),
        ce_weight: float | None = None,
        num_data: int = 0,
        train_labels: Sequence[int] | None = None,
    ) -> None:
        super().__init__(student, teacher)
        if not methods:
            raise ActdistillError("combo needs methods: [{name: kd, weight: 1.0}, {name: at, weight: 1.0}]")
        self.ce_weight = None if ce_weight is None else float(ce_weight)
        self.sub_extras = nn.ModuleDict()
        subs, self.prefixes, self.weights = [], [], []
        for i, cfg in enumerate(methods):
            name, cls, params, weight = _sub_method(cfg, i)
            accepted = inspect.signature(cls.__init__).parameters
            if "num_data" in accepted and not params.get("num_data"):
                params["num_data"] = num_data
            if "train_labels" in accepted and params.get("train_labels") is None:
                params["train_labels"] = train_labels
            sub = cls(student, teacher, **params)
            if len(sub.stages()) > 1:
                raise ActdistillError(f"combo.methods[{i}] ({name}) has several training stages; run it on its own")
            if list(sub.parameters(recurse=False)) or list(sub.buffers(recurse=False)):
                raise ActdistillError(f"combo.methods[{i}] ({name}) keeps state outside child modules")
            prefix = name if name not in self.prefixes else f"{name}{i}"
            self.sub_extras[prefix] = nn.ModuleDict(sub.extra_modules())
            subs.append(sub)
            self.prefixes.append(prefix)
            self.weights.append(weight)
        self.subs: list[Distiller] = subs  # a plain list: registering them would register student/teacher again
        self.requires = frozenset().union(*(s.requires for s in subs))

    def train(self, mode: bool = True) -> Combo:
        super().train(mode)
        for sub in getattr(self, "subs", []):
            sub.train(mode)
        return self

    def on_epoch(self, epoch: int) -> None:
        super().on_epoch(epoch)
        for sub in self.subs:
            sub.on_epoch(epoch)

    def load_student_state(self, state: dict[str, Any]) -> None:
        super().load_student_state(state)
        for sub in self.subs:
            sub.epoch = self.epoch

    def predictor(self) -> nn.Module:
        return self.subs[0].predictor()

    def predictor_spec(self, student_spec: dict[str, Any], teacher_spec: dict[str, Any] | None) -> dict[str, Any]:
        return self.subs[0].predictor_spec(student_spec, teacher_spec)

    def forward(self, batch: Batch) -> StepOutput:
        with shared_forward():
            student_taps = tuple(dict.fromkeys(t for s in self.subs for t in getattr(s, "student_taps", ())))
            teacher_taps = tuple(dict.fromkeys(t for s in self.subs for t in getattr(s, "teacher_taps", ())))
            run_s = run_model(self.student, batch["input"], student_taps)
            if teacher_taps and cached_run(batch, teacher_taps) is None:  # with a teacher cache, nothing to prefetch
                with torch.no_grad():
                    run_model(self.teacher, self.teacher_input(batch), teacher_taps)
            outs = [sub(batch) for sub in self.subs]
        parts: dict[str, Tensor] = {}
        metrics: dict[str, Tensor | float] = {}
        ce_taken = self.ce_weight is not None
        for prefix, weight, out in zip(self.prefixes, self.weights, outs):
            for key, value in out.parts.items():
                if key == "ce":
                    if ce_taken:
                        continue
                    ce_taken = True
                parts[f"{prefix}/{key}"] = weight * value
            metrics.update({f"{prefix}/{key}": value for key, value in out.metrics.items()})
        if self.ce_weight is not None:
            parts["ce"] = self.ce_weight * F.cross_entropy(class_logits(run_s.logits).float(), batch["label"])
        return make_output(outs[0].logits, parts, metrics)


def scratch_copy(model: nn.Module) -> nn.Module:
    """A trainable copy of `model` with fresh weights: `reset_parameters()` wherever a module has it; any other
    parameter is re-drawn (≥ 2-D: truncated normal, std 0.02, timm's default for embeddings) or, if 1-D (layer
    scales), set to 1. For an architecture's own initialisation build it by name (`scratch_teacher`)."""
    fresh = copy.deepcopy(model)
    covered = set()
    for module in fresh.modules():
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
            covered.update(id(p) for p in module.parameters(recurse=False))
    with torch.no_grad():
        for p in fresh.parameters():
            if id(p) in covered:
                continue
            if p.dim() >= 2:
                nn.init.trunc_normal_(p, std=0.02)
            else:
                p.fill_(1.0)
    return fresh.requires_grad_(True).train()


@register_method(
    "collab",
    "ctkd_collaborative",
    paper="Collaborative teaching KD, Zhao et al. IEEE-TCyb 2020",
    knowledge="logits+feature",
    source="Zhao et al. IEEE-TCyb 2020; paper 2 Table 1 (no official code; T=4, a=0.9, β=1000 toolkit decisions)",
    notes="trains a scratch teacher (teacher architecture, fresh weights) alongside the student",
)
class Collab(FeatureDistiller):
    """Collaborative teaching (Zhao et al., IEEE-TCyb 2020): `L = w_ce·CE(z̄_s, y) + a·T²·KL(σ(z̄_sc/T) ‖ σ(z̄_s/T))
    + β·Σ_l AT(F_s^l, F_exp^l) + w_sc·CE(z̄_sc, y)`.

    z_sc: logits of a scratch teacher (the teacher's architecture with fresh weights, a trainable child module
    trained simultaneously by the last term; its logits are detached in the KL). F_exp: the frozen expert teacher's
    maps at the AT taps (`student_layers`/`teacher_layers`, as for `at`). The scratch teacher is a deep copy of the
    teacher re-initialised by `scratch_copy`, or `create_model(scratch_teacher, K, **scratch_teacher_kwargs)` when a
    model name is given. Parts `ce`, `kd`, `at`, `scratch_ce`.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        temperature: float = 4.0,
        alpha: float = 0.9,
        beta: float = 1000.0,
        ce_weight: float = 1.0,
        scratch_weight: float = 1.0,
        student_layers: Sequence[LayerSpec] | None = None,
        teacher_layers: Sequence[LayerSpec] | None = None,
        scratch_teacher: str = "",
        scratch_teacher_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(student, teacher)
        self.temperature, self.alpha, self.beta = float(temperature), float(alpha), float(beta)
        self.ce_weight, self.scratch_weight = float(ce_weight), float(scratch_weight)
        self.attention = AttentionTaps(self, layer_pairs(student, teacher, student_layers, teacher_layers))
        if scratch_teacher:
            from actdistill.models import create_model  # lazy: models are optional for the method code

            num_classes = int(getattr(teacher, "num_classes", 0) or student.num_classes)
            self.scratch_teacher = create_model(scratch_teacher, num_classes, **dict(scratch_teacher_kwargs or {}))
        else:
            self.scratch_teacher = scratch_copy(teacher)

    def forward(self, batch: Batch) -> StepOutput:
        run_s, run_t = self._runs(batch)
        logits_sc = class_logits(self.scratch_teacher(self.teacher_input(batch)))
        logits = class_logits(run_s.logits)
        terms = self.attention(run_s, run_t, 2.0, "code")
        parts = {
            **self._ce(logits, batch, self.ce_weight),
            "kd": self.alpha * kd_loss(logits, logits_sc.detach(), self.temperature),
            "at": self.beta * torch.stack(terms).sum(),
            "scratch_ce": self.scratch_weight * F.cross_entropy(logits_sc.float(), batch["label"]),
        }
        return make_output(logits, parts)
