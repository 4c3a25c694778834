"""Atom peaks in user data, and the failure modes of atom denoisers (numpy + scipy only).

Noise2Atom (Wang et al., Applied Microscopy 50:23, 2020) learns what "clean" looks like from
simulated atoms, so the simulated peak width and spacing must match the data, and the paper
names two failure modes: inverted contrast (about one run in ten) and false atoms where the
background has a gradient. This module measures, compares and warns; it never raises on
odd data (a measurement that cannot be made is ``None``).

- Peak width: the autocorrelation of atoms with Gaussian profiles of sigma s is a Gaussian
  of variance 2 s^2. Only lags with a vertical component are used: shot noise is white
  (lag 0 only) and scan-line noise is constant along rows (lags with dy = 0 only), so these
  lags see the atoms and not the noise.
- Spacing: the median nearest-neighbour distance between peaks detected in the frame
  smoothed with that width. Compared with the same measurement on simulated images, so a
  sparse simulated lattice is judged by what it looks like, not by its lattice constant.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

log = logging.getLogger(__name__)

#: Simulated and measured peaks may differ by this factor before a warning.
TOLERANCE = 1.5
#: Output peaks on sloping background needed before judging false atoms; the share above which they warn.
MIN_BACKGROUND_PEAKS = 5
MAX_FALSE_ATOM_FRACTION = 0.3
_MAX_FRAMES = 16
_MAX_SIDE = 256


@dataclass(frozen=True)
class PeakMeasurement:
    """Peak sigma and nearest-neighbour spacing in px (None when they could not be measured)."""

    sigma: float | None
    spacing: float | None
    n_peaks: int
    n_frames: int


# --- frames ------------------------------------------------------------------------------------


def _frames(frames: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """Up to 16 evenly spaced frames as float64, centre-cropped to at most 256 px per side."""
    if isinstance(frames, np.ndarray) and frames.ndim == 2:
        frames = [frames]
    stack = [np.asarray(f, dtype=np.float64) for f in frames]
    picked = np.unique(np.linspace(0, len(stack) - 1, min(len(stack), _MAX_FRAMES)).round().astype(int))
    return [_centre_crop(stack[i]) for i in picked]


def _centre_crop(frame: np.ndarray) -> np.ndarray:
    if frame.ndim != 2:
        raise ValueError(f"frame of shape {frame.shape}: expected a 2-D image")
    y0, x0 = (max(0, (n - _MAX_SIDE) // 2) for n in frame.shape)
    return frame[y0 : y0 + _MAX_SIDE, x0 : x0 + _MAX_SIDE]


def _highpass(frame: np.ndarray) -> np.ndarray:
    """The frame minus its large-scale background (Gaussian of 1/8 of the frame side, >= 8 px)."""
    background_sigma = max(8.0, min(frame.shape) / 8.0)
    return frame - ndimage.gaussian_filter(frame, background_sigma, mode="reflect", truncate=3.0)


# --- peak width from the autocorrelation -----------------------------------------------------------


def _autocorrelation(frames: list[np.ndarray], radius: int) -> np.ndarray:
    """Mean unbiased autocorrelation of the high-passed frames for lags |dy|, |dx| <= radius."""
    total = np.zeros((2 * radius + 1, 2 * radius + 1))
    overlaps: dict[tuple[int, ...], np.ndarray] = {}
    for frame in frames:
        f = _highpass(frame)
        f -= f.mean()
        shape = [2 * n for n in f.shape]
        ac = np.fft.irfft2(np.abs(np.fft.rfft2(f, shape)) ** 2, shape)
        if f.shape not in overlaps:  # pixel pairs per lag: the same for every frame of a shape
            overlaps[f.shape] = np.fft.irfft2(np.abs(np.fft.rfft2(np.ones_like(f), shape)) ** 2, shape)
        ac = np.fft.fftshift(ac / np.maximum(overlaps[f.shape], 1.0))
        cy, cx = shape[0] // 2, shape[1] // 2
        total += ac[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
    return total / len(frames)


def _noise_free_profile(ac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean autocorrelation per squared lag r^2, over lags with dy != 0 (no white or row noise)."""
    radius = ac.shape[0] // 2
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    keep = dy != 0
    r2 = (dy**2 + dx**2)[keep]
    values = ac[keep]
    levels = np.unique(r2)
    return levels.astype(float), np.array([values[r2 == level].mean() for level in levels])


def _fit_sigma(r2: np.ndarray, profile: np.ndarray) -> float | None:
    """sigma from ``profile ~ A exp(-r^2 / (4 sigma^2))`` over the central peak (values >= 30 % of the first)."""
    if profile[0] <= 0:
        return None
    # the central peak ends where the profile stops falling or drops below 30 % of its first value
    stop = len(profile)
    for i in range(1, len(profile)):
        if profile[i] < 0.3 * profile[0] or profile[i] >= profile[i - 1]:
            stop = i
            break
    if stop < 2:
        # a single point: the peak is narrower than a pixel's lag, use the 30 % level as a bound
        return float(np.sqrt(r2[0] / (4.0 * np.log(1.0 / 0.3))))
    slope = np.polyfit(r2[:stop], np.log(profile[:stop]), 1)[0]
    return float(np.sqrt(-1.0 / (4.0 * slope))) if slope < 0 else None


def measure_sigma(frames: np.ndarray | Sequence[np.ndarray]) -> float | None:
    """Gaussian sigma (px) of the peaks in ``frames`` from their noise-free autocorrelation lags."""
    picked = _frames(frames)
    radius = max(3, min(min(f.shape) for f in picked) // 4)
    r2, profile = _noise_free_profile(_autocorrelation(picked, radius))
    return _fit_sigma(r2, profile)


# --- peaks and spacing -------------------------------------------------------------------------


def detect_peaks(frame: np.ndarray, sigma: float) -> np.ndarray:
    """(n, 2) positions (y, x) of local maxima of the frame smoothed with ``sigma`` that stand
    clearly above the background (median + 3 robust noise sigmas, and 5 % of the range)."""
    smooth = ndimage.gaussian_filter(_highpass(np.asarray(frame, dtype=np.float64)), sigma, mode="reflect")
    median = float(np.median(smooth))
    noise = 1.4826 * float(np.median(np.abs(smooth - median)))
    threshold = median + max(3.0 * noise, 0.05 * (float(np.percentile(smooth, 99.5)) - median))
    size = 2 * int(np.ceil(sigma)) + 1
    peaks = (smooth == ndimage.maximum_filter(smooth, size=size, mode="nearest")) & (smooth > threshold)
    return np.argwhere(peaks).astype(float)


def nearest_neighbour_spacing(positions: np.ndarray) -> float | None:
    """Median distance from each peak to its nearest neighbour (None for fewer than 3 peaks)."""
    if len(positions) < 3:
        return None
    distances, _ = cKDTree(positions).query(positions, k=2)
    return float(np.median(distances[:, 1]))


def measure_peaks(frames: np.ndarray | Sequence[np.ndarray], sigma: float | None = None) -> PeakMeasurement:
    """Peak sigma (autocorrelation; or the given ``sigma``) and median nearest-neighbour spacing."""
    picked = _frames(frames)
    sigma = measure_sigma(picked) if sigma is None else sigma
    if sigma is None:
        return PeakMeasurement(None, None, 0, len(picked))
    spacings, n_peaks = [], 0
    for frame in picked:
        positions = detect_peaks(frame, sigma)
        n_peaks += len(positions)
        if (spacing := nearest_neighbour_spacing(positions)) is not None:
            spacings.append(spacing)
    return PeakMeasurement(sigma, float(np.median(spacings)) if spacings else None, n_peaks, len(picked))


# --- do the simulated atoms match the data? -------------------------------------------------------


def _simulated_frames(
    spacing: float, sigma: tuple[float, float], shape: tuple[int, int], occupancy: tuple[float, float] | None, n: int
) -> np.ndarray:
    from selfden.synth import random_atom_scene, render_atoms

    rng = np.random.default_rng(0)
    side = min(max(shape), _MAX_SIDE)
    canvas = 2 * side
    sites = max(int(canvas // spacing), 1) ** 2
    fill = occupancy or (75 / 1024, 150 / 1024)  # the paper's 75-150 atoms on 32 x 32 sites
    count = (max(1, round(fill[0] * sites)), max(1, round(fill[1] * sites)))
    scenes = [random_atom_scene(rng, canvas, spacing, sigma, count) for _ in range(n)]
    return np.stack([render_atoms(scene, side) for scene in scenes])


def check_atom_options(
    stacks: Sequence[object] | np.ndarray,
    spacing: float,
    sigma: float | tuple[float, float],
    occupancy: tuple[float, float] | None = None,
) -> list[str]:
    """Warnings when atoms simulated with ``spacing``/``sigma`` look unlike the peaks in the data.

    ``stacks``: image stacks (``.frame(i)``, ``len()``) or an array ``(N, H, W)`` / ``(H, W)``.
    Widths and nearest-neighbour spacings are measured the same way on the data and on
    simulated images (at both ends of a sigma range); a factor above 1.5 outside what the
    options simulate gives a warning naming the option to change.
    """
    frames = _sample_frames(stacks)
    if not frames:
        return []
    low, high = (float(sigma), float(sigma)) if np.isscalar(sigma) else (float(sigma[0]), float(sigma[1]))
    shape = frames[0].shape
    measured = measure_peaks(frames)
    narrow = measure_peaks(_simulated_frames(spacing, (low, low), shape, occupancy, 8))
    wide = measure_peaks(_simulated_frames(spacing, (high, high), shape, occupancy, 8))
    typical = measure_peaks(_simulated_frames(spacing, (low, high), shape, occupancy, 8))
    log.info("atom peaks: data %s; simulated %s (sigma %g), %s (sigma %g)", measured, narrow, low, wide, high)
    if measured.sigma is None or narrow.sigma is None or wide.sigma is None:
        return ["could not measure atom peak widths in the training data (no peaks stand out of the noise); "
                "check --atom-sigma and --atom-spacing against an averaged or smoothed frame by eye"]
    return [w for w in (_sigma_warning(measured.sigma, narrow.sigma, wide.sigma, low, high),
                        _spacing_warning(measured.spacing, typical.spacing, spacing)) if w]


def _sigma_warning(measured: float, narrow: float, wide: float, low: float, high: float) -> str | None:
    if narrow / TOLERANCE <= measured <= wide * TOLERANCE:
        return None
    reference, option = (narrow, low) if measured < narrow else (wide, high)
    return (
        f"simulated atom peaks (atom_sigma {low:g}-{high:g} px, measured widths {narrow:.2f}-{wide:.2f} px) "
        f"differ from the peaks in the data (measured width {measured:.2f} px) by more than x{TOLERANCE:g}; "
        f"set --atom-sigma to about {measured / reference * option:.2g}"
    )


def _spacing_warning(measured: float | None, simulated: float | None, spacing: float) -> str | None:
    if measured is None or simulated is None or max(measured, simulated) / min(measured, simulated) <= TOLERANCE:
        return None
    return (
        f"simulated atoms (atom_spacing {spacing:g} px) lie {simulated:.1f} px from their nearest neighbour, "
        f"the peaks in the data {measured:.1f} px: more than x{TOLERANCE:g} apart; "
        f"set --atom-spacing to about {measured / simulated * spacing:.2g}"
    )


def _sample_frames(stacks: Sequence[object] | np.ndarray) -> list[np.ndarray]:
    """Up to 16 frames spread over all stacks (arrays or ImageStack-likes)."""
    if isinstance(stacks, np.ndarray):
        return _frames(stacks)
    every = [(stack, i) for stack in stacks for i in range(len(stack))]  # type: ignore[arg-type]
    picked = np.unique(np.linspace(0, len(every) - 1, min(len(every), _MAX_FRAMES)).round().astype(int)) if every else []
    return [_centre_crop(np.asarray(every[k][0].frame(every[k][1]), dtype=np.float64)) for k in picked]  # type: ignore[attr-defined]


# --- failure modes of the denoised output -----------------------------------------------------------


def _pairs(noisy: np.ndarray, denoised: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(noisy, dtype=np.float64), np.asarray(denoised, dtype=np.float64)
    a, b = (a[None] if a.ndim == 2 else a), (b[None] if b.ndim == 2 else b)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"noisy {a.shape} and denoised {b.shape} must be equal (H, W) or (N, H, W) arrays")
    return a, b


def contrast_correlation(noisy: np.ndarray, denoised: np.ndarray, smoothing: float = 2.0) -> float:
    """Median over frames of the correlation between the output and the smoothed input."""
    a, b = _pairs(noisy, denoised)
    values = []
    for n, d in zip(a, b):
        n = ndimage.gaussian_filter(n, smoothing)
        if n.std() > 0 and d.std() > 0:
            values.append(float(np.corrcoef(n.ravel(), d.ravel())[0, 1]))
    return float(np.median(values)) if values else 0.0


def detect_inverted_contrast(noisy: np.ndarray, denoised: np.ndarray) -> str | None:
    """A warning when the output is bright where the input is dim (negative correlation)."""
    r = contrast_correlation(noisy, denoised)
    return None if r >= 0 else inverted_contrast_message(r)


def inverted_contrast_message(r: float) -> str:
    """The warning for an output whose correlation with the input is ``r`` < 0."""
    return (
        f"inverted contrast: the denoised output correlates negatively with the input (r = {r:.2f}); "
        "its atoms are dark and its background bright. Noise2Atom does this in about one run in ten: "
        "train again with another --seed"
    )


def local_peak_contrast(noisy: np.ndarray, positions: np.ndarray, sigma: float) -> np.ndarray:
    """Input evidence for a peak at each position, in units of its noise: the input smoothed
    with ``sigma`` at the position minus its mean on a ring of radius 3 sigma around it.
    A linear background gradient cancels; a real atom does not."""
    smooth = ndimage.gaussian_filter(np.asarray(noisy, dtype=np.float64), sigma, mode="reflect")
    radius = 3.0 * sigma
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    ring = np.stack([np.sin(angles), np.cos(angles)], axis=1) * radius

    def contrast_at(points: np.ndarray) -> np.ndarray:
        centre = ndimage.map_coordinates(smooth, points.T, order=1, mode="nearest")
        around = [ndimage.map_coordinates(smooth, (points + offset).T, order=1, mode="nearest") for offset in ring]
        return centre - np.mean(around, axis=0)

    # the noise of that contrast: its spread over a grid covering the frame (robust to the atoms)
    grid = np.stack(np.meshgrid(*(np.arange(2 * sigma, n - 2 * sigma, max(1.0, sigma)) for n in smooth.shape), indexing="ij"), -1)
    reference = contrast_at(grid.reshape(-1, 2))
    noise = 1.4826 * float(np.median(np.abs(reference - np.median(reference)))) or float(reference.std()) or 1.0
    return contrast_at(np.asarray(positions, dtype=float).reshape(-1, 2)) / noise


def false_atom_fraction(noisy: np.ndarray, denoised: np.ndarray, sigma: float) -> tuple[float, int, int]:
    """(fraction, unsupported, peaks) over all frames: output peaks on dim, sloping background
    whose input shows no local peak (contrast below 1 noise unit)."""
    a, b = _pairs(noisy, denoised)
    unsupported = total = 0
    for n, d in zip(a, b):
        positions = detect_peaks(d, sigma)
        if not len(positions):
            continue
        on_slope = _dim_sloping_background(n, sigma)[tuple(positions.astype(int).T)]
        weak = local_peak_contrast(n, positions, sigma) < 1.0
        total += int(on_slope.sum())
        unsupported += int((weak & on_slope).sum())
    return (unsupported / total if total else 0.0), unsupported, total


def _dim_sloping_background(frame: np.ndarray, sigma: float) -> np.ndarray:
    """Pixels whose local mean (Gaussian of 4 sigma, >= 4 px) is in the dimmer half of the frame and
    whose gradient is above the frame's median gradient."""
    local = ndimage.gaussian_filter(frame, max(4.0, 4.0 * sigma), mode="reflect")
    slope = np.hypot(*np.gradient(local))
    return (local < np.median(local)) & (slope > np.median(slope))


def detect_false_atoms(
    noisy: np.ndarray, denoised: np.ndarray, sigma: float, max_fraction: float = MAX_FALSE_ATOM_FRACTION
) -> str | None:
    """A warning when many output peaks on dim, sloping background have no support in the input."""
    fraction, unsupported, total = false_atom_fraction(noisy, denoised, sigma)
    if total < MIN_BACKGROUND_PEAKS or fraction <= max_fraction:
        return None
    return false_atoms_message(unsupported, total)


def false_atoms_message(unsupported: float, total: float, unit: str = "") -> str:
    """The warning for ``unsupported`` of ``total`` output peaks (counts, or averages per ``unit``)
    on dim, sloping background."""
    per = f" per {unit}" if unit else ""
    return (
        f"possible false atoms: {unsupported:.3g} of the {total:.3g} atoms{per} the output shows on dim, sloping "
        f"background ({unsupported / max(total, 1e-12):.0%}) have no peak in the input there. Noise2Atom invents "
        "atoms on background gradients; check the output there, and consider a larger --atom-spacing or "
        "removing the gradient before training"
    )


def diagnose_run(noisy: np.ndarray, denoised: np.ndarray, sigma: float | None = None) -> list[str]:
    """Warnings for the training report: inverted contrast and false atoms on background gradients.

    ``noisy`` and ``denoised`` are matching frames ``(N, H, W)`` or ``(H, W)`` in any units;
    ``sigma`` is the atom peak sigma in px (measured from the output when None).
    """
    a, b = _pairs(noisy, denoised)
    warnings = [w for w in [detect_inverted_contrast(a, b)] if w]
    if warnings:
        return warnings  # peaks of an inverted image are the background: nothing more to learn
    sigma = sigma or measure_sigma(b) or 1.5
    if w := detect_false_atoms(a, b, sigma):
        warnings.append(w)
    return warnings
