"""The real STEM frames (``../shared/data/stem_pt_experimental.tif``): no ground truth, so
quality is read from consecutive-frame similarity (CSS), frame averages for comparison, a
row-streak index, and a before/after figure. Shared by the method benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

#: Where the shared real data sits when the project is checked out beside it.
STEM_PATH = Path(__file__).resolve().parents[2] / "shared" / "data" / "stem_pt_experimental.tif"


def running_mean(stack: np.ndarray, width: int = 3) -> np.ndarray:
    """Mean of each frame with its neighbours (``width`` frames, centred; shortened at the ends)."""
    half = width // 2
    return np.stack([stack[max(0, i - half) : i + half + 1].mean(axis=0) for i in range(len(stack))])


def binned_mean(stack: np.ndarray, width: int = 3) -> np.ndarray:
    """Means of consecutive, non-overlapping groups of ``width`` frames (a shorter stack).

    A running mean's neighbours share 2 of 3 frames, which inflates its CSS; binned means share none.
    """
    usable = len(stack) // width * width
    return stack[:usable].reshape(-1, width, *stack.shape[1:]).mean(axis=1)


def _profile_roughness(profile: np.ndarray, sigma: float) -> float:
    """Std of a 1-D profile after removing its smooth part (what a per-line offset adds)."""
    return float(np.std(profile - gaussian_filter1d(profile, sigma, mode="reflect")))


def row_streak_index(stack: np.ndarray, sigma: float = 3.0) -> float:
    """Roughness of the row-mean profile over that of the column-mean profile, averaged over frames.

    Per-row offsets (horizontal streaks) make neighbouring row means jump while column means stay
    smooth: the index is well above 1 with streaks and near 1 without (atoms add to both alike).
    """
    ratios = []
    for frame in np.asarray(stack, np.float64):
        rows = _profile_roughness(frame.mean(axis=1), sigma)
        cols = _profile_roughness(frame.mean(axis=0), sigma)
        ratios.append(rows / max(cols, 1e-12))
    return float(np.mean(ratios))


def before_after_figure(
    panels: dict[str, np.ndarray], path: Path, title: str, frames: tuple[int, ...] = (0, 50)
) -> Path:
    """One row per frame index, one column per named stack; each panel at its 0.5-99.5 percentiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(panels)
    frames = tuple(i for i in frames if all(i < len(s) for s in panels.values())) or (0,)
    fig, axes = plt.subplots(len(frames), len(names), figsize=(2.8 * len(names), 2.9 * len(frames)), dpi=100,
                             squeeze=False)
    for row, index in zip(axes, frames):
        for ax, name in zip(row, names):
            image = panels[name][index]
            low, high = np.percentile(image, (0.5, 99.5))
            ax.imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1, interpolation="nearest")
            ax.set_title(f"{name}, frame {index}", fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
