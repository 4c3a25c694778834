"""What an image header may make selfden allocate, and whether its pixel data are all there.

A few hundred bytes of compressed TIFF, PNG, NPY header or Zarr metadata can declare
100000 x 100000 pixels; decoding such a frame allocates 18.6 GiB (uint16) before a pixel is
seen. Every reader checks what a file declares against these limits before decoding it:

* ``max_pixels`` per frame, and per unit a reader decodes at once (a TIFF page or tile, a
  Zarr chunk). The default, :data:`DEFAULT_MAX_PIXELS` = 2**30 (32768 x 32768), is 4 GiB
  as float32; inference holds about four frame-sized float32 arrays (input, normalised
  input, stitched output, tile weights), ~16 GiB, what a workstation has. Microscope
  frames are far smaller; raise it with ``--max-pixels N`` (``max_pixels=`` in Python;
  an explicit argument of ``open_image``, no process-wide setting: Dask workers get frames,
  never files).
* The same number bounds a whole stack where a command holds the stack in memory
  (``selfden css``). Inference reads a frame at a time; training too, keeping at most a
  2 GiB cache of frames (``data.CropSampler``); a PNG is one frame.

It also says whether a TIFF's pixel data are truncated (beyond the end of the file), sparse
(strips or tiles never written: offset or byte count 0, which tifffile fills with zeros
without a word) or the file is corrupt. Never imports torch.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from selfden.errors import InputError, one_line

#: Pixels per frame (and per page, tile or chunk decoded at once): 32768 x 32768, 4 GiB as float32.
DEFAULT_MAX_PIXELS = 2**30
_OVERRIDE = "--max-pixels"
_PILLOW_LOCK = threading.Lock()
#: More tags than this in one TIFF image directory means a corrupt directory, not a truncated file.
_MAX_TAGS = 4096


def resolve(max_pixels: int | None) -> int:
    """``max_pixels``, or the default for None; InputError for a limit below 1."""
    if max_pixels is None:
        return DEFAULT_MAX_PIXELS
    if max_pixels < 1:
        raise InputError(f"{_OVERRIDE} {max_pixels}: the pixel limit must be at least 1")
    return int(max_pixels)


def describe(pixels: int) -> str:
    """A pixel count for people: 10.0 Gpx, 1.07 Gpx, 65.5 kpx, 12 px."""
    for size, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if pixels >= size:
            value = pixels / size
            return f"{value:.{0 if value >= 100 else 1 if value >= 10 else 2}f} {prefix}px"
    return f"{pixels} px"


def _refuse(path: Path, found: str, pixels: int, limit: int, where: str) -> InputError:
    return InputError(
        f"{path}: {found} = {describe(pixels)} {where}, over the limit of {describe(limit)} "
        f"({_OVERRIDE} {limit}); if the image is genuine, run again with {_OVERRIDE} {pixels}"
    )


def check_frame(path: Path, shape: Sequence[int], max_pixels: int | None) -> None:
    """Refuse a frame (the last two axes of ``shape``) of more than ``max_pixels`` pixels."""
    limit, (height, width) = resolve(max_pixels), (int(shape[-2]), int(shape[-1]))
    if height * width > limit:
        raise _refuse(path, f"{height} x {width}", height * width, limit, "per frame")


def check_block(path: Path, what: str, shape: Sequence[int], max_pixels: int | None) -> None:
    """Refuse a unit decoded at once (``what``: "TIFF page", "tile", "chunk") over the limit."""
    limit, pixels = resolve(max_pixels), math.prod(int(s) for s in shape)
    if pixels > limit:
        raise _refuse(path, f"{what} of {' x '.join(str(int(s)) for s in shape)}", pixels, limit, "decoded at once")


def check_stack(path: Path, shape: Sequence[int], max_pixels: int | None, why: str) -> None:
    """Refuse a whole stack over the limit where ``why`` (a command) holds all of it in memory."""
    limit, pixels = resolve(max_pixels), math.prod(int(s) for s in shape)
    if pixels > limit:
        raise _refuse(path, " x ".join(str(int(s)) for s in shape), pixels, limit, f"in all ({why})")


# --- PNG ---------------------------------------------------------------------------------------


def png_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from a PNG's IHDR chunk, or None when the file does not start with one."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return height, width


@contextlib.contextmanager
def pillow_limit(path: Path, max_pixels: int | None) -> Iterator[None]:
    """Pillow's decompression-bomb limit set to ours while a file is opened, its warning and
    error turned into our one-line InputError. Pillow keeps the limit in a global, hence the lock."""
    from PIL import Image

    limit = resolve(max_pixels)
    with _PILLOW_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, limit
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise InputError(
                f"{path}: {one_line(error)}; over the limit of {describe(limit)} "
                f"({_OVERRIDE} {limit}); if the image is genuine, run again with a larger {_OVERRIDE}"
            ) from error
        finally:
            Image.MAX_IMAGE_PIXELS = previous


# --- NPY ---------------------------------------------------------------------------------------


def check_npy(path: Path, max_pixels: int | None) -> None:
    """A .npy header's shape within the limits and its data within the file, before np.load maps it."""
    try:
        shape, dtype, offset = npy_header(path)
    except Exception as error:  # numpy raises ValueError, SyntaxError, EOFError... on bad headers
        raise InputError(f"{path}: the .npy header is corrupt ({one_line(error)}); save it again with numpy.save") from error
    if len(shape) not in (2, 3) or min(shape) < 0:
        raise InputError(f"{path}: array of shape {shape}, expected 2 (YX) or 3 (TYX) dimensions")
    check_frame(path, shape, max_pixels)
    if dtype.hasobject:
        raise InputError(f"{path}: an array of Python objects (dtype {dtype}); selfden reads only numbers")
    check_extent(path, offset + math.prod(shape) * dtype.itemsize)


def npy_header(path: Path) -> tuple[tuple[int, ...], Any, int]:
    """(shape, dtype, offset of the data) from a .npy header, without reading the data."""
    import numpy as np

    fmt = np.lib.format
    with open(path, "rb") as handle:
        version = fmt.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(handle)
        else:  # 3.0 (utf-8 field names) has no public header reader: np.load maps it without reading
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)
            return tuple(mapped.shape), mapped.dtype, int(getattr(mapped, "offset", 0))
        return tuple(shape), dtype, handle.tell()


# --- TIFF --------------------------------------------------------------------------------------


def check_tiff(path: Path, page: Any, max_pixels: int | None) -> None:
    """Refuse a TIFF page (what tifffile decodes for one frame) or tile over the limit.

    ``page`` is tifffile's first page of the series (a TiffPage); duck-typed so this module
    does not import tifffile.
    """
    check_block(path, "TIFF page", page.shape, max_pixels)
    if getattr(page, "is_tiled", False):
        depth = (page.tiledepth,) if page.tiledepth > 1 else ()
        check_block(path, "tile", (*depth, page.tilelength, page.tilewidth), max_pixels)


def check_extent(path: Path, end: int) -> None:
    """Contiguous pixel data ending at byte ``end`` must lie within the file."""
    size = os.path.getsize(path)
    if end > size:
        raise InputError(
            f"{path}: the file is truncated ({size} bytes, its pixel data need {end}); "
            "copy or export it again"
        )


def check_pages(path: Path, pages: Sequence[Any], n_frames: int) -> None:
    """A page for each of ``n_frames`` frames, and every strip or tile of every page written
    and within the file (tifffile reads a strip beyond the end of the file as an error at
    frame 900, and an unwritten one as zeros)."""
    if len(pages) < n_frames:
        raise InputError(
            f"{path}: its metadata declare {n_frames} frames but the file holds {len(pages)} pages; "
            "it is truncated or its metadata are wrong, export it again"
        )
    size = os.path.getsize(path)
    for index, page in enumerate(pages):
        if page is None:
            raise InputError(f"{path}: page {index} cannot be read; the TIFF file is corrupt, export it again")
        offsets, counts = page.dataoffsets, page.databytecounts
        missing = sum(1 for o, c in zip(offsets, counts) if o == 0 or c == 0)
        if not offsets or missing:
            raise InputError(
                f"{path}: page {index} is sparse: {missing or 'all'} of {len(offsets)} strips or tiles were "
                "never written (offset or byte count 0, which would read as zeros); the file is incomplete, "
                "export it again"
            )
        end = max(o + c for o, c in zip(offsets, counts))
        if end > size:
            raise InputError(
                f"{path}: the file is truncated: page {index}'s pixel data end at byte {end}, "
                f"the file has {size}; copy or export it again"
            )


def tiff_error(path: Path, error: Exception) -> InputError:
    """What tifffile's ``error`` means for the user: truncated, not a TIFF, or corrupt."""
    problem = tiff_problem(path)
    if problem is not None:
        return InputError(f"{path}: {problem} ({one_line(error)}); copy or export it again")
    if "not a TIFF file" in str(error):
        return InputError(f"{path}: not a TIFF file ({one_line(error)}); expected a grayscale TIFF image")
    return InputError(f"{path}: the TIFF file is corrupt ({one_line(error)}); export it again")


def tiff_problem(path: Path) -> str | None:
    """Why tifffile could not read ``path`` when its chain of image directories shows it
    (one which lies beyond the end of the file), else None."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
            order = {b"II": "<", b"MM": ">"}.get(head[:2])
            if order is None or len(head) < 8:
                return None
            big = struct.unpack(order + "H", head[2:4])[0] == 43
            if big and len(head) < 16:
                return f"the file is truncated ({len(head)} bytes, shorter than a BigTIFF header)"
            offset = struct.unpack(order + ("Q" if big else "I"), head[8:16] if big else head[4:8])[0]
            return _walk_ifds(handle, order, big, offset, os.fstat(handle.fileno()).st_size)
    except (OSError, struct.error):
        return None


def _walk_ifds(handle: Any, order: str, big: bool, offset: int, size: int) -> str | None:
    count_fmt, entry, next_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    count_size, next_size = struct.calcsize(count_fmt), struct.calcsize(next_fmt)
    seen: set[int] = set()
    while offset and offset not in seen and len(seen) < 100_000:
        if offset + count_size > size:
            what = "its first image directory" if not seen else f"image directory {len(seen) + 1}"
            cause = "the file is truncated or its header is corrupt" if not seen else "the file is truncated"
            return f"{cause}: {what} starts at byte {offset}, the file has {size}"
        seen.add(offset)
        handle.seek(offset)
        count = struct.unpack(order + count_fmt, handle.read(count_size))[0]
        if count > _MAX_TAGS:  # real directories hold tens of tags: this is not a cut-off file
            return None
        next_at = offset + count_size + count * entry
        if next_at + next_size > size:
            end = next_at + next_size
            return f"the file is truncated or corrupt: image directory {len(seen)} ends at byte {end}, the file has {size}"
        handle.seek(next_at)
        offset = struct.unpack(order + next_fmt, handle.read(next_size))[0]
    return None


# --- files a model package names ----------------------------------------------------------------

#: Pages of one TIFF looked at when checking a package's file: test and sample tensors hold one image.
_PACKAGE_TIFF_PAGES = 64


def check_declared_size(path: Path, max_pixels: int | None) -> None:
    """Refuse a package's tensor or image file (.npy of any rank, .png, .tif) whose header declares
    more than ``max_pixels`` values: bioimageio.core and onnxruntime load such files whole."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            shape, dtype, offset = npy_header(path)
        except Exception as error:  # numpy raises ValueError, SyntaxError, EOFError... on bad headers
            raise InputError(f"{path}: the .npy header is corrupt ({one_line(error)})") from error
        check_block(path, "array", shape, max_pixels)
        if dtype.hasobject:
            raise InputError(f"{path}: an array of Python objects (dtype {dtype}); selfden reads only numbers")
        check_extent(path, offset + math.prod(shape) * dtype.itemsize)
    elif suffix == ".png":
        size = png_size(path)
        if size is not None:
            check_block(path, "PNG image", size, max_pixels)
    elif suffix in (".tif", ".tiff"):
        _check_tiff_pages(path, max_pixels)


def _check_tiff_pages(path: Path, max_pixels: int | None) -> None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            for index, page in enumerate(tif.pages):
                if index >= _PACKAGE_TIFF_PAGES:
                    break
                if page is not None and hasattr(page, "shape"):
                    check_tiff(path, page, max_pixels)
    except InputError:
        raise
    except Exception as error:  # tifffile raises many types on foreign files
        raise tiff_error(path, error) from error
