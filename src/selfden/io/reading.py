"""Open image files lazily: TIFF (ImageJ/OME metadata kept), PNG, NPY, and Zarr (via ``zarr_store``).

Big stacks are read frame by frame (memory-mapped when the file allows it, else page by
page), so memory is bounded by a frame, not by the file. What a header declares (frame
size, truncation, unwritten strips) is checked by ``limits`` before anything is decoded,
and every refusal is an InputError naming the file. Never imports torch.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from selfden.errors import InputError, one_line
from selfden.io import limits
from selfden.io.metadata import ImageMetadata, tiff_metadata
from selfden.io.paths import check_image_file
from selfden.io.stack import ImageStack, check_layout, native_dtype
from selfden.io.zarr_store import open_zarr

log = logging.getLogger(__name__)

_LEADING_AXES = "TZC"


def open_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> ImageStack:
    """Open a TIFF, PNG, NPY or Zarr image without reading its pixels (except PNG, read whole).

    A ``.zarr`` folder holds a 2- to 5-D array or an OME-Zarr image (its full-resolution
    level is read); reading it needs the ``zarr`` package (``pip install selfden[scale]``).
    Raises InputError naming the file when it is missing, not an image, corrupt, truncated,
    sparse, empty, of an unsupported layout or dtype, or when its header declares frames (or
    tiles, chunks) of more than ``max_pixels`` pixels (None: ``limits.DEFAULT_MAX_PIXELS``,
    2**30); that is checked before anything is decoded.
    """
    path = Path(path)
    limit = limits.resolve(max_pixels)
    if path.suffix.lower() == ".zarr" and path.is_dir():
        return open_zarr(path, limit)
    suffix = check_image_file(path)
    readers = {".tif": _open_tiff, ".tiff": _open_tiff, ".png": _open_png, ".npy": _open_npy}
    return readers[suffix](path, limit)


# --- frame sources ---------------------------------------------------------------------


class _ArraySource:
    """Frames of an (N, H, W) array held in memory (small images such as PNG)."""

    def __init__(self, frames: np.ndarray) -> None:
        self._frames = frames

    def frame(self, index: int) -> np.ndarray:
        return self._frames[index]

    def release(self) -> None:
        """Nothing to release."""

    def close(self) -> None:
        """Nothing to release."""


class _MemmapSource:
    """Frames of a read-only memory map, opened on first use and dropped by ``close``.

    Each live memory map holds an open file descriptor: opening lazily lets a caller
    validate thousands of files up front without running out of descriptors.
    """

    def __init__(self, opener: Callable[[], np.ndarray], frame_shape: tuple[int, int]) -> None:
        self._opener = opener
        self._frame_shape = frame_shape
        self._frames: np.ndarray | None = None

    def frame(self, index: int) -> np.ndarray:
        if self._frames is None:
            self._frames = self._opener().reshape((-1, *self._frame_shape))
        return self._frames[index]

    def release(self) -> None:
        """Unmap the pages read so far: clean file pages of a map count towards the
        process's resident memory until dropped, which would grow with the stack."""
        mapped = getattr(self._frames, "_mmap", None)
        if isinstance(mapped, mmap.mmap) and hasattr(mapped, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mapped.madvise(mmap.MADV_DONTNEED)  # read-only map: pages are read again on demand

    def close(self) -> None:
        self._frames = None  # the map closes when the last frame view is gone


class _TiffPageSource:
    """Frames read page by page from a TIFF that cannot be memory-mapped (e.g. compressed)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._tif: tifffile.TiffFile | None = None

    def frame(self, index: int) -> np.ndarray:
        if self._tif is None:
            self._tif = tifffile.TiffFile(self._path)
        return self._tif.series[0].pages[index].asarray()

    def release(self) -> None:
        """Pages are read into fresh arrays: nothing stays mapped."""

    def close(self) -> None:
        if self._tif is not None:
            self._tif.close()
            self._tif = None


# --- TIFF ------------------------------------------------------------------------------


def _leading_axes(axes: str, path: Path) -> str:
    """Map tifffile's leading axes onto T, Z, C (unknown letters such as Q or I become T/Z/C)."""
    letters = [a for a in axes if a in _LEADING_AXES]
    if len(set(letters)) != len(letters):
        raise InputError(f"{path}: repeated axis in '{axes}'; expected at most one each of T, Z, C")
    free = [a for a in _LEADING_AXES if a not in letters]
    out = []
    for a in axes:
        if a in _LEADING_AXES:
            out.append(a)
        elif free:
            out.append(free.pop(0))
        else:
            raise InputError(f"{path}: too many dimensions (axes '{axes}'); expected up to TZCYX")
    return "".join(out)


def _stack_axes(tiff_axes: str, shape: tuple[int, ...], path: Path) -> str:
    if "S" in tiff_axes:
        raise InputError(
            f"{path}: RGB/multi-sample TIFF (axes '{tiff_axes}', shape {shape}); expected "
            "single-channel grayscale: convert it (Image > Type > 16-bit in Fiji)"
        )
    if not tiff_axes.endswith("YX"):
        raise InputError(f"{path}: unsupported axes '{tiff_axes}'; the last two axes must be Y and X")
    return _leading_axes(tiff_axes[:-2], path) + "YX"


class _TifffileProblems(logging.Handler):
    """Collects what tifffile logs while opening a file: it logs, rather than raises, on
    broken page chains and then quietly returns fewer pages than the file should hold."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []
        self._logger = logging.getLogger("tifffile")
        self._propagate = self._logger.propagate

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        log.debug("tifffile: %s", message)
        if record.levelno >= logging.ERROR or "corrupt" in message:
            self.messages.append(message.split("> ", 1)[-1])

    def __enter__(self) -> _TifffileProblems:
        self._logger.addHandler(self)
        self._logger.propagate = False
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.propagate = self._propagate


def _open_tiff(path: Path, max_pixels: int) -> ImageStack:
    try:
        with _TifffileProblems() as problems, tifffile.TiffFile(path) as tif:
            if not tif.series:
                problem = limits.tiff_problem(path)  # tifffile reads a directory beyond the end as none
                raise InputError(f"{path}: {problem or 'the TIFF file holds no images'}; copy or export it again")
            if len(tif.series) > 1:
                log.warning("%s holds %d image series; using the first", path, len(tif.series))
            series = tif.series[0]
            shape = tuple(series.shape)
            if series.dtype is None:
                raise InputError(f"{path}: TIFF pages have mixed or unknown pixel types; expected one type")
            dtype = np.dtype(series.dtype)
            check_layout(path, shape, dtype)
            limits.check_frame(path, shape, max_pixels)
            limits.check_tiff(path, series.keyframe, max_pixels)
            axes = _stack_axes(series.axes, shape, path)
            metadata = tiff_metadata(tif)
            mappable = series.dataoffset is not None
            if mappable:
                limits.check_extent(path, series.dataoffset + math.prod(shape) * dtype.itemsize)
            else:
                limits.check_pages(path, series.pages, math.prod(shape[:-2]))
                series.pages[0].asarray()  # a missing codec (e.g. LZW without imagecodecs) shows now
        if problems.messages:
            raise InputError(
                f"{path}: {limits.tiff_problem(path) or 'the TIFF file is corrupt'} "
                f"({one_line(problems.messages[0])}); export it again (e.g. open and save again in Fiji)"
            )
    except InputError:
        raise
    except Exception as error:
        raise limits.tiff_error(path, error) from error
    frame_shape = (shape[-2], shape[-1])
    source = _MemmapSource(lambda: tifffile.memmap(path, mode="r"), frame_shape) if mappable else _TiffPageSource(path)
    return ImageStack(path, shape, axes, native_dtype(dtype), metadata, source)


# --- PNG and NPY -----------------------------------------------------------------------


def _open_png(path: Path, max_pixels: int) -> ImageStack:
    size = limits.png_size(path)
    if size is not None:  # a PNG is decoded whole: check its declared size first
        limits.check_frame(path, size, max_pixels)
    try:
        with limits.pillow_limit(path, max_pixels), Image.open(path, formats=["PNG"]) as image:
            limits.check_frame(path, image.size[::-1], max_pixels)
            image.load()
            data = _png_gray(image, path)
        check_layout(path, data.shape, data.dtype)
    except InputError:
        raise
    except Exception as error:
        raise InputError(
            f"{path}: not a readable PNG image ({one_line(error)}); the file may be truncated"
        ) from error
    return ImageStack(path, data.shape, "YX", data.dtype, ImageMetadata(), _ArraySource(data[None]))


def _png_gray(image: Image.Image, path: Path) -> np.ndarray:
    """One grayscale array; colour images only when all colour channels are equal."""
    if image.mode in ("L", "I;16", "I;16B", "I;16L", "F"):
        return np.asarray(image)
    if image.mode == "1":
        return np.asarray(image.convert("L"))
    if image.mode == "I":
        data = np.asarray(image)
        if data.min() < 0 or data.max() > 65535:
            raise InputError(f"{path}: 32-bit integer PNG values outside 0..65535; expected 8 or 16 bit")
        return data.astype(np.uint16)
    rgb = np.asarray(image.convert("RGB"))
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
        raise InputError(
            f"{path}: colour PNG (mode {image.mode}); expected grayscale: convert it to 8-bit "
            "or 16-bit grayscale first"
        )
    return np.ascontiguousarray(rgb[..., 0])


def _open_npy(path: Path, max_pixels: int) -> ImageStack:
    with open(path, "rb") as handle:
        if handle.read(6) != b"\x93NUMPY":
            raise InputError(f"{path}: not a .npy file (no NumPy header); save arrays with numpy.save")
    limits.check_npy(path, max_pixels)
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as error:
        raise InputError(
            f"{path}: not a readable .npy array ({one_line(error)}); save it with numpy.save"
        ) from error
    if not isinstance(data, np.ndarray) or data.ndim not in (2, 3):
        ndim = getattr(data, "ndim", "?")
        raise InputError(f"{path}: array has {ndim} dimensions, expected 2 (YX) or 3 (TYX)")
    check_layout(path, data.shape, data.dtype)
    axes = "YX" if data.ndim == 2 else "TYX"
    shape, dtype = tuple(data.shape), native_dtype(data.dtype)
    del data  # reopened when frames are read: see _MemmapSource
    source = _MemmapSource(lambda: np.load(path, mmap_mode="r", allow_pickle=False), shape[-2:])
    return ImageStack(path, shape, axes, dtype, ImageMetadata(), source)

