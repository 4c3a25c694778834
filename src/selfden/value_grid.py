"""Do the data take only values on a grid (photon counts, integer levels)? Measured from the noisy data.

A likelihood model with a continuous density, such as COSDD's autoregressive noise model, can raise
its likelihood on grid-valued data without bound by piling its density onto the grid points
instead of explaining the noise, and the signal it should separate stops improving. Adding
uniform noise one grid step wide to the training data ("dequantization": Theis, van den Oord &
Bethge, "A note on the evaluation of generative models", ICLR 2016) removes that reward. Measured
on the atoms suite (counts at 7 per unit intensity; COSDD, 2000 steps, RESULTS.md "photon counts
spread over their grid"): validation NLL +0.24 nats/pixel with the spread against -2.48 without,
and the direct denoiser at 33.07 dB, still rising, against 31.20, stalled since ~900 steps.

The grid is read from differences of neighbouring pixels along one axis, so an offset shared by a
whole row (the atoms suite's row noise, a camera's per-row bias) cancels: the differences of
counts are whole counts. numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from selfden.data import StackLike
from selfden.noise_analysis import central_crop, spread_frames

#: Frames read (spread evenly over all stacks); the grid needs only a few thousand differences.
MAX_FRAMES = 8
#: A difference within this share of a step from a whole number of steps is on the grid.
ON_GRID_TOLERANCE = 0.02
#: Share of the non-zero differences that must lie on the grid.
ON_GRID_SHARE = 0.98
#: A grid this much finer than the noise (steps per standard deviation of the differences) does
#: not matter to a density model; float data with a few distinct low bits stay continuous.
MAX_STEPS_PER_SPREAD = 200
MIN_DIFFERENCES = 200
#: Each frame is read through its central crop of this many pixels a side (memory stays small on huge frames).
CROP_SIDE = 256


def measure_value_step(stacks: Sequence[StackLike], axis: Literal["x", "y"] = "x") -> float | None:
    """The data's grid step in raw units, or None when the values are continuous."""
    along = 1 if axis == "x" else 0
    # inf - inf and overflowing squares of absurd values only make the data "not a grid": no warnings
    with np.errstate(invalid="ignore", over="ignore"):
        differences = np.concatenate([np.abs(np.diff(central_crop(stack.frame(i), CROP_SIDE), axis=along)).ravel()
                                      for stack, i in spread_frames(stacks, MAX_FRAMES)])
        return grid_step(differences[np.isfinite(differences)])


def grid_step(differences: np.ndarray) -> float | None:
    """The step ``q`` such that (nearly) every non-zero absolute difference is a whole multiple of ``q``."""
    spread = float(differences.std()) if differences.size else 0.0
    if spread <= 0:
        return None
    # float rounding of grid values (count / 7 in float32) leaves ~1e-6 relative residues, not zeros
    nonzero = differences[differences > spread * 1e-4]
    if nonzero.size < MIN_DIFFERENCES:
        return None
    smallest = float(nonzero.min())
    # the smallest difference is one step (or a rounding-perturbed one): refine on its neighbours
    step = float(np.median(nonzero[nonzero < 1.5 * smallest]))
    if spread / step > MAX_STEPS_PER_SPREAD:
        return None
    ratio = nonzero / step
    on_grid = np.abs(ratio - np.round(ratio)) <= ON_GRID_TOLERANCE
    return step if on_grid.mean() >= ON_GRID_SHARE else None
