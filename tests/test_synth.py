"""Specification of selfden.synth: clean simulators, noise models and suites with ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from selfden import synth
from selfden.metrics import affine_psnr, css
from selfden.synth import (
    FontMissing,
    SynthSet,
    add_poisson_gaussian_noise,
    random_atom_scene,
    render_atoms,
    save_synth_set,
)


def autocorrelation(noise: np.ndarray, lag: int, axis: int) -> float:
    """Correlation of the noise with itself shifted by ``lag`` pixels along ``axis``."""
    noise = noise - noise.mean()
    length = noise.shape[axis]
    a = np.take(noise, range(length - lag), axis=axis)
    b = np.take(noise, range(lag, length), axis=axis)
    return float((a * b).mean() / noise.var())


@pytest.fixture(scope="module")
def stripe() -> SynthSet:
    pytest.importorskip("skimage", reason="the stripe suite's clean images come from scikit-image")
    return synth.stripe_suite(rng=np.random.default_rng(0))


@pytest.fixture(scope="module")
def atoms() -> SynthSet:
    return synth.atoms_suite(rng=np.random.default_rng(0))


def require_font() -> None:
    if not synth.WQY_FONT.is_file():
        pytest.skip(f"{synth.WQY_FONT} missing: install the Debian package fonts-wqy-zenhei")


# --- atoms ----------------------------------------------------------------------------------------


def test_atom_scenes_hold_75_to_150_atoms_on_a_jittered_8px_lattice() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        scene = random_atom_scene(rng)
        assert 75 <= len(scene.positions) <= 150, len(scene.positions)
        offsets = scene.positions - (np.floor(scene.positions / 8) + 0.5) * 8
        assert np.abs(offsets).max() <= 1.0, np.abs(offsets).max()
        assert 1.0 <= scene.sigma**2 <= 10.0, scene.sigma


@pytest.mark.parametrize("sigma", [1.5, 3.0])
def test_peak_width_follows_the_sigma_option(sigma: float) -> None:
    scene = random_atom_scene(np.random.default_rng(1), spacing=32.0, sigma_range=(sigma, sigma))
    image = render_atoms(scene, size=128)
    centres = scene.positions - 64  # canvas 256, central crop 128
    inside = centres[np.all((centres > 4 * sigma) & (centres < 127 - 4 * sigma), axis=1)]
    yy, xx = np.mgrid[:128, :128]
    for cy, cx in inside:
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        window = r2 < (4 * sigma) ** 2
        measured = np.sqrt((image[window] * r2[window]).sum() / image[window].sum() / 2)
        assert abs(measured - sigma) < 0.05 * sigma, (measured, sigma)
    assert len(inside) > 3, "too few atoms to measure"


def test_atom_images_are_in_unit_range_and_deterministic() -> None:
    first = synth.simulate_atoms(np.random.default_rng(3))
    again = synth.simulate_atoms(np.random.default_rng(3))
    assert first.shape == (128, 128) and first.dtype == np.float32
    assert first.min() == 0.0 and first.max() == 1.0, (first.min(), first.max())
    assert np.array_equal(first, again)


def test_atoms_suite_matches_the_benchmark_noise_level(atoms: SynthSet) -> None:
    assert atoms.noisy.shape == atoms.clean.shape == (200, 128, 128)
    assert atoms.noisy.dtype == atoms.clean.dtype == np.float32
    value = affine_psnr(atoms.noisy, atoms.clean)
    assert 21.4 < value < 22.4, f"noisy affine PSNR {value:.2f} dB, benchmark table 21.90"


def test_atoms_noise_has_per_row_offsets(atoms: SynthSet) -> None:
    row_means = (atoms.noisy - atoms.clean).mean(axis=-1)
    assert 0.09 < row_means.std() < 0.11, row_means.std()
    assert abs(autocorrelation(atoms.noisy - atoms.clean, 1, axis=-2)) < 0.05


def test_drifting_series_keeps_consecutive_frames_similar() -> None:
    series = synth.atoms_suite(20, 64, np.random.default_rng(0), frames_per_specimen=10, drift_px=0.2)
    independent = synth.atoms_suite(20, 64, np.random.default_rng(0))
    assert css(series.clean) > 0.8 > css(independent.clean), (css(series.clean), css(independent.clean))


# --- natural images: stripe and Poisson-Gaussian ----------------------------------------------------


def test_stripe_noise_is_correlated_along_x_and_not_y(stripe: SynthSet) -> None:
    noise = stripe.noisy - stripe.clean
    for lag in (1, 2, 3):
        along_x, along_y = autocorrelation(noise, lag, axis=-1), autocorrelation(noise, lag, axis=-2)
        assert along_x > 0.2 and abs(along_y) < 0.02, (lag, along_x, along_y)


def test_stripe_noisy_psnr_is_in_the_measured_range(stripe: SynthSet) -> None:
    assert stripe.noisy.shape == (64, 128, 128) and stripe.noisy.dtype == np.float32
    assert 0.0 <= stripe.clean.min() and stripe.clean.max() <= 1.0
    value = affine_psnr(stripe.noisy, stripe.clean)
    assert 18.5 < value < 20.0, f"noisy affine PSNR {value:.2f} dB (recipe measured 19.3)"


def test_suites_are_deterministic_given_the_seed() -> None:
    a = synth.atoms_suite(4, 64, np.random.default_rng(9))
    b = synth.atoms_suite(4, 64, np.random.default_rng(9))
    assert np.array_equal(a.noisy, b.noisy) and np.array_equal(a.clean, b.clean)


def test_poisson_gaussian_noise_variance_follows_the_signal() -> None:
    rng = np.random.default_rng(0)
    for level in (0.2, 0.8):
        clean = np.full((200, 200), level)
        noise = add_poisson_gaussian_noise(clean, rng, peak=20.0, read_sigma=0.03) - clean
        expected = level / 20.0 + 0.03**2
        assert abs(noise.var() / expected - 1) < 0.05, (level, noise.var(), expected)
        assert abs(autocorrelation(noise, 1, axis=-1)) < 0.02


def test_poisson_gaussian_suite_uses_the_stripe_clean_images() -> None:
    pytest.importorskip("skimage", reason="the suite's clean images come from scikit-image")
    pg = synth.poisson_gaussian_suite(8, 64, np.random.default_rng(0))
    st = synth.stripe_suite(8, 64, np.random.default_rng(0))
    assert np.array_equal(pg.clean, st.clean)
    assert pg.name == "poisson_gaussian" and pg.noisy.shape == (8, 64, 64)


# --- CJK glyphs --------------------------------------------------------------------------------------


def test_cjk_suite_renders_distinct_glyphs_with_heavy_noise() -> None:
    require_font()
    cjk = synth.cjk_suite(16, rng=np.random.default_rng(0))
    assert cjk.clean.shape == (16, 64, 64) and cjk.noisy.dtype == np.float32
    assert len({frame.tobytes() for frame in cjk.clean}) == 16, "glyphs repeat"
    assert cjk.clean.min() == 0.0 and cjk.clean.max() == 1.0
    assert np.allclose(cjk.noisy.max(axis=(1, 2)), 1.0) and cjk.noisy.min() >= 0.0
    assert affine_psnr(cjk.noisy, cjk.clean) < 12.0


def test_missing_font_is_reported_with_its_package(tmp_path: Path) -> None:
    with pytest.raises(FontMissing, match="fonts-wqy-zenhei"):
        synth.cjk_suite(4, rng=np.random.default_rng(0), font_path=tmp_path / "absent.ttc")


# --- SynthSet ----------------------------------------------------------------------------------------


def test_saved_sets_read_back_as_float32_stacks(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    data = synth.atoms_suite(3, 32, np.random.default_rng(0))
    noisy_path, clean_path = save_synth_set(data, tmp_path / "out")
    assert (noisy_path.name, clean_path.name) == ("atoms_noisy.tif", "atoms_clean.tif")
    for path, stack in ((noisy_path, data.noisy), (clean_path, data.clean)):
        back = tifffile.imread(path)
        assert back.dtype == np.float32 and np.array_equal(back, stack), path


def test_synth_set_refuses_mismatched_stacks() -> None:
    with pytest.raises(ValueError, match="must be equal"):
        SynthSet("x", np.zeros((2, 8, 8), np.float32), np.zeros((2, 8, 9), np.float32), "")
