"""An opened image: shape, axes and metadata at once, pixels frame by frame on demand.

``ImageStack`` is what every reader (``reading`` for TIFF/PNG/NPY, ``zarr_store`` for Zarr)
returns; a reader hands it a ``FrameSource`` that knows how to fetch one frame of its
format, and checks the declared layout with ``check_layout`` before any pixel is read.
Never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from selfden.errors import InputError, one_line
from selfden.io.metadata import ImageMetadata

SUPPORTED_DTYPES = tuple(np.dtype(t) for t in ("uint8", "uint16", "int16", "float32", "float64"))


class FrameSource(Protocol):
    """Fetches frame ``index`` (C order over the leading axes) of one file."""

    def frame(self, index: int) -> np.ndarray: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


def native_dtype(dtype: np.dtype) -> np.dtype:
    """``dtype`` in the machine's byte order (frames of byte-swapped files are handed out so)."""
    return dtype.newbyteorder("=")


def check_layout(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuse what cannot be denoised before any pixel is read."""
    if len(shape) < 2:
        raise InputError(f"{path}: has {len(shape)} dimension(s), expected an image (at least 2)")
    if 0 in shape:
        raise InputError(f"{path}: empty image or stack (shape {shape}); nothing to denoise")
    if native_dtype(dtype) not in SUPPORTED_DTYPES:
        names = ", ".join(str(d) for d in SUPPORTED_DTYPES)
        raise InputError(
            f"{path}: pixel type {dtype} is not supported; expected one of {names} "
            "(convert to 16-bit or 32-bit grayscale first)"
        )


@dataclass(frozen=True, eq=False)
class ImageStack:
    """An opened image file: shape, axes and metadata now, pixels frame by frame on demand."""

    path: Path
    shape: tuple[int, ...]
    axes: str
    dtype: np.dtype
    metadata: ImageMetadata
    _source: FrameSource = field(repr=False)

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
                f"{self.path}: cannot read frame {index} ({one_line(error)}); "
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
