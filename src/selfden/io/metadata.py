"""What an image file says about itself (ImageJ, OME, resolution), and how a TIFF output says it again.

Reading collects an ``ImageMetadata`` from a TIFF; writing turns it into ``tifffile.imwrite``
options (an ImageJ hyperstack when Fiji can read it natively, else OME-TIFF, BigTIFF when
large); ImageJ calibration and OME pixel sizes convert into each other for the formats
(OME-TIFF, OME-Zarr) that speak OME. Never imports torch.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import tifffile

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
_OME_UNITS = {
    "micron": "µm", "um": "µm", "µm": "µm", "\\u00b5m": "µm", "nm": "nm", "mm": "mm", "cm": "cm", "m": "m",
}


@dataclass(frozen=True)
class ImageMetadata:
    """What an input file says about itself, kept to write the output the same way."""

    imagej: Mapping[str, Any] | None = None
    ome_xml: str | None = None
    resolution: tuple[float, float] | None = None
    resolution_unit: int | None = None
    description: str | None = None


def tiff_metadata(tif: tifffile.TiffFile) -> ImageMetadata:
    """The metadata of an open TIFF worth writing back: ImageJ keys, OME-XML, resolution, description."""
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


def ome_pixels(ome_xml: str) -> dict[str, Any]:
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


def imagej_to_ome(meta: ImageMetadata) -> dict[str, Any]:
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


def _imagej_escape(value: Any) -> Any:
    """ImageJ's description is ASCII: non-ASCII characters become \\uXXXX, as ImageJ writes them."""
    if not isinstance(value, str) or value.isascii():
        return value
    return "".join(c if c.isascii() else f"\\u{ord(c):04X}" for c in value)


def _imagej_compatible(axes: str, dtype: np.dtype) -> bool:
    order = "TZCYX"
    positions = [order.find(a) for a in axes]
    in_order = -1 not in positions and positions == sorted(positions)
    return in_order and dtype in (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))


def tiff_options(shape: tuple[int, ...], axes: str, dtype: np.dtype, meta: ImageMetadata) -> dict[str, Any]:
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
    physical = ome_pixels(meta.ome_xml) if meta.ome_xml else imagej_to_ome(meta)
    options.update(ome=True, metadata={**physical, "axes": axes})
    if meta.resolution_unit is not None:
        options["resolutionunit"] = meta.resolution_unit
    return options
