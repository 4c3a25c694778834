"""The compressive autoencoder (``cae``): shapes, training, state, and the bottleneck as the only path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.ndimage import gaussian_filter

from selfden.errors import SelfdenError
from selfden.methods import get_method
from selfden.methods.base import Normalisation
from selfden.methods.cae import Cae, CaeConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ema_decay 0: these tests look at ``cae.net`` itself (the weight average has its own test)
TINY = dict(widths=(4, 4, 8, 8, 8, 8), residual_blocks=1, residual_width=8, bottleneck=2, ema_decay=0.0)


def make_cae(seed: int = 0, **overrides: object) -> Cae:
    torch.manual_seed(seed)
    return Cae(CaeConfig(**{**TINY, **overrides}), Normalisation(0.0, 1.0), torch.device("cpu"))


def noisy_blobs(n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """Smooth random structure in [0, 1] plus strong Gaussian noise, as (n, 1, size, size)."""
    clean = np.stack([gaussian_filter(rng.random((size, size)), 4) for _ in range(n)])
    clean = (clean - clean.min()) / (clean.max() - clean.min())
    noisy = clean + rng.normal(0, 0.2, clean.shape)
    return torch.from_numpy(noisy[:, None].astype(np.float32))


def test_registry_returns_cae() -> None:
    assert get_method("cae") is Cae
    assert Cae.normalisation_kind == "range"
    assert Cae.config_class is CaeConfig


def test_output_shape_equals_input_shape_on_odd_multiples_of_the_step() -> None:
    cae = make_cae()
    x = torch.rand(2, 1, 96, 160)
    assert cae.denoise(x).shape == x.shape
    assert cae.export_graphs()["denoiser"](x).shape == x.shape


def test_denoise_pads_sizes_that_are_not_multiples_of_the_step() -> None:
    cae = make_cae()
    x = torch.rand(1, 1, 37, 31)
    assert cae.denoise(x).shape == x.shape


def test_heads_are_at_full_half_quarter_and_eighth_resolution() -> None:
    cae = make_cae()
    heads = cae.net.heads(torch.rand(1, 1, 64, 128))
    assert [tuple(h.shape[-2:]) for h in heads] == [(64, 128), (32, 64), (16, 32), (8, 16)]


def test_outputs_stay_within_the_margin_around_zero_to_one() -> None:
    cae = make_cae(output_margin=0.1)
    y = cae.denoise(torch.randn(2, 1, 64, 64) * 10)
    assert y.min() >= -0.1 - 1e-6 and y.max() <= 1.1 + 1e-6, (float(y.min()), float(y.max()))


def test_code_has_bottleneck_channels_at_one_32nd_resolution() -> None:
    cae = make_cae(bottleneck=3)
    assert cae.size_step == 32
    assert tuple(cae.net.code(torch.rand(2, 1, 96, 160)).shape) == (2, 3, 3, 5)


def test_unset_widths_and_bottleneck_follow_the_device(tmp_path) -> None:
    from selfden.runs.plan import new_run_config

    cpu, gpu = (CaeConfig().device_defaults(kind).config for kind in ("cpu", "cuda"))
    assert (cpu.widths, cpu.bottleneck) == ((8, 16, 32, 64), 2)  # code at 1/8 resolution
    assert (gpu.widths, gpu.bottleneck) == ((8, 16, 32, 64, 64, 64), 64)  # the paper's 1/32
    explicit = CaeConfig(bottleneck=5).device_defaults("cpu").config
    assert (explicit.widths, explicit.bottleneck) == ((8, 16, 32, 64), 5)
    planned = new_run_config("cae", [tmp_path / "x.tif"], {}, {}, {"device": "cpu", "max_steps": 1}, 0)
    assert planned.method_config == cpu, "a planned run saves the device-resolved config"


def test_denoise_validation_and_export_use_the_weight_average() -> None:
    rng = np.random.default_rng(0)
    train = noisy_blobs(8, 64, rng)
    cae = make_cae(ema_decay=0.9, learning_rate=3e-3, norm="layer")
    for _ in range(3):
        cae.training_step(train[:4])
    x = train[4:6]
    averaged = cae.average.model(cae.net)
    assert averaged is not cae.net
    with torch.no_grad():
        expected, raw = averaged(x), cae.net.eval()(x)
    assert not torch.allclose(expected, raw), "three steps must separate the average from the weights"
    assert torch.equal(cae.denoise(x), expected)
    assert torch.equal(cae.export_graphs()["denoiser"](x), expected)
    state = cae.state_dict()
    restored = make_cae(ema_decay=0.9, learning_rate=3e-3, norm="layer")
    restored.load_state_dict(state)
    assert torch.equal(restored.denoise(x), expected)


def test_cosine_schedule_anneals_the_rate_to_zero_at_the_end_of_the_budget() -> None:
    cae = make_cae(learning_rate=1e-3, lr_schedule="cosine")
    rates = []
    for fraction in (0.0, 0.5, 1.0):
        cae.on_budget_progress(fraction)
        rates.append(cae.optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([1e-3, 5e-4, 0.0])
    constant = make_cae(learning_rate=1e-3, lr_schedule="constant")
    constant.on_budget_progress(0.9)
    assert constant.optimizer.param_groups[0]["lr"] == 1e-3


class _ZeroCode(torch.nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.zeros(h.shape[0], self.channels, *h.shape[-2:])


def test_no_skip_connection_output_depends_on_the_input_only_through_the_code() -> None:
    cae = make_cae()
    cae.net.squeeze = _ZeroCode(channels=2)  # a code that carries no information
    a, b = torch.rand(1, 1, 64, 96), torch.rand(1, 1, 64, 96) * 5
    out_a, out_b = cae.denoise(a), cae.denoise(b)
    assert torch.equal(out_a, out_b), float((out_a - out_b).abs().max())


def test_a_few_training_steps_lower_the_validation_loss() -> None:
    # Layer norm (the paper's): batch norm's running statistics lag behind in the first steps.
    rng = np.random.default_rng(0)
    train, val = noisy_blobs(32, 64, rng), noisy_blobs(8, 64, rng)
    cae = make_cae(learning_rate=3e-3, norm="layer")
    before = cae.validation_step(val)["val_loss"]
    for step in range(30):
        metrics = cae.training_step(train[(step * 4) % 32 :][:4])
    after = cae.validation_step(val)["val_loss"]
    assert np.isfinite(metrics["loss"])
    assert after < 0.9 * before, f"val_loss {before:.4f} -> {after:.4f}"


def test_default_settings_fit_a_fixed_batch() -> None:
    batch = noisy_blobs(8, 64, np.random.default_rng(0))
    cae = make_cae(learning_rate=3e-3)
    losses = [cae.training_step(batch)["loss"] for _ in range(25)]
    assert losses[-1] < 0.7 * losses[0], f"training loss {losses[0]:.4f} -> {losses[-1]:.4f}"


def test_state_dict_round_trip_resumes_identically() -> None:
    x = noisy_blobs(4, 64, np.random.default_rng(1))
    first = make_cae(seed=0)
    first.training_step(x)
    second = make_cae(seed=1)
    second.load_state_dict(first.state_dict())
    assert torch.equal(first.denoise(x), second.denoise(x))
    loss_first, loss_second = first.training_step(x)["loss"], second.training_step(x)["loss"]
    assert loss_first == loss_second
    assert torch.equal(first.denoise(x), second.denoise(x)), "optimiser state did not round-trip"


def test_state_dict_loads_with_weights_only(tmp_path) -> None:
    cae = make_cae()
    torch.save(cae.state_dict(), tmp_path / "state.pt")
    make_cae(seed=3).load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))


def test_batch_sizes_that_are_not_multiples_of_the_step_are_refused() -> None:
    with pytest.raises(SelfdenError, match="multiples of 32"):
        make_cae().training_step(torch.rand(2, 1, 48, 64))


def test_halo_must_keep_twice_the_halo_a_multiple_of_the_step() -> None:
    with pytest.raises(ValidationError, match="multiple of the size step"):
        CaeConfig(halo=24)
    assert CaeConfig(halo=48).halo == 48


def test_unknown_config_keys_are_errors() -> None:
    with pytest.raises(ValidationError, match="bottelneck"):
        CaeConfig(bottelneck=4)  # type: ignore[call-arg]


def test_widths_set_the_size_step() -> None:
    cae = make_cae(widths=(4, 8, 8), halo=2)
    assert cae.size_step == 4
    assert cae.denoise(torch.rand(1, 1, 12, 20)).shape == (1, 1, 12, 20)
    assert [tuple(h.shape[-2:]) for h in cae.net.heads(torch.rand(1, 1, 12, 20))] == [(12, 20), (6, 10)]


def test_batch_norm_refuses_a_training_batch_with_a_single_code_pixel() -> None:
    with pytest.raises(SelfdenError, match="batch norm"):
        make_cae(norm="batch").training_step(torch.rand(1, 1, 32, 32))


@pytest.mark.parametrize("norm", ["layer", "none"])
def test_other_normalisations_train_and_keep_shapes(norm: str) -> None:
    cae = make_cae(norm=norm)
    x = noisy_blobs(2, 64, np.random.default_rng(2))
    assert np.isfinite(cae.training_step(x)["loss"])
    assert cae.denoise(x[:1, :, :, :32]).shape == (1, 1, 64, 32)
