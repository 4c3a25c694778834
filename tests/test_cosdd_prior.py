"""selfden's COSDD prior: new tiny runs start from weights pretrained on procedural scenes.

The shipped file is numpy arrays pinned by SHA-256; it fits the default networks for noise along
x or y; a model started from it already denoises a scene it never saw; a damaged file is one
clear error; ``--set prior=false`` and other networks start from random weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from selfden.errors import SelfdenError
from selfden.methods.cosdd import prior
from selfden.methods.cosdd.config import CosddConfig
from selfden.methods.cosdd.method import Cosdd
from selfden.metrics import affine_psnr
from selfden.normalisation import Normalisation
from selfden.scenes import camera_noise, procedural_scene

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def new_run_config(**options: object) -> CosddConfig:
    """A cosdd config as `selfden train` plans it on a CPU."""
    return CosddConfig(**options).device_defaults("cpu").config


@pytest.mark.parametrize("direction", ["x", "y"])
def test_the_prior_fits_a_new_tiny_run_with_noise_along_x_or_y(direction: str) -> None:
    assert prior.fits_prior(new_run_config(direction=direction).arch())


@pytest.mark.parametrize("options", [dict(direction="none"), dict(direction="x", features=16),
                                     dict(direction="x", size="small")])
def test_other_networks_start_from_random_weights(options: dict) -> None:
    config = new_run_config(**options)
    method = Cosdd(config, Normalisation(0.0, 1.0), torch.device("cpu"))
    assert method.prior_weights() is None
    assert "random weights" in Cosdd.start_note(config).text


def test_prior_false_starts_from_random_weights_and_says_nothing() -> None:
    config = new_run_config(direction="x", prior=False)
    assert Cosdd(config, Normalisation(0.0, 1.0), torch.device("cpu")).prior_weights() is None
    assert Cosdd.start_note(config) is None


def test_a_model_started_from_the_prior_denoises_a_scene_it_never_saw() -> None:
    rng = np.random.default_rng(2024)  # the prior was trained on seed 1234's scenes
    clean = procedural_scene(rng)
    noisy = camera_noise(clean, rng)
    norm = Normalisation(float(noisy.mean()), float(noisy.std()))
    batch = torch.from_numpy((noisy - norm.offset) / norm.scale)[None, None]
    scores = {}
    for use_prior in (False, True):
        torch.manual_seed(0)
        method = Cosdd(new_run_config(direction="x", prior=use_prior), norm, torch.device("cpu"))
        if use_prior:
            method.warm_start(method.prior_weights())
        scores[use_prior] = affine_psnr(method.denoise(batch)[0, 0].double().numpy(), clean)
    noisy_score = affine_psnr(noisy.astype(np.float64), clean)
    assert scores[True] > noisy_score + 3.0, (scores, noisy_score)
    assert scores[False] < noisy_score + 1.0, (scores, noisy_score)  # random weights do not


def test_the_prior_holds_numpy_arrays_only_and_says_how_it_was_made() -> None:
    with np.load(prior.PRIOR_FILE, allow_pickle=False) as archive:
        assert archive.files and all(archive[key].dtype != object for key in archive.files)
    meta = prior.prior_meta()
    assert meta["steps"] > 0 and "make_cosdd_prior.py" in meta["command"]


def test_a_damaged_prior_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    damaged = tmp_path / "prior_tiny.npz"
    shutil.copy(prior.PRIOR_FILE, damaged)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(prior, "PRIOR_FILE", damaged)
    prior._arrays.cache_clear()
    try:
        with pytest.raises(SelfdenError, match="damaged.*--set prior=false"):
            prior.fits_prior(new_run_config(direction="x").arch())
    finally:
        prior._arrays.cache_clear()
