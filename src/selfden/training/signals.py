"""How a training is stopped: Ctrl-C and SIGTERM ask it to stop between steps.

Schedulers and out-of-memory killers stop a training politely with SIGTERM, and a training
should then do what it does on Ctrl-C: checkpoint, report and exit 130.

Inside the loop a signal only sets a flag that the loop reads before each step. Python's
default, a KeyboardInterrupt raised at whatever bytecode runs when the signal arrives, can land
inside an optimizer update (a checkpoint of half-updated weights) or inside a call from C code
that clears errors, where it is lost without a word and the training runs on to the end of its
budget. A second Ctrl-C still raises at once, for a step that never ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt (only the main thread can take signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")


class StopRequest:
    """Whether a stop was asked for, and by which signal."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:  # asked twice: the user will not wait for the step
            raise KeyboardInterrupt(f"stopped by a second {signal.Signals(signum).name}")
        self.signal_name = self.signal_name or signal.Signals(signum).name


@contextlib.contextmanager
def stop_between_steps() -> Iterator[StopRequest]:
    """Within the block SIGINT and SIGTERM set the yielded request instead of raising.

    Outside the main thread, which cannot take signals, the request is never set. A SIGINT that
    the process was started to ignore (``nohup``, a background job, a spawned rank) stays ignored.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous: dict[signal.Signals, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, request._handle)
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
