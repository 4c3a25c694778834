"""A run's training data: the train/validation split, the crop source and the fixed validation batches.

Drawn from the run's seed, so whoever redraws them (``selfden noise-model``) gets the batches the
training validated on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from selfden.data import CropSampler, Region, StackLike, split_train_val, validation_batches
from selfden.normalisation import Normalisation
from selfden.runs.config import RunConfig


@dataclass(frozen=True)
class TrainingData:
    """What the trainer reads: a batch source, fixed validation batches, a raw frame for the package."""

    next_batch: Callable[[], np.ndarray]
    val_batches: list[np.ndarray]
    val_frame: np.ndarray


def training_data(
    config: RunConfig,
    stacks: Sequence[StackLike],
    norm: Normalisation,
    method_orientations: Sequence[str],
    rng: np.random.Generator,
    crops_per_step: int | None = None,
) -> TrainingData:
    """The run's training data; ``rng`` (seeded from the run's seed) splits, then draws the crops.

    ``crops_per_step``: this rank's share of the batch in data-parallel training (default: all of it).
    """
    data = config.data
    train_regions, val_regions = _split(config, stacks, rng)
    sampler = CropSampler(train_regions, data.patch_size, norm, data.orientations(method_orientations), rng=rng)
    first = val_regions[0]
    val_frame = np.asarray(first.stack.frame(first.frame_index), dtype=np.float32)
    crops = crops_per_step or data.batch_size
    return TrainingData(lambda: sampler.sample(crops), _validation(config, val_regions, norm), val_frame)


def validation_crops(config: RunConfig, stacks: Sequence[StackLike], norm: Normalisation) -> list[np.ndarray]:
    """The run's fixed validation batches, drawn exactly as its training drew them."""
    _, val_regions = _split(config, stacks, np.random.default_rng(config.seed))
    return _validation(config, val_regions, norm)


def _split(
    config: RunConfig, stacks: Sequence[StackLike], rng: np.random.Generator
) -> tuple[list[Region], list[Region]]:
    data = config.data
    return split_train_val(stacks, val_fraction=data.val_fraction, rng=rng, patch_size=data.patch_size)


def _validation(config: RunConfig, val_regions: list[Region], norm: Normalisation) -> list[np.ndarray]:
    data = config.data
    rng = np.random.default_rng(config.seed + 1)
    return validation_batches(val_regions, data.patch_size, data.batch_size, norm, data.val_batches, rng)
