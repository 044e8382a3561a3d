"""Deployment: ONNX export of a trained student (`export.py`), int8 quantization (`quantize.py`), accuracy of an
exported model (`onnx_eval.py`) and top-k prediction on files (`predict.py`)."""

from actdistill.deploy.export import export_onnx, load_student
from actdistill.deploy.onnx_eval import evaluate_onnx
from actdistill.deploy.predict import predict_files
from actdistill.deploy.quantize import quantize_onnx

__all__ = ["evaluate_onnx", "export_onnx", "load_student", "predict_files", "quantize_onnx"]
