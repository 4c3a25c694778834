"""Atomic file writes: a temporary file beside the target, renamed over it only when complete."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: Path, binary: bool = True) -> Iterator[IO[Any]]:
    """Yield a handle whose content replaces ``path`` on success; on any error ``path`` is untouched.

    The temporary file is opened normally (not with ``mkstemp``) so it gets the usual
    umask permissions rather than owner-only ones.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") if binary else open(tmp, "x", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) in one rename; on any error ``path`` is untouched."""
    with atomic_write(path, binary=False) as handle:
        handle.write(text)


def replace_folder(finished: Path, target: Path) -> None:
    """Rename the complete folder ``finished`` to ``target``; an existing ``target`` is moved aside
    first and deleted only once the new one is in place, so a crash never leaves neither."""
    if not target.exists():
        os.replace(finished, target)
        return
    old = target.with_name(f".{target.name}-old-{uuid.uuid4().hex[:8]}")
    os.replace(target, old)
    os.replace(finished, target)
    shutil.rmtree(old, ignore_errors=True)
