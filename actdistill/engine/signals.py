"""SIGINT/SIGTERM during training: note the request, let the loop save at the next step boundary, then stop."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

log = logging.getLogger("actdistill")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Callable: the number of the first stop signal received, 0 while none has arrived."""

    def __init__(self) -> None:
        self.signum = 0

    def __call__(self) -> int:
        return self.signum

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without saving
        self.signum = self.signum or signum
        log.warning(
            "received %s: saving a checkpoint at the next step boundary (Ctrl-C again stops without saving)",
            signal.Signals(signum).name,
        )


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Install SIGINT/SIGTERM handlers that record a `StopRequest`; the previous handlers come back on exit."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield request
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, request._handle)
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
