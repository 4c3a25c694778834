"""``--samples auto``: draw posterior samples until their mean has settled, relative to the noise.

Averaging n samples leaves the MMSE estimate a Monte-Carlo error of variance var/n per pixel on
top of the exact posterior mean's error. The draws stop once the root-mean-square standard
error over the tile, sqrt(mean(var) / n), is at most ``AUTO_TOLERANCE`` times the noise level,
measured as the standard deviation of (input - current mean) in normalised units: that difference
is the noise the MMSE removed. Why 0.08: a 0.1 dB PSNR loss allows a Monte-Carlo variance of
2.3 % of the exact MMSE's squared error (10**0.01 = 1.023), and on the stripe suite that error
is ~0.3 x the noise variance (noisy 19.6 dB, MMSE ~25 dB), so mean(var)/n <= 0.007 x noise variance,
i.e. (0.08 x noise std)**2.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Literal

import numpy as np

from selfden.errors import SelfdenError

AUTO = "auto"
AUTO_TOLERANCE = 0.08
#: Fewer samples give a variance estimate too noisy to stop on.
AUTO_MIN_SAMPLES = 8
#: Most samples auto draws per tile, however noisy the samples.
AUTO_MAX_SAMPLES = 200
#: Samples per decoder run when drawing until settled (a check after each run).
AUTO_CHUNK = 8

SampleCount = int | Literal["auto"]


def parse_samples(value: str | int | None) -> SampleCount | None:
    """``--samples`` as given: None, a positive count or "auto"; a one-line SelfdenError otherwise."""
    if value is None or value == AUTO:
        return value  # type: ignore[return-value]
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise SelfdenError(f"--samples {value!r}: expected a whole number of posterior samples or 'auto'") from None
    if count < 1:
        raise SelfdenError(f"--samples {count}: need at least 1 posterior sample (or 'auto')")
    return count


def settled(tile: np.ndarray, total: np.ndarray, total_sq: np.ndarray, samples: int,
            tolerance: float = AUTO_TOLERANCE, samples_per_unit: int = 1) -> bool:
    """Whether ``samples`` draws put the mean's RMS standard error below ``tolerance`` x the noise
    level of ``tile``. ``total`` and ``total_sq`` are running sums over independent units of
    ``samples_per_unit`` samples each (their means): single samples, or antithetic pairs."""
    if samples >= AUTO_MAX_SAMPLES:
        return True
    if samples < AUTO_MIN_SAMPLES:
        return False
    units = samples // samples_per_unit
    mean = total / units
    variance = np.maximum(total_sq / units - np.square(mean), 0.0) * units / (units - 1)
    standard_error = float(np.sqrt(variance.mean() / units))
    noise = float(np.std(tile - mean))
    return standard_error <= tolerance * noise


class _Counts(logging.Handler):
    """Collects the per-frame sample counts ``SamplingPredictor`` logs under --samples auto."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == AUTO_LOG_MESSAGE:
            self.counts.append(int(record.args[0]))  # type: ignore[index]


#: What ``SamplingPredictor`` logs per batch of tiles under --samples auto (first argument: mean samples per tile).
AUTO_LOG_MESSAGE = "--samples auto: %d posterior samples per tile on average (%d-%d over %d tile(s))"


@contextlib.contextmanager
def auto_sample_counts() -> Iterator[list[int]]:
    """The mean samples per tile of each tile batch sampled in this process under --samples auto
    (for the CLI to print; library logging stays as configured)."""
    log = logging.getLogger("selfden.inference.sampling")
    handler, level, propagate = _Counts(), log.level, log.propagate
    if log.getEffectiveLevel() > logging.INFO:  # not shown anyway: collect without printing
        log.setLevel(logging.INFO)
        log.propagate = False
    log.addHandler(handler)
    try:
        yield handler.counts
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate
