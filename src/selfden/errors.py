"""Errors that describe a user's mistake rather than a bug.

The CLI prints their message as one line and exits non-zero, with no traceback.
Messages say what was received, what was expected and, where possible, what to do.
"""

from __future__ import annotations

import errno


class SelfdenError(Exception):
    """A problem the user can fix: bad input, a broken model folder, a wrong option."""


class InputError(SelfdenError):
    """An input file is missing, unreadable or unsuitable (message names the file)."""


class ModelError(SelfdenError):
    """A model folder or package is missing, broken or unsupported."""


def one_line(value: object, limit: int = 200) -> str:
    """``value`` (an error or any text) as one line of at most ``limit`` characters, for messages."""
    text = " ".join(str(value).split()) or type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def require_suffix(path: object, suffixes: tuple[str, ...], what: str) -> None:
    """SelfdenError unless ``path`` ends in one of ``suffixes`` (e.g. a plot must be a .png)."""
    from pathlib import Path

    if Path(str(path)).suffix.lower() not in suffixes:
        raise SelfdenError(f"{path}: {what} is written as {' or '.join(suffixes)}; give a path ending in {suffixes[0]}")


#: Operating-system failures a user's disk, folders or limits cause, and what to do about each.
_OS_ERROR_FIXES = {
    errno.ENOSPC: "the disk is full; free some space (or choose another folder) and run again "
    "(selfden infer: add --resume to keep the frames already written)",
    errno.EDQUOT: "your disk quota is used up; free some space and run again",
    errno.EROFS: "the file system is read-only; choose a folder you can write to",
    errno.EACCES: "permission denied; choose a path you may read/write, or change its permissions",
    errno.EPERM: "operation not permitted; choose a path you may write to",
    errno.ENAMETOOLONG: "the file name is too long; choose a shorter path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) or pass fewer files at once",
    errno.EISDIR: "is a folder where a file was expected; give a file path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.ENOENT: "no such file or folder; check the path",
    # mkdir(exist_ok=True) says this only when a file stands where a folder is needed
    errno.EEXIST: "a file is in the way where a folder is needed; check the path",
}


def os_error_message(error: OSError) -> str | None:
    """One line naming the file, the problem and the fix, for OS errors a user can cause.

    None for the others (a bug or an unexpected system state), which should keep their traceback.
    """
    fix = _OS_ERROR_FIXES.get(error.errno) if error.errno is not None else None
    if fix is None:
        return None
    where = error.filename if error.filename is not None else "selfden"
    also = f" -> {error.filename2}" if getattr(error, "filename2", None) is not None else ""
    return f"{where}{also}: {fix}"
