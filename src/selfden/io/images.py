"""Read image stacks: TIFF (ImageJ/OME metadata kept), PNG and NPY; the TIFF options outputs are written with.

Big stacks are read frame by frame (memory-mapped when the file allows it, else page by
page), so memory is bounded by a frame, not by the file. What a header declares (frame
size, truncation, unwritten strips) is checked by ``limits`` before anything is decoded.
Outputs are written by ``resumable_writer``. Never imports torch.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tifffile
from PIL import Image

from selfden.io import limits
from selfden.errors import InputError
from selfden.errors import one_line as _one_line

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".npy")
SUPPORTED_DTYPES = tuple(np.dtype(t) for t in ("uint8", "uint16", "int16", "float32", "float64"))
#: Above this many bytes of pixel data a TIFF is written as BigTIFF (classic TIFF stops at 4 GiB).
BIGTIFF_THRESHOLD = 3_900_000_000
#: ImageJ keys worth carrying to the output; display ranges, LUTs and ROIs are dropped
#: because they describe the input's intensities, not the denoised ones.
_IMAGEJ_KEYS = (
    "spacing", "unit", "finterval", "fps", "loop", "xorigin", "yorigin", "zorigin",
    "tunit", "yunit", "zunit", "Info", "Labels", "Properties",
)
#: Stored in ImageJ's own UTF-16 tag rather than in the ASCII description.
_IMAGEJ_TAG_KEYS = ("Info", "Labels", "Properties")
_LEADING_AXES = "TZC"


# --- metadata ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageMetadata:
    """What an input file says about itself, kept to write the output the same way."""

    imagej: Mapping[str, Any] | None = None
    ome_xml: str | None = None
    resolution: tuple[float, float] | None = None
    resolution_unit: int | None = None
    description: str | None = None


def _ome_pixels(ome_xml: str) -> dict[str, Any]:
    """Physical pixel sizes and time step from the first OME Pixels element."""
    try:
        root = ElementTree.fromstring(ome_xml)
    except ElementTree.ParseError:
        return {}
    pixels = next((e for e in root.iter() if e.tag.split("}")[-1] == "Pixels"), None)
    if pixels is None:
        return {}
    wanted = [f"PhysicalSize{a}{u}" for a in "XYZ" for u in ("", "Unit")]
    wanted += ["TimeIncrement", "TimeIncrementUnit"]
    out: dict[str, Any] = {}
    for key in wanted:
        if key in pixels.attrib:
            value = pixels.attrib[key]
            out[key] = value if key.endswith("Unit") else float(value)
    return out


_OME_UNITS = {
    "micron": "µm", "um": "µm", "µm": "µm", "\\u00b5m": "µm", "nm": "nm", "mm": "mm", "cm": "cm", "m": "m",
}


def _imagej_escape(value: Any) -> Any:
    """ImageJ's description is ASCII: non-ASCII characters become \\uXXXX, as ImageJ writes them."""
    if not isinstance(value, str) or value.isascii():
        return value
    return "".join(c if c.isascii() else f"\\u{ord(c):04X}" for c in value)


def _imagej_to_ome(meta: ImageMetadata) -> dict[str, Any]:
    """Spacing/unit/frame interval of an ImageJ file expressed as OME pixel attributes."""
    ij = meta.imagej or {}
    unit = _OME_UNITS.get(str(ij.get("unit", "")).lower())
    out: dict[str, Any] = {}
    if meta.resolution and unit and all(r > 0 for r in meta.resolution):
        out.update(PhysicalSizeX=1 / meta.resolution[0], PhysicalSizeY=1 / meta.resolution[1])
        out.update(PhysicalSizeXUnit=unit, PhysicalSizeYUnit=unit)
    if "spacing" in ij and unit:
        out.update(PhysicalSizeZ=float(ij["spacing"]), PhysicalSizeZUnit=unit)
    if "finterval" in ij:
        out["TimeIncrement"] = float(ij["finterval"])
    return out


# --- reading ----------------------------------------------------------------------------


class _FrameSource(Protocol):
    def frame(self, index: int) -> np.ndarray: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


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


@dataclass(frozen=True, eq=False)
class ImageStack:
    """An opened image file: shape, axes and metadata now, pixels frame by frame on demand."""

    path: Path
    shape: tuple[int, ...]
    axes: str
    dtype: np.dtype
    metadata: ImageMetadata
    _source: _FrameSource = field(repr=False)

    @property
    def frame_shape(self) -> tuple[int, int]:
        return self.shape[-2], self.shape[-1]

    def __len__(self) -> int:
        return math.prod(self.shape[:-2])

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (C order over the leading axes) as a 2-D array of ``self.dtype``."""
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range for {len(self)} frames in {self.path}")
        try:  # a corrupt page may also decode to the wrong number of pixels: reshape fails then
            data = self._source.frame(index).reshape(self.frame_shape)
        except Exception as error:  # tifffile raises many types on corrupt pages
            raise InputError(
                f"{self.path}: cannot read frame {index} ({_one_line(error)}); "
                "the file looks corrupt or truncated, re-export it"
            ) from error
        if data.dtype != self.dtype:  # byte-swapped files: hand out native order
            data = data.astype(self.dtype)
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            raise InputError(
                f"{self.path}: frame {index} contains NaN or Inf pixels; replace them "
                "(e.g. Process > Math > Remove NaNs in Fiji) and try again"
            )
        return data

    def release_pages(self) -> None:
        """Drop memory-mapped pages read so far from this process's resident memory.

        Streaming code calls this after each frame so that memory stays bounded by a
        frame, whatever the length of the stack; frames read later are unaffected.
        """
        self._source.release()

    def close(self) -> None:
        """Release the open file handle of page-by-page readers (reopened on demand)."""
        self._source.close()

    def __enter__(self) -> ImageStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
        from selfden.io.zarr_store import open_zarr

        return open_zarr(path, limit)
    suffix = _check_file(path)
    readers = {".tif": _open_tiff, ".tiff": _open_tiff, ".png": _open_png, ".npy": _open_npy}
    return readers[suffix](path, limit)


def _check_file(path: Path) -> str:
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected an image file (.tif, .png or .npy)")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(
            f"{path}: unsupported file type '{path.suffix}'; expected one of "
            f"{', '.join(IMAGE_SUFFIXES)}"
        )
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes)")
    return suffix


def _validate(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuse what cannot be denoised before any pixel is read."""
    if len(shape) < 2:
        raise InputError(f"{path}: has {len(shape)} dimension(s), expected an image (at least 2)")
    if 0 in shape:
        raise InputError(f"{path}: empty image or stack (shape {shape}); nothing to denoise")
    if _native(dtype) not in SUPPORTED_DTYPES:
        names = ", ".join(str(d) for d in SUPPORTED_DTYPES)
        raise InputError(
            f"{path}: pixel type {dtype} is not supported; expected one of {names} "
            "(convert to 16-bit or 32-bit grayscale first)"
        )


def _native(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("=")


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
            _validate(path, shape, dtype)
            limits.check_frame(path, shape, max_pixels)
            limits.check_tiff(path, series.keyframe, max_pixels)
            axes = _stack_axes(series.axes, shape, path)
            metadata = _tiff_metadata(tif)
            mappable = series.dataoffset is not None
            if mappable:
                limits.check_extent(path, series.dataoffset + math.prod(shape) * dtype.itemsize)
            else:
                limits.check_pages(path, series.pages, math.prod(shape[:-2]))
                series.pages[0].asarray()  # a missing codec (e.g. LZW without imagecodecs) shows now
        if problems.messages:
            raise InputError(
                f"{path}: {limits.tiff_problem(path) or 'the TIFF file is corrupt'} "
                f"({_one_line(problems.messages[0])}); export it again (e.g. open and save again in Fiji)"
            )
    except InputError:
        raise
    except Exception as error:
        raise limits.tiff_error(path, error) from error
    frame_shape = (shape[-2], shape[-1])
    source = _MemmapSource(lambda: tifffile.memmap(path, mode="r"), frame_shape) if mappable else _TiffPageSource(path)
    return ImageStack(path, shape, axes, _native(dtype), metadata, source)


def _tiff_metadata(tif: tifffile.TiffFile) -> ImageMetadata:
    page = tif.pages.first
    imagej = None
    if tif.is_imagej and tif.imagej_metadata:
        imagej = {k: v for k, v in tif.imagej_metadata.items() if k in _IMAGEJ_KEYS}
    ome = tif.ome_metadata if tif.is_ome else None
    description = None
    if not (tif.is_imagej or tif.is_ome or tif.is_shaped) and page.description:
        description = page.description
    resolution = None
    if "XResolution" in page.tags and "YResolution" in page.tags:
        resolution = tuple(float(r) for r in page.resolution)
    unit = int(page.resolutionunit) if "ResolutionUnit" in page.tags else None
    return ImageMetadata(imagej, ome, resolution, unit, description)  # type: ignore[arg-type]


def _open_png(path: Path, max_pixels: int) -> ImageStack:
    size = limits.png_size(path)
    if size is not None:  # a PNG is decoded whole: check its declared size first
        limits.check_frame(path, size, max_pixels)
    try:
        with limits.pillow_limit(path, max_pixels), Image.open(path, formats=["PNG"]) as image:
            limits.check_frame(path, image.size[::-1], max_pixels)
            image.load()
            data = _png_gray(image, path)
        _validate(path, data.shape, data.dtype)
    except InputError:
        raise
    except Exception as error:
        raise InputError(
            f"{path}: not a readable PNG image ({_one_line(error)}); the file may be truncated"
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
            f"{path}: not a readable .npy array ({_one_line(error)}); save it with numpy.save"
        ) from error
    if not isinstance(data, np.ndarray) or data.ndim not in (2, 3):
        ndim = getattr(data, "ndim", "?")
        raise InputError(f"{path}: array has {ndim} dimensions, expected 2 (YX) or 3 (TYX)")
    _validate(path, data.shape, data.dtype)
    axes = "YX" if data.ndim == 2 else "TYX"
    shape, dtype = tuple(data.shape), _native(data.dtype)
    del data  # reopened when frames are read: see _MemmapSource
    source = _MemmapSource(lambda: np.load(path, mmap_mode="r", allow_pickle=False), shape[-2:])
    return ImageStack(path, shape, axes, dtype, ImageMetadata(), source)


# --- writing ----------------------------------------------------------------------------


def check_output_path(output: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]]) -> None:
    """Raise InputError if ``output`` is (or resolves to) one of ``inputs``."""
    out = Path(output)
    for candidate in map(Path, inputs):
        same = out.resolve() == candidate.resolve()
        if not same and out.exists() and candidate.exists():
            same = os.path.samefile(out, candidate)
        if same:
            raise InputError(
                f"{out}: refusing to overwrite the input image {candidate}; "
                "choose another output file or folder"
            )


def _imagej_compatible(axes: str, dtype: np.dtype) -> bool:
    order = "TZCYX"
    positions = [order.find(a) for a in axes]
    in_order = -1 not in positions and positions == sorted(positions)
    return in_order and dtype in (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))


def _tiff_options(shape: tuple[int, ...], axes: str, dtype: np.dtype, meta: ImageMetadata) -> dict[str, Any]:
    """ImageJ hyperstack when possible (Fiji reads it natively), else OME-TIFF (BigTIFF if large)."""
    big = math.prod(shape) * dtype.itemsize > BIGTIFF_THRESHOLD
    options: dict[str, Any] = {"bigtiff": big}
    if meta.resolution is not None:
        options["resolution"] = meta.resolution
    if meta.ome_xml is None and not big and _imagej_compatible(axes, dtype):
        imagej = {k: v if k in _IMAGEJ_TAG_KEYS else _imagej_escape(v) for k, v in (meta.imagej or {}).items()}
        labels = imagej.get("Labels")
        if labels is not None and len(labels) != math.prod(shape[:-2]):
            imagej.pop("Labels")
        if meta.description and "Info" not in imagej:
            imagej["Info"] = meta.description
        options.update(imagej=True, metadata={**imagej, "axes": axes})
        return options
    physical = _ome_pixels(meta.ome_xml) if meta.ome_xml else _imagej_to_ome(meta)
    options.update(ome=True, metadata={**physical, "axes": axes})
    if meta.resolution_unit is not None:
        options["resolutionunit"] = meta.resolution_unit
    return options


def _cast(frame: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A private copy in the output type (the caller may reuse its buffer while the frame is
    written); integers are rounded and clipped rather than wrapped."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(frame), info.min, info.max).astype(dtype)
    return np.array(frame, dtype=dtype)
