"""Posterior sampling for COSDD packages: N samples per tile in one batch, mean and std.

COSDD's sampler graph maps a noisy tile to one posterior sample of the clean signal; the
average of many samples is the MMSE estimate, their spread an uncertainty map (Salmon &
Krull, WACV 2025). Running the N copies of a tile as one batch instead of N sequential
runs is what makes this affordable; batches are chunked so memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from selfden.errors import ModelError, SelfdenError
from selfden.images import ImageStack, StackWriter
from selfden.inference.predictor import Predictor
from selfden.inference.processing import apply_steps
from selfden.inference.runtime import Device, OnnxRunner, create_runner

DEFAULT_SAMPLES = 100
#: Tile copies per session run: bounded so a 100-sample request does not need 100 tiles of memory.
DEFAULT_MAX_BATCH = 32


def sampler_file(predictor: Predictor) -> Path | None:
    """The sampler graph named in the package's ``config.selfden.graphs``, if any."""
    name = predictor.config_selfden.get("graphs", {}).get("sampler")
    return predictor.spec.weights.parent / name if name else None


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
    """A Predictor whose tiles go through the sampler ``n_samples`` times: outputs (mean, std)."""

    def __init__(self, base: Predictor, sampler: OnnxRunner, n_samples: int, max_batch: int = DEFAULT_MAX_BATCH):
        tile_size = None if base.auto_tiles else base.tile_size  # None: planned per image size, as the base
        super().__init__(base.spec, sampler, tile_size, base.tile_batch, base.overlap, tta=base.tta)
        self._cleanup = base._cleanup  # a .zip's extraction lives as long as either object
        base._cleanup = None
        if n_samples < 1:
            raise SelfdenError(f"--samples {n_samples}: need at least 1 posterior sample")
        self.n_samples = n_samples
        self.max_batch = max(max_batch, 1)

    @classmethod
    def from_predictor(cls, base: Predictor, n_samples: int | None, device: Device = "auto") -> SamplingPredictor:
        """Wrap a loaded COSDD package; ModelError when the package has no sampler graph."""
        path = sampler_file(base)
        if path is None:
            raise ModelError(
                f"{base.spec.weights.parent}: this model has no sampler graph; --samples and --std need a COSDD model"
            )
        count = n_samples or int(base.config_selfden.get("default_samples", DEFAULT_SAMPLES))
        return cls(base, create_runner(path, device), count)

    def run_tiles(self, batch: np.ndarray) -> np.ndarray:
        """(B, Py, Px) tiles -> (B, 2, Py, Px): per-pixel mean and std over the samples."""
        return np.stack([self._mean_and_std(tile) for tile in batch])

    def _mean_and_std(self, tile: np.ndarray) -> np.ndarray:
        total = np.zeros(tile.shape, np.float64)
        total_sq = np.zeros(tile.shape, np.float64)
        done = 0
        while done < self.n_samples:
            count = min(self.max_batch, self.n_samples - done, max(1, self.max_pixels // tile.size))  # memory budget
            copies = np.broadcast_to(tile, (count, 1, *tile.shape))
            samples = self.runner.run(copies)[:, 0].astype(np.float64)
            total += samples.sum(axis=0)
            total_sq += np.square(samples).sum(axis=0)
            done += count
        mean = total / done
        variance = np.maximum(total_sq / done - np.square(mean), 0.0)
        return np.stack([mean, np.sqrt(variance)]).astype(np.float32)

    def combine_orientations(self, outputs: Iterable[np.ndarray]) -> np.ndarray:
        return mixture_mean_and_std(outputs)

    def predict_mean_and_std(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """MMSE estimate and per-pixel standard deviation of one raw 2-D frame, in raw units."""
        raw = np.asarray(frame, dtype=np.float32)
        references = {self.spec.input_id: raw}
        normalised = apply_steps(raw, self.spec.preprocessing, references)
        mean, std = self.predict_oriented(np.asarray(normalised, dtype=np.float32))
        post = self.spec.postprocessing
        mean_raw = apply_steps(mean, post, references)
        # The postprocessing is affine for selfden's packages: the spread scales by its gain.
        std_raw = np.abs(apply_steps(mean + std, post, references) - mean_raw)
        return np.asarray(mean_raw, np.float32), np.asarray(std_raw, np.float32)

    def predict_image(self, frame: np.ndarray) -> np.ndarray:
        return self.predict_mean_and_std(frame)[0]

    def predict_stack_with_std(
        self,
        stack: ImageStack,
        writer: StackWriter,
        std_writer: StackWriter,
        on_frame: Callable[[int, int], None] | None = None,
    ) -> None:
        """Like ``predict_stack``, also writing each frame's standard deviation to ``std_writer``."""
        total = len(stack)
        for index in range(total):
            mean, std = self.predict_mean_and_std(stack.frame(index))
            writer.write(mean)
            std_writer.write(std)
            if on_frame is not None:
                on_frame(index + 1, total)
