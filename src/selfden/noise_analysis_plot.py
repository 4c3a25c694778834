"""Plot of the noise autocorrelation measured by :mod:`selfden.noise_analysis`.

matplotlib's Agg canvas only (no pyplot state), so it runs headless and without torch.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from selfden.io.atomic import atomic_write
from selfden.noise_analysis import NoiseCorrelation


def plot_noise_correlation(result: NoiseCorrelation, out_png: Path) -> Path:
    """Autocorrelation along x and y against lag, titled with the chosen direction; returns the path."""
    fig = Figure(figsize=(6.4, 4.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    ax.plot(result.lags, result.acf_x, "o-", markersize=3, label="along x (within rows)")
    ax.plot(result.lags, result.acf_y, "s-", markersize=3, label="along y (within columns)")
    ax.set_xlabel("lag (pixels)")
    ax.set_ylabel("noise autocorrelation")
    ax.set_ylim(min(-0.2, *result.acf_x, *result.acf_y) - 0.05, 1.05)
    ax.set_title(f"noise direction: {result.direction}", fontsize=11)
    ax.legend(loc="upper right")
    fig.text(0.01, 0.01, result.reason, fontsize=6.5, wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _save(fig, Path(out_png))


def _save(fig: Figure, out_png: Path) -> Path:
    """Write to a temporary file beside the target, then rename: no half-written PNG."""
    with atomic_write(out_png) as handle:
        fig.savefig(handle, format="png")
    return out_png
