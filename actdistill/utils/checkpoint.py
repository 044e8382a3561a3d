"""Checkpoint files: written atomically, read without ever running code from them.

Every load goes through `torch.load(..., weights_only=True)`: the file may hold tensors, numbers, strings, lists,
tuples and dicts, nothing that pickle would have to construct by calling Python code. Checkpoints written by
actdistill before this rule stored NumPy RNG states; those arrays are data, so NumPy's array reconstructor is the
one extra global allowed, and `plain_rng_state` converts them when such a checkpoint is resumed. A file that needs
any other object is refused with one line naming it (docs/errors.md).
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from actdistill.errors import ActdistillError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core.multiarray import _reconstruct

# Data-only globals that older actdistill checkpoints contain (NumPy RNG state, torch version string): building them
# from their bytes runs no user code.
LEGACY_SAFE_GLOBALS = [np.ndarray, np.dtype, _reconstruct, type(np.dtype(np.uint32)), torch.torch_version.TorchVersion]
TEMP_PATTERN = ".*.tmp"  # atomic writes go through `.<name>.<random>.tmp` in the target folder


def _friendly_os_error(exc: OSError, path: Path) -> ActdistillError:
    """Disk full / read-only / permission errors as one line naming the path."""
    if exc.errno == errno.ENOSPC:
        why = "the disk is full; free space there or choose another output folder"
    elif exc.errno == errno.EROFS:
        why = "the file system is read-only; choose a writable output folder"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        why = "permission denied; choose a folder this user can write"
    else:
        why = f"{exc.strerror or exc.__class__.__name__}"
    return ActdistillError(f"could not write {path}: {why}")


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> Path:
    """Call `write(binary_stream)` on a temp file beside `path`, fsync, then rename: never half a file at `path`.

    Disk-full, read-only and permission failures become one `ActdistillError` line naming `path`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _friendly_os_error(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _friendly_os_error(exc, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save(obj: Any, path: str | Path) -> Path:
    """`torch.save(obj)` through `atomic_write`; `obj` must hold only tensors and plain containers."""
    return atomic_write(path, lambda stream: torch.save(obj, stream))


def save_weights(state: dict[str, Tensor], path: str | Path) -> Path:
    """A plain state dict as a `.safetensors` file (no pickle at all), written atomically."""
    from safetensors.torch import save

    # Own, contiguous CPU copies: safetensors refuses tensors that share storage (tied weights).
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    payload = save(tensors)
    return atomic_write(path, lambda stream: stream.write(payload))


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """The state dict of a `.safetensors` file written by `save_weights` (on CPU)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ActdistillError(f"weights file {path} not found")
    return load_file(str(path), device="cpu")


def remove_stale_temp_files(folder: str | Path) -> int:
    """Delete `.<name>.<random>.tmp` files that an interrupted `atomic_write` left in `folder`; returns the count.

    Only call this on a folder the current run owns (it holds the run lock), so no writer is active there.
    """
    removed = 0
    for tmp in Path(folder).glob(TEMP_PATTERN):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _refuse_pickle(path: Path) -> ActdistillError:
    return ActdistillError(
        f"checkpoint {path} holds pickled Python objects, which could run code when opened, so actdistill refuses "
        "it; if you trust the file, re-save its weights as plain tensors (docs/errors.md, 'pickled checkpoint')"
    )


def safe_load(path: str | Path) -> Any:
    """`torch.load(path, weights_only=True)` on CPU with one-line errors; never runs code from the file."""
    path = Path(path)
    if not path.is_file():
        raise ActdistillError(f"checkpoint {path} not found; pass the path of a run's checkpoints/best.pt or last.pt")
    try:
        with torch.serialization.safe_globals(LEGACY_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise _refuse_pickle(path) from None
        raise ActdistillError(
            f"checkpoint {path} could not be read ({exc.__class__.__name__}); it is corrupt"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any other reading failure means the same thing to the user
        raise ActdistillError(
            f"checkpoint {path} could not be read ({exc.__class__.__name__}); it is corrupt or not a PyTorch file"
        ) from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """An actdistill checkpoint (a dict with a `student` state dict), loaded safely on CPU."""
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or "student" not in ckpt:
        raise ActdistillError(
            f"checkpoint {path} is not an actdistill checkpoint (no 'student' entry); "
            "to start from plain weights use student.pretrained=PATH instead"
        )
    return ckpt


# --- RNG state as plain data --------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states (plus the current CUDA device's) as tensors and numbers only."""
    # Only the current CUDA device: under torchrun the other GPUs belong to other processes, and reading their
    # state would create a CUDA context on each of them.
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def plain_rng_state(state: dict[str, Any]) -> dict[str, Any]:
    """`state` in the plain-data layout of `rng_state()`; converts the tuple layout of older checkpoints."""
    python, numpy_state = state["python"], state["numpy"]
    if isinstance(python, (tuple, list)):
        version, internal, gauss = python
        python = {"version": version, "state": torch.tensor(list(internal), dtype=torch.int64), "gauss": gauss}
    if isinstance(numpy_state, (tuple, list)):
        name, keys, pos, has_gauss, cached = numpy_state
        numpy_state = {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    return {**state, "python": python, "numpy": numpy_state}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore `rng_state()` (either layout); a CUDA state is applied to the current device."""
    state = plain_rng_state(state)
    python, numpy_state = state["python"], state["numpy"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, (list, tuple)):  # older checkpoints: one state per visible device
            cuda = cuda[torch.cuda.current_device()] if torch.cuda.current_device() < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


def state_mismatch(model: torch.nn.Module, state: dict[str, Any]) -> str:
    """Why `state` does not load into `model`, in a few words: counts of missing/unexpected/reshaped entries."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and tuple(own[k].shape) != tuple(getattr(state[k], "shape", ()))]
    found = {"missing": missing, "unexpected": unexpected, "with another shape": reshaped}
    return ", ".join(f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in found.items() if keys) or "no match"
