"""After training, a method says whether its output beats a Gaussian blur, judged without a clean image.
Noise correlated along rows lives in a pixel's row neighbours, so whole rows are hidden, not single pixels
(COSDD knows its noise axis; cae and noise2atom measure it on the validation crops)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from scipy.ndimage import gaussian_filter1d

from frames import squares
from selfden.methods.base import Normalisation
from selfden.methods.blind_score import donut_blur, hide_lines
from selfden.methods.blind_check import hidden_line_scores, hide_pixels, measured_unit
from selfden.methods.cae import Cae, CaeConfig
from selfden.methods.cosdd import Cosdd, CosddConfig
from selfden.methods.noise2atom import Noise2Atom, Noise2AtomConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(size="tiny", levels=4, features=8, latent_channels=4, components=3, downsamplings=2)


def row_noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Noise correlated along x (rows), independent between rows, std ~0.3."""
    white = np.random.default_rng(seed).normal(0.0, 1.0, shape)
    return (0.3 * gaussian_filter1d(white, 3.0, axis=-1) / 0.23).astype(np.float32)


def test_a_hidden_row_is_rebuilt_from_its_neighbours_alone() -> None:
    batch = torch.randn(2, 1, 16, 12, generator=torch.Generator().manual_seed(0))
    hidden, mask = hide_lines(batch, "row", spacing=4, phase=1)
    changed = batch.clone()
    changed[..., 1::4, :] += 100.0  # the hidden rows' own values must not matter
    again, _ = hide_lines(changed, "row", spacing=4, phase=1)
    assert torch.equal(hidden, again)
    assert mask[0, 0, :, 0].tolist() == [(row % 4) == 1 for row in range(16)]
    assert torch.allclose(hidden[..., 5, :], 0.5 * (batch[..., 4, :] + batch[..., 6, :]))
    assert torch.equal(hidden[~mask], batch[~mask])


def test_hidden_columns_and_hidden_pixels_likewise() -> None:
    batch = torch.randn(1, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    for hide in (lambda b: hide_lines(b, "column", 3, 0), lambda b: hide_pixels(b, 4, 2)):
        hidden, mask = hide(batch)
        moved = torch.where(mask, batch + 50.0, batch)
        assert torch.equal(hide(moved)[0], hidden) and 0 < mask.sum() < mask.numel()


def test_the_row_blind_blur_never_sees_the_row_it_predicts() -> None:
    spike = torch.zeros(1, 1, 9, 9)
    spike[..., 4, :] = 1.0
    assert donut_blur(spike, 1.0, "row")[..., 4, :].abs().max().item() == 0.0
    assert donut_blur(spike, 1.0, "row")[..., 3, 4].item() > 0


def test_the_clean_image_scores_the_noise_variance_and_beats_every_row_blind_blur() -> None:
    clean = torch.from_numpy(squares(8, 64))[:, None]
    noise = torch.from_numpy(row_noise(tuple(clean.shape), seed=0))
    scores = hidden_line_scores(lambda _: clean, [clean + noise], "row")
    assert scores.denoiser == pytest.approx(float(noise.var()), rel=0.05)
    assert scores.gain > 0 and scores.pixels == clean.numel()


def test_a_denoiser_that_passes_row_noise_through_is_caught_where_a_pixel_blind_spot_would_miss_it() -> None:
    """Copying the input is the worst 'denoiser'. Row-blind, its prediction of a hidden row is the mean of
    the two rows beside it, which a blur beats; a one-pixel blind spot on row noise would call the copy
    good, since the pixels left and right of a hidden pixel carry its noise."""
    noisy = torch.from_numpy(squares(8, 64) + row_noise((8, 64, 64), seed=1))[:, None]
    assert hidden_line_scores(lambda x: x, [noisy], "row").gain < 0
    assert hidden_line_scores(lambda x: x, [noisy], "pixel").gain > 0  # fooled: why rows are hidden


def test_without_a_known_axis_the_measured_noise_axis_is_hidden() -> None:
    """Column noise fools a row-hidden score (a copy looks good); the measured axis hides columns and catches it.
    Hiding the other axis is no safe default either: it flatters a blur, which keeps line noise."""
    columns = squares(8, 64) + row_noise((8, 64, 64), seed=4).transpose(0, 2, 1)
    noisy = torch.from_numpy(np.ascontiguousarray(columns))[:, None]
    assert hidden_line_scores(lambda x: x, [noisy], "row").gain > 0
    assert measured_unit([noisy[:4], noisy[4:]]) == "column"
    assert hidden_line_scores(lambda x: x, [noisy], "column").gain < 0
    rows = torch.from_numpy(squares(8, 64) + row_noise((8, 64, 64), seed=5))[:, None]
    assert measured_unit([rows]) == "row"


def test_a_fitted_gain_and_offset_judge_outputs_in_other_units_fairly() -> None:
    clean = torch.from_numpy(squares(8, 64))[:, None]
    noise = torch.from_numpy(row_noise(tuple(clean.shape), seed=5))
    scaled = hidden_line_scores(lambda _: 3.0 * clean + 1.0, [clean + noise], "row", affine=True)
    assert scaled.denoiser == pytest.approx(float(noise.var()), rel=0.05) and scaled.gain > 0 and scaled.affine
    assert hidden_line_scores(lambda _: 3.0 * clean + 1.0, [clean + noise], "row").gain < 0  # unfitted: wrong units


def test_untrained_cae_and_noise2atom_are_called_no_better_than_a_blur() -> None:
    noisy = torch.from_numpy(squares(8, 32, seed=6) + row_noise((8, 32, 32), seed=6))[:, None]
    torch.manual_seed(0)
    cae = Cae(CaeConfig(widths=(4, 4, 8, 8, 8, 8), residual_blocks=1, residual_width=8, bottleneck=2, ema_decay=0.0),
              Normalisation(0.0, 1.0), torch.device("cpu"))
    n2a = Noise2Atom(Noise2AtomConfig(widths=(4, 8, 8, 16), residual_blocks=1, residual_width=16,
                                      critic_widths=(4, 8, 8, 16)), Normalisation(0.0, 1.0), torch.device("cpu"))
    for name, method in (("cae", cae), ("noise2atom", n2a)):
        (note,) = method.outcome_notes([noisy[:4], noisy[4:]])
        assert note.level == "warning" and note.text.startswith(f"{name} is likely no better than a Gaussian blur")
        assert f"selfden train {name} --resume" in note.text


def test_an_untrained_cosdd_is_called_no_better_than_a_blur() -> None:
    torch.manual_seed(0)
    method = Cosdd(CosddConfig(**TINY), Normalisation(0.0, 1.0), torch.device("cpu"))
    noisy = torch.from_numpy(squares(8, 32, seed=1) + row_noise((8, 32, 32), seed=2))[:, None]
    (note,) = method.outcome_notes([noisy[:4], noisy[4:]])
    assert note.level == "warning" and "likely no better than a Gaussian blur" in note.text, note
    assert "--resume" in note.text and "--direction" in note.text and "hidden validation rows" in note.text


def test_selfden_train_cosdd_prints_the_verdict(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from selfden.cli import app

    noisy = 100.0 + 20.0 * (squares(4, 64, seed=3) + row_noise((4, 64, 64), seed=3))
    tifffile.imwrite(tmp_path / "noisy.tif", noisy.astype(np.float32), photometric="minisblack")
    result = CliRunner().invoke(app, ["train", "cosdd", str(tmp_path / "noisy.tif"), "-o", str(tmp_path / "run"),
                                      "--steps", "3", "--device", "cpu", "--patch-size", "32", "--batch-size", "2",
                                      "--direction", "x", "--set", "levels=4", "--set", "features=8",
                                      "--set", "latent_channels=4", "--set", "downsamplings=2", "--seed", "0"])
    assert result.exit_code == 0, result.output
    assert "Gaussian blur" in result.output and "hidden validation rows" in result.output, result.output
