"""Specification of selfden.data: statistics, normalisation, split and crop sampling."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from selfden.data import (
    CropSampler,
    IntensityStats,
    compute_stats,
    normalisation_for,
    split_train_val,
    validation_batches,
)
from selfden.errors import InputError
from selfden.geometry.orientations import DIHEDRAL, IDENTITY_ONLY
from selfden.methods.base import Normalisation

IDENTITY = Normalisation(offset=0.0, scale=1.0)


@dataclass(eq=False)
class FakeStack:
    """In-memory ImageStack-like: counts reads of ``frame``."""

    path: Path
    frames: np.ndarray
    reads: int = 0

    @property
    def frame_shape(self) -> tuple[int, int]:
        return self.frames.shape[1], self.frames.shape[2]

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, index: int) -> np.ndarray:
        self.reads += 1
        return self.frames[index]


def labelled_stack(name: str, n_frames: int, first_label: int, size: int = 16) -> FakeStack:
    """Frame k is constant, equal to ``first_label + k``: a crop tells where it came from."""
    labels = np.arange(first_label, first_label + n_frames, dtype=np.float32)
    return FakeStack(Path(name), np.broadcast_to(labels[:, None, None], (n_frames, size, size)).copy())


def ramp_stack(height: int = 32, width: int = 48) -> FakeStack:
    """One frame whose pixel values are their flat index: a crop tells its position and orientation."""
    return FakeStack(Path("ramp.tif"), np.arange(height * width, dtype=np.float32).reshape(1, height, width))


def regions_of(*stacks: FakeStack):
    train, val = split_train_val(list(stacks), rng=np.random.default_rng(0), patch_size=8)
    return sorted(train + val, key=lambda r: (id(r.stack), r.frame_index))


# --- statistics and normalisation ------------------------------------------------------------


def test_stats_are_robust_to_a_few_extreme_outliers() -> None:
    rng = np.random.default_rng(1)
    frames = rng.normal(100.0, 10.0, size=(4, 128, 128)).astype(np.float32)
    reference = compute_stats([FakeStack(Path("clean.tif"), frames.copy())])
    frames[0, :3, :3] = 1e9
    frames[3, -2:, -2:] = -1e9
    stats = compute_stats([FakeStack(Path("hot.tif"), frames)])
    # 13 outliers in 65,536 pixels shift the 0.1/99.9 percentiles by a small fraction of the std only.
    assert abs(stats.low - reference.low) < 2 and abs(stats.high - reference.high) < 2, (stats, reference)
    assert abs(stats.mean - 100) < 1 and abs(stats.std - 10) < 1, stats


def test_stats_read_a_bounded_number_of_frames_from_every_file() -> None:
    dark = FakeStack(Path("dark.tif"), np.zeros((600, 8, 8), np.float32))
    bright = FakeStack(Path("bright.tif"), np.full((600, 8, 8), 10.0, np.float32))
    stats = compute_stats([dark, bright], max_frames=256)
    assert dark.reads + bright.reads <= 256, (dark.reads, bright.reads)
    assert dark.reads > 100 and bright.reads > 100, (dark.reads, bright.reads)
    assert abs(stats.mean - 5.0) < 0.1, stats


def test_stats_subsample_pixels_of_big_frames() -> None:
    frames = np.random.default_rng(2).uniform(0, 1, size=(2, 512, 512))
    stats = compute_stats([FakeStack(Path("big.tif"), frames)], percentiles=(1.0, 99.0), max_pixels=20_000)
    assert abs(stats.low - 0.01) < 0.005 and abs(stats.high - 0.99) < 0.005, stats


def test_range_normalisation_maps_percentiles_to_0_and_1() -> None:
    stats = IntensityStats(low=20.0, high=220.0, mean=90.0, std=25.0, percentiles=(0.1, 99.9))
    norm = normalisation_for(stats, "range")
    assert (stats.low - norm.offset) / norm.scale == 0.0, norm
    assert (stats.high - norm.offset) / norm.scale == 1.0, norm
    standard = normalisation_for(stats, "standardise")
    assert (standard.offset, standard.scale) == (90.0, 25.0), standard


def test_constant_images_cannot_be_normalised() -> None:
    stats = compute_stats([FakeStack(Path("flat.tif"), np.full((2, 8, 8), 7.0))])
    with pytest.raises(InputError, match="no intensity spread"):
        normalisation_for(stats, "range")


def test_stats_refuse_non_finite_pixels_naming_the_file() -> None:
    frames = np.ones((2, 8, 8))
    frames[1, 0, 0] = np.nan
    with pytest.raises(InputError, match=r"nan\.tif: frame 1"):
        compute_stats([FakeStack(Path("nan.tif"), frames)])


# --- train / validation split ----------------------------------------------------------------------


def test_frame_split_holds_out_a_tenth_without_duplicates() -> None:
    stacks = [labelled_stack("a.tif", 7, 0), labelled_stack("b.tif", 13, 100), labelled_stack("c.tif", 20, 200)]
    train, val = split_train_val(stacks, 0.1, np.random.default_rng(0))
    keys = [(id(r.stack), r.frame_index) for r in train + val]
    assert len(val) == 4 and len(train) == 36, (len(train), len(val))
    assert len(set(keys)) == 40, "a frame was used twice or lost"
    assert all(r.is_whole_frame for r in train + val)


def test_frame_split_depends_on_the_seed() -> None:
    stacks = [labelled_stack("a.tif", 30, 0)]
    val_0 = [r.frame_index for r in split_train_val(stacks, 0.1, np.random.default_rng(0))[1]]
    val_1 = [r.frame_index for r in split_train_val(stacks, 0.1, np.random.default_rng(1))[1]]
    assert val_0 == [r.frame_index for r in split_train_val(stacks, 0.1, np.random.default_rng(0))[1]]
    assert val_0 != val_1, (val_0, val_1)


def test_single_frame_is_split_spatially_with_a_patch_high_strip() -> None:
    stack = FakeStack(Path("one.tif"), np.zeros((1, 200, 150)))
    (train,), (val,) = split_train_val([stack], 0.1, np.random.default_rng(0), patch_size=64)
    assert (train.rows, val.rows) == (slice(0, 136), slice(136, 200)), (train, val)
    assert train.cols == val.cols == slice(0, 150)


def test_short_wide_frame_holds_out_its_last_columns() -> None:
    stack = FakeStack(Path("wide.tif"), np.zeros((1, 100, 400)))
    (train,), (val,) = split_train_val([stack], 0.1, np.random.default_rng(0), patch_size=64)
    assert (train.cols, val.cols) == (slice(0, 336), slice(336, 400)), (train, val)


def test_frame_too_small_to_split_names_the_file() -> None:
    stack = FakeStack(Path("tiny.tif"), np.zeros((2, 100, 100)))
    with pytest.raises(InputError, match=r"tiny\.tif: .*100x100.*--patch-size 32"):
        split_train_val([stack], 0.1, np.random.default_rng(0), patch_size=64)


# --- crop sampling --------------------------------------------------------------------------


def test_crops_come_from_all_files_and_frames_evenly() -> None:
    regions = regions_of(labelled_stack("a.tif", 4, 0), labelled_stack("b.tif", 4, 100))
    sampler = CropSampler(regions, 8, IDENTITY, IDENTITY_ONLY, rng=np.random.default_rng(0))
    counts = Counter(sampler.sample(4000)[:, 0, 0, 0].tolist())
    assert sorted(counts) == [0, 1, 2, 3, 100, 101, 102, 103], counts
    assert all(400 < c < 600 for c in counts.values()), counts


def test_crop_positions_cover_the_whole_frame() -> None:
    stack = ramp_stack(32, 48)
    sampler = CropSampler(regions_of(stack), 8, IDENTITY, IDENTITY_ONLY, rng=np.random.default_rng(0))
    corners = sampler.sample(3000)[:, 0, 0, 0].astype(int)
    ys, xs = corners // 48, corners % 48
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (0, 24, 0, 40), (ys.min(), ys.max(), xs.min(), xs.max())


def test_same_seed_gives_identical_batches() -> None:
    regions = regions_of(ramp_stack(), labelled_stack("a.tif", 3, 0, size=32))

    def batches(seed: int) -> list[np.ndarray]:
        sampler = CropSampler(regions, 8, IDENTITY, DIHEDRAL, rng=np.random.default_rng(seed))
        return [sampler.sample(16) for _ in range(3)]

    assert all(np.array_equal(a, b) for a, b in zip(batches(5), batches(5)))
    assert not np.array_equal(batches(5)[0], batches(6)[0])


def _orientation(crop: np.ndarray) -> tuple[int, int]:
    """(step to the right, step down) in flat-index units of a ramp crop."""
    return int(crop[0, 1] - crop[0, 0]), int(crop[1, 0] - crop[0, 0])


def test_identity_only_gives_crops_as_recorded() -> None:
    sampler = CropSampler(regions_of(ramp_stack()), 8, IDENTITY, IDENTITY_ONLY, rng=np.random.default_rng(0))
    orientations = {_orientation(c[0]) for c in sampler.sample(200)}
    assert orientations == {(1, 48)}, orientations


def test_dihedral_uses_all_flips_and_rotations() -> None:
    sampler = CropSampler(regions_of(ramp_stack()), 8, IDENTITY, DIHEDRAL, rng=np.random.default_rng(0))
    orientations = Counter(_orientation(c[0]) for c in sampler.sample(800))
    expected = {(1, 48), (-1, 48), (1, -48), (-1, -48), (48, 1), (-48, 1), (48, -1), (-48, -1)}
    assert set(orientations) == expected, orientations
    assert min(orientations.values()) > 50, orientations


def test_row_preserving_orientations_only_reverse_the_row_order() -> None:
    sampler = CropSampler(regions_of(ramp_stack()), 8, IDENTITY, ("identity", "flip_y"), rng=np.random.default_rng(0))
    orientations = Counter(_orientation(c[0]) for c in sampler.sample(400))
    assert set(orientations) == {(1, 48), (1, -48)}, orientations
    assert min(orientations.values()) > 150, orientations


def test_crops_are_normalised() -> None:
    regions = regions_of(labelled_stack("a.tif", 1, 10))
    batch = CropSampler(regions, 8, Normalisation(offset=4.0, scale=2.0), IDENTITY_ONLY, np.random.default_rng(0)).sample(3)
    assert batch.shape == (3, 1, 8, 8) and batch.dtype == np.float32, (batch.shape, batch.dtype)
    assert np.all(batch == 3.0), np.unique(batch)


def test_too_small_frames_error_names_the_file_and_sizes() -> None:
    stack = FakeStack(Path("img.tif"), np.zeros((12, 40, 40)))
    train, _ = split_train_val([stack], 0.1, np.random.default_rng(0))
    with pytest.raises(InputError) as err:
        CropSampler(train, 64, IDENTITY, IDENTITY_ONLY, rng=np.random.default_rng(0))
    assert str(err.value) == "img.tif: frames are 40x40 but the patch size is 64; use --patch-size 32 or larger images"


def test_frames_are_read_once_while_they_fit_the_cache() -> None:
    stack = labelled_stack("a.tif", 12, 0)
    CropSampler(regions_of(stack), 8, IDENTITY, IDENTITY_ONLY, np.random.default_rng(0)).sample(500)
    assert stack.reads == 12, stack.reads
    uncached = labelled_stack("b.tif", 12, 0)
    CropSampler(regions_of(uncached), 8, IDENTITY, IDENTITY_ONLY, np.random.default_rng(0), cache_bytes=0).sample(500)
    assert uncached.reads == 500, uncached.reads


def test_validation_batches_are_fixed_for_a_seed() -> None:
    _, val = split_train_val([ramp_stack(200, 120)], 0.1, np.random.default_rng(0), patch_size=16)
    first = validation_batches(val, 16, 4, IDENTITY, 3, np.random.default_rng(7))
    again = validation_batches(val, 16, 4, IDENTITY, 3, np.random.default_rng(7))
    assert len(first) == 3 and first[0].shape == (4, 1, 16, 16), (len(first), first[0].shape)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    rows = first[0][:, 0, 0, 0].astype(int) // 120
    assert rows.min() >= val[0].rows.start, "a validation crop left the validation strip"
