"""Figures: a training report (loss curves + before/after) and before/after previews.

numpy and matplotlib only (Agg canvas, no pyplot state), so ``selfden infer`` can draw
previews without torch. Every PNG is written to a temporary file and renamed into place.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from selfden.io.atomic import atomic_write

_NON_METRIC_KEYS = frozenset({"step", "elapsed_seconds", "kind", "val_seconds"})
#: At most this many metric panels (loss first), so a chatty method keeps a readable report.
_MAX_METRIC_PANELS = 9
_DPI = 110


def training_report(
    metrics_jsonl: Path, noisy: np.ndarray, denoised: np.ndarray, out_png: Path, title: str
) -> Path:
    """Loss curves (train smoothed, validation), other metrics, and a validation crop before/after.

    ``noisy`` and ``denoised`` are the same crop in normalised units (2-D, or with leading
    singleton axes); both are shown with one display range.
    """
    records = read_metric_records(Path(metrics_jsonl))
    return _save(training_report_figure(records, noisy, denoised, title), Path(out_png))


def before_after_png(
    noisy: np.ndarray, denoised: np.ndarray, out_png: Path, labels: Sequence[str] = ("noisy", "denoised")
) -> Path:
    """Two images side by side with an identical display range."""
    before, after = _matching_images(noisy, denoised)
    height, width = before.shape
    panel_width = 5.0
    panel_height = min(3 * panel_width, max(1.0, panel_width * height / width))
    fig = _new_figure((2 * panel_width, panel_height + 0.5))
    axes = fig.subplots(1, 2)
    low, high = display_range(before, after)
    for ax, image, label in zip(axes, (before, after), labels):
        _show(ax, image, label, low, high)
    return _save(fig, Path(out_png))


def training_report_figure(
    records: list[dict[str, Any]], noisy: np.ndarray, denoised: np.ndarray, title: str
) -> Figure:
    """The figure :func:`training_report` saves (for callers that want to add to it)."""
    before, after = _matching_images(noisy, denoised)
    groups = _metric_groups(records)
    columns = max(1, min(3, len(groups)))
    rows = max(1, math.ceil(len(groups) / columns))
    fig = _new_figure((12.0, 3.0 * rows + 4.2))
    fig.suptitle(title)
    top, bottom = fig.subfigures(2, 1, height_ratios=[3.0 * rows, 4.0])
    metric_axes = np.atleast_1d(top.subplots(rows, columns)).ravel()
    for ax, (name, train, val) in zip(metric_axes, groups):
        _plot_metric(ax, name, train, val)
    if not groups:
        metric_axes[0].text(0.5, 0.5, "no metrics logged", ha="center", va="center")
        metric_axes[0].set_axis_off()
    for ax in metric_axes[max(1, len(groups)):]:
        ax.set_visible(False)
    _before_after_panels(bottom, before, after)
    return fig


def read_metric_records(path: Path) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl`` file ([] when missing); a half-written line is skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def display_range(*images: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> tuple[float, float]:
    """One robust (low, high) range over all ``images``, ignoring non-finite pixels."""
    values = np.concatenate([np.asarray(image, dtype=np.float64).ravel() for image in images])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(values, percentiles))
    return (low, high) if high > low else (low - 0.5, low + 0.5)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` points (shorter at the start); NaNs are skipped."""
    finite = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    ends = np.arange(1, values.size + 1)
    starts = np.maximum(0, ends - window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums[ends] - sums[starts]) / (counts[ends] - counts[starts])


# --- metric panels --------------------------------------------------------------------------
Series = tuple[np.ndarray, np.ndarray]  # steps, values


def _metric_groups(records: list[dict[str, Any]]) -> list[tuple[str, Series | None, Series | None]]:
    """(name, train series, validation series) per metric; ``val_x`` pairs with train ``x``."""
    train = _series(r for r in records if r.get("kind") == "train")
    val = {_base_name(key): series for key, series in _series(r for r in records if r.get("kind") == "val").items()}
    names = sorted(set(train) | set(val), key=lambda name: (name != "loss", name))
    return [(name, train.get(name), val.get(name)) for name in names[:_MAX_METRIC_PANELS]]


def _series(records: Any) -> dict[str, Series]:
    points: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        for key, value in record.items():
            if key in _NON_METRIC_KEYS or not _is_number_or_null(value):
                continue
            points.setdefault(key, []).append((float(record.get("step", 0)), math.nan if value is None else value))
    return {key: (np.array([p[0] for p in pts]), np.array([p[1] for p in pts], dtype=np.float64))
            for key, pts in points.items()}


def _is_number_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _base_name(key: str) -> str:
    return key[4:] if key.startswith("val_") else key


def _plot_metric(ax: Axes, name: str, train: Series | None, val: Series | None) -> None:
    if train is not None:
        steps, values = train
        ax.plot(steps, values, color="tab:blue", alpha=0.25, linewidth=0.8)
        ax.plot(steps, smooth(values, max(1, values.size // 20)), color="tab:blue", label="train (smoothed)")
    if val is not None:
        ax.plot(*val, color="tab:orange", marker="o", markersize=3, label="validation")
    every = np.concatenate([s[1] for s in (train, val) if s is not None])
    every = every[np.isfinite(every)]
    # log scale only where it helps: positive values spanning at least a decade
    if every.size and np.all(every > 0) and every.max() >= 10 * every.min():
        ax.set_yscale("log")
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.legend(fontsize="small")


# --- images ---------------------------------------------------------------------------------
def _before_after_panels(fig: Any, before: np.ndarray, after: np.ndarray) -> None:
    axes = fig.subplots(1, 3)
    low, high = display_range(before, after)
    _show(axes[0], before, "noisy validation crop (normalised)", low, high)
    _show(axes[1], after, "denoised", low, high)
    residual = before - after
    bound = max(display_range(np.abs(residual), percentiles=(0.0, 99.5))[1], 1e-12)
    image = _show(axes[2], residual, "noisy − denoised", -bound, bound, cmap="coolwarm")
    fig.colorbar(image, ax=axes[2], shrink=0.8)


def _show(ax: Axes, image: np.ndarray, label: str, low: float, high: float, cmap: str = "gray") -> Any:
    shown = ax.imshow(image, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
    ax.set_title(f"{label}\n[{low:.3g}, {high:.3g}]", fontsize="small")
    ax.set_axis_off()
    return shown


def _matching_images(noisy: np.ndarray, denoised: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    before, after = _as_2d(noisy), _as_2d(denoised)
    if before.shape != after.shape:
        raise ValueError(f"noisy {before.shape} and denoised {after.shape} must have the same shape")
    return before, after


def _as_2d(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image, dtype=np.float32)
    if array.ndim < 2:
        raise ValueError(f"image of shape {array.shape}: expected at least 2 dimensions (…, Y, X)")
    return array.reshape(-1, *array.shape[-2:])[0]  # the first 2-D frame


# --- output ---------------------------------------------------------------------------------
def _new_figure(size: tuple[float, float]) -> Figure:
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png: Path) -> Path:
    with atomic_write(out_png) as handle:
        fig.savefig(handle, format="png", dpi=_DPI)
    return out_png
