"""Noise direction from the data alone: rows, columns or neither, on images with real structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from frames import Frames
from selfden.errors import SelfdenError
from selfden.noise_analysis import NoiseCorrelation, measure_noise_correlation
from selfden.noise_analysis_plot import plot_noise_correlation


def structured_images(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Blobs with sharp edges plus smooth shading, in [0, 1]: real structure, not flat background."""
    smooth = np.stack([gaussian_filter(rng.random((size, size)), 8) for _ in range(n)])
    blobs = np.stack([gaussian_filter(rng.random((size, size)), 2) for _ in range(n)]) > 0.52
    images = 0.6 * blobs + 4.0 * (smooth - smooth.mean())
    return (images - images.min()) / (images.max() - images.min())


def blurred_noise(shape: tuple[int, ...], rng: np.random.Generator, axis: int | None, sigma: float = 0.1) -> np.ndarray:
    noise = rng.normal(0.0, 1.0, shape)
    if axis is not None:
        noise = gaussian_filter1d(noise, 1.5, axis=axis)
    return sigma * noise / noise.std()


@pytest.mark.parametrize(("axis", "expected"), [(-1, "x"), (-2, "y"), (None, "none")])
def test_direction_follows_the_axis_the_noise_is_correlated_along(axis: int | None, expected: str) -> None:
    rng = np.random.default_rng(0)
    clean = structured_images(6, 96, rng)
    result = measure_noise_correlation([Frames(clean + blurred_noise(clean.shape, rng, axis))])
    assert result.direction == expected, result.reason
    assert result.lags[:3] == (0, 1, 2) and result.acf_x[0] == pytest.approx(1.0)
    assert "along x" in result.reason and "along y" in result.reason


def test_per_row_offsets_read_as_row_correlation() -> None:
    rng = np.random.default_rng(1)
    clean = structured_images(4, 64, rng)
    noisy = rng.poisson(clean * 20) / 20 + rng.normal(0, 0.1, (4, 64, 1))
    result = measure_noise_correlation([Frames(noisy)])
    assert result.direction == "x", result.reason
    # An offset is shared by the whole row: its correlation does not decay with the lag.
    assert min(result.acf_x[1:20]) > 0.7 * result.acf_x[1] > 0.15, result.acf_x
    assert max(np.abs(result.acf_y[1:20])) < 0.1, result.acf_y


def test_frames_are_sampled_across_several_stacks() -> None:
    rng = np.random.default_rng(2)
    stacks = [Frames(structured_images(3, 48, rng) + blurred_noise((3, 48, 48), rng, -2)) for _ in range(3)]
    result = measure_noise_correlation(stacks, max_frames=4)
    assert result.direction == "y" and "(4 frames)" in result.reason, result.reason


def test_tiny_frames_are_refused_with_their_size() -> None:
    with pytest.raises(SelfdenError, match="3x40"):
        measure_noise_correlation([Frames(np.zeros((1, 3, 40)))])


def test_plot_is_written(tmp_path: Path) -> None:
    result = NoiseCorrelation((1.0, 0.5, 0.2), (1.0, 0.0, 0.0), (0, 1, 2), "x", "noise is correlated along rows (x)")
    out = plot_noise_correlation(result, tmp_path / "sub" / "acf.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["acf.png"]


@pytest.mark.parametrize(("method", "axis", "warned"), [("cae", -1, True), ("dnnet", -2, True), ("cae", None, False),
                                                        ("cosdd", -1, False)])
def test_training_warns_when_a_method_assuming_independent_noise_meets_correlated_noise(
    method: str, axis: int | None, warned: bool, tmp_path: Path
) -> None:
    import tifffile

    from selfden.runs.plan import new_run_config, plan_run

    rng = np.random.default_rng(2)
    clean = structured_images(4, 96, rng)
    path = tmp_path / "noisy.tif"
    tifffile.imwrite(path, (clean + blurred_noise(clean.shape, rng, axis)).astype(np.float32), photometric="minisblack")
    plan = plan_run(new_run_config(method, [path], {}, {}, {"device": "cpu", "max_steps": 1}, 0))
    warning = next((note.text for note in plan.notes if note.level == "warning"), None)
    assert (warning is not None) == warned, warning
    if warned:
        assert f"{method} assumes pixel-independent noise" in warning and "cosdd" in warning
