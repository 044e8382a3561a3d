"""Deployment: ONNX export of a trained student (`export.py`) and top-k prediction on files (`predict.py`)."""

from actdistill.deploy.export import export_onnx, load_student
from actdistill.deploy.predict import predict_files

__all__ = ["export_onnx", "load_student", "predict_files"]
