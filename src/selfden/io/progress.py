"""The records of a resumable output's partial folder: ``progress.json`` and ``checksums.crc32``.

``progress.json`` holds the number of frames done and the fingerprint of what produced them
(input file, model digest, options, output layout): resuming under another fingerprint is
refused with the reason. ``checksums.crc32`` holds the CRC-32 of every finished frame, 4
bytes each, kept out of the JSON so a long series does not rewrite a growing record after
every frame; ``--resume`` checks every finished frame against it before continuing.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from selfden.errors import InputError

PROGRESS_FILE = "progress.json"
CHECKSUM_FILE = "checksums.crc32"
FORMAT_VERSION = 2  # 2: per-frame checksums
_CHECKSUM = struct.Struct("<I")

_WHAT = {
    "input": "the input file changed (size or modification time) or is another file",
    "model": "the model is not the same (rdf.yaml or weights differ)",
    "output": "the output shape, type or format differs",
    "version": "it was written by another version of selfden",
}


def save_progress(folder: Path, fingerprint: Mapping[str, Any], done: int) -> None:
    """Record ``done`` frames finished, atomically (a temporary file renamed over the record)."""
    temp = folder / f"{PROGRESS_FILE}.tmp"
    try:
        temp.write_text(json.dumps({**fingerprint, "frames_done": done}, indent=1))
        os.replace(temp, folder / PROGRESS_FILE)
    finally:
        temp.unlink(missing_ok=True)  # a full disk leaves no half record behind


def read_progress(folder: Path) -> dict[str, Any]:
    """The progress record of a partial folder; InputError when it is unreadable."""
    try:
        saved = json.loads((folder / PROGRESS_FILE).read_text())
    except (OSError, ValueError) as error:
        raise InputError(
            f"{folder / PROGRESS_FILE}: the progress record of this unfinished run is missing or damaged "
            f"({error}); delete {folder} to start over"
        ) from error
    if not isinstance(saved, dict):
        raise InputError(f"{folder / PROGRESS_FILE}: not a progress record; delete {folder} to start over")
    return saved


def frames_done(folder: Path, saved: Mapping[str, Any], n_frames: int) -> int:
    """The ``frames_done`` of a progress record; InputError unless a whole number from 0 to ``n_frames``."""
    done = saved.get("frames_done")
    if not isinstance(done, int) or isinstance(done, bool) or not 0 <= done <= n_frames:
        raise InputError(
            f"{folder / PROGRESS_FILE}: frames_done is {done!r}, expected a whole number from 0 to "
            f"{n_frames}: the progress record is damaged; delete {folder} to start over"
        )
    return done


def progress_note(folder: Path) -> str:
    """"N frames done" from the record in ``folder``, or "progress unknown", for messages."""
    try:
        return f"{int(json.loads((folder / PROGRESS_FILE).read_text())['frames_done'])} frames done"
    except (OSError, ValueError, KeyError, TypeError):
        return "progress unknown"


def describe_mismatch(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """Why ``recorded`` (from progress.json) does not describe this run; None when it does."""
    for key in sorted(set(recorded) | set(current)):
        then, now = recorded.get(key), current.get(key)
        if then == now:
            continue
        if key == "options" and isinstance(then, Mapping) and isinstance(now, Mapping):
            changed = sorted(k for k in set(then) | set(now) if then.get(k) != now.get(k))
            return "; ".join(f"option {k} was {then.get(k)!r}, now {now.get(k)!r}" for k in changed)
        return _WHAT.get(key, f"{key} was {then!r}, now {now!r}")
    return None


class FrameChecksums:
    """``checksums.crc32`` of a partial folder: the CRC-32 of frame ``i`` at byte ``4 * i``."""

    def __init__(self, folder: Path, handle: IO[bytes]) -> None:
        self.path = folder / CHECKSUM_FILE
        self._handle = handle

    @classmethod
    def create(cls, folder: Path) -> FrameChecksums:
        """A new, empty record (replacing any left by a run killed while creating its folder)."""
        return cls(folder, open(folder / CHECKSUM_FILE, "w+b", buffering=0))  # noqa: SIM115 - closed in close

    @classmethod
    def reopen(cls, folder: Path) -> FrameChecksums | None:
        """The record an unfinished run left; None when it is missing."""
        try:
            return cls(folder, open(folder / CHECKSUM_FILE, "r+b", buffering=0))  # noqa: SIM115 - closed in close
        except FileNotFoundError:
            return None

    def record(self, index: int, data: np.ndarray) -> None:
        """Save the checksum of frame ``index`` (C-contiguous ``data``, as written)."""
        self._handle.seek(index * _CHECKSUM.size)
        self._handle.write(_CHECKSUM.pack(zlib.crc32(data)))

    def read(self, count: int) -> bytes:
        """The first ``count`` checksums as stored (fewer bytes when the record is cut short)."""
        return self._handle.read(count * _CHECKSUM.size)

    def close(self) -> None:
        """Close the record (again: a no-op)."""
        if not self._handle.closed:
            self._handle.close()


def verify_frames(
    target: Path, folder: Path, checksums: FrameChecksums | None, done: int, frame_bytes: Callable[[int], bytes]
) -> None:
    """InputError unless each of the ``done`` finished frames (``frame_bytes(i)``, as stored)
    matches the checksum it was saved with."""
    sums = checksums.read(done) if checksums is not None else b""
    if len(sums) < done * _CHECKSUM.size:
        raise InputError(
            f"{folder / CHECKSUM_FILE}: the checksums of the {done} finished frames are missing or cut short; "
            f"delete {folder} to start over"
        )
    for index, (expected,) in enumerate(_CHECKSUM.iter_unpack(sums)):
        if zlib.crc32(frame_bytes(index)) != expected:
            raise InputError(
                f"{target}: frame {index} of the unfinished output in {folder} does not match its "
                f"checksum (changed or damaged since it was written); delete {folder} to start over"
            )
