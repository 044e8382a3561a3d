"""actdistill: knowledge distillation for human action recognition (still images and video)."""

__version__ = "0.1.0"
