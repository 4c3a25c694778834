"""Fixtures shared by the test modules."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_as_at_a_terminal() -> Iterator[None]:
    """Tests press Ctrl-C as a user at a terminal would, and their subprocesses inherit it.

    A suite started in the background (``nohup``, ``cmd &`` in a script) begins with SIGINT ignored,
    which selfden then rightly keeps ignoring (tested on its own in test_trainer.py); without this the
    Ctrl-C tests would pass or fail by how pytest was launched.
    """
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """The CI machine's cores are shared: two spinning torch threads there run far slower than one.

    torch is imported here, not at the top, so modules that must not import it (inference) stay clean.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
