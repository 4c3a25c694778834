"""Tiling: valid tile sizes, full coverage, reflect padding, exact stitching (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from selfden.geometry import tiles as tiling
from selfden.geometry.tiles import Stitcher, batched, read_tile, tile_image, valid_size

SHAPES = [(1, 1), (2, 7), (5, 3), (31, 37), (64, 64), (65, 33), (203, 157), (1000, 777)]


def mean3_reflect(image: np.ndarray) -> np.ndarray:
    """3x3 mean with numpy 'reflect' borders (a length-1 axis repeats its only pixel)."""
    padded = image
    for axis, length in enumerate(image.shape):
        widths = [(1, 1) if a == axis else (0, 0) for a in range(2)]
        padded = np.pad(padded, widths, mode="reflect" if length > 1 else "edge")
    height, width = image.shape
    return sum(padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)) / 9.0


def run_tiled(image: np.ndarray, network, **grid) -> np.ndarray:
    tiles = tile_image(image.shape, **grid)
    stitcher = Stitcher(image.shape)
    for group in batched(tiles, 3):
        for tile in group:
            stitcher.add(tile, network(read_tile(image, tile)))
    return stitcher.result()[0]


def test_valid_size_is_smallest_min_plus_multiple_of_step() -> None:
    assert valid_size(1, 16, 8) == 16
    assert valid_size(16, 16, 8) == 16
    assert valid_size(17, 16, 8) == 24
    assert valid_size(100, 64, 0) == 64  # fixed-size model


@pytest.mark.parametrize("shape", SHAPES)
def test_tiles_have_one_valid_network_size_and_cover_the_image(shape: tuple[int, int]) -> None:
    min_size, step, halo = 16, 8, 4
    tiles = tile_image(shape, tile_size=48, min_size=min_size, step=step, halo=halo)
    sizes = {tile.shape for tile in tiles}
    assert len(sizes) == 1, sizes
    for size in sizes.pop():
        assert size >= min_size and (size - min_size) % step == 0, size
    covered = np.zeros(shape)
    for tile in tiles:
        assert tile.weight.shape == covered[tile.place].shape
        assert (tile.weight > 0).all()
        covered[tile.place] += tile.weight
    assert (covered > 0).all(), f"uncovered pixels in {shape}"


@pytest.mark.parametrize("shape", [(203, 157), (1000, 777)])
def test_tile_origins_sit_on_the_size_step(shape: tuple[int, int]) -> None:
    tiles = tile_image(shape, tile_size=64, min_size=16, step=16, halo=8)
    assert len(tiles) > 4
    for tile in tiles:
        for axis in tile.place:
            assert axis.start % 16 == 0, tile.place


def test_image_smaller_than_one_tile_gets_one_smallest_valid_tile() -> None:
    tiles = tile_image((5, 3), tile_size=256, min_size=16, step=8, halo=4)
    assert len(tiles) == 1
    assert tiles[0].shape == (16, 16)
    assert tiles[0].place == (slice(0, 5), slice(0, 3))


def test_read_tile_reflects_like_numpy_pad() -> None:
    image = np.arange(7 * 9, dtype=np.float32).reshape(7, 9)
    tiles = tile_image(image.shape, tile_size=8, min_size=8, step=4, halo=2)
    padded = np.pad(image, 20, mode="reflect")
    for tile in tiles:
        (ry, rx) = tile.read
        expected = padded[ry.start + 20 : ry.stop + 20, rx.start + 20 : rx.stop + 20]
        np.testing.assert_array_equal(read_tile(image, tile), expected, err_msg=str(tile.read))


@pytest.mark.parametrize("shape", SHAPES[:-1])
def test_identity_network_stitches_back_the_exact_image(shape: tuple[int, int]) -> None:
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    result = run_tiled(image, lambda tile: tile, tile_size=16, min_size=8, step=8, halo=4)
    np.testing.assert_allclose(result, image, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(203, 157), (5, 3), (40, 1)])
def test_tiled_translation_equivariant_filter_matches_whole_image(shape: tuple[int, int]) -> None:
    image = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    result = run_tiled(image, mean3_reflect, tile_size=24, min_size=16, step=8, halo=4, overlap=6)
    whole = mean3_reflect(image)
    assert np.abs(result - whole).max() < 1e-5, np.abs(result - whole).max()


def test_blend_weights_make_a_partition_of_unity_where_cores_overlap_by_the_ramp() -> None:
    tiles = tile_image((1, 96), tile_size=32, min_size=8, step=8, halo=0, overlap=8)
    total = np.zeros(96)
    for tile in tiles:
        total[tile.place[1]] += tile.weight_x
    assert len(tiles) > 1
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_stitcher_keeps_several_output_channels() -> None:
    image = np.random.default_rng(2).normal(size=(30, 20)).astype(np.float32)
    tiles = tile_image(image.shape, tile_size=8, min_size=8, step=8, halo=0)
    stitcher = Stitcher(image.shape, channels=2)
    for tile in tiles:
        data = read_tile(image, tile)
        stitcher.add(tile, np.stack([data, 2 * data]))
    result = stitcher.result()
    assert result.shape == (2, 30, 20)
    np.testing.assert_allclose(result[1], 2 * image, atol=1e-6)


def test_run_tiled_shares_batches_across_images_and_stitches_each_back() -> None:
    images = [np.random.default_rng(seed).normal(size=(45, 38)).astype(np.float32) for seed in range(3)]
    tiles = tile_image((45, 38), tile_size=24, min_size=16, step=8, halo=4, overlap=6)
    sizes: list[int] = []

    def network(batch: np.ndarray) -> np.ndarray:
        sizes.append(len(batch))
        return np.stack([mean3_reflect(tile)[None] for tile in batch])

    results = tiling.run_tiled(images, tiles, 5, network)
    assert sizes[0] == 5 and sum(sizes) == 3 * len(tiles), sizes
    for image, result in zip(images, results):
        assert np.abs(result[0] - mean3_reflect(image)).max() < 1e-5
