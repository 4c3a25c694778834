"""Tiles for images of any size, with halo, reflect padding and smooth blending.

Each tile is a network input of a size the model accepts (``min_size + n * step``). Its
central "core" is kept; a ``halo`` of context on every side is computed and thrown away,
so where the network's receptive field fits in the halo, tiled and whole-image results
agree. Neighbouring cores overlap a little and are blended with raised-cosine weights,
normalised by the summed weights (so equal predictions stay exactly equal). Tile origins
sit on multiples of ``step`` so a network that down-samples sees the same pixel grid in
every tile (the stitching scheme of CSBDeep/StarDist: Weigert et al., Nat. Methods 2018).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import product
from typing import TypeVar

import numpy as np

Pair = tuple[int, int]
T = TypeVar("T")


def valid_size(size: int, min_size: int, step: int) -> int:
    """The smallest size >= ``size`` of the form ``min_size + n * step`` (``min_size`` if step is 0)."""
    if step <= 0:
        return min_size
    return min_size + max(0, math.ceil((size - min_size) / step)) * step


@dataclass(frozen=True, eq=False)
class Tile:
    """One network input: where to read it, which part of its output to keep, and where to put it.

    ``read`` is in image coordinates and may reach past the image edges (those pixels are
    reflections); ``crop`` indexes the network output; ``place`` indexes the output image.
    """

    read: tuple[slice, slice]
    crop: tuple[slice, slice]
    place: tuple[slice, slice]
    weight_y: np.ndarray
    weight_x: np.ndarray

    @property
    def shape(self) -> Pair:
        """Network input size of this tile."""
        return tuple(s.stop - s.start for s in self.read)  # type: ignore[return-value]

    @property
    def weight(self) -> np.ndarray:
        """Blending weights over the ``place`` region (all > 0)."""
        return np.outer(self.weight_y, self.weight_x)


@dataclass(frozen=True, eq=False)
class _Span:
    read: slice
    crop: slice
    place: slice
    weight: np.ndarray


def _ramp(width: int) -> np.ndarray:
    """Raised cosine strictly inside (0, 1); a ramp and its mirror image sum to 1."""
    k = np.arange(1, width + 1, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(np.pi * k / (width + 1))).astype(np.float32)


def _starts(length: int, core: int, align: int, overlap: int) -> tuple[int, int, int]:
    """``(count, stride, overlap)`` of core origins on multiples of ``align``, evenly spread,
    cores overlapping >= ``overlap`` (O(1): the tile planner tries thousands of cores)."""
    if length <= core:
        return 1, 0, 0
    overlap = max(0, min(overlap, core - align))
    max_stride = (core - overlap) // align * align
    count = 1 + math.ceil((length - core) / max_stride)
    stride = align * math.ceil((length - core) / ((count - 1) * align))
    return count, stride, overlap


def axis_layout(
    length: int, tile: int, min_size: int, step: int, halo: int, overlap: int | None
) -> tuple[int, int, int, int]:
    """Along one axis: ``(input size, tile count, stride between cores, blending width)``.

    ``tile`` is the wanted core; the input adds ``halo`` each side and is rounded up to a valid
    size (the smallest that holds the whole axis when one tile does it).
    """
    align = max(step, 1)
    inner = max(align, math.ceil(tile / align) * align)
    padded = valid_size(inner + 2 * halo, min_size, step)
    if length + 2 * halo <= padded:  # one tile does it: use the smallest size that fits
        padded = valid_size(length + 2 * halo, min_size, step)
    core = padded - 2 * halo
    if core <= 0:
        raise ValueError(f"tile size {padded} leaves nothing inside a halo of {halo} on each side")
    count, stride, ramp = _starts(length, core, align, core // 8 if overlap is None else overlap)
    return padded, count, stride, ramp


def _axis_spans(length: int, tile: int, min_size: int, step: int, halo: int, overlap: int | None) -> list[_Span]:
    padded, count, stride, ramp = axis_layout(length, tile, min_size, step, halo, overlap)
    core, starts = padded - 2 * halo, [i * stride for i in range(count)]
    spans = []
    for index, start in enumerate(starts):
        end = min(start + core, length)
        weight = np.ones(end - start, dtype=np.float32)
        if index > 0 and ramp:
            weight[:ramp] = _ramp(ramp)
        if index < len(starts) - 1 and ramp:
            weight[-ramp:] = _ramp(ramp)[::-1]
        read = slice(start - halo, start - halo + padded)
        spans.append(_Span(read, slice(halo, halo + end - start), slice(start, end), weight))
    return spans


def _pair(value: int | Sequence[int]) -> Pair:
    if isinstance(value, int):
        return value, value
    y, x = value
    return int(y), int(x)


def tile_image(
    shape: Sequence[int],
    tile_size: int | Sequence[int],
    min_size: int | Sequence[int] = 1,
    step: int | Sequence[int] = 1,
    halo: int | Sequence[int] = 0,
    overlap: int | None = None,
) -> list[Tile]:
    """Tiles covering an ``(H, W)`` image; every tile has the same network input shape.

    ``tile_size`` is the wanted core (kept part) size, rounded up to a multiple of ``step``;
    the network input adds ``halo`` on each side and is rounded up to a valid size. Images
    smaller than one tile get a single tile of the smallest valid size (reflect-padded).
    ``overlap`` is the blending width between cores (default: an eighth of the core).
    Scalars apply to both axes; pairs are ``(y, x)``.
    """
    height, width = (int(s) for s in shape[-2:])
    params = [_pair(p) for p in (tile_size, min_size, step, halo)]
    spans_y = _axis_spans(height, *(p[0] for p in params), overlap)
    spans_x = _axis_spans(width, *(p[1] for p in params), overlap)
    return [
        Tile((sy.read, sx.read), (sy.crop, sx.crop), (sy.place, sx.place), sy.weight, sx.weight)
        for sy, sx in product(spans_y, spans_x)
    ]


def _reflect(indices: np.ndarray, length: int) -> np.ndarray:
    """Mirror indices into ``[0, length)`` without repeating the edge (numpy's 'reflect')."""
    if length == 1:
        return np.zeros_like(indices)
    period = 2 * (length - 1)
    folded = np.mod(indices, period)
    return np.where(folded >= length, period - folded, folded)


def read_tile(image: np.ndarray, tile: Tile) -> np.ndarray:
    """The tile's network input from a 2-D image, reflect-padded where it leaves the image."""
    (ry, rx), (height, width) = tile.read, image.shape
    inside = image[max(ry.start, 0) : ry.stop, max(rx.start, 0) : rx.stop]
    widths = [(max(-r.start, 0), max(r.stop - n, 0)) for r, n in zip(tile.read, image.shape)]
    if all(max(w) < n for w, n in zip(widths, inside.shape)):  # one reflection from the crop suffices
        return np.pad(inside, widths, mode="reflect") if any(map(any, widths)) else np.array(inside)
    rows = _reflect(np.arange(ry.start, ry.stop), height)
    cols = _reflect(np.arange(rx.start, rx.stop), width)
    return image[np.ix_(rows, cols)]


def batched(tiles: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive groups of at most ``size`` tiles (or anything else)."""
    for first in range(0, len(tiles), max(1, size)):
        yield tiles[first : first + max(1, size)]


def run_tiled(
    images: Sequence[np.ndarray], tiles: Sequence[Tile], batch: int, run: Callable[[np.ndarray], np.ndarray]
) -> list[np.ndarray]:
    """Stitched outputs ``(K, H, W)`` of equally shaped ``(H, W)`` images cut into ``tiles``.

    Tiles of all images share session runs of ``batch`` tiles: a stack of small frames (one
    tile each) costs one run per ``batch`` frames, not one per frame. ``run`` maps ``(B, Py, Px)``
    inputs to ``(B, K, Py, Px)`` outputs.
    """
    jobs = [(index, tile) for index in range(len(images)) for tile in tiles]
    stitchers: list[Stitcher | None] = [None] * len(images)
    for group in batched(jobs, batch):
        outputs = run(np.stack([read_tile(images[index], tile) for index, tile in group]))
        for (index, tile), output in zip(group, outputs):
            stitchers[index] = stitchers[index] or Stitcher(images[index].shape, output.shape[0])
            stitchers[index].add(tile, output)  # type: ignore[union-attr]
    return [stitcher.result() for stitcher in stitchers if stitcher is not None]


class Stitcher:
    """Accumulates weighted tile outputs into ``(channels, H, W)`` and normalises at the end."""

    def __init__(self, shape: Sequence[int], channels: int = 1) -> None:
        height, width = (int(s) for s in shape[-2:])
        self._sum = np.zeros((channels, height, width), dtype=np.float32)
        self._weight = np.zeros((height, width), dtype=np.float32)

    def add(self, tile: Tile, output: np.ndarray) -> None:
        """Add one tile's network output, ``(Py, Px)`` or ``(channels, Py, Px)``."""
        output = output.reshape((-1,) + output.shape[-2:])
        weight = tile.weight
        self._sum[(slice(None), *tile.place)] += output[(slice(None), *tile.crop)] * weight
        self._weight[tile.place] += weight

    def result(self) -> np.ndarray:
        """The blended image, ``(channels, H, W)`` float32."""
        if not (self._weight > 0).all():
            raise RuntimeError("tiles do not cover the whole image")
        return self._sum / self._weight
