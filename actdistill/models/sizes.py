"""`actdistill list models --sizes`: parameters and GMACs of registered models, counted on meta tensors."""

from __future__ import annotations

from collections.abc import Sequence

from actdistill.models.factory import create_model
from actdistill.registry import MODELS
from actdistill.utils.flops import count


def print_model_sizes(names: Sequence[str] | None, input_size: Sequence[int] | None, num_classes: int) -> None:
    """One line per model at its standard input (or `input_size`); no weights are allocated or computed."""
    print(f"{'model':<24}{'input':>16}{'params (M)':>13}{'GMACs':>10}   ({num_classes} classes)")
    for name in names or MODELS.names():
        meta = MODELS.meta(name)
        if meta.get("sizes") is False:  # e.g. predictors, which are built from a run's specs
            continue
        shape = tuple(input_size or meta.get("input_size") or (3, 224, 224))
        kwargs = {"image_model": "pvt_v2_demo"} if name == "frames" else {}
        try:
            model = create_model(name, num_classes, **kwargs).to("meta")
            flops = count(model, (1, *shape))
            print(f"{name:<24}{'×'.join(map(str, shape)):>16}{flops.params / 1e6:>13.3f}{flops.gmacs:>10.3f}")
        except Exception as exc:  # noqa: BLE001 - one model that cannot be counted must not hide the others
            print(f"{name:<24}{'×'.join(map(str, shape)):>16}   could not count ({type(exc).__name__}: {exc})"[:150])
