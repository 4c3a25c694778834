"""An OS lock on an output's partial folder, so two processes never write the same output.

The lock is ``fcntl.flock`` on ``.NAME.partial/lock``, held from the moment the folder
appears until it is renamed away or left for ``--resume``. The kernel drops it when its
process ends, however it ends, so a folder left by a killed run never blocks the next one.
A new folder is made under another name with the lock already held, then renamed into
place: no other process can see it unlocked.

POSIX only: where ``fcntl`` is missing (Windows) outputs are not locked, and two processes
writing the same output there is the user's to avoid.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import IO

from selfden.errors import SelfdenError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "lock"


class OutputBusyError(SelfdenError):
    """Another process holds the lock on the partial folder of this output."""


def busy_error(target: Path, folder: Path) -> OutputBusyError:
    return OutputBusyError(
        f"another process is writing {target} (lock held on {folder / LOCK_FILE}); "
        "wait for it or choose another -o"
    )


class OutputLock:
    """A held lock; ``release()`` (or process exit) frees it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle

    def release(self) -> None:
        if not self._handle.closed:
            self._handle.close()  # closing the last descriptor drops the flock


def _try_lock(path: Path) -> IO[bytes] | None:
    """The open, locked lock file at ``path``; None when another process holds it."""
    handle = open(path, "a+b")  # noqa: SIM115 - kept open while the lock is held
    if fcntl is None:  # pragma: no cover - Windows: see the module docstring
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    except BaseException:
        handle.close()
        raise
    return handle


def is_locked(folder: Path) -> bool:
    """Whether a live process holds the lock of the partial folder ``folder``."""
    path = folder / LOCK_FILE
    if fcntl is None or not path.is_file():
        return False
    try:
        with open(path, "rb") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # unreadable or just removed: nobody we could wait for
        return False
    return False


def _lock_existing(folder: Path) -> OutputLock | None:
    """The lock of an existing ``folder``; None when the folder went away meanwhile,
    _Held when another process holds it."""
    path = folder / LOCK_FILE
    try:
        handle = _try_lock(path)
    except FileNotFoundError:
        return None  # finished and removed between our look and our open
    if handle is None:
        raise _Held()
    try:
        same = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        same = False
    if not same:  # we locked a lock file its owner had just removed with the folder
        handle.close()
        return None
    return OutputLock(handle)


class _Held(Exception):
    """Internal: the lock is held by another process."""


def _create_locked(folder: Path) -> OutputLock | None:
    """Make ``folder`` with its lock held; None when another process made it first."""
    staging = folder.with_name(f"{folder.name}-new-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        handle = _try_lock(staging / LOCK_FILE)
        assert handle is not None, "nobody else knows this folder"
        try:
            os.rename(staging, folder)
        except OSError:
            handle.close()
            if folder.exists():
                return None
            raise
        return OutputLock(handle)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after a successful rename


def claim_partial(folder: Path, target: Path) -> tuple[OutputLock, bool]:
    """Lock the partial folder of ``target``, making it when missing.

    Returns the lock and whether the folder already existed. Raises OutputBusyError
    when a live process holds it.
    """
    for _ in range(5):
        try:
            if folder.exists():
                lock = _lock_existing(folder)
                if lock is not None:
                    return lock, True
                continue
            lock = _create_locked(folder)
            if lock is not None:
                return lock, False
        except _Held:
            raise busy_error(target, folder) from None
    raise busy_error(target, folder)
