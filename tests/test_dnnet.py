"""dnnet (D-net + N-net): masking invariants, the noise mixture, a learned noise model that matches
known Poisson-Gaussian noise, denoising, export, state, the package table and the noise-model figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.ndimage import gaussian_filter

from selfden.errors import InputError, SelfdenError
from selfden.geometry.orientations import DIHEDRAL
from selfden.methods import get_method
from selfden.methods.base import Normalisation
from selfden.methods.dnnet import Dnnet, DnnetConfig, empirical_noise, noise_model_curve
from selfden.methods.dnnet.masking import apply_mask, draw_grid_mask, neighbour_average, neighbour_kernel
from selfden.methods.dnnet.networks import NoiseNet

#: Known noise of the synthetic data (raw units): std(x) = sqrt(GAIN * x + READ**2).
GAIN, READ = 0.02, 0.05
TINY = dict(filters=8, noise_net_width=16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_dnnet(seed: int = 0, norm: Normalisation | None = None, **overrides: object) -> Dnnet:
    torch.manual_seed(seed)
    config = DnnetConfig(**{**TINY, **overrides})
    return Dnnet(config, norm or Normalisation(0.0, 1.0), torch.device("cpu"))


def smooth_scene(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random blobs in [0.1, 1] (raw units): easy to denoise, extremes inside the frame."""
    base = np.stack([gaussian_filter(rng.random((size, size)), 8, mode="wrap") for _ in range(n)])
    low, high = base.min(axis=(1, 2), keepdims=True), base.max(axis=(1, 2), keepdims=True)
    return 0.1 + 0.9 * (base - low) / (high - low)


def poisson_gaussian(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return GAIN * rng.poisson(clean / GAIN) + rng.normal(0.0, READ, clean.shape)


def random_crops(data: torch.Tensor, rng: np.random.Generator, batch: int = 8, size: int = 32) -> torch.Tensor:
    n, _, height, width = data.shape
    ys, xs = rng.integers(0, height - size + 1, batch), rng.integers(0, width - size + 1, batch)
    picks = zip(rng.integers(0, n, batch), ys, xs)
    return torch.stack([data[i, :, y : y + size, x : x + size] for i, y, x in picks])


def psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(10 * np.log10(np.ptp(truth) ** 2 / np.mean((estimate - truth) ** 2)))


class Trained:
    """A dnnet trained on known Poisson-Gaussian noise, with its data (raw and normalised)."""

    def __init__(self, noise_model: str, steps: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.clean = smooth_scene(4, 96, rng)
        self.noisy = poisson_gaussian(self.clean, rng)
        self.norm = Normalisation(float(self.noisy.mean()), float(self.noisy.std()))
        normalised = (self.noisy - self.norm.offset) / self.norm.scale
        self.data = torch.from_numpy(normalised[:, None].astype(np.float32))
        self.method = make_dnnet(seed, self.norm, noise_model=noise_model, learning_rate=3e-3, lr_halving_steps=100)
        for _ in range(steps):
            self.metrics = self.method.training_step(random_crops(self.data, rng))

    def denoised_raw(self) -> np.ndarray:
        return self.method.denoise(self.data).numpy()[:, 0] * self.norm.scale + self.norm.offset


@pytest.fixture(scope="module")
def trained_gmm() -> Trained:
    """~20-30 s on one shared core: 400 steps of 8 crops 32², tiny D-net."""
    return Trained("gmm", steps=400)


# --- registry and config ------------------------------------------------------------------------


def test_registry_returns_dnnet_with_standardised_inputs_and_augmentation() -> None:
    assert get_method("dnnet") is Dnnet
    assert Dnnet.config_class is DnnetConfig
    assert Dnnet.normalisation_kind == "standardise"
    assert DnnetConfig().training_orientations() == DIHEDRAL
    assert any("2102.08023" in (c.url or "") for c in Dnnet.citations)
    assert any("1901.11365" in (c.url or "") for c in Dnnet.citations)


def test_a_cpu_run_trains_the_narrow_d_net_unless_the_user_chose_a_width() -> None:
    from selfden.methods.dnnet.config import CPU_FILTERS

    on_cpu = DnnetConfig().device_defaults("cpu")
    assert (on_cpu.config.filters, on_cpu.patch_size, on_cpu.batch_size) == (CPU_FILTERS, 64, 8)
    assert "filters" in on_cpu.config.model_fields_set, "the saved config names its width, so a resume keeps it"
    assert DnnetConfig(filters=64).device_defaults("cpu").config.filters == 64
    assert DnnetConfig().device_defaults("cuda").config.filters == 64


def test_unknown_config_keys_and_bad_grid_spacings_are_errors() -> None:
    with pytest.raises(ValidationError, match="filtres"):
        DnnetConfig(filtres=32)
    with pytest.raises(ValidationError, match="grid_spacing"):
        DnnetConfig(grid_spacing=(1, 5))
    with pytest.raises(ValidationError):
        DnnetConfig(noise_model="laplace")
    with pytest.raises(ValidationError, match="choose one"):
        DnnetConfig(lr_schedule="cosine", lr_halving_steps=100)
    assert DnnetConfig(lr_halving_steps=100).lr_schedule == "constant", "halving replaces the default annealing"


def test_the_cosine_schedule_follows_the_budget_to_zero_and_constant_leaves_the_rate() -> None:
    cosine = make_dnnet(learning_rate=4e-4, lr_schedule="cosine")
    rates = []
    for fraction in (0.0, 0.5, 1.0):
        cosine.on_budget_progress(fraction)
        rates.append(cosine.optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([4e-4, 2e-4, 0.0])
    constant = make_dnnet(learning_rate=4e-4, lr_schedule="constant")
    constant.on_budget_progress(0.9)
    assert constant.optimizer.param_groups[0]["lr"] == 4e-4


# --- masking ----------------------------------------------------------------------------------------


def test_grid_spacing_is_drawn_from_3_to_5_per_axis_and_masked_pixels_lie_on_the_grid() -> None:
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(60):
        grid = draw_grid_mask((3, 40, 44), generator)
        seen.update(grid.spacing)
        assert all(3 <= s <= 5 for s in grid.spacing), grid.spacing
        b, _, ys, xs = torch.nonzero(grid.mask, as_tuple=True)
        oy, ox = grid.offsets[b, 0], grid.offsets[b, 1]
        assert torch.all((ys - oy) % grid.spacing[0] == 0) and torch.all((xs - ox) % grid.spacing[1] == 0)
    assert seen == {3, 4, 5}, f"spacings drawn: {sorted(seen)}"


def test_about_ten_percent_of_grid_points_are_dropped() -> None:
    generator = torch.Generator().manual_seed(1)
    grid_points = masked = 0
    for _ in range(20):
        grid = draw_grid_mask((16, 60, 60), generator)
        sy, sx = grid.spacing
        per_image = [len(range(int(oy), 60, sy)) * len(range(int(ox), 60, sx)) for oy, ox in grid.offsets]
        grid_points += sum(per_image)
        masked += int(grid.mask.sum())
    dropped = 1 - masked / grid_points
    assert 0.09 < dropped < 0.11, f"dropped {dropped:.4f} of {grid_points} grid points"


def test_neighbour_weights_sum_to_one_exclude_the_centre_and_are_gaussian() -> None:
    kernel = neighbour_kernel()[0, 0]
    assert kernel[1, 1] == 0.0
    assert torch.isclose(kernel.sum(), torch.tensor(1.0)), float(kernel.sum())
    edges, corners = kernel[0, 1], kernel[0, 0]
    assert torch.allclose(kernel, kernel.T) and torch.allclose(kernel, kernel.flip(0))
    assert torch.isclose(corners / edges, torch.exp(torch.tensor(-0.5))), "weights must fall off as a Gaussian"
    constant = torch.full((1, 1, 9, 7), 3.5)
    assert torch.allclose(neighbour_average(constant), constant), "reflected borders must keep a constant image"


def test_replaced_pixels_do_not_depend_on_their_own_value_even_at_the_borders() -> None:
    generator = torch.Generator().manual_seed(2)
    batch = torch.randn(8, 1, 23, 29)
    border_masked = False
    for _ in range(10):
        mask = draw_grid_mask((8, 23, 29), generator).mask
        spiked = torch.where(mask, torch.full_like(batch, 1e6), batch)
        replaced, replaced_spiked = apply_mask(batch, mask), apply_mask(spiked, mask)
        assert torch.equal(replaced[mask], replaced_spiked[mask]), "a masked pixel's own value leaked into its value"
        assert torch.equal(replaced[~mask], batch[~mask]), "unmasked pixels must pass unchanged"
        border_masked |= bool(mask[..., 0, :].any() and mask[..., -1, :].any() and mask[..., :, 0].any())
    assert border_masked, "no draw masked border pixels: the test did not exercise the reflection"


def test_a_masked_corner_pixel_averages_its_reflected_neighbours() -> None:
    image = torch.arange(20.0).reshape(1, 1, 4, 5)
    kernel = neighbour_kernel()[0, 0]
    neighbours = image[0, 0, :2, :2]  # reflection: row -1 is row 1, column -1 is column 1
    reflected = torch.stack([torch.stack([neighbours[1, 1], neighbours[1, 0], neighbours[1, 1]]),
                             torch.stack([neighbours[0, 1], neighbours[0, 0], neighbours[0, 1]]),
                             torch.stack([neighbours[1, 1], neighbours[1, 0], neighbours[1, 1]])])
    expected = (kernel * reflected).sum()
    assert torch.isclose(neighbour_average(image)[0, 0, 0, 0], expected)


# --- the noise mixture ------------------------------------------------------------------------------


def randomised_noise_net(components: int, seed: int) -> NoiseNet:
    torch.manual_seed(seed)
    net = NoiseNet(components, 16, scale_floor=1e-3)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(4.0)  # spread weights, means and scales far from their initial values
    return net


@pytest.mark.parametrize("components", [1, 3, 5])
def test_the_noise_mixture_has_mean_exactly_zero_for_random_inputs(components: int) -> None:
    net = randomised_noise_net(components, seed=components)
    mixture = net(torch.randn(1000) * 3)
    mean, std = mixture.mean(), mixture.std()
    assert torch.all(mean.abs() <= 1e-5 * (1 + std)), float((mean.abs() / std).max())
    assert torch.allclose(mixture.weights.sum(dim=1), torch.ones(1000))
    assert torch.all(mixture.scales >= 1e-3)


@torch.no_grad()
def test_mixture_std_and_skewness_match_samples_and_its_density_integrates_to_one() -> None:
    mixture = randomised_noise_net(3, seed=11)(torch.tensor([0.7]))
    generator = torch.Generator().manual_seed(0)
    component = torch.multinomial(mixture.weights[0], 400_000, replacement=True, generator=generator)
    samples = mixture.means[0, component] + mixture.scales[0, component] * torch.randn(400_000, generator=generator)
    centred = samples - samples.mean()
    std, skew = float(centred.std()), float((centred**3).mean() / centred.std() ** 3)
    assert abs(std / float(mixture.std()) - 1) < 0.01, (std, float(mixture.std()))
    assert abs(skew - float(mixture.skewness())) < 0.05, (skew, float(mixture.skewness()))
    grid = torch.linspace(-12 * float(mixture.std()), 12 * float(mixture.std()), 20001)
    expanded = type(mixture)(*(t.expand(len(grid), -1) for t in (mixture.log_weights, mixture.means, mixture.scales)))
    density = torch.exp(-expanded.nll(grid))
    assert abs(float(torch.trapezoid(density, grid)) - 1) < 1e-3


# --- training ---------------------------------------------------------------------------------------


def test_the_learned_noise_std_matches_the_true_poisson_gaussian_std(trained_gmm: Trained) -> None:
    low, high = np.quantile(trained_gmm.clean, [0.05, 0.95])  # the central 90% of the signal
    curve = noise_model_curve(trained_gmm.method, (low, high), points=25)
    true_std = np.sqrt(GAIN * curve.signal + READ**2)
    relative = curve.std / true_std - 1
    rows = zip(curve.signal, curve.std, true_std)
    table = "\n".join(f"signal {s:.3f}: learned {m:.4f} true {t:.4f}" for s, m, t in rows)
    assert np.all(np.abs(relative) < 0.15), table
    assert np.all(curve.skew > 0), f"Poisson noise is right-skewed; learned skewness {curve.skew}"


def test_training_raises_psnr_far_above_the_noisy_input(trained_gmm: Trained) -> None:
    before, after = psnr(trained_gmm.noisy, trained_gmm.clean), psnr(trained_gmm.denoised_raw(), trained_gmm.clean)
    assert after > before + 6, f"PSNR noisy {before:.2f} dB -> denoised {after:.2f} dB"


def test_noise2self_mode_also_raises_psnr_and_has_no_noise_model() -> None:
    trained = Trained("none", steps=120, seed=1)
    before, after = psnr(trained.noisy, trained.clean), psnr(trained.denoised_raw(), trained.clean)
    assert after > before + 4, f"PSNR noisy {before:.2f} dB -> denoised {after:.2f} dB"
    assert trained.method.package_config() == {"noise_model": {"kind": "none"}}
    with pytest.raises(SelfdenError, match="noise_model='none'"):
        noise_model_curve(trained.method)


def test_empirical_residual_std_follows_the_true_noise(trained_gmm: Trained) -> None:
    empirical = empirical_noise(trained_gmm.method, [trained_gmm.data], bins=8)
    true_std = np.sqrt(GAIN * empirical.signal + READ**2)
    assert len(empirical.signal) == 8 and np.all(empirical.count >= 100)
    assert np.all(np.abs(empirical.std / true_std - 1) < 0.15), (empirical.std, true_std)


def test_training_under_cpu_bf16_autocast_keeps_a_finite_fp32_loss() -> None:
    method = make_dnnet(noise_model="gmm")
    batch = torch.randn(2, 1, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        metrics = method.training_step(batch)
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["noise_std"]), metrics


def test_validation_is_repeatable_and_updates_nothing() -> None:
    method = make_dnnet(noise_model="gmm")
    batch = torch.randn(2, 1, 32, 32)
    first = method.validation_step(batch)
    assert method.validation_step(batch) == first
    assert {"val_loss", "masked_mse", "noise_std"} <= set(first)


# --- inference graph, tiling, state ----------------------------------------------------------------


def test_export_graph_keeps_the_shape_at_odd_multiples_of_the_size_step() -> None:
    method = make_dnnet()
    graphs = method.export_graphs()
    assert set(graphs) == {"denoiser"}
    for height, width in ((4 * 9, 4 * 7), (4 * 3, 4 * 11)):
        x = torch.randn(2, 1, height, width)
        with torch.no_grad():
            assert graphs["denoiser"](x).shape == x.shape
    assert method.denoise(torch.randn(1, 1, 37, 31)).shape == (1, 1, 37, 31)


def test_a_tile_with_the_halo_reproduces_the_whole_image_output_exactly() -> None:
    method = make_dnnet(seed=4)
    halo, step = method.halo, method.size_step
    assert halo % step == 0
    image = torch.randn(1, 1, 128, 132)
    whole = method.denoise(image)
    y0, x0, core = 48, 52, 24  # a core on the step grid, its context inside the image
    tile = image[..., y0 - halo : y0 + core + halo, x0 - halo : x0 + core + halo]
    centre = method.denoise(tile)[..., halo : halo + core, halo : halo + core]
    assert torch.allclose(centre, whole[..., y0 : y0 + core, x0 : x0 + core], atol=1e-5), float(
        (centre - whole[..., y0 : y0 + core, x0 : x0 + core]).abs().max()
    )


def test_state_dict_round_trip_resumes_identically_including_the_masks(tmp_path: Path) -> None:
    batch = torch.randn(2, 1, 32, 32)
    first = make_dnnet(seed=0, lr_halving_steps=3)
    first.training_step(batch)
    torch.save(first.state_dict(), tmp_path / "state.pt")
    second = make_dnnet(seed=1, lr_halving_steps=3)
    second.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert torch.equal(first.denoise(batch), second.denoise(batch))
    for _ in range(3):
        assert first.training_step(batch) == second.training_step(batch)
    assert torch.equal(first.denoise(batch), second.denoise(batch)), "optimiser, schedule or masks did not round-trip"


def test_batches_that_are_not_multiples_of_the_step_are_refused() -> None:
    with pytest.raises(SelfdenError, match="multiples of 4"):
        make_dnnet().training_step(torch.randn(1, 1, 30, 32))


# --- the noise model for users ----------------------------------------------------------------------


def test_package_config_tabulates_the_noise_model_in_raw_units(trained_gmm: Trained) -> None:
    table = trained_gmm.method.package_config()["noise_model"]
    assert table["kind"] == "gmm" and table["components"] == 3
    assert len(table["signal"]) == len(table["std"]) == len(table["skewness"]) == 9
    low, high = table["signal"][0], table["signal"][-1]
    assert 0.0 < low < 0.4 and 0.7 < high < 1.1, f"signal range {low}..{high} should cover the raw data 0.1..1"
    true_std = np.sqrt(GAIN * np.array(table["signal"]) + READ**2)
    assert np.all(np.abs(np.array(table["std"]) / true_std - 1) < 0.3), (table["std"], true_std)


def test_diagnostic_hook_writes_the_noise_model_figure(trained_gmm: Trained, tmp_path: Path) -> None:
    paths = trained_gmm.method.diagnostic_figures([trained_gmm.data[:2]], tmp_path)
    assert [p.name for p in paths] == ["noise_model.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_noise_model_report_draws_a_trained_run_and_refuses_other_methods(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    from selfden.methods import get_method
    from selfden.runs.config import save_run_config
    from selfden.runs.plan import new_run_config
    from selfden.training import TrainerConfig, train

    rng = np.random.default_rng(3)
    image = tmp_path / "noisy.tif"
    tifffile.imwrite(image, poisson_gaussian(smooth_scene(2, 64, rng), rng).astype(np.float32))
    config = new_run_config("dnnet", [image], TINY, {"patch_size": 32, "batch_size": 2, "val_batches": 1},
                                 {"max_steps": 3, "write_report": False}, seed=5)
    norm = Normalisation(0.5, 0.3)
    config = config.model_copy(update={"normalisation": norm})
    run_dir = tmp_path / "run"
    save_run_config(run_dir, config)
    method = Dnnet(DnnetConfig(**TINY), norm, torch.device("cpu"))
    batches = [random_crops(torch.randn(2, 1, 64, 64), rng, batch=2).numpy()]
    train(method, lambda: batches[0], batches, run_dir, TrainerConfig(max_steps=3, write_report=False))

    from selfden.runs.noise_model import noise_model_report

    png = noise_model_report(run_dir, tmp_path / "noise.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    other = config.model_copy(update={"method": "cae", "method_config": get_method("cae").config_class()})
    save_run_config(run_dir, other)
    with pytest.raises(InputError, match="dnnet"):
        noise_model_report(run_dir, tmp_path / "other.png")
