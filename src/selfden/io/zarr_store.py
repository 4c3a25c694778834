"""Zarr and OME-Zarr (NGFF 0.4) images: lazy reading into an ImageStack, and creating outputs.

Reading takes a plain 2- to 5-D array or an OME-Zarr group's full-resolution level
(``multiscales[0].datasets[0]``); frames are read chunk by chunk. Outputs are OME-Zarr
groups in Zarr format 2 (what most viewers read today) with one chunk per frame (tiled
for very large frames), the pixel sizes of the input written as the level's scale.
The ``zarr`` package is imported here only, so selfden works without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from selfden.errors import InputError, one_line
from selfden.io import limits
from selfden.io.metadata import ImageMetadata, imagej_to_ome, ome_pixels
from selfden.io.stack import ImageStack, check_layout, native_dtype

#: Frames wider or taller than this are split into several chunks.
MAX_CHUNK_SIDE = 2048
_DEFAULT_AXES = {2: "YX", 3: "TYX", 4: "TZYX", 5: "TZCYX"}
_AXIS_TYPES = {"T": "time", "Z": "space", "Y": "space", "X": "space", "C": "channel"}
_NGFF_UNITS = {"µm": "micrometer", "nm": "nanometer", "mm": "millimeter", "cm": "centimeter", "m": "meter"}
_IMAGEJ_UNITS = {"micrometer": "micron", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm", "meter": "m"}


def import_zarr(what: str) -> Any:
    """The zarr module, or an InputError saying how to install it."""
    try:
        import zarr
    except ImportError as error:
        raise InputError(f"{what}: Zarr needs the zarr package; install it with pip install 'selfden[scale]'") from error
    return zarr


# --- reading ---------------------------------------------------------------------------------------


class _ZarrSource:
    """Frames of a (..., Y, X) zarr array, read one at a time."""

    def __init__(self, array: Any) -> None:
        self._array = array
        self._leading = tuple(array.shape[:-2])

    def frame(self, index: int) -> np.ndarray:
        return np.asarray(self._array[np.unravel_index(index, self._leading)])

    def release(self) -> None:
        """Chunks are decoded into fresh arrays: nothing stays mapped."""

    def close(self) -> None:
        """zarr keeps no file open between reads."""


def open_zarr(path: Path, max_pixels: int | None = None) -> ImageStack:
    """An ImageStack over a .zarr array or OME-Zarr group; InputError naming ``path`` if unusable,
    or if its declared frame or chunk holds more than ``max_pixels`` pixels (see ``limits``):
    a few bytes of metadata can declare any size, and reading a frame decodes whole chunks."""
    zarr = import_zarr(str(path))
    try:
        node = zarr.open(str(path), mode="r")
        array, axes, scales = _image_array(node, path)
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"{path}: not a readable Zarr image ({one_line(error)}); expected a Zarr array or OME-Zarr") from error
    shape, dtype = tuple(int(s) for s in array.shape), np.dtype(array.dtype)
    check_layout(path, shape, dtype)
    if len(shape) not in _DEFAULT_AXES:
        raise InputError(f"{path}: array has {len(shape)} dimensions, expected 2 to 5 (up to TZCYX)")
    limits.check_frame(path, shape, max_pixels)
    limits.check_block(path, "chunk", tuple(int(c) for c in array.chunks), max_pixels)
    axes = axes or _DEFAULT_AXES[len(shape)]
    return ImageStack(path, shape, axes, native_dtype(dtype), _metadata(axes, scales), _ZarrSource(array))


def _multiscales(attrs: Mapping[str, Any]) -> list[Any] | None:
    found = attrs.get("multiscales") or dict(attrs.get("ome") or {}).get("multiscales")
    return list(found) if found else None


def _image_array(node: Any, path: Path) -> tuple[Any, str | None, list[float] | None]:
    """The array to read, its axes letters (None: unknown) and its scale per axis."""
    if hasattr(node, "shape") and hasattr(node, "dtype"):
        names = node.attrs.get("_ARRAY_DIMENSIONS")  # xarray's convention
        return node, _axes_letters(names, len(node.shape), path) if names else None, None
    multiscales = _multiscales(node.attrs)
    if not multiscales:
        arrays = sorted(name for name, _ in node.arrays())
        if len(arrays) != 1:
            raise InputError(
                f"{path}: a Zarr group without OME-Zarr 'multiscales' and with {len(arrays)} arrays; "
                "give the path of the array itself (e.g. image.zarr/0)"
            )
        return node[arrays[0]], None, None
    image = multiscales[0]
    dataset = image["datasets"][0]
    array = node[dataset["path"]]
    names = [a["name"] if isinstance(a, Mapping) else a for a in image.get("axes", [])]
    scale = next((t["scale"] for t in dataset.get("coordinateTransformations", []) if t.get("type") == "scale"), None)
    return array, _axes_letters(names, len(array.shape), path) if names else None, scale


def _axes_letters(names: Sequence[str], ndim: int, path: Path) -> str:
    letters = "".join(str(n)[0].upper() for n in names)
    if len(letters) != ndim or not letters.endswith("YX") or any(a not in "TZC" for a in letters[:-2]):
        raise InputError(f"{path}: axes {list(names)} are not a subset of t, z, c, y, x ending in y, x")
    if len(set(letters)) != len(letters):
        raise InputError(f"{path}: repeated axis in {list(names)}")
    return letters


def _metadata(axes: str, scale: list[float] | None) -> ImageMetadata:
    """NGFF scales as ImageJ-style calibration, so TIFF outputs carry them too."""
    if not scale or len(scale) != len(axes):
        return ImageMetadata()
    size = dict(zip(axes, (float(s) for s in scale)))
    imagej: dict[str, Any] = {"unit": "micron"}
    if "Z" in size:
        imagej["spacing"] = size["Z"]
    if "T" in size:
        imagej["finterval"] = size["T"]
    resolution = (1 / size["X"], 1 / size["Y"]) if size["X"] > 0 and size["Y"] > 0 else None
    return ImageMetadata(imagej=imagej, resolution=resolution)


# --- writing ---------------------------------------------------------------------------------------


def ngff_attributes(axes: str, metadata: ImageMetadata) -> dict[str, Any]:
    """OME-Zarr 0.4 ``multiscales`` of one level, path "0", with the input's pixel sizes."""
    physical = ome_pixels(metadata.ome_xml) if metadata.ome_xml else imagej_to_ome(metadata)
    entries, scale = [], []
    for letter in axes:
        entry: dict[str, Any] = {"name": letter.lower(), "type": _AXIS_TYPES[letter]}
        size = physical.get("TimeIncrement" if letter == "T" else f"PhysicalSize{letter}")
        unit = physical.get("TimeIncrementUnit", "s") if letter == "T" else physical.get(f"PhysicalSize{letter}Unit")
        unit = "second" if letter == "T" and unit == "s" else _NGFF_UNITS.get(str(unit))
        if size is not None and unit is not None:
            entry["unit"] = unit
        entries.append(entry)
        scale.append(float(size) if size is not None else 1.0)
    dataset = {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
    return {"multiscales": [{"version": "0.4", "axes": entries, "datasets": [dataset], "name": "denoised"}]}


def frame_chunks(shape: Sequence[int]) -> tuple[int, ...]:
    """One chunk per frame (tiled when a frame is larger than MAX_CHUNK_SIDE)."""
    return (*(1 for _ in shape[:-2]), min(shape[-2], MAX_CHUNK_SIDE), min(shape[-1], MAX_CHUNK_SIDE))


def create_ngff(path: Path, shape: Sequence[int], axes: str, dtype: np.dtype, metadata: ImageMetadata) -> Any:
    """Create an OME-Zarr group at ``path``; returns its (empty) level-0 array."""
    zarr = import_zarr(str(path))
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.attrs.update(ngff_attributes(axes, metadata))
    return group.create_array("0", shape=tuple(shape), chunks=frame_chunks(shape), dtype=dtype, fill_value=0)


def open_level0(path: Path) -> Any:
    """The level-0 array of a group made by ``create_ngff``, for writing more frames."""
    zarr = import_zarr(str(path))
    return zarr.open_group(str(path), mode="r+")["0"]


def write_frame(array: Any, index: int, frame: np.ndarray) -> None:
    array[np.unravel_index(index, tuple(array.shape[:-2]))] = frame
