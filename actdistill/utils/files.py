"""Output folders that cannot eat data: run-folder locks, paths confined to their output folder, free-space checks.

Rules (docs/errors.md, "output folders"): a command writes only into folders it created or that already hold its
own kind of output (marked with `MARKER`); it deletes nothing it did not create; a name built from user text (a
comparison label, a run name) must stay inside its output folder.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
from pathlib import Path
from typing import IO

from actdistill.errors import ActdistillError

MARKER = ".actdistill-run"  # written into every run folder this toolkit creates
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def safe_name(name: str, what: str) -> str:
    """`name` if it can be one path component (letters, digits, `_ . + -`, no `..`, no `/`); else an error."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise ActdistillError(
            f"{what} '{name}' cannot be a folder name: use letters, digits and _ . + - only (no '/', no '..')"
        )
    return name


def confined(root: str | Path, *parts: str, what: str = "name") -> Path:
    """`root/parts...`, refusing any part that is not a `safe_name` or a result that leaves `root`."""
    root = Path(root)
    path = root.joinpath(*(safe_name(p, what) for p in parts))
    if not path.resolve().is_relative_to(root.resolve()):
        raise ActdistillError(f"{what} {'/'.join(parts)} would write outside {root}")
    return path


def is_run_folder(path: Path) -> bool:
    """A folder an actdistill run wrote: the marker, or (runs from before the marker) its config or checkpoints."""
    names = (MARKER, "config.yaml", "results.json", "metrics.jsonl", "checkpoints/last.pt")
    return any((path / name).exists() for name in names)


_HELD: set[Path] = set()  # lock files this process holds: POSIX record locks do not conflict within one process


class FolderLock:
    """An advisory POSIX record lock (`lockf`) on `<folder>/.lock` holding the owner's PID. The OS releases it when
    the process dies; unlike `flock`, forked children (DataLoader workers) do not inherit it."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self._file: IO[str] | None = None

    def acquire(self) -> FolderLock:
        if self.path.resolve() in _HELD:
            raise ActdistillError(
                f"run folder {self.path.parent} is in use by another run in this process ({os.getpid()}); choose "
                "another train.out_dir"
            )
        self._file = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.lockf(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            self._file = None
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise ActdistillError(
                    f"run folder {self.path.parent} is in use by another run (process {holder}); wait for it to "
                    "finish, stop it, or choose another train.out_dir"
                ) from None
            raise
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()
        _HELD.add(self.path.resolve())
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.lockf(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
            _HELD.discard(self.path.resolve())

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def check_free_space(folder: str | Path, needed_bytes: int, what: str) -> None:
    """Refuse to start writing `needed_bytes` (plus 5 % and 64 MiB of headroom) where the disk lacks them."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    wanted = int(needed_bytes * 1.05) + (64 << 20)
    if free < wanted:
        raise ActdistillError(
            f"{what} needs about {human_bytes(wanted)} in {folder} but only {human_bytes(free)} is free; free space "
            "or choose another folder"
        )


def human_bytes(n: float) -> str:
    """`1536` → `1.5 KiB`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"
