"""Resumable outputs: frames go into a partial store beside the target, then one rename.

While a stack is denoised, ``.NAME.partial/`` beside the target holds the output file
itself (a TIFF or .npy laid out contiguously, or an OME-Zarr group; ``output_stores``),
``progress.json`` (frames done, and what produced them: input file, model digest,
options), ``checksums.crc32`` (the CRC-32 of every finished frame; both kept by
``progress``) and ``lock``, which a live writer holds (``output_lock``). Frames are
written in place at their offset, so memory holds one frame and a finished frame is
never recomputed; ``--resume`` checks every finished frame against its checksum before
continuing. At the end the file is renamed onto the target and the folder removed. An
interrupted run (Ctrl-C, a killed process, a full disk) leaves the folder for
``--resume``; a failure caused by the input or the model removes it, since resuming would
fail the same way, and so does a failed write before the first frame was saved. A full
disk leaves the data file (sparse, holding only the frames written) with its records:
exactly what ``--resume`` needs.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from selfden.errors import InputError, SelfdenError
from selfden.io.metadata import ImageMetadata
from selfden.io.output_lock import LOCK_FILE, OutputLock, busy_error, claim_partial, is_locked
from selfden.io.output_stores import Store, create_data, open_store
from selfden.io.paths import check_output_target
from selfden.io.progress import (
    FORMAT_VERSION,
    FrameChecksums,
    describe_mismatch,
    frames_done,
    progress_note,
    read_progress,
    save_progress,
    verify_frames,
)

log = logging.getLogger(__name__)


class InferenceInterrupted(KeyboardInterrupt):
    """Ctrl-C during inference; the message says where the partial result is and how to resume."""


class OutputWriteError(SelfdenError):
    """The output could not be written (full disk, read-only folder, ...); the message names it
    and says whether the finished frames were kept for --resume."""


def partial_dir(target: Path) -> Path:
    """The hidden folder holding the unfinished output of ``target``."""
    return target.with_name(f".{target.name}.partial")


def file_identity(path: Path) -> dict[str, Any]:
    """Path, size and modification time: a changed input shows without reading its pixels.

    A folder (Zarr) is represented by its metadata files, which change when its array does.
    """
    path = path.resolve()
    if not path.is_dir():
        stat = path.stat()
        return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    names = (".zarray", ".zattrs", ".zgroup", "zarr.json")
    found = sorted(p for p in [*path.glob("*"), *path.glob("*/*")] if p.name in names)
    return {"path": str(path), "size": None, "mtime_ns": max((p.stat().st_mtime_ns for p in found), default=0)}


def files_digest(paths: Iterable[Path]) -> str:
    """sha256 over the contents of ``paths`` (a model's rdf.yaml and graphs)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# --- output-side failures ----------------------------------------------------------------------

_PROBLEMS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def output_error(target: Path, error: OSError, where: Path, frames_kept: int = 0) -> OutputWriteError:
    """One line naming ``target``, the OS's problem in the folder ``where`` (which keeps the
    ``frames_kept`` finished frames, if any, for --resume), and what to do."""
    problem = _PROBLEMS.get(error.errno or 0) or (error.strerror or type(error).__name__)
    full = error.errno in (errno.ENOSPC, errno.EDQUOT)
    if frames_kept:
        resume = "free some space and run" if full else "fix that and run"
        return OutputWriteError(
            f"{target}: cannot write the output: {problem}; its {frames_kept} finished "
            f"frame{'s' if frames_kept > 1 else ''} {'are' if frames_kept > 1 else 'is'} kept in {where}: "
            f"{resume} the same command with --resume (or delete that folder to start over)"
        )
    fix = "free some space or choose another -o" if full else "choose another -o (a folder you can write to)"
    return OutputWriteError(f"{target}: cannot write the output: {problem} ({where}); {fix}")


def make_output_folder(folder: Path, target: Path) -> None:
    """Create the folder the outputs go to; OutputWriteError (one line) when that fails."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise output_error(target, error, folder) from None


def check_output_free(target: Path, overwrite: bool) -> None:
    """Refuse an output another process is writing, and an existing one unless ``overwrite``."""
    folder = partial_dir(target)
    if folder.is_dir() and is_locked(folder):
        raise busy_error(target, folder)
    if not overwrite and (target.exists() or target.is_symlink()):
        raise existing_error(target)


def existing_error(target: Path) -> InputError:
    """The refusal of an output that exists when --overwrite was not given."""
    return InputError(f"{target}: exists; pass --overwrite to replace it or choose another -o")


# --- the writer ------------------------------------------------------------------------------------


def _cast(frame: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A private copy in the output type (the caller may reuse its buffer while the frame is
    written); integers are rounded and clipped rather than wrapped."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(frame), info.min, info.max).astype(dtype)
    return np.array(frame, dtype=dtype)


class ResumableWriter:
    """Writes the frames of one output in order, resumably; renames onto ``target`` at the end.

    ``fingerprint`` (JSON-able) says what produces the frames; resuming a partial made with
    another fingerprint is refused. ``done`` is the number of frames already on disk. An
    existing ``target`` is replaced only with ``overwrite``; while the writer is open it
    holds the lock of the partial folder, so a second writer of ``target`` fails at once.
    """

    def __init__(
        self,
        target: Path,
        shape: Sequence[int],
        axes: str,
        metadata: ImageMetadata,
        dtype: np.typing.DTypeLike,
        fingerprint: Mapping[str, Any],
        resume: bool = False,
        inputs: Sequence[Path] = (),
        overwrite: bool = False,
    ) -> None:
        self.target = Path(target)
        self.shape = tuple(int(s) for s in shape)
        self.axes, self.metadata, self.dtype = axes, metadata, np.dtype(dtype)
        self.suffix = self.target.suffix.lower()
        self.fingerprint = json.loads(json.dumps(self._describe(fingerprint)))  # as it reads back
        self.resume, self.overwrite = resume, overwrite
        self.folder = partial_dir(self.target)
        self.done = 0
        self._store: Store | None = None
        self._sums: FrameChecksums | None = None
        self._lock: OutputLock | None = None
        check_output_target(self.target, inputs)

    @property
    def n_frames(self) -> int:
        return math.prod(self.shape[:-2])

    def _describe(self, fingerprint: Mapping[str, Any]) -> dict[str, Any]:
        layout = {"shape": list(self.shape), "axes": self.axes, "dtype": str(self.dtype), "format": self.suffix}
        return {"version": FORMAT_VERSION, "output": layout, **fingerprint}

    # --- opening -----------------------------------------------------------------------------
    def __enter__(self) -> ResumableWriter:
        try:
            self._lock, existed = claim_partial(self.folder, self.target)
        except OSError as error:
            raise output_error(self.target, error, self.target.parent) from None
        resumable = existed and self._data_path().exists()  # a folder without data holds nothing to resume
        try:
            if not self.overwrite and self.target.exists():  # appeared since the outputs were planned
                raise existing_error(self.target)
            if resumable:
                self._reopen()
            else:
                self._create()
        except BaseException as exc:
            self._close_files()
            if not resumable:
                shutil.rmtree(self.folder, ignore_errors=True)
            self._release()
            if isinstance(exc, OSError):
                raise output_error(self.target, exc, self.folder) from None
            if isinstance(exc, SelfdenError):  # a refusal, not the frames' fault: other writers keep theirs
                exc.refused_opening = True  # type: ignore[attr-defined]
            raise
        return self

    def _data_path(self) -> Path:
        name = {".tiff": "data.tif", ".png": "data.npy"}.get(self.suffix, f"data{self.suffix}")
        return self.folder / name

    def _create(self) -> None:
        for entry in self.folder.iterdir():  # what a run killed while creating it left
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.name != LOCK_FILE:
                entry.unlink()
        data = create_data(self.folder, ".npy" if self.suffix == ".png" else self.suffix,
                           self.shape, self.axes, self.dtype, self.metadata)
        self._store = open_store(data, self.suffix, self._frame_bytes())
        self._sums = FrameChecksums.create(self.folder)
        save_progress(self.folder, self.fingerprint, 0)

    def _reopen(self) -> None:
        if not self.resume:
            raise _unfinished(self.target)
        saved = read_progress(self.folder)
        recorded = {k: v for k, v in saved.items() if k != "frames_done"}
        problem = describe_mismatch(recorded, self.fingerprint)
        if problem is not None:
            raise InputError(
                f"{self.target}: cannot resume: {problem}; rerun with the original settings, "
                f"or delete {self.folder} to start over"
            )
        done = frames_done(self.folder, saved, self.n_frames)
        self._store = open_store(self._data_path(), self.suffix, self._frame_bytes())
        self._sums = FrameChecksums.reopen(self.folder)  # None (missing) fails verify_frames unless done is 0
        verify_frames(self.target, self.folder, self._sums, done, self._store.get)
        self.done = done
        log.info("%s: resuming after %d of %d frames", self.target, done, self.n_frames)

    def _frame_bytes(self) -> int:
        return self.shape[-2] * self.shape[-1] * self.dtype.itemsize

    # --- writing -----------------------------------------------------------------------------
    def write(self, frame: np.ndarray) -> None:
        """Store the next frame (cast to the output type) and its checksum, then record it as done."""
        if self._store is None or self._sums is None:
            raise RuntimeError("ResumableWriter.write() called outside its with-block")
        if self.done >= self.n_frames:
            raise ValueError(f"{self.target}: all {self.n_frames} frames were already written")
        if tuple(frame.shape) != self.shape[-2:]:
            raise ValueError(f"frame of shape {frame.shape} does not match {self.shape[-2:]}")
        data = np.ascontiguousarray(_cast(frame, self.dtype))
        try:
            self._store.put(self.done, data)
            self._sums.record(self.done, data)
            save_progress(self.folder, self.fingerprint, self.done + 1)
        except OSError as error:
            raise output_error(self.target, error, self.folder, self.done) from None
        self.done += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        store, self._store = self._store, None
        assert store is not None
        try:
            if exc_type is not None:
                store.close()
                # Kept for --resume after a write error or another writer's refusal (e.g. the std
                # output of the same job); removed when the input or the model is at fault.
                refusal = isinstance(exc, OutputWriteError) or getattr(exc, "refused_opening", False)
                if isinstance(exc, SelfdenError) and not (refusal and self.done > 0):
                    shutil.rmtree(self.folder, ignore_errors=True)
                return
            if self.done != self.n_frames:
                store.close()
                raise RuntimeError(f"{self.target}: only {self.done} of {self.n_frames} frames were written")
            try:
                store.finish(self.target)
            except OSError as error:
                store.close()
                raise output_error(self.target, error, self.folder, self.done) from None
            self._close_files()
            shutil.rmtree(self.folder, ignore_errors=True)
            log.info("wrote %s (%s, %s)", self.target, "x".join(map(str, self.shape)), self.dtype)
        finally:
            self._close_files()
            self._release()

    def _close_files(self) -> None:
        if self._store is not None:
            self._store.close()
        if self._sums is not None:
            self._sums.close()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def refuse_partial(target: Path) -> None:
    """OutputBusyError when a live process is writing ``target``; InputError when an
    unfinished run of it is waiting for --resume."""
    folder = partial_dir(target)
    if not folder.is_dir():
        return
    if is_locked(folder):
        raise busy_error(target, folder)
    raise _unfinished(target)


def _unfinished(target: Path) -> InputError:
    folder = partial_dir(target)
    return InputError(
        f"{target}: an unfinished run left {folder} ({progress_note(folder)}); run the same command with --resume "
        "to continue it, or delete that folder to start over"
    )

