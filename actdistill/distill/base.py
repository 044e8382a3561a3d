"""The method contract (DESIGN.md, contract 2): `Distiller(student, teacher, **hparams)(batch) -> StepOutput`.

The training loop never names a method. It calls `distiller(batch)`, backpropagates `out.loss`, and
logs `out.parts`. A method:
  * keeps the teacher frozen: `eval()` mode, `requires_grad_(False)`, and put back in eval by `train()`;
  * declares the extra batch keys it needs in `requires` (e.g. `{"index"}` for memory-bank methods);
  * owns its trainable extras (adapters, projectors) as sub-modules other than `student`/`teacher`;
    `trainable_parameters()` yields student + extras, never the teacher;
  * may define several optimisation stages through `stages()` (paper 2's two-stage training); the
    default is one stage that trains everything trainable with the loss of `forward`;
  * receives the epoch through `on_epoch(epoch)` (epochs count from 1) for schedules such as warm-ups;
  * says what scores inputs at test time through `predictor()` (the student by default; paper 2's method: the
    student head on the attention-weighted feature) and how to rebuild it from a checkpoint (`predictor_spec`), so
    evaluation during training, `actdistill eval`, export and analysis all score the same network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

Batch = dict[str, Any]


@dataclass
class StepOutput:
    """`loss == sum(parts.values())`; `logits` are the student's predictions; `metrics` are logged, not optimised.

    Metric values are detached tensors (or floats) so that the loop can average them without a device sync per step.
    """

    loss: Tensor
    logits: Tensor
    parts: dict[str, Tensor]
    metrics: dict[str, Tensor | float] = field(default_factory=dict)


@dataclass
class Stage:
    """One optimisation stage: a name, the parameters it updates and the function computing its loss."""

    name: str
    parameters: Callable[[], Iterator[nn.Parameter]]
    forward: Callable[[Batch], StepOutput]


def make_output(
    logits: Tensor, parts: dict[str, Tensor], metrics: dict[str, Tensor | float] | None = None
) -> StepOutput:
    """Build a `StepOutput` whose loss is exactly the sum of its parts."""
    loss = torch.stack([p.float() for p in parts.values()]).sum()
    return StepOutput(loss=loss, logits=logits, parts=parts, metrics=metrics or {})


class Distiller(nn.Module):
    """Base class of every method. Subclasses implement `forward(batch) -> StepOutput`."""

    requires: frozenset[str] = frozenset()
    uses_teacher: bool = True
    reads_only_teacher_logits: bool = False  # True: a teacher-output cache (`teacher_logits` key) can replace it
    reads_pooled_teacher_feature: bool = False  # True: so can a cache with pooled features (`teacher_pooled` key)

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.epoch = 1
        if teacher is not None:
            teacher.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def extra_modules(self) -> dict[str, nn.Module]:
        """Trainable modules the method adds (adapters, projectors), saved apart from the student."""
        return {n: m for n, m in self.named_children() if n not in ("student", "teacher")}

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Student and adapter parameters; never the teacher's."""
        yield from (p for p in self.student.parameters() if p.requires_grad)
        for module in self.extra_modules().values():
            yield from (p for p in module.parameters() if p.requires_grad)
        yield from (p for p in self.parameters(recurse=False) if p.requires_grad)

    def stages(self) -> list[Stage]:
        """Optimisation stages run in order each epoch; one stage by default."""
        return [Stage("main", self.trainable_parameters, self.forward)]

    def on_epoch(self, epoch: int) -> None:
        """Called by the loop before each training epoch (epochs count from 1)."""
        self.epoch = epoch

    def predictor(self) -> nn.Module:
        """The network that scores inputs at test time; shares its parameters with this method's modules."""
        return self.student

    def predictor_spec(self, student_spec: dict[str, Any], teacher_spec: dict[str, Any] | None) -> dict[str, Any]:
        """How to rebuild `predictor()` with `create_model`: `{"name", "num_classes", "kwargs"}` of a registered
        model whose `state_dict` keys are `predictor().state_dict()`'s. The student's own spec by default."""
        return student_spec

    def predict(self, x: Tensor) -> Tensor:
        """`predictor()(x)`: the logits used for evaluation."""
        return self.predictor()(x)

    def teacher_input(self, batch: Batch) -> Tensor:
        """The teacher's view of the batch: `input_t` when the data provides one, else `input`."""
        return batch.get("input_t", batch["input"])

    def student_state(self) -> dict[str, Any]:
        """What to checkpoint besides the student: adapters and method state (e.g. epochs, buffers)."""
        return {"extras": {n: m.state_dict() for n, m in self.extra_modules().items()}, "epoch": self.epoch}

    def load_student_state(self, state: dict[str, Any]) -> None:
        for name, sd in state.get("extras", {}).items():
            self.extra_modules()[name].load_state_dict(sd)
        self.epoch = state.get("epoch", self.epoch)
