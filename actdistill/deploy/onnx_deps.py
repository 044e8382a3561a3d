"""The optional ONNX packages, imported on demand with an error that says how to install them."""

from __future__ import annotations

from types import ModuleType

from actdistill.errors import ActdistillError

__all__ = ["ONNX_HINT", "require_onnx"]

ONNX_HINT = "pip install 'actdistill[onnx]'"


def require_onnx(what: str = "ONNX export", exporter: bool = False) -> tuple[ModuleType, ModuleType]:
    """`(onnx, onnxruntime)` (and onnxscript importable when `exporter`), or an error telling how to install them."""
    try:
        import onnx
        import onnxruntime

        if exporter:
            import onnxscript  # noqa: F401  (torch's dynamo exporter needs it)
    except ImportError as exc:
        raise ActdistillError(
            f"{what} needs onnx, onnxruntime, onnxscript ({exc.name} is missing); {ONNX_HINT}"
        ) from None
    return onnx, onnxruntime
