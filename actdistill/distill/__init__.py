"""Distillation methods. Importing this package registers every method in `actdistill.registry.METHODS`."""

from actdistill.distill import combined, feature, generative, logit, relation  # noqa: F401  (importing registers the methods)
from actdistill.distill.base import Distiller, Stage, StepOutput, make_output

__all__ = ["Distiller", "Stage", "StepOutput", "make_output"]
