"""Specification of selfden.metrics: PSNR, affine PSNR, SSIM and CSS."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from selfden.metrics import affine_fit, affine_psnr, css, psnr, ssim


def ramp(size: int = 64) -> np.ndarray:
    """A smooth test image spanning exactly [0, 1]."""
    y, x = np.mgrid[:size, :size] / (size - 1)
    return (0.5 * x + 0.5 * y * y).astype(np.float64)


def textured(seed: int = 0, size: int = 64) -> np.ndarray:
    image = gaussian_filter(np.random.default_rng(seed).standard_normal((size, size)), 2.0)
    return (image - image.min()) / (image.max() - image.min())


def test_psnr_of_a_known_error() -> None:
    truth = ramp()
    assert psnr(truth + 0.1, truth) == pytest.approx(20.0, abs=1e-9)
    assert psnr(truth + 0.1, truth, data_range=10.0) == pytest.approx(40.0, abs=1e-9)
    assert psnr(truth, truth) == np.inf


def test_psnr_of_a_stack_averages_the_frames() -> None:
    truth = np.stack([ramp(), ramp()])
    estimate = truth + np.array([0.1, 0.01])[:, None, None]
    assert psnr(estimate, truth) == pytest.approx(30.0, abs=1e-9)


def test_affine_psnr_is_invariant_to_gain_and_offset() -> None:
    truth = textured(0)
    estimate = truth + np.random.default_rng(1).normal(0, 0.05, truth.shape)
    base = affine_psnr(estimate, truth)
    assert affine_psnr(3.0 * estimate - 7.0, truth) == pytest.approx(base, abs=1e-9)
    assert affine_psnr(-0.5 * estimate + 2.0, truth) == pytest.approx(base, abs=1e-9)
    assert base >= psnr(estimate, truth) - 1e-12, "the fit can only lower the error"


def test_affine_psnr_of_a_rescaled_truth_is_infinite() -> None:
    truth = textured(2)
    assert affine_psnr(4.0 * truth + 1.0, truth) > 200.0
    assert np.allclose(affine_fit(4.0 * truth + 1.0, truth), truth)


def test_affine_psnr_of_a_constant_estimate_is_the_truth_variance() -> None:
    truth = textured(3)
    expected = 10 * np.log10(1.0 / truth.var())
    assert affine_psnr(np.zeros_like(truth), truth) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("noise", [0.01, 0.1, 0.5])
def test_ssim_matches_scikit_image(noise: float) -> None:
    metrics = pytest.importorskip("skimage.metrics", reason="reference SSIM from scikit-image")
    truth = textured(4, size=96)
    estimate = truth + np.random.default_rng(5).normal(0, noise, truth.shape)
    reference = metrics.structural_similarity(
        estimate, truth, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert abs(ssim(estimate, truth, data_range=1.0) - reference) < 1e-3, (ssim(estimate, truth, 1.0), reference)


def test_ssim_of_identical_images_is_one_and_stacks_average() -> None:
    truth = np.stack([textured(6), textured(7)])
    assert ssim(truth, truth) == pytest.approx(1.0, abs=1e-12)
    noisy = truth + np.random.default_rng(8).normal(0, 0.2, truth.shape)
    per_frame = [ssim(noisy[i], truth[i]) for i in range(2)]
    assert ssim(noisy, truth) == pytest.approx(np.mean(per_frame), abs=1e-12)


def test_css_of_identical_frames_is_one() -> None:
    frame = textured(9)
    assert css(np.stack([frame] * 4)) == pytest.approx(1.0, abs=1e-12)
    assert css(np.full((3, 32, 32), 5.0)) == 1.0


def test_css_of_independent_noise_frames_is_near_zero() -> None:
    stack = np.random.default_rng(10).uniform(0, 100, size=(8, 64, 64))
    assert abs(css(stack)) < 0.05, css(stack)


def test_css_ignores_a_global_gain_and_offset() -> None:
    frames = np.stack([textured(11), textured(11) + 0.05 * textured(12)])
    assert css(3.0 * frames + 100.0) == pytest.approx(css(frames), abs=1e-9)


def test_metrics_refuse_bad_shapes() -> None:
    with pytest.raises(ValueError, match="must match"):
        psnr(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(ValueError, match="at least 2 frames"):
        css(np.zeros((1, 32, 32)))
    with pytest.raises(ValueError, match="window"):
        ssim(np.zeros((8, 8)), np.ones((8, 8)))
