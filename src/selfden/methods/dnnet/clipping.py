"""Clipped pixels: where the detector saturated, a pixel says only "at least this bright".

A detector or its digitiser clips: every value beyond its range is recorded as the range's end
(65535 in a 16-bit SEM frame). Such pixels are not noisy measurements of the signal, and a
noise likelihood that treats them as measurements rewards the D-net for predicting the clip
value exactly (a narrow mixture component then explains a pile of zero residuals), which
posterises bright regions. dnnet instead gives a clipped pixel the probability of its
censored interval, P(noise >= clip - signal) at the top, P(noise <= clip - signal) at the
bottom (a Tobit likelihood).

Clipping shows as a pile-up: many more pixels at the data's extreme value than at the values
next to it. Photon-counting data with many zeros do not pile up that way (a Poisson count of 0
is about as common as 1), so their zeros stay measurements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from selfden.data import StackLike

#: A level is clipped when at least this share of the pixels sits exactly on it...
MIN_CLIPPED_FRACTION = 0.001
#: ...and it holds this many times more pixels than either of the next two values inside the range.
MIN_PILE_UP = 4.0
#: Frames read (spread evenly over all files) and pixels in all looked at for clipping.
MAX_FRAMES = 64
MAX_PIXELS = 8_000_000


@dataclass(frozen=True)
class ClipLevels:
    """Raw values at which the data were clipped (None: not clipped at that end) and the share of
    pixels found there."""

    low: float | None
    high: float | None
    low_fraction: float = 0.0
    high_fraction: float = 0.0


def find_clip_levels(stacks: Sequence[StackLike], max_frames: int = MAX_FRAMES,
                     max_pixels: int = MAX_PIXELS) -> ClipLevels:
    """The clip levels of ``stacks``: their minimum and maximum where pixels pile up on them."""
    frames = [(stack, i) for stack in stacks for i in range(len(stack))]
    if not frames:
        return ClipLevels(None, None)
    chosen = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), max_frames)).round().astype(np.int64))
    per_frame = max(1, max_pixels // len(chosen))
    parts = []
    for index in chosen:
        stack, i = frames[index]
        flat = np.asarray(stack.frame(i)).reshape(-1)
        parts.append(flat[:: max(1, -(-flat.size // per_frame))])
    pixels = np.concatenate(parts)
    if pixels.dtype.kind == "f":
        pixels = pixels[np.isfinite(pixels)]
    if pixels.size == 0:
        return ClipLevels(None, None)
    low, low_fraction = _pile_up(pixels, pixels.min(), inward=1)
    high, high_fraction = _pile_up(pixels, pixels.max(), inward=-1)
    return ClipLevels(low, high, low_fraction, high_fraction)


def _pile_up(pixels: np.ndarray, extreme: np.generic, inward: int) -> tuple[float | None, float]:
    """(extreme, its share of the pixels) when pixels pile up on it; (None, share) otherwise."""
    at_extreme = int(np.count_nonzero(pixels == extreme))
    fraction = at_extreme / pixels.size
    inside = pixels[pixels > extreme] if inward > 0 else pixels[pixels < extreme]
    if fraction < MIN_CLIPPED_FRACTION or inside.size == 0:  # a constant image is not "clipped"
        return None, fraction
    nearest = []
    for _ in range(2):  # the next two distinct values inside the range
        if inside.size == 0:
            break
        value = inside.min() if inward > 0 else inside.max()
        nearest.append(int(np.count_nonzero(inside == value)))
        inside = inside[inside != value]
    return (float(extreme), fraction) if at_extreme >= MIN_PILE_UP * max(nearest) else (None, fraction)
