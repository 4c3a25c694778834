"""Figures: the training report and before/after previews."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfden.report import (
    before_after_png,
    display_range,
    smooth,
    training_report,
    training_report_figure,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _crops(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clean = np.outer(np.hanning(48), np.hanning(40)).astype(np.float32)
    return clean + 0.3 * rng.normal(size=clean.shape).astype(np.float32), clean


def _records() -> list[dict]:
    records = []
    for step in range(10, 210, 10):
        records.append({"step": step, "elapsed_seconds": step / 10, "kind": "train",
                        "loss": 1.0 / step, "kl": 0.5 - step / 1000, "lr": 1e-3})
        if step % 50 == 0:
            records.append({"step": step, "elapsed_seconds": step / 10, "kind": "val",
                            "val_loss": 1.2 / step, "val_kl": 0.45, "psnr": 20 + step / 100})
    return records


def _image_axes(figure) -> list:
    return [ax for ax in figure.get_axes() if ax.images]


def test_training_report_writes_a_png(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in _records()) + '{"step": 2')  # cut-off last line
    noisy, denoised = _crops()
    out = training_report(metrics, noisy[None, None], denoised[None, None], tmp_path / "report.png", "toy run")
    assert out == tmp_path / "report.png" and out.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(out) as image:
        assert image.width > 800 and image.height > 600, image.size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "report.png"], list(tmp_path.iterdir())


def test_before_and_after_share_one_display_range() -> None:
    noisy, denoised = _crops()
    figure = training_report_figure(_records(), noisy, denoised, "toy run")
    before, after, residual = (ax.images[0] for ax in _image_axes(figure))
    assert before.get_clim() == after.get_clim() == display_range(noisy, denoised)
    low, high = residual.get_clim()
    assert low == -high > -np.inf, residual.get_clim()


def test_report_pairs_train_and_validation_metrics_in_panels() -> None:
    noisy, denoised = _crops()
    figure = training_report_figure(_records(), noisy, denoised, "toy run")
    panels = {ax.get_title(): ax for ax in figure.get_axes() if ax.get_visible() and not ax.images and ax.lines}
    assert list(panels)[0] == "loss" and set(panels) == {"loss", "kl", "lr", "psnr"}, list(panels)
    assert panels["loss"].get_yscale() == "log"
    legend = [text.get_text() for text in panels["kl"].get_legend().get_texts()]
    assert legend == ["train (smoothed)", "validation"], legend


def test_report_without_metrics_still_shows_the_images(tmp_path: Path) -> None:
    noisy, denoised = _crops()
    out = training_report(tmp_path / "missing.jsonl", noisy, denoised, tmp_path / "report.png", "empty")
    assert out.read_bytes()[:8] == PNG_SIGNATURE


def test_before_after_png_has_two_side_by_side_panels(tmp_path: Path) -> None:
    noisy, denoised = _crops()
    out = before_after_png(noisy, denoised, tmp_path / "preview.png", labels=("raw", "selfden"))
    with Image.open(out) as image:
        assert image.width > 1.5 * image.height, image.size
    assert [p.name for p in tmp_path.iterdir()] == ["preview.png"], "temporary file left behind"


def test_mismatched_images_are_refused(tmp_path: Path) -> None:
    noisy, _ = _crops()
    with pytest.raises(ValueError, match="same shape"):
        before_after_png(noisy, noisy[:10], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_smoothing_is_a_trailing_mean_that_skips_nan() -> None:
    values = np.array([1.0, 3.0, np.nan, 5.0, 7.0])
    np.testing.assert_allclose(smooth(values, 2), [1.0, 2.0, 3.0, 5.0, 6.0])


def test_display_range_ignores_non_finite_pixels() -> None:
    image = np.array([[0.0, 1.0], [np.inf, np.nan]])
    low, high = display_range(image, percentiles=(0, 100))
    assert (low, high) == (0.0, 1.0)


def test_report_module_does_not_import_torch() -> None:
    # selfden infer draws previews and must start without torch
    code = "import sys, selfden.report; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", result.stdout + result.stderr
