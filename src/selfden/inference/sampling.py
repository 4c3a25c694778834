"""Posterior sampling for COSDD packages: N samples per tile in one batch, mean and std.

COSDD's sampler graph maps a noisy tile to one posterior sample of the clean signal; the
average of many samples is the MMSE estimate, their spread an uncertainty map (Salmon &
Krull, WACV 2025). Running the N copies of a tile as one batch instead of N sequential
runs is what makes this affordable; batches are chunked so memory stays bounded. Packages
exported since the sampler was split run its deterministic encoder once per tile and only the
decoder per sample (``posterior_draws.py``); ``--samples auto`` draws until the mean has
settled (``sample_count.py``). ``SamplingPredictor`` is a ``predictors.Predictor`` like the
direct one, so running over files treats both alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from selfden.errors import ModelError
from selfden.inference.posterior_draws import (
    DECODER,
    ENCODER,
    SAMPLER,
    SingleGraphDraws,
    SplitSource,
    open_split,
    sampler_graphs,
)
from selfden.inference.predictors import DirectPredictor, Prediction, Predictor
from selfden.inference.sample_count import (
    AUTO,
    AUTO_CHUNK,
    AUTO_LOG_MESSAGE,
    SampleCount,
    parse_samples,
    settled,
)
from selfden.package.processing import apply_steps
from selfden.package.runtime import Device, OnnxRunner, create_runner

logger = logging.getLogger(__name__)

#: For packages that state no ``default_samples`` (none of selfden's exports; packages state the
#: count they were made for: 8 since samples come in antithetic pairs). For independent samples on the
#: stripe suite the MMSE of 48 samples came within 0.1 dB of 100 samples' (-0.07 and -0.10 dB with
#: two stripe models; 32: -0.13, -0.17) (benchmarks/cosdd_antithetic.py; RESULTS.md).
DEFAULT_SAMPLES = 48
#: Tile copies per session run: bounded so a 100-sample request does not need 100 tiles of memory.
DEFAULT_MAX_BATCH = 32


def mixture_mean_and_std(outputs: Iterable[np.ndarray]) -> np.ndarray:
    """(mean, std) of an equal mixture of distributions given as (mean, std) arrays, one at a time.

    Law of total variance: the mixture's variance is the mean of the variances plus the
    variance of the means, i.e. E[std² + mean²] - E[mean]².
    """
    first: np.ndarray | None = None
    second: np.ndarray | None = None
    count = 0
    for mean, std in outputs:
        mean64 = mean.astype(np.float64)
        moment = np.square(std.astype(np.float64)) + np.square(mean64)
        first = mean64 if first is None else first + mean64
        second = moment if second is None else second + moment
        count += 1
    if first is None or second is None:
        raise ValueError("no outputs to combine")
    mean = first / count
    return np.stack([mean, np.sqrt(np.maximum(second / count - np.square(mean), 0.0))]).astype(np.float32)


class SamplingPredictor(Predictor):
    """A Predictor whose tiles get ``n_samples`` posterior samples (or "auto": until settled); its
    predictions are their mean, and with ``with_std`` their per-pixel standard deviation.

    ``source`` is a ``SplitSource`` (encoder once per tile, decoder per sample), or None for
    packages with the old single sampler graph, which is then ``runner`` (for split packages
    ``runner`` is the package's denoiser: only its provider is reported).
    """

    def __init__(self, base: DirectPredictor, sampler: OnnxRunner, n_samples: int | str,
                 max_batch: int = DEFAULT_MAX_BATCH, source: SplitSource | None = None, with_std: bool = False):
        tile_size = None if base.auto_tiles else base.tile_size  # None: planned per image size, as the base
        super().__init__(base.spec, sampler, tile_size, base.tile_batch, base.overlap, base.orientations)
        self._cleanup = base._cleanup  # a .zip's extraction lives as long as either object
        base._cleanup = None
        self.n_samples: SampleCount = parse_samples(n_samples)  # type: ignore[assignment]
        self.with_std = with_std
        self.max_batch = max(max_batch, 1)
        self.source = source  # None: the old single sampler graph, ``runner``
        self.tile_counts: list[int] = []  # samples each tile of the last run_tiles batch took

    @classmethod
    def from_predictor(cls, base: DirectPredictor, n_samples: int | str | None, device: Device = "auto",
                       with_std: bool = False) -> SamplingPredictor:
        """Wrap a loaded COSDD package; ModelError when the package has no sampler graphs."""
        graphs = sampler_graphs(base.config_selfden, base.spec.weights.parent)
        count = n_samples or int(base.config_selfden.get("default_samples", DEFAULT_SAMPLES))
        if ENCODER in graphs and DECODER in graphs:
            source = open_split(graphs[ENCODER], graphs[DECODER], device)
            return cls(base, base.runner, count, source=source, with_std=with_std)
        if SAMPLER in graphs:
            return cls(base, create_runner(graphs[SAMPLER], device), count, with_std=with_std)
        raise ModelError(
            f"{base.spec.weights.parent}: this model has no sampler graph; --samples and --std need a COSDD model"
        )

    @property
    def graph_files(self) -> list[Path]:
        return list(self.source.files) if self.source is not None else [self.runner.model_file]

    def frames_per_run(self, shape: Sequence[int]) -> int:
        # With --std frames go one at a time, as they always have: --samples auto reports its
        # counts per batch of tiles, and batching frames would change that report.
        return 1 if self.with_std else super().frames_per_run(shape)

    def run_tiles(self, batch: np.ndarray) -> np.ndarray:
        """(B, Py, Px) tiles -> (B, 2, Py, Px): per-pixel mean and std over the samples."""
        self.tile_counts = []
        out = np.stack([self._mean_and_std(tile) for tile in batch])
        if self.n_samples == AUTO:
            counts = self.tile_counts
            logger.info(AUTO_LOG_MESSAGE, round(float(np.mean(counts))), min(counts), max(counts), len(counts))
        return out

    def _mean_and_std(self, tile: np.ndarray) -> np.ndarray:
        total = np.zeros(tile.shape, np.float64)
        total_sq = np.zeros(tile.shape, np.float64)
        draws = self.source.start(tile) if self.source else SingleGraphDraws(self.runner, tile)
        # Antithetic pairs are not independent of each other's half: --samples auto judges the
        # Monte-Carlo error from the pair means, which are (running sums of them in pair_sums).
        pairs = self.n_samples == AUTO and self.source is not None and self.source.antithetic
        pair_sums = np.zeros((2, *tile.shape), np.float64) if pairs else None  # sum, sum of squares
        done = 0
        while not self._enough(tile, (total, total_sq) if pair_sums is None else pair_sums, done, 2 if pairs else 1):
            wanted = AUTO_CHUNK if self.n_samples == AUTO else int(self.n_samples) - done
            count = min(self.max_batch, wanted, max(1, self.batch_pixels // tile.size))  # memory / cache budget
            if pairs:
                count = max(2, count // 2 * 2)  # whole pairs in every run
            samples = draws.draw(count).astype(np.float64)
            total += samples.sum(axis=0)
            total_sq += np.square(samples).sum(axis=0)
            if pair_sums is not None:
                means = samples.reshape(count // 2, 2, *tile.shape).mean(axis=1)
                pair_sums[0] += means.sum(axis=0)
                pair_sums[1] += np.square(means).sum(axis=0)
            done += count
        self.tile_counts.append(done)
        mean = total / done
        variance = np.maximum(total_sq / done - np.square(mean), 0.0)
        return np.stack([mean, np.sqrt(variance)]).astype(np.float32)

    def _enough(self, tile: np.ndarray, sums: tuple[np.ndarray, np.ndarray] | np.ndarray, done: int, per_unit: int) -> bool:
        """Whether ``done`` samples suffice; ``sums``: running sum and sum of squares of the independent
        units (samples, or pair means with ``per_unit`` 2) that --samples auto judges."""
        if self.n_samples == AUTO:
            return settled(tile, sums[0], sums[1], done, samples_per_unit=per_unit)
        return done >= int(self.n_samples)

    def combine_orientations(self, outputs: Iterable[np.ndarray]) -> np.ndarray:
        return mixture_mean_and_std(outputs)

    def finish(self, output: np.ndarray, raw: np.ndarray) -> Prediction:
        """MMSE estimate (and per-pixel standard deviation) of one frame, in raw units."""
        mean, std = output
        references = {self.spec.input_id: raw}
        post = self.spec.postprocessing
        mean_raw = apply_steps(mean, post, references)
        if not self.with_std:
            return Prediction(np.asarray(mean_raw, np.float32))
        # The postprocessing is affine for selfden's packages: the spread scales by its gain.
        std_raw = np.abs(apply_steps(mean + std, post, references) - mean_raw)
        return Prediction(np.asarray(mean_raw, np.float32), np.asarray(std_raw, np.float32))
