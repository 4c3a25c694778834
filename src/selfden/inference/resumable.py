"""Resumable outputs: frames go into a partial store beside the target, then one rename.

While a stack is denoised, ``.NAME.partial/`` beside the target holds the output file
itself (a TIFF or .npy laid out contiguously, or an OME-Zarr group) and
``progress.json``: frames done, and what produced them (input file, model digest,
options). Frames are written in place at their offset, so memory holds one frame and a
finished frame is never recomputed. At the end the file is renamed onto the target and
the folder removed. An interrupted run (Ctrl-C, a killed process, a full disk) leaves the
folder for ``--resume``; a failure caused by the input or the model removes it, since
resuming would fail the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np
import tifffile
from PIL import Image

from selfden.errors import InputError, SelfdenError
from selfden.images import IMAGE_SUFFIXES, ImageMetadata, _cast, _tiff_options, check_output_path

log = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (*IMAGE_SUFFIXES, ".zarr")
PROGRESS_FILE = "progress.json"
_FORMAT_VERSION = 1


class InferenceInterrupted(KeyboardInterrupt):
    """Ctrl-C during inference; the message says where the partial result is and how to resume."""


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


# --- stores ----------------------------------------------------------------------------------------


class _Store(Protocol):
    def put(self, index: int, frame: np.ndarray) -> None: ...

    def finish(self, target: Path) -> None: ...

    def close(self) -> None: ...


class _ContiguousFile:
    """A TIFF or .npy whose pixels lie in one block: frame ``i`` is written at its offset."""

    def __init__(self, path: Path, frame_bytes: int) -> None:
        self.path = path
        self._offset = _data_offset(path)
        self._frame_bytes = frame_bytes
        self._handle = open(path, "r+b", buffering=0)  # noqa: SIM115 - closed in finish/close

    def put(self, index: int, frame: np.ndarray) -> None:
        data = np.ascontiguousarray(frame)
        assert data.nbytes == self._frame_bytes, (data.shape, data.dtype)
        self._handle.seek(self._offset + index * self._frame_bytes)
        self._handle.write(data.tobytes())

    def finish(self, target: Path) -> None:
        os.fsync(self._handle.fileno())
        self.close()
        os.replace(self.path, target)

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()


class _PngFile(_ContiguousFile):
    """PNG cannot be written in place: frames go to an .npy, converted at the end (one 2-D frame)."""

    def finish(self, target: Path) -> None:
        self.close()
        png = self.path.with_suffix(".png")
        Image.fromarray(np.load(self.path)).save(png, format="PNG")
        os.replace(png, target)


class _ZarrGroup:
    def __init__(self, path: Path) -> None:
        from selfden.inference.zarr_store import open_level0

        self.path = path
        self._array = open_level0(path)

    def put(self, index: int, frame: np.ndarray) -> None:
        from selfden.inference.zarr_store import write_frame

        write_frame(self._array, index, frame)

    def finish(self, target: Path) -> None:
        os.replace(self.path, target)

    def close(self) -> None:
        """Every chunk is a file written whole: nothing stays open."""


def _data_offset(path: Path) -> int:
    if path.suffix == ".tif":
        with tifffile.TiffFile(path) as tif:
            offset = tif.series[0].dataoffset
        if offset is None:
            raise RuntimeError(f"{path}: tifffile did not lay the pixels out contiguously")
        return int(offset)
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        reader(handle)  # leaves the handle at the first pixel
        return handle.tell()


def _create_data(folder: Path, suffix: str, shape: tuple[int, ...], axes: str, dtype: np.dtype,
                 metadata: ImageMetadata) -> Path:
    """The empty output inside ``folder`` (pixels all zero; sparse where the file system allows)."""
    if suffix == ".zarr":
        from selfden.inference.zarr_store import create_ngff

        create_ngff(folder / "data.zarr", shape, axes, dtype, metadata)
        return folder / "data.zarr"
    if suffix in (".tif", ".tiff"):
        path = folder / "data.tif"
        tifffile.imwrite(path, shape=shape, dtype=dtype, **_tiff_options(shape, axes, dtype, metadata))
        return path
    path = folder / "data.npy"
    with open(path, "wb") as handle:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(handle, header)
        handle.truncate(handle.tell() + math.prod(shape) * dtype.itemsize)
    return path


def _open_store(data: Path, suffix: str, frame_bytes: int) -> _Store:
    if suffix == ".zarr":
        return _ZarrGroup(data)
    if suffix == ".png":
        return _PngFile(data, frame_bytes)
    return _ContiguousFile(data, frame_bytes)


# --- the writer ------------------------------------------------------------------------------------


class ResumableWriter:
    """Writes the frames of one output in order, resumably; renames onto ``target`` at the end.

    ``fingerprint`` (JSON-able) says what produces the frames; resuming a partial made with
    another fingerprint is refused. ``done`` is the number of frames already on disk.
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
    ) -> None:
        self.target = Path(target)
        self.shape = tuple(int(s) for s in shape)
        self.axes, self.metadata, self.dtype = axes, metadata, np.dtype(dtype)
        self.suffix = self.target.suffix.lower()
        self.fingerprint = json.loads(json.dumps(self._describe(fingerprint)))  # as it reads back
        self.resume = resume
        self.folder = partial_dir(self.target)
        self.done = 0
        self._store: _Store | None = None
        check_output_target(self.target, inputs)

    @property
    def n_frames(self) -> int:
        return math.prod(self.shape[:-2])

    def _describe(self, fingerprint: Mapping[str, Any]) -> dict[str, Any]:
        layout = {"shape": list(self.shape), "axes": self.axes, "dtype": str(self.dtype), "format": self.suffix}
        return {"version": _FORMAT_VERSION, "output": layout, **fingerprint}

    # --- opening -----------------------------------------------------------------------------
    def __enter__(self) -> ResumableWriter:
        if self.folder.exists() and self._data_path().exists():
            self._reopen()
        else:
            shutil.rmtree(self.folder, ignore_errors=True)  # a folder without data holds nothing to resume
            self._create()
        return self

    def _data_path(self) -> Path:
        name = {".tiff": "data.tif", ".png": "data.npy"}.get(self.suffix, f"data{self.suffix}")
        return self.folder / name

    def _create(self) -> None:
        self.folder.mkdir()
        try:
            data = _create_data(self.folder, ".npy" if self.suffix == ".png" else self.suffix,
                                self.shape, self.axes, self.dtype, self.metadata)
            self._store = _open_store(data, self.suffix, self._frame_bytes())
            self._save_progress()
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def _reopen(self) -> None:
        if not self.resume:
            refuse_partial(self.target)
        saved = read_progress(self.folder)
        done = int(saved.get("frames_done", 0))
        recorded = {k: v for k, v in saved.items() if k != "frames_done"}
        problem = describe_mismatch(recorded, self.fingerprint)
        if problem is not None:
            raise InputError(
                f"{self.target}: cannot resume: {problem}; rerun with the original settings, "
                f"or delete {self.folder} to start over"
            )
        self.done = done
        self._store = _open_store(self._data_path(), self.suffix, self._frame_bytes())
        log.info("%s: resuming after %d of %d frames", self.target, done, self.n_frames)

    def _frame_bytes(self) -> int:
        return self.shape[-2] * self.shape[-1] * self.dtype.itemsize

    def _save_progress(self) -> None:
        temp = self.folder / f"{PROGRESS_FILE}.tmp"
        temp.write_text(json.dumps({**self.fingerprint, "frames_done": self.done}, indent=1))
        os.replace(temp, self.folder / PROGRESS_FILE)

    # --- writing -----------------------------------------------------------------------------
    def write(self, frame: np.ndarray) -> None:
        """Store the next frame (cast to the output type), then record it as done."""
        if self._store is None:
            raise RuntimeError("ResumableWriter.write() called outside its with-block")
        if self.done >= self.n_frames:
            raise ValueError(f"{self.target}: all {self.n_frames} frames were already written")
        if tuple(frame.shape) != self.shape[-2:]:
            raise ValueError(f"frame of shape {frame.shape} does not match {self.shape[-2:]}")
        self._store.put(self.done, _cast(frame, self.dtype))
        self.done += 1
        self._save_progress()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        store, self._store = self._store, None
        assert store is not None
        if exc_type is not None:
            store.close()
            if isinstance(exc, SelfdenError):  # the input or the model is at fault: resuming would fail again
                shutil.rmtree(self.folder, ignore_errors=True)
            return
        if self.done != self.n_frames:
            store.close()
            raise RuntimeError(f"{self.target}: only {self.done} of {self.n_frames} frames were written")
        store.finish(self.target)
        shutil.rmtree(self.folder, ignore_errors=True)
        log.info("wrote %s (%s, %s)", self.target, "x".join(map(str, self.shape)), self.dtype)


def refuse_partial(target: Path) -> None:
    """InputError when an unfinished run of ``target`` is waiting for --resume."""
    folder = partial_dir(target)
    if not folder.is_dir():
        return
    try:
        done = f"{int(json.loads((folder / PROGRESS_FILE).read_text())['frames_done'])} frames done"
    except (OSError, ValueError, KeyError, TypeError):
        done = "progress unknown"
    raise InputError(
        f"{target}: an unfinished run left {folder} ({done}); run the same command with --resume "
        "to continue it, or delete that folder to start over"
    )


def read_progress(folder: Path) -> dict[str, Any]:
    """The progress record of a partial folder; InputError when it is unreadable."""
    try:
        saved = json.loads((folder / PROGRESS_FILE).read_text())
    except (OSError, ValueError) as error:
        raise InputError(
            f"{folder}: the progress record of this unfinished run is missing or damaged ({error}); "
            "delete the folder to start over"
        ) from error
    if not isinstance(saved, dict):
        raise InputError(f"{folder / PROGRESS_FILE}: not a progress record; delete {folder} to start over")
    return saved


_WHAT = {
    "input": "the input file changed (size or modification time) or is another file",
    "model": "the model is not the same (rdf.yaml or weights differ)",
    "output": "the output shape, type or format differs",
    "version": "it was written by another version of selfden",
}


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


def check_output_target(target: Path, inputs: Sequence[Path], need_folder: bool = True) -> None:
    """Refuse unsupported types, missing folders, inputs, and (for Zarr) existing stores."""
    suffix = target.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"{target}: unsupported output type; use one of {', '.join(OUTPUT_SUFFIXES)}")
    if need_folder and not target.parent.is_dir():
        raise InputError(f"{target}: the output folder {target.parent} does not exist")
    if suffix == ".zarr" and target.exists():
        raise InputError(f"{target}: already exists; selfden does not replace a Zarr store: delete it or choose another name")
    if suffix != ".zarr" and target.is_dir():
        raise InputError(f"{target}: is a folder; give an output file name")
    check_output_path(target, inputs)
