"""`teacher.prefetch`: the frozen teacher's logits for the next batch are computed in a background thread while the
student trains on the current one.

A stored teacher cache (`teacher.cache`) replays a fixed set of views; with fresh random views every epoch the
teacher must run on each batch. Its forward does not depend on the student's step, so it can run one batch ahead in a
second thread and leave the step's critical path when the machine has a core to spare (on CUDA both threads share
the default stream, so there is nothing to gain there). Data loading and every random draw stay in the training
thread; the teacher thread runs the same kernels on the same inputs with the same thread count, so the logits, and
the whole run, are bitwise those of the online teacher (tests/test_teacher_prefetch.py).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor, nn

from actdistill.distill.base import Batch, Distiller
from actdistill.distill.taps import run_model
from actdistill.engine.evaluators import to_device
from actdistill.errors import ActdistillError
from actdistill.utils.runtime import autocast


class TeacherPrefetch:
    """Context manager; `prefetch(batches)` yields the batches with `teacher_logits` `(B, K)` (or `(B, K, T')`) added.

    The teacher may run only in the prefetch thread while the context is open: a method that runs it itself (it reads
    more than the logits) is stopped with a message instead of silently paying twice.
    """

    def __init__(self, method: Distiller, device: torch.device, amp_dtype: torch.dtype | None) -> None:
        if method.teacher is None:
            raise ActdistillError("teacher.prefetch needs a method with a teacher")
        self.method, self.device, self.amp_dtype = method, device, amp_dtype
        self.teacher: nn.Module = method.teacher
        self._threads = torch.get_num_threads()
        self._worker: int | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._hook: Any = None

    def __enter__(self) -> TeacherPrefetch:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="actdistill-teacher", initializer=self._start_worker)
        self._hook = self.teacher.register_forward_pre_hook(self._only_in_worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._hook.remove()
        assert self._pool is not None
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _start_worker(self) -> None:
        # OpenMP's thread count is per thread: give this one the training thread's, so the kernels (and their
        # float summation order) are the ones the online teacher would use.
        torch.set_num_threads(self._threads)
        self._worker = threading.get_ident()

    def _only_in_worker(self, module: nn.Module, args: Any) -> None:
        if threading.get_ident() != self._worker:
            raise ActdistillError(
                f"teacher.prefetch: method {type(self.method).__name__} ran the teacher itself (it reads more than the "
                "teacher's logits); drop teacher.prefetch for it"
            )

    def _teacher_logits(self, batch: Batch) -> Tensor:
        with torch.no_grad(), autocast(self.device, self.amp_dtype):
            return run_model(self.teacher, self.method.teacher_input(batch)).logits

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        """Batch i is yielded once its teacher logits are ready; batch i + 1's are computed meanwhile."""
        assert self._pool is not None, "use TeacherPrefetch as a context manager"
        pending: tuple[Batch, Future | None] | None = None
        for batch in batches:
            future = None
            if "input" in batch:  # an all-unreadable batch passes through as it is
                batch = to_device(batch, self.device)
                future = self._pool.submit(self._teacher_logits, batch)
            if pending is not None:
                yield _with_logits(*pending)
            pending = (batch, future)
        if pending is not None:
            yield _with_logits(*pending)


def _with_logits(batch: Batch, future: Future | None) -> Batch:
    if future is not None:
        batch["teacher_logits"] = future.result()
    return batch


def teacher_prefetch(
    method: Distiller, device: torch.device, amp_dtype: torch.dtype | None, enabled: bool
) -> contextlib.AbstractContextManager[Callable[[Iterable[Batch]], Iterable[Batch]]]:
    """`TeacherPrefetch` when `enabled`, else a context whose wrapper returns the batches unchanged."""
    if not enabled:
        return contextlib.nullcontext(lambda batches: batches)
    return TeacherPrefetch(method, device, amp_dtype)
