"""dnnet and clipped pixels: found from a pile-up at the data's extremes, counted as censored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from scipy.stats import norm

from frames import Frames
from selfden.methods.base import Normalisation
from selfden.methods.dnnet import Dnnet, DnnetConfig
from selfden.methods.dnnet.clipping import find_clip_levels
from selfden.methods.dnnet.networks import Mixture


RNG = np.random.default_rng(0)
SATURATED = np.clip(RNG.normal(40000, 20000, (4, 64, 64)), 0, 65535).astype(np.uint16)


def test_a_pile_up_at_the_maximum_is_found_as_clipping() -> None:
    found = find_clip_levels([Frames(SATURATED)])
    assert found.high == 65535 and found.high_fraction == pytest.approx(np.mean(SATURATED == 65535))
    assert found.low == 0 and found.low_fraction == pytest.approx(np.mean(SATURATED == 0))


@pytest.mark.parametrize("data", [
    RNG.poisson(0.5, (4, 64, 64)).astype(np.float32),  # photon counting: zeros are measurements
    RNG.poisson(3.0, (4, 64, 64)).astype(np.uint16),
    RNG.normal(0.0, 1.0, (4, 64, 64)).astype(np.float32),  # continuous, unclipped
    np.full((2, 16, 16), 7.0, np.float32),  # constant
], ids=["poisson-0.5", "poisson-3", "gaussian", "constant"])
def test_counts_and_continuous_data_are_not_called_clipped(data: np.ndarray) -> None:
    found = find_clip_levels([Frames(data)])
    assert found.low is None and found.high is None, found


def test_mixture_tail_probabilities_match_scipy() -> None:
    weights, means, scales = np.array([0.2, 0.5, 0.3]), np.array([-0.4, 0.1, 0.1]), np.array([0.3, 0.1, 1.0])
    means = means - weights @ means
    mixture = Mixture(torch.tensor(np.log(weights))[None].float(), torch.tensor(means)[None].float(),
                      torch.tensor(scales)[None].float())
    for t in (-2.0, -0.1, 0.0, 0.5, 3.0):
        cdf = float(weights @ norm.cdf(t, means, scales))
        assert float(mixture.log_cdf(torch.tensor([t])).exp()) == pytest.approx(cdf, rel=1e-4, abs=1e-7)
        assert float(mixture.log_survival(torch.tensor([t])).exp()) == pytest.approx(1 - cdf, rel=1e-4, abs=1e-7)


def test_a_clipped_pixel_costs_minus_log_its_tail_probability_never_less_than_zero() -> None:
    config = DnnetConfig(noise_model="gmm", clip_high=1000.0, clip_low=0.0, components=2)
    method = Dnnet(config, Normalisation(500.0, 250.0), torch.device("cpu"))
    low, high = method.clip_levels
    assert (low, high) == (-2.0, 2.0)
    signal = torch.tensor([2.0, 1.9, 0.0, -2.0])
    target = torch.tensor([2.0, 2.0, 0.5, -2.0])  # clipped high, clipped high, a measurement, clipped low
    mixture = method.nnet(signal)
    nll = method._censored_nll(mixture, target, signal)
    expected = torch.stack([
        -mixture.log_survival(high - signal)[0], -mixture.log_survival(high - signal)[1],
        mixture.nll(target - signal)[2], -mixture.log_cdf(low - signal)[3],
    ])
    torch.testing.assert_close(nll, expected)
    # A probability is at most 1: predicting the clip level exactly cannot be rewarded without bound,
    # as the density of a zero residual under a narrow component would be.
    assert (nll[[0, 1, 3]] >= 0).all()


def test_training_finds_the_clip_level_and_says_so(tmp_path: Path) -> None:
    from selfden.runs.plan import new_run_config, plan_run

    path = tmp_path / "saturated.tif"
    tifffile.imwrite(path, SATURATED, photometric="minisblack")
    gmm = {"noise_model": "gmm"}
    plan = plan_run(new_run_config("dnnet", [path], gmm, {}, {"device": "cpu", "max_steps": 1}, 0))
    assert (plan.config.method_config.clip_low, plan.config.method_config.clip_high) == (0.0, 65535.0)
    note = next(n.text for n in plan.notes if "clipped pixels" in n.text)
    assert "at the maximum 65535" in note and "clip_detection=false" in note, note
    chosen = plan_run(new_run_config("dnnet", [path], {**gmm, "clip_high": 60000.0}, {}, {"device": "cpu", "max_steps": 1}, 0))
    assert (chosen.config.method_config.clip_low, chosen.config.method_config.clip_high) == (None, 60000.0)
    off = plan_run(new_run_config("dnnet", [path], {**gmm, "clip_detection": False}, {}, {"device": "cpu", "max_steps": 1}, 0))
    assert off.config.method_config.clip_high is None and not any("clipped" in n.text for n in off.notes)
    plain = plan_run(new_run_config("dnnet", [path], {}, {}, {"device": "cpu", "max_steps": 1}, 0))
    assert plain.config.method_config.clip_high is None, "the default, plain L2, has no likelihood to censor"
