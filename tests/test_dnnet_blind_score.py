"""After training, dnnet says whether it beats a Gaussian blur, judged without a clean image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from frames import squares
from selfden.methods.base import Normalisation
from selfden.methods.dnnet import Dnnet, DnnetConfig
from selfden.methods.blind_score import blind_scores, donut_blur

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIGMA = 0.3


def test_a_perfect_predictor_scores_the_noise_variance_and_beats_every_blur() -> None:
    clean = torch.from_numpy(squares(4, 64))[:, None]
    noisy = clean + SIGMA * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    hidden = torch.ones_like(noisy, dtype=torch.bool)
    scores = blind_scores([noisy], [clean], [hidden])
    assert scores.denoiser == pytest.approx(SIGMA**2, rel=0.05)
    assert scores.gain > 0 and scores.blur > SIGMA**2 and scores.pixels == noisy.numel()


def test_the_blur_never_sees_the_pixel_it_predicts() -> None:
    spike = torch.zeros(1, 1, 9, 9)
    spike[..., 4, 4] = 1.0
    blurred = donut_blur(spike, 1.0)
    assert blurred[..., 4, 4].item() == 0.0 and blurred[..., 4, 5].item() > 0


def test_an_untrained_dnnet_is_called_no_better_than_a_blur() -> None:
    torch.manual_seed(0)
    method = Dnnet(DnnetConfig(filters=8, noise_net_width=16), Normalisation(0.0, 1.0), torch.device("cpu"))
    noisy = torch.from_numpy(squares(8, 32, seed=1))[:, None]
    noisy = noisy + SIGMA * torch.randn(noisy.shape, generator=torch.Generator().manual_seed(1))
    (note,) = method.outcome_notes([noisy[:4], noisy[4:]])
    assert note.level == "warning" and "likely no better than a Gaussian blur" in note.text, note
    assert "--resume" in note.text


def test_selfden_train_prints_the_verdict(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from selfden.cli import app

    noisy = squares(4, 64, seed=2) + SIGMA * np.random.default_rng(2).standard_normal((4, 64, 64)).astype(np.float32)
    tifffile.imwrite(tmp_path / "noisy.tif", noisy, photometric="minisblack")
    # Seed 1: the barely trained model's test output is negative everywhere, which once made the export
    # write a reproducibility tolerance bioimageio.spec refuses (it must be under 1 % of the maximum).
    result = CliRunner().invoke(app, ["train", "dnnet", str(tmp_path / "noisy.tif"), "-o", str(tmp_path / "run"),
                                      "--steps", "3", "--device", "cpu", "--patch-size", "32", "--set", "filters=8",
                                      "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "Gaussian blur" in result.output and "hidden validation pixels" in result.output, result.output
    assert (tmp_path / "run" / "model" / "rdf.yaml").is_file()
