"""Image-quality metrics: PSNR (plain and affine-fitted), SSIM and consecutive-frame similarity.

Every function accepts one 2-D image or a stack ``(N, H, W)``. For stacks the metric is
computed per frame and averaged over frames (so one bright frame cannot dominate), and the
default data range is taken per frame from the truth.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Gaussian window of SSIM (Wang et al. 2004): sigma 1.5 px, truncated at 3.5 sigma (11x11).
SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5
_SSIM_RADIUS = int(_SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
_K1, _K2 = 0.01, 0.03


def _frames(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as float64 ``(N, H, W)``; 2-D images become one frame."""
    a = np.asarray(array, dtype=np.float64)
    if a.ndim == 2:
        return a[None]
    if a.ndim != 3:
        raise ValueError(f"{name} has shape {a.shape}; expected (H, W) or (N, H, W)")
    return a


def _pair(estimate: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    est, tru = _frames(estimate, "estimate"), _frames(truth, "truth")
    if est.shape != tru.shape:
        raise ValueError(f"estimate has shape {est.shape} but truth has shape {tru.shape}; they must match")
    return est, tru


def _range(frame: np.ndarray, data_range: float | None) -> float:
    return float(frame.max() - frame.min()) if data_range is None else float(data_range)


def _psnr_frame(est: np.ndarray, tru: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((est - tru) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * np.log10(data_range**2 / mse)


def psnr(estimate: np.ndarray, truth: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, averaged over frames for stacks.

    ``data_range`` defaults to ``truth.max() - truth.min()`` of each frame.
    """
    est, tru = _pair(estimate, truth)
    return float(np.mean([_psnr_frame(e, t, _range(t, data_range)) for e, t in zip(est, tru)]))


def _affine_fit_frame(est: np.ndarray, tru: np.ndarray) -> np.ndarray:
    centred = est - est.mean()
    var = float(np.mean(centred**2))
    a = float(np.mean(centred * (tru - tru.mean()))) / var if var > 0 else 0.0
    return a * centred + tru.mean()


def affine_fit(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``a * estimate + b`` with ``a, b`` fitted to ``truth`` by least squares, per frame (float64)."""
    est, tru = _pair(estimate, truth)
    fitted = np.stack([_affine_fit_frame(e, t) for e, t in zip(est, tru)])
    return fitted.reshape(np.shape(estimate))


def affine_psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    """PSNR after the least-squares affine fit of ``estimate`` to ``truth`` (per frame, averaged).

    Invariant to ``a * estimate + b`` (a != 0), so a denoiser is not penalised for an
    offset or gain it cannot know. The data range is that of the truth (per frame).
    """
    est, tru = _pair(estimate, truth)
    return psnr(affine_fit(est, tru), tru)


def _ssim_map(x: np.ndarray, y: np.ndarray, c1: float, c2: float) -> np.ndarray:
    """SSIM map of two float64 frames with a Gaussian window, border of one radius removed."""

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, SSIM_SIGMA, truncate=_SSIM_TRUNCATE, mode="reflect")

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * cxy + c2)
    den = (mx * mx + my * my + c1) * (vx + vy + c2)
    r = _SSIM_RADIUS
    return (num / den)[r:-r, r:-r]


def _check_ssim_size(shape: tuple[int, ...]) -> None:
    side = 2 * _SSIM_RADIUS + 1
    if min(shape[-2:]) <= side:
        raise ValueError(f"SSIM needs frames larger than its {side}x{side} window; got {shape[-2:]}")


def ssim(estimate: np.ndarray, truth: np.ndarray, data_range: float | None = None) -> float:
    """Structural similarity (Wang et al., IEEE TIP 2004) with a Gaussian window (sigma 1.5).

    Matches ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``. Stacks: per-frame SSIM averaged over frames.
    ``data_range`` defaults to the range of each truth frame.
    """
    est, tru = _pair(estimate, truth)
    _check_ssim_size(tru.shape)
    values = []
    for e, t in zip(est, tru):
        span = _range(t, data_range)
        values.append(_ssim_map(e, t, (_K1 * span) ** 2, (_K2 * span) ** 2).mean())
    return float(np.mean(values))


def css(stack: np.ndarray) -> float:
    """Consecutive-frame structural similarity: mean SSIM between frames n and n+1.

    The no-ground-truth quality measure of Noise2Atom (Wang et al., Applied Microscopy 50:23,
    2020). The whole stack is first scaled to [0, 1] with its own min and max (one affine map
    for all frames, so a flicker in brightness counts), then SSIM uses C1 = 1e-4, C2 = 9e-4.
    A constant stack scores 1.
    """
    frames = _frames(stack, "stack")
    if len(frames) < 2:
        raise ValueError(f"CSS needs at least 2 frames; got {len(frames)}")
    _check_ssim_size(frames.shape)
    low, high = frames.min(), frames.max()
    if high == low:
        return 1.0
    scaled = (frames - low) / (high - low)
    values = [_ssim_map(a, b, 1e-4, 9e-4).mean() for a, b in zip(scaled[:-1], scaled[1:])]
    return float(np.mean(values))
