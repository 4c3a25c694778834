"""Training data: intensity statistics, train/validation split, random-crop sampling.

Works on any "ImageStack-like" object: ``.path``, ``len()``, ``.frame(i)`` (a 2-D array) and
``.frame_shape``. Never imports torch: batches are numpy arrays ``(B, 1, P, P)`` float32.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from selfden.errors import InputError
from selfden.geometry.orientations import IDENTITY_ONLY, check_names
from selfden.geometry.orientations import transform as orient
from selfden.normalisation import Normalisation, NormalisationKind

log = logging.getLogger(__name__)

#: Frames smaller than this many in total are split spatially instead of by frame.
MIN_FRAMES_FOR_FRAME_SPLIT = 10
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


class StackLike(Protocol):
    """What data.py needs from an image stack (``selfden.io.stack.ImageStack`` fits)."""

    path: Path

    @property
    def frame_shape(self) -> tuple[int, int]: ...

    def __len__(self) -> int: ...

    def frame(self, index: int) -> np.ndarray: ...


class _Scaling(Protocol):
    offset: float
    scale: float


# --- statistics and normalisation -----------------------------------------------------------


@dataclass(frozen=True)
class IntensityStats:
    """Robust intensity statistics of a training set (raw units)."""

    low: float  # value at percentiles[0]
    high: float  # value at percentiles[1]
    mean: float  # of the pixels clipped to [low, high]
    std: float  # of the pixels clipped to [low, high]
    percentiles: tuple[float, float]


def _evenly_spaced(n_items: int, n_wanted: int) -> np.ndarray:
    """Up to ``n_wanted`` indices spread evenly over ``range(n_items)``, first and last included."""
    if n_items <= n_wanted:
        return np.arange(n_items)
    return np.unique(np.linspace(0, n_items - 1, n_wanted).round().astype(np.int64))


def _pixel_sample(frame: np.ndarray, n_pixels: int) -> np.ndarray:
    """``n_pixels`` of ``frame`` at golden-ratio positions: spread over the frame without the
    aliasing a fixed stride has with the row length, and deterministic."""
    flat = np.asarray(frame).reshape(-1)
    if flat.size <= n_pixels:
        return flat.astype(np.float64)
    positions = (np.arange(n_pixels) * _GOLDEN) % 1.0
    return flat[(positions * flat.size).astype(np.int64)].astype(np.float64)


def _all_frames(stacks: Sequence[StackLike]) -> list[tuple[StackLike, int]]:
    return [(stack, i) for stack in stacks for i in range(len(stack))]


def compute_stats(
    stacks: Sequence[StackLike],
    percentiles: tuple[float, float] = (0.1, 99.9),
    max_pixels: int = 4_000_000,
    max_frames: int = 256,
) -> IntensityStats:
    """Robust percentiles, mean and std over all files of a training set.

    For speed on big data it reads at most ``max_frames`` whole frames, spread evenly over all
    frames of all files, and takes up to ``max_pixels`` pixels in total, spread evenly within
    each frame. Mean and std are of the pixels clipped to the percentile range, so a few hot
    or dead pixels cannot move them.
    """
    frames = _all_frames(stacks)
    if not frames:
        raise InputError("no frames to compute statistics from: the training inputs are empty; give at least one image")
    chosen = [frames[i] for i in _evenly_spaced(len(frames), max_frames)]
    per_frame = max(1, max_pixels // len(chosen))
    samples = np.concatenate([_checked_sample(stack, i, per_frame) for stack, i in chosen])
    low, high = (float(v) for v in np.percentile(samples, percentiles))
    clipped = np.clip(samples, low, high)
    log.info("intensity statistics from %d pixels of %d of %d frames", samples.size, len(chosen), len(frames))
    return IntensityStats(low, high, float(clipped.mean()), float(clipped.std()), tuple(percentiles))


def _checked_sample(stack: StackLike, index: int, n_pixels: int) -> np.ndarray:
    sample = _pixel_sample(stack.frame(index), n_pixels)
    if not np.all(np.isfinite(sample)):
        name = Path(stack.path).name
        raise InputError(f"{name}: frame {index} contains NaN or Inf pixels; replace them before training")
    return sample


def normalisation_for(stats: IntensityStats, kind: NormalisationKind) -> Normalisation:
    """``range``: (low, high) -> (0, 1); ``standardise``: mean 0, std 1."""

    if kind == "range":
        offset, scale = stats.low, stats.high - stats.low
    elif kind == "standardise":
        offset, scale = stats.mean, stats.std
    else:
        raise ValueError(f"unknown normalisation kind {kind!r}; expected 'range' or 'standardise'")
    if not (math.isfinite(scale) and scale > 0):
        raise InputError(
            f"the training images have no intensity spread (percentiles {stats.percentiles}: "
            f"{stats.low:g} to {stats.high:g}, std {stats.std:g}); they look constant: check the input files"
        )
    return Normalisation(offset=float(offset), scale=float(scale))


# --- regions and the train/validation split -----------------------------------------------------


@dataclass(frozen=True)
class Region:
    """A rectangle of one frame of one stack (slices with explicit start and stop)."""

    stack: StackLike
    frame_index: int
    rows: slice
    cols: slice

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.stop - self.rows.start, self.cols.stop - self.cols.start

    @property
    def is_whole_frame(self) -> bool:
        return self.shape == tuple(self.stack.frame_shape)


def whole_frame(stack: StackLike, index: int) -> Region:
    """The region covering frame ``index`` of ``stack``."""
    height, width = stack.frame_shape
    return Region(stack, index, slice(0, height), slice(0, width))


def split_train_val(
    stacks: Sequence[StackLike],
    val_fraction: float = 0.1,
    rng: np.random.Generator | None = None,
    patch_size: int = 64,
) -> tuple[list[Region], list[Region]]:
    """Training and validation regions that never share pixels.

    With at least 10 frames in total, a random ``val_fraction`` of the frames (at least one)
    is held out, drawn as a permutation of frame indices so no frame is used twice. With
    fewer, every frame is split spatially: its last ``max(patch_size, val_fraction * height)``
    rows validate, the rows above train; if the frame is too short for two patches, its last
    columns are held out instead. ``rng`` defaults to ``default_rng(0)``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive); got {val_fraction}")
    frames = _all_frames(stacks)
    if not frames:
        raise InputError("no frames to train on: the training inputs are empty; give at least one image")
    if len(frames) < MIN_FRAMES_FOR_FRAME_SPLIT:
        return _spatial_split(frames, val_fraction, patch_size)
    rng = np.random.default_rng(0) if rng is None else rng
    n_val = min(max(1, round(val_fraction * len(frames))), len(frames) - 1)
    order = rng.permutation(len(frames))
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    log.info("validation: %d of %d frames held out", n_val, len(frames))
    return [whole_frame(*frames[i]) for i in train], [whole_frame(*frames[i]) for i in val]


def _spatial_split(
    frames: list[tuple[StackLike, int]], val_fraction: float, patch_size: int
) -> tuple[list[Region], list[Region]]:
    train: list[Region] = []
    val: list[Region] = []
    for stack, index in frames:
        t, v = _split_frame(stack, index, val_fraction, patch_size)
        train.append(t)
        val.append(v)
    log.info("validation: fewer than %d frames: each frame's last rows (or columns)", MIN_FRAMES_FOR_FRAME_SPLIT)
    return train, val


def _split_frame(stack: StackLike, index: int, val_fraction: float, patch_size: int) -> tuple[Region, Region]:
    height, width = stack.frame_shape
    rows, cols = slice(0, height), slice(0, width)
    cut = _cut(height, val_fraction, patch_size)
    if cut is not None:
        return Region(stack, index, slice(0, cut), cols), Region(stack, index, slice(cut, height), cols)
    cut = _cut(width, val_fraction, patch_size)
    if cut is not None:
        return Region(stack, index, rows, slice(0, cut)), Region(stack, index, rows, slice(cut, width))
    raise InputError(
        f"{Path(stack.path).name}: with fewer than {MIN_FRAMES_FOR_FRAME_SPLIT} frames each frame is split into "
        f"training and validation parts, but {height}x{width} cannot hold two {patch_size}-px patches side by side; "
        f"use --patch-size {_suggest_patch(max(height, width) // 2)} or give more frames"
    )


def _cut(length: int, val_fraction: float, patch_size: int) -> int | None:
    """Where the validation strip starts along an axis, or None if both parts cannot hold a patch."""
    cut = length - max(patch_size, math.ceil(val_fraction * length))
    return cut if cut >= patch_size else None


# --- random crops ---------------------------------------------------------------------------


def _suggest_patch(side: int) -> int:
    """The largest power of two that fits in ``side`` (at least 1)."""
    return 2 ** max(0, int(math.floor(math.log2(max(side, 1)))))


def _check_fits(region: Region, patch_size: int) -> None:
    height, width = region.shape
    if height >= patch_size and width >= patch_size:
        return
    name = Path(region.stack.path).name
    what = (
        f"frames are {height}x{width}"
        if region.is_whole_frame
        else f"rows {region.rows.start}-{region.rows.stop}, columns {region.cols.start}-{region.cols.stop} "
        f"of frame {region.frame_index} are {height}x{width}"
    )
    raise InputError(
        f"{name}: {what} but the patch size is {patch_size}; "
        f"use --patch-size {_suggest_patch(min(height, width))} or larger images"
    )


class CropSampler:
    """Random ``patch_size`` crops from all regions, normalised, each in one of ``orientations`` at random.

    Regions are drawn with probability proportional to their area, so every pixel of the
    training set is about equally likely to be seen. Frames are read lazily with
    ``.frame(i)`` and kept in memory until ``cache_bytes`` (default 2 GiB) is used; after that
    the remaining frames are read again for every crop. A fill-once cache (rather than LRU)
    because crops are drawn uniformly: any eviction policy gets the same hit rate, and this
    one never churns. Deterministic given ``rng``.
    """

    def __init__(
        self,
        regions: Sequence[Region],
        patch_size: int,
        normalisation: _Scaling,
        orientations: Sequence[str],
        rng: np.random.Generator,
        cache_bytes: int = 2 * 1024**3,
    ) -> None:
        if not regions:
            raise ValueError("CropSampler needs at least one region")
        for region in regions:
            _check_fits(region, patch_size)
        self._regions = list(regions)
        areas = np.array([h * w for h, w in (r.shape for r in self._regions)], dtype=np.float64)
        self._weights = areas / areas.sum()
        self._patch = patch_size
        self._offset, self._scale = float(normalisation.offset), float(normalisation.scale)
        self._orientations = check_names(orientations) or IDENTITY_ONLY
        self._rng = rng
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        self._cache_budget, self._cache_used = cache_bytes, 0
        self._cache_full_logged = False

    def sample(self, batch_size: int) -> np.ndarray:
        """A batch ``(batch_size, 1, P, P)`` float32, normalised."""
        batch = np.empty((batch_size, 1, self._patch, self._patch), dtype=np.float32)
        for b, i in enumerate(self._rng.choice(len(self._regions), size=batch_size, p=self._weights)):
            batch[b, 0] = self._crop(self._regions[i])
        batch -= np.float32(self._offset)
        batch /= np.float32(self._scale)
        return batch

    def _crop(self, region: Region) -> np.ndarray:
        height, width = region.shape
        y = region.rows.start + int(self._rng.integers(0, height - self._patch + 1))
        x = region.cols.start + int(self._rng.integers(0, width - self._patch + 1))
        patch = self._frame(region)[y : y + self._patch, x : x + self._patch]
        if len(self._orientations) == 1:  # no draw: the crop stream stays that of unflipped training
            return orient(patch, self._orientations[0])
        return orient(patch, self._orientations[int(self._rng.integers(len(self._orientations)))])

    def _frame(self, region: Region) -> np.ndarray:
        key = (id(region.stack), region.frame_index)
        if key in self._cache:
            return self._cache[key]
        frame = np.asarray(region.stack.frame(region.frame_index))
        if self._cache_used + frame.nbytes > self._cache_budget:
            if not self._cache_full_logged:
                log.info("frame cache full (%.2f GB): other frames are read for every crop", self._cache_used / 1e9)
                self._cache_full_logged = True
            return frame
        # A memory-mapped frame (a view) would be read from disk again on every crop: copy it.
        frame = frame if frame.flags.owndata else np.array(frame)
        self._cache[key] = frame
        self._cache_used += frame.nbytes
        return frame


def validation_batches(
    val_regions: Sequence[Region],
    patch_size: int,
    batch_size: int,
    normalisation: _Scaling,
    n_batches: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """``n_batches`` fixed batches of unaugmented crops (identical for the same ``rng`` seed)."""
    if not val_regions:
        return []
    sampler = CropSampler(val_regions, patch_size, normalisation, IDENTITY_ONLY, rng=rng)
    return [sampler.sample(batch_size) for _ in range(n_batches)]
