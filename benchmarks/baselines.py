"""Classical denoisers as reference points for the quality benchmark.

Every baseline here is **oracle-tuned**: its one strength parameter is chosen by grid search
against the ground truth, which a user never has. The numbers are therefore upper bounds
for what that classical method reaches on the suite, not what it would reach in practice.

- Gaussian blur: sigma chosen on all frames.
- Non-local means (Buades, Coll, Morel, CVPR 2005; ``skimage.restoration.denoise_nl_means``):
  per-frame noise sigma from ``skimage.restoration.estimate_sigma`` (wavelet MAD, which
  assumes white Gaussian noise), filter strength ``h = factor * sigma`` with the factor tuned
  on the first frames, then applied to all frames.
- BM3D (Dabov, Foi, Katkovnik, Egiazarian, IEEE TIP 2007; the ``bm3d`` package, when
  importable): ``sigma_psd = factor * sigma`` tuned the same way on fewer frames (it is slow).

Tuning maximises the affine-fitted PSNR (``selfden.metrics.affine_psnr``), the headline metric.
All scores are over ALL frames of the stack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from selfden.metrics import affine_fit, affine_psnr, psnr, ssim

log = logging.getLogger(__name__)

BASELINES = ("gaussian", "nlm", "bm3d")
GAUSSIAN_SIGMAS = tuple(np.round(np.arange(0.25, 6.01, 0.25), 2))
#: h / estimated sigma: powers of two cover an estimate that is far off (Poisson-dominated
#: frames fool the wavelet estimator), then one refinement at half and quarter octaves.
NLM_FACTORS = tuple(2.0**k for k in range(-2, 7))
BM3D_FACTORS = tuple(2.0**k for k in range(-1, 6))
NLM_PATCH_SIZE = 5
NLM_PATCH_DISTANCE = 6


@dataclass(frozen=True)
class Scores:
    """Quality against ground truth, averaged over frames.

    ``ssim`` is computed on the affine-fitted estimate (the convention of METHODS.md's table),
    so it too is blind to gain and offset; ``psnr`` is plain PSNR with each truth frame's range.
    """

    psnr: float
    affine_psnr: float
    ssim: float


def score(estimate: np.ndarray, clean: np.ndarray) -> Scores:
    """PSNR, affine-fitted PSNR and affine-fitted SSIM of ``estimate`` over all frames."""
    return Scores(
        psnr=psnr(estimate, clean),
        affine_psnr=affine_psnr(estimate, clean),
        ssim=ssim(affine_fit(estimate, clean), clean),
    )


@dataclass(frozen=True)
class BaselineResult:
    """One tuned baseline: its chosen settings, the denoised stack and its scores."""

    name: str
    settings: str
    estimate: np.ndarray
    scores: Scores
    seconds: float
    tuning: dict[str, float] = field(default_factory=dict)  # tried value -> affine PSNR on tuning frames


@dataclass(frozen=True)
class Skipped:
    """A baseline that could not run, and why."""

    name: str
    reason: str


# --- tuning helpers --------------------------------------------------------------------------------


def _grid_search(values: Sequence[float], evaluate: Callable[[float], float]) -> tuple[float, dict[float, float]]:
    """The value maximising ``evaluate`` and every value's result."""
    tried = {float(v): float(evaluate(float(v))) for v in values}
    return max(tried, key=tried.__getitem__), tried


def _log_search(coarse: Sequence[float], evaluate: Callable[[float], float]) -> tuple[float, dict[float, float]]:
    """Grid search on ``coarse`` (a geometric grid), then around the best at 2^(+-1/2) and 2^(+-1/4).

    Each value is evaluated once (BM3D costs seconds per frame).
    """
    memo: dict[float, float] = {}

    def cached(value: float) -> float:
        key = round(value, 9)
        if key not in memo:
            memo[key] = evaluate(value)
        return memo[key]

    best, _ = _grid_search(coarse, cached)
    for step in (2.0**0.5, 2.0**0.25):
        best, _ = _grid_search([best / step, best, best * step], cached)
    return best, dict(sorted(memo.items()))


def _rounded(table: dict[float, float]) -> dict[str, float]:
    """Tuning table with readable keys for the JSON results."""
    return {f"{value:.4g}": round(result, 3) for value, result in table.items()}


def _result(
    name: str, settings: str, estimate: np.ndarray, clean: np.ndarray, start: float, table: dict[float, float]
) -> BaselineResult:
    seconds = time.perf_counter() - start
    return BaselineResult(name, settings, estimate, score(estimate, clean), seconds, _rounded(table))


def _per_frame(noisy: np.ndarray, denoise: Callable[[np.ndarray, int], np.ndarray]) -> np.ndarray:
    return np.stack([denoise(frame, i) for i, frame in enumerate(noisy)]).astype(np.float32)


def _difference_sigma(frame: np.ndarray) -> float:
    """White-noise sigma from neighbour differences: E[(a - b)^2] = 2 sigma^2 (edges inflate it)."""
    f = np.asarray(frame, dtype=np.float64)
    squares = np.concatenate([np.diff(f, axis=0).ravel() ** 2, np.diff(f, axis=1).ravel() ** 2])
    return float(np.sqrt(squares.mean() / 2.0))


def estimated_sigmas(noisy: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-frame noise sigma from ``skimage.restoration.estimate_sigma``, and how many frames fell back.

    The wavelet estimator uses only the diagonal (HH) detail band, which is blind to noise that
    is constant along rows and to Poisson noise in zero-count background: on the atoms suite
    it returns 0. Below 1% of the frame's neighbour-difference sigma we fall back to the latter.
    """
    from skimage.restoration import estimate_sigma

    sigmas, fallbacks = [], 0
    for frame in noisy:
        wavelet, difference = float(estimate_sigma(np.asarray(frame, np.float64))), _difference_sigma(frame)
        if wavelet < 0.01 * difference:
            wavelet, fallbacks = difference, fallbacks + 1
        sigmas.append(max(wavelet, 1e-12))
    return np.array(sigmas), fallbacks


def _sigma_note(sigmas: np.ndarray, fallbacks: int) -> str:
    note = f"median sigma {np.median(sigmas):.3g} from estimate_sigma"
    if fallbacks:
        note += f" ({fallbacks} frames: estimate_sigma ~0, neighbour differences used)"
    return note


# --- the baselines ---------------------------------------------------------------------------------


def gaussian_oracle(noisy: np.ndarray, clean: np.ndarray, sigmas: Sequence[float] = GAUSSIAN_SIGMAS) -> BaselineResult:
    """2-D Gaussian blur of every frame with the sigma that maximises affine PSNR on all frames."""
    start = time.perf_counter()

    def blur(sigma: float) -> np.ndarray:
        return ndimage.gaussian_filter(noisy.astype(np.float32), (0, sigma, sigma), mode="reflect")

    best, table = _grid_search(sigmas, lambda s: affine_psnr(blur(s), clean))
    estimate = blur(best)
    settings = f"sigma {best:g} px (oracle: best of {len(sigmas)} values {min(sigmas):g}-{max(sigmas):g} on the truth)"
    return _result("Gaussian blur", settings, estimate, clean, start, table)


def _nlm(frame: np.ndarray, sigma: float, factor: float) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    return denoise_nl_means(
        np.asarray(frame, dtype=np.float64),
        h=factor * sigma,
        sigma=sigma,
        patch_size=NLM_PATCH_SIZE,
        patch_distance=NLM_PATCH_DISTANCE,
        fast_mode=True,
    )


def nlm_oracle(
    noisy: np.ndarray, clean: np.ndarray, factors: Sequence[float] = NLM_FACTORS, tune_frames: int = 16
) -> BaselineResult:
    """Non-local means, ``h = factor * estimate_sigma(frame)``, factor tuned on the first frames."""
    start = time.perf_counter()
    sigmas, fallbacks = estimated_sigmas(noisy)
    n = min(tune_frames, len(noisy))

    def run(factor: float, frames: np.ndarray) -> np.ndarray:
        return _per_frame(frames, lambda f, i: _nlm(f, float(sigmas[i]), factor))

    best, table = _log_search(factors, lambda k: affine_psnr(run(k, noisy[:n]), clean[:n]))
    estimate = run(best, noisy)
    settings = (
        f"patch {NLM_PATCH_SIZE}x{NLM_PATCH_SIZE}, search {2 * NLM_PATCH_DISTANCE + 1}x{2 * NLM_PATCH_DISTANCE + 1}, "
        f"h = {best:.3g} x sigma ({_sigma_note(sigmas, fallbacks)}); oracle: factor tuned on {n} frames' truth"
    )
    return _result("non-local means", settings, estimate, clean, start, table)


def bm3d_unavailable() -> str | None:
    """Why BM3D cannot run here, or None when the ``bm3d`` package imports."""
    try:
        import bm3d  # noqa: F401
    except Exception as error:  # ImportError, or a broken binary inside the package
        return f"the bm3d package is not importable ({type(error).__name__}: {error}); pip install bm3d"
    return None


def bm3d_oracle(
    noisy: np.ndarray, clean: np.ndarray, factors: Sequence[float] = BM3D_FACTORS, tune_frames: int = 3
) -> BaselineResult | Skipped:
    """BM3D with ``sigma_psd = factor * estimate_sigma(frame)``, factor tuned on the first frames."""
    reason = bm3d_unavailable()
    if reason is not None:
        return Skipped("BM3D", reason)
    import bm3d

    start = time.perf_counter()
    sigmas, fallbacks = estimated_sigmas(noisy)
    n = min(tune_frames, len(noisy))

    def run(factor: float, frames: np.ndarray) -> np.ndarray:
        return _per_frame(frames, lambda f, i: bm3d.bm3d(np.asarray(f, np.float64), factor * float(sigmas[i])))

    best, table = _log_search(factors, lambda k: affine_psnr(run(k, noisy[:n]), clean[:n]))
    estimate = run(best, noisy)
    settings = (
        f"white-noise sigma_psd = {best:.3g} x sigma ({_sigma_note(sigmas, fallbacks)}), default profile; "
        f"oracle: factor tuned on {n} frames' truth"
    )
    return _result("BM3D", settings, estimate, clean, start, table)


def run_baselines(
    noisy: np.ndarray, clean: np.ndarray, names: Sequence[str] = BASELINES
) -> list[BaselineResult | Skipped]:
    """The requested baselines, in order (unknown names raise ValueError)."""
    runners: dict[str, Callable[[], BaselineResult | Skipped]] = {
        "gaussian": lambda: gaussian_oracle(noisy, clean),
        "nlm": lambda: nlm_oracle(noisy, clean),
        "bm3d": lambda: bm3d_oracle(noisy, clean),
    }
    unknown = [n for n in names if n not in runners]
    if unknown:
        raise ValueError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    results = []
    for name in names:
        log.info("baseline %s on %d frames", name, len(noisy))
        results.append(runners[name]())
    return results
