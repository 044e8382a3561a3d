"""Distillation methods. Importing this package registers every method in `actdistill.registry.METHODS`."""

from actdistill.distill import logit  # noqa: F401  (registers vanilla, kd)
from actdistill.distill.base import Distiller, Stage, StepOutput, make_output

__all__ = ["Distiller", "Stage", "StepOutput", "make_output"]
