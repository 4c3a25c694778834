"""The dnnet noise model as a picture: noise std and skewness against the signal, raw units.

Two panels: the N-net's curves (lines) over the binned residual statistics of validation
crops (dots), optionally with a known true curve (dashed; synthetic data). Plotting is
numpy + matplotlib (Agg canvas); ``selfden.runs.noise_model`` draws it for a trained run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from selfden.io.atomic import atomic_write

log = logging.getLogger(__name__)

_DPI = 110


def plot_noise_model(
    curve: Any | None,
    empirical: Any | None,
    out_png: Path,
    truth: Any | None = None,
    title: str = "noise model",
) -> Path:
    """Write the figure. ``curve``, ``truth``: (signal, std, skew) arrays; ``empirical``: the same plus
    per-bin counts (``selfden.methods.dnnet.EmpiricalNoise``). Any of them may be None."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    std_ax, skew_ax = fig.subplots(1, 2)
    for ax, column, label in ((std_ax, 1, "noise std"), (skew_ax, 2, "noise skewness")):
        _draw(ax, curve, empirical, truth, column)
        ax.set_xlabel("signal (raw units)")
        ax.xaxis.set_major_locator(MaxNLocator(5))  # five-digit 16-bit values overlap at matplotlib's default
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    skew_ax.axhline(0.0, color="0.5", linewidth=0.8)
    std_ax.set_ylim(bottom=0.0)
    std_ax.legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    return _save(fig, Path(out_png))


def _draw(ax: Any, curve: Any | None, empirical: Any | None, truth: Any | None, column: int) -> None:
    if truth is not None:
        ax.plot(truth[0], truth[column], "k--", linewidth=1.2, label="true")
    if empirical is not None and len(empirical[0]):
        ax.plot(empirical[0], empirical[column], "o", color="tab:orange", markersize=4,
                label="validation residuals (blind)")
    if curve is not None:
        ax.plot(curve[0], curve[column], "-", color="tab:blue", linewidth=1.8, label="N-net")


def _save(fig: Any, out_png: Path) -> Path:
    """Write to a temporary name and rename into place (a crash leaves no half-written PNG)."""
    with atomic_write(out_png) as handle:
        fig.savefig(handle, format="png", dpi=_DPI)
    log.info("wrote %s", out_png)
    return out_png
