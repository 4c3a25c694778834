"""Test-time self-ensemble (--tta): orientations, their inverses, and what the average means."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from selfden.errors import ModelError  # noqa: E402
from selfden.inference.loading import load_predictor, trained_orientations  # noqa: E402
from selfden.inference.running import denoise_files  # noqa: E402
from selfden.inference.sampling import mixture_mean_and_std  # noqa: E402
from selfden.geometry.orientations import DIHEDRAL, transform, untransform  # noqa: E402
from test_predictor import OFFSET, SCALE, mean3_reflect, noisy, write_model  # noqa: E402
from test_sampling import smooth_image, write_sampler_model  # noqa: E402


def test_each_orientation_is_undone_by_its_inverse_on_non_square_stacks() -> None:
    image = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    for name in DIHEDRAL:
        assert np.array_equal(untransform(transform(image, name), name), image), name


def test_the_eight_orientations_are_distinct() -> None:
    image = np.arange(16, dtype=np.float32).reshape(4, 4)
    seen = {transform(image, name).tobytes() for name in DIHEDRAL}
    assert len(seen) == 8


def test_tta_of_a_dihedral_symmetric_model_equals_its_plain_output(tmp_path: Path) -> None:
    model = write_model(tmp_path / "mean3", orientations=list(DIHEDRAL))
    image = noisy((70, 45))
    plain = load_predictor(model, tile_size=32).predict(image).image
    ensembled = load_predictor(model, tile_size=32, tta=True).predict(image).image
    assert np.abs(ensembled - plain).max() < 1e-4 * SCALE


def test_tta_averages_the_model_over_all_eight_orientations(tmp_path: Path) -> None:
    # The model copies each pixel's left neighbour; turned and flipped, "left" becomes each of the
    # four neighbours twice, so the ensemble is the mean of the four neighbours.
    model = write_model(tmp_path / "left", kind="left", orientations=list(DIHEDRAL))
    image = noisy((40, 30))
    result = load_predictor(model, tile_size=64, tta=True).predict(image).image
    up, down = image[:-2, 1:-1], image[2:, 1:-1]
    left, right = image[1:-1, :-2], image[1:-1, 2:]
    expected = (up + down + left + right) / 4
    assert np.abs(result[1:-1, 1:-1] - expected).max() < 1e-3
    plain = load_predictor(model, tile_size=64).predict(image).image
    assert np.abs(plain[1:-1, 1:-1] - left).max() < 1e-3


def test_packages_of_earlier_versions_list_their_orientations_as_symmetries(tmp_path: Path) -> None:
    model = write_model(tmp_path / "old", kind="left", orientations=list(DIHEDRAL))
    rdf = (model / "rdf.yaml").read_text()
    (model / "rdf.yaml").write_text(rdf.replace("    orientations:\n", "    symmetries:\n"))
    assert "symmetries" in (model / "rdf.yaml").read_text()
    assert trained_orientations(model) == DIHEDRAL
    image = noisy((40, 30))
    new = write_model(tmp_path / "new", kind="left", orientations=list(DIHEDRAL))
    expected = load_predictor(new, tile_size=64, tta=True).predict(image).image
    assert np.array_equal(load_predictor(model, tile_size=64, tta=True).predict(image).image, expected)


def test_tta_on_a_model_trained_without_flips_is_refused(tmp_path: Path) -> None:
    model = write_model(tmp_path / "plain")
    with pytest.raises(ModelError, match="without flips or rotations"):
        load_predictor(model, tta=True)


def test_mixture_of_orientations_has_the_law_of_total_variance() -> None:
    # two equally likely posteriors N(0, 1) and N(2, 1): mean 1, variance 1 + 1
    outputs = [np.stack([np.full((3, 3), m, np.float32), np.ones((3, 3), np.float32)]) for m in (0.0, 2.0)]
    mean, std = mixture_mean_and_std(iter(outputs))
    assert np.allclose(mean, 1.0) and np.allclose(std, np.sqrt(2.0))


def test_tta_with_posterior_samples_keeps_mean_and_spread(tmp_path: Path) -> None:
    folder = write_sampler_model(tmp_path / "cosdd", orientations=list(DIHEDRAL))
    image = smooth_image((32, 32))
    with load_predictor(folder, samples=50, std=True, tile_size=64, tta=True) as predictor:
        prediction = predictor.predict(image)
    mean, std = prediction.image, prediction.std
    expected = mean3_reflect((image - OFFSET) / SCALE) * SCALE + OFFSET
    inner = (slice(2, -2), slice(2, -2))
    assert np.abs(mean - expected)[inner].max() < 0.05 * SCALE
    assert np.median(std[inner]) == pytest.approx(0.2 * SCALE, rel=0.1)  # SIGMA / 3 of the toy sampler


def test_denoise_files_with_tta_writes_the_ensemble_of_every_frame(tmp_path: Path) -> None:
    import tifffile

    model = write_model(tmp_path / "left", kind="left", orientations=list(DIHEDRAL))
    stack = noisy((3, 20, 24))
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, stack, photometric="minisblack")
    written = denoise_files(model, [source], tmp_path / "out.tif", tta=True)
    predictor = load_predictor(model, tta=True)
    expected = np.stack([predictor.predict(frame).image for frame in stack])
    assert np.allclose(tifffile.imread(written[0]), expected)
