"""Test-time networks of methods whose prediction is more than the student, registered as models.

A checkpoint records its method's predictor as a model spec (`Distiller.predictor_spec`) plus the predictor's
weights, so `create_model(spec)` + `load_state_dict` rebuilds exactly what training evaluated (engine/predictor.py):
  * `attention_predictor`: paper 2's student at test time, the student head on the attention-weighted last map
    (eqs. 8-10, 12; no CVAE);
  * `simkd_predictor`: SimKD's student + projector + the frozen teacher head (Chen et al. CVPR-22).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from actdistill.distill.feature import SimKD
from actdistill.distill.generative import AttentionModule, AttentionPredictor
from actdistill.models import create_model
from actdistill.registry import MODELS


def _model(spec: dict[str, Any]) -> nn.Module:
    return create_model(spec["name"], spec["num_classes"], pretrained=False, **spec.get("kwargs", {}))


@MODELS.register(
    "attention_predictor", task="video", role="paper 2 student at test time (student + attention)", sizes=False
)
def attention_predictor(
    num_classes: int,
    pretrained: bool = False,
    *,
    student: dict[str, Any],
    channels: int,
    time_steps: int,
    spatial: Sequence[int] = (7, 7),
    groups: int = 32,
    per_sample_sigma: bool = False,
) -> AttentionPredictor:
    """Rebuild a `generative` run's predictor: the student spec plus the attention module's shape."""
    attention = AttentionModule(channels, time_steps, spatial_kernel=tuple(spatial), groups=groups)
    return AttentionPredictor(_model(student), attention, per_sample_sigma)


@MODELS.register("simkd_predictor", role="SimKD student at test time (student + projector + teacher head)", sizes=False)
def simkd_predictor(
    num_classes: int,
    pretrained: bool = False,
    *,
    student: dict[str, Any],
    teacher: dict[str, Any],
    student_layer: Any = -1,
    teacher_layer: Any = -1,
    factor: int = 2,
) -> nn.Module:
    """Rebuild a `simkd` run's predictor from the student and teacher specs (weights come from the checkpoint)."""
    method = SimKD(
        _model(student), _model(teacher), student_layer=student_layer, teacher_layer=teacher_layer, factor=factor
    )
    return method.deployable()
