"""The files a resumable output is written into: frame ``i`` goes to its place, in place.

A TIFF or .npy is laid out contiguously (frame ``i`` at a fixed offset), PNG goes through an
.npy converted at the end, an OME-Zarr group holds one chunk per frame. Each store can read
a finished frame back, so ``--resume`` can check it against the checksum it was saved with.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Protocol

import numpy as np
import tifffile
from PIL import Image

from selfden.io.metadata import ImageMetadata, tiff_options


class Store(Protocol):
    def put(self, index: int, frame: np.ndarray) -> None: ...

    def get(self, index: int) -> bytes: ...

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

    def get(self, index: int) -> bytes:
        self._handle.seek(self._offset + index * self._frame_bytes)
        return self._handle.read(self._frame_bytes)

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
        from selfden.io.zarr_store import open_level0

        self.path = path
        self._array = open_level0(path)

    def put(self, index: int, frame: np.ndarray) -> None:
        from selfden.io.zarr_store import write_frame

        write_frame(self._array, index, frame)

    def get(self, index: int) -> bytes:
        leading = tuple(self._array.shape[:-2])
        return np.ascontiguousarray(self._array[np.unravel_index(index, leading)]).tobytes()

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


def create_data(folder: Path, suffix: str, shape: tuple[int, ...], axes: str, dtype: np.dtype,
                metadata: ImageMetadata) -> Path:
    """The empty output inside ``folder`` (pixels all zero; sparse where the file system allows)."""
    if suffix == ".zarr":
        from selfden.io.zarr_store import create_ngff

        create_ngff(folder / "data.zarr", shape, axes, dtype, metadata)
        return folder / "data.zarr"
    if suffix in (".tif", ".tiff"):
        path = folder / "data.tif"
        tifffile.imwrite(path, shape=shape, dtype=dtype, **tiff_options(shape, axes, dtype, metadata))
        return path
    path = folder / "data.npy"
    with open(path, "wb") as handle:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(handle, header)
        handle.truncate(handle.tell() + math.prod(shape) * dtype.itemsize)
    return path


def open_store(data: Path, suffix: str, frame_bytes: int) -> Store:
    """The store over the data file (or Zarr group) ``data`` of an output ending in ``suffix``."""
    if suffix == ".zarr":
        return _ZarrGroup(data)
    if suffix == ".png":
        return _PngFile(data, frame_bytes)
    return _ContiguousFile(data, frame_bytes)
