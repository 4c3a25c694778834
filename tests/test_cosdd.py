"""COSDD: the noise model's causality, training, state, any-size inference, ONNX graphs, collapse."""

from __future__ import annotations

import copy
import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from selfden.geometry.orientations import DIHEDRAL, transform
from selfden.methods import get_method
from selfden.methods.base import Normalisation
from selfden.methods.cosdd import Cosdd, CosddConfig
from selfden.methods.cosdd.ar_decoder import ArNoiseDecoder, ar_dilations
from selfden.methods.cosdd.config import CosddArch
from selfden.methods.cosdd.sampler import PosteriorSampler

onnx = pytest.importorskip("onnx", reason="the ONNX tests need the onnx package")
ort = pytest.importorskip("onnxruntime", reason="the ONNX tests need onnxruntime")

TINY = dict(size="tiny", levels=4, features=8, latent_channels=4, components=3, downsamplings=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_cosdd(seed: int = 0, **overrides: object) -> Cosdd:
    torch.manual_seed(seed)
    return Cosdd(CosddConfig(**{**TINY, **overrides}), Normalisation(0.0, 1.0), torch.device("cpu"))


def row_noise_batch(n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """Smooth structure plus noise correlated along x, standardised, as (n, 1, size, size)."""
    clean = np.stack([gaussian_filter(rng.random((size, size)), 3) for _ in range(n)])
    clean = (clean - clean.mean()) / clean.std()
    noisy = clean + gaussian_filter1d(rng.normal(0, 1.5, clean.shape), 1.5, axis=-1)
    noisy = (noisy - noisy.mean()) / noisy.std()
    return torch.from_numpy(noisy[:, None].astype(np.float32))


# --- the autoregressive noise model ---------------------------------------------------------------


def mixture_input_gradient(decoder: ArNoiseDecoder, shape: tuple[int, int], at: tuple[int, int]) -> np.ndarray:
    """|d(mixture parameters at pixel ``at``)/d(noisy image)| for random inputs."""
    torch.manual_seed(1)
    x = torch.randn(1, 1, *shape, requires_grad=True)
    s_code = torch.randn(1, decoder.head.in_channels, *shape)
    params = decoder(x, s_code)
    total = sum(t[0, :, at[0], at[1]].sum() for t in (params.log_weights, params.means, params.scales))
    if total.requires_grad:
        total.backward()
    return np.zeros(shape) if x.grad is None else x.grad[0, 0].abs().numpy()


def arch(direction: str, receptive_field: int = 40) -> CosddArch:
    return CosddConfig(**TINY, direction=direction, ar_receptive_field=receptive_field).arch()


@pytest.mark.parametrize("receptive_field", [40, 8])
def test_ar_decoder_sees_only_pixels_to_its_left(receptive_field: int) -> None:
    r, c = 3, 50
    torch.manual_seed(0)  # random weights can zero a path (dead ReLU) and hide a window end
    grad = mixture_input_gradient(ArNoiseDecoder(arch("x", receptive_field)), (8, 64), (r, c))
    allowed = np.zeros_like(grad, dtype=bool)
    allowed[r, c - receptive_field : c] = True
    outside = np.argwhere(grad * ~allowed)
    assert grad[~allowed].max() == 0, f"pixels outside the causal window influence ({r},{c}): {outside}"
    assert grad[r, c - 1] > 0 and grad[r, c - receptive_field] > 0, "the window's ends must both be seen"


def test_ar_decoder_for_columns_sees_only_pixels_above() -> None:
    r, c = 50, 3
    torch.manual_seed(0)
    grad = mixture_input_gradient(ArNoiseDecoder(arch("y")), (64, 8), (r, c))
    allowed = np.zeros_like(grad, dtype=bool)
    allowed[r - 40 : r, c] = True
    outside = np.argwhere(grad * ~allowed)
    assert grad[~allowed].max() == 0, f"pixels outside the causal window influence ({r},{c}): {outside}"
    assert grad[r - 1, c] > 0 and grad[r - 40, c] > 0


def test_ar_decoder_without_direction_sees_no_pixels() -> None:
    decoder = ArNoiseDecoder(arch("none"))
    grad = mixture_input_gradient(decoder, (16, 16), (8, 8))
    assert grad.max() == 0, "direction none must depend on s_code only"
    assert decoder.receptive_field == 0


def test_default_dilations_give_a_receptive_field_of_40() -> None:
    assert ar_dilations(40) == (1, 1, 1, 1, 1, 2, 2)
    assert ArNoiseDecoder(arch("x")).receptive_field == 40


# --- config -----------------------------------------------------------------------------------------


def test_config_rejects_unknown_keys_and_bad_receptive_fields() -> None:
    with pytest.raises(ValidationError, match="colour"):
        CosddConfig(colour="red")
    with pytest.raises(ValidationError, match="multiple of 4"):
        CosddConfig(ar_receptive_field=10)
    with pytest.raises(ValidationError, match="levels"):
        CosddConfig(levels=4, downsamplings=3)


@pytest.mark.parametrize("direction", ["x", "y"])
def test_training_flips_keep_the_noise_axis_and_its_scan_direction(direction: str) -> None:
    rows, cols = np.mgrid[0:4, 0:6]
    along = cols if direction == "x" else rows  # each pixel's position along the noise axis
    names = CosddConfig(direction=direction).training_orientations()
    assert len(names) == 2 and "identity" in names, names
    for name in names:
        moved = transform(along, name)
        assert moved.shape == along.shape, f"{name} swaps the axes"
        assert np.all(np.diff(moved, axis=1 if direction == "x" else 0) == 1), f"{name} reverses the scan"
    assert set(CosddConfig(direction="none").training_orientations()) == set(DIHEDRAL)


def test_registry_finds_cosdd_and_size_step_follows_downsamplings() -> None:
    assert get_method("cosdd") is Cosdd
    method = make_cosdd()
    assert method.size_step == 4 and method.min_size == 4
    assert (2 * method.halo) % method.size_step == 0


# --- training and state -----------------------------------------------------------------------------


def test_a_few_training_steps_lower_the_loss() -> None:
    method = make_cosdd()
    rng = np.random.default_rng(0)
    val = row_noise_batch(4, 32, np.random.default_rng(99))
    before = method.validation_step(val)["val_loss"]
    for _ in range(12):
        metrics = method.training_step(row_noise_batch(4, 32, rng))
    after = method.validation_step(val)
    assert np.isfinite(metrics["loss"]) and {"kl_per_pixel", "nll", "signal_mse", "direct_mse"} <= set(metrics)
    assert after["val_loss"] < before - 0.3, f"val_loss {before:.3f} -> {after['val_loss']:.3f}"
    assert {"kl_per_pixel", "nll", "signal_mse", "direct_mse", "sample_spread", "collapsed"} <= set(after)


def test_signal_decoder_and_direct_denoiser_rates_follow_the_vae_and_not_their_own_losses() -> None:
    method = make_cosdd(plateau_patience=1)
    rate = lambda name: method.optimizers[name].param_groups[0]["lr"]  # noqa: E731
    start = rate("direct")
    metrics = {"val_loss": 1.0, "kl_per_pixel": 0.1, "sample_spread": 0.3}
    # the VAE keeps improving while the signal MSE against the noisy input rises (less noise kept) and
    # the direct MSE gets worse (its target moves): no cut
    for i in range(5):
        method.on_validation_end({**metrics, "val_loss": 1.0 - 0.1 * i, "signal_mse": 0.3 + 0.05 * i,
                                  "direct_mse": 0.001 * 10**i})
    assert rate("signal") == rate("direct") == start
    # the VAE plateaus: its rate drops and the other two with it
    for _ in range(4):
        method.on_validation_end({**metrics, "val_loss": 1.0, "signal_mse": 0.5, "direct_mse": 0.1})
    assert rate("vae") < start and rate("signal") == rate("direct") == rate("vae")


def test_a_resumed_run_gives_the_signal_decoder_the_vae_rate_it_had_lost() -> None:
    saved = make_cosdd().state_dict()
    saved["optimizers"]["signal"]["param_groups"][0]["lr"] = 2e-9  # as runs before the fix saved it
    resumed = make_cosdd()
    resumed.load_state_dict(saved)
    assert resumed.optimizers["signal"].param_groups[0]["lr"] == resumed.optimizers["vae"].param_groups[0]["lr"]


def test_a_cosine_schedule_anneals_all_three_networks_to_zero_at_the_end_of_the_budget() -> None:
    method = make_cosdd(lr_schedule="cosine", plateau_patience=1)
    rates = lambda: {name: opt.param_groups[0]["lr"] for name, opt in method.optimizers.items()}  # noqa: E731
    method.on_budget_progress(0.5)
    assert rates() == pytest.approx(dict.fromkeys(("vae", "signal", "direct"), 0.5 * method.config.learning_rate))
    for _ in range(4):  # a plateau no longer cuts the rate: the schedule owns it
        method.on_validation_end({"val_loss": 1.0, "signal_mse": 1.0, "direct_mse": 0.1, "kl_per_pixel": 0.1,
                                  "sample_spread": 0.3})
    assert rates() == pytest.approx(dict.fromkeys(("vae", "signal", "direct"), 0.5 * method.config.learning_rate))
    method.on_budget_progress(1.0)
    assert set(rates().values()) == {0.0}


def test_state_dict_round_trip_resumes_identically() -> None:
    rng = np.random.default_rng(0)
    batches = [row_noise_batch(4, 32, rng) for _ in range(3)]
    original = make_cosdd(seed=0)
    for batch in batches[:2]:
        original.training_step(batch)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    resumed = make_cosdd(seed=123)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    expected, got = original.training_step(batches[2]), resumed.training_step(batches[2])
    assert got == expected
    for (name, a), b in zip(original.vae.state_dict().items(), resumed.vae.state_dict().values()):
        assert torch.equal(a, b), name


def test_networks_run_on_sizes_other_than_the_training_crop() -> None:
    method = make_cosdd()
    rng = np.random.default_rng(0)
    for _ in range(2):
        method.training_step(row_noise_batch(4, 32, rng))
    metrics = method.validation_step(torch.randn(2, 1, 48, 64))
    assert np.isfinite(metrics["val_loss"])
    assert method.denoise(torch.randn(1, 1, 37, 31)).shape == (1, 1, 37, 31)
    graphs = method.export_graphs()
    encoder, decoder = graphs["sampler_encoder"], graphs["sampler_decoder"]
    posts = encoder(torch.randn(1, 1, 24, 40))
    eps = [torch.randn(s) for s in method.vae.latent_shapes(3, 24, 40)]
    assert decoder(*(p.expand(3, -1, -1, -1) for p in posts), *eps).shape == (3, 1, 24, 40)


# --- posterior collapse -----------------------------------------------------------------------------


def make_collapsed(method: Cosdd) -> None:
    """What collapse looks like: posterior = prior (KL 0) and a top-down path that ignores z.

    Every prior and posterior conv is zeroed, the top posterior's bias copies the constant top
    prior, and the merge convs drop their z inputs (z is concatenated last).
    """
    z = method.vae.latent_channels
    with torch.no_grad():
        for level in method.vae.top_down:
            for conv in (level.prior, level.posterior):
                if conv is not None:
                    conv.weight.zero_()
                    conv.bias.zero_()
            level.merge.weight[:, -z:] = 0.0
        method.vae.top_down[-1].posterior.bias.copy_(method.vae.top_prior.flatten())


def test_collapse_is_flagged_when_kl_and_sample_spread_vanish(caplog: pytest.LogCaptureFixture) -> None:
    method = make_cosdd(collapse_check_after_steps=0)
    make_collapsed(method)
    metrics = method.validation_step(row_noise_batch(4, 32, np.random.default_rng(0)))
    assert metrics["kl_per_pixel"] < 1e-5 and metrics["sample_spread"] < 1e-6, metrics
    assert metrics["collapsed"] == 1.0
    with caplog.at_level(logging.WARNING, logger="selfden.methods.cosdd.method"):
        method.on_validation_end(metrics)
    assert "posterior collapse" in caplog.text and "free_bits" in caplog.text


def test_small_kl_with_diverse_samples_is_not_collapse() -> None:
    method = make_cosdd(collapse_check_after_steps=0)
    make_collapsed(method)
    with torch.no_grad():  # z reaches the output again; its posterior is still the prior
        for level in method.vae.top_down:
            level.merge.weight[:, -method.vae.latent_channels :] = 1.0
    metrics = method.validation_step(row_noise_batch(4, 32, np.random.default_rng(0)))
    assert metrics["kl_per_pixel"] < 1e-5 and metrics["sample_spread"] > 0.02 and metrics["collapsed"] == 0.0, metrics


def test_collapse_is_not_judged_during_warm_up() -> None:
    method = make_cosdd(kl_warmup_steps=100, collapse_check_after_steps=0)
    make_collapsed(method)
    metrics = method.validation_step(row_noise_batch(4, 32, np.random.default_rng(0)))
    assert metrics["collapsed"] == 0.0
    assert method.training_step(row_noise_batch(4, 32, np.random.default_rng(1)))["kl_weight"] == 0.0


# --- ONNX graphs --------------------------------------------------------------------------------------


def export(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path) -> onnx.ModelProto:
    """opset 17, IR 8, dynamic batch/y/x for every input (what export/onnx.py writes)."""
    names = ["input"] + [f"eps{i}" for i in range(len(args) - 1)]
    axes = {name: {0: "b", 2: "y", 3: "x"} for name in [*names, "output"]}
    torch.onnx.export(module, args, str(path), input_names=names, output_names=["output"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    model = onnx.load(str(path))
    model.ir_version = 8
    return model


def run_onnx(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


@pytest.fixture(scope="module")
def graphs() -> dict[str, torch.nn.Module]:
    """The exported graphs of a briefly trained model, plus the single-graph sampler older packages ship."""
    torch.set_num_threads(1)
    method = make_cosdd()
    rng = np.random.default_rng(0)
    for _ in range(2):
        method.training_step(row_noise_batch(4, 32, rng))
    single = PosteriorSampler(copy.deepcopy(method.vae), copy.deepcopy(method.signal_decoder)).eval()
    return {**method.export_graphs(), "sampler": single}


def test_direct_denoiser_onnx_matches_torch(graphs: dict[str, torch.nn.Module], tmp_path: Path) -> None:
    x = torch.randn(2, 1, 32, 48)
    model = export(graphs["denoiser"], (x,), tmp_path / "denoiser.onnx")
    onnx.checker.check_model(model)
    probe = torch.randn(3, 1, 24, 40)
    got = run_onnx(model, {"input": probe.numpy()})
    with torch.no_grad():
        expected = graphs["denoiser"](probe).numpy()
    assert np.abs(got - expected).max() < 1e-4


def test_sampler_onnx_with_external_noise_matches_torch(graphs: dict[str, torch.nn.Module], tmp_path: Path) -> None:
    sampler = graphs["sampler"]
    shape = (2, 1, 24, 40)
    eps = [torch.randn(s) for s in sampler.latent_shapes(*shape[:1], *shape[2:])]
    x = torch.randn(shape)
    model = export(sampler, (x, *eps), tmp_path / "sampler_eps.onnx")
    got = run_onnx(model, {"input": x.numpy(), **{f"eps{i}": e.numpy() for i, e in enumerate(eps)}})
    with torch.no_grad():
        expected = sampler(x, *eps).numpy()
    assert np.abs(got - expected).max() < 1e-4


def test_seeded_sampler_is_reproducible_and_draws_per_batch_item(
    graphs: dict[str, torch.nn.Module], tmp_path: Path
) -> None:
    from selfden.export.onnx_random import seed_random_nodes

    model = export(graphs["sampler"], (torch.randn(1, 1, 32, 32),), tmp_path / "sampler.onnx")
    other = onnx.ModelProto()
    other.CopyFrom(model)
    assert seed_random_nodes(model, 1234.0) == 4  # one RandomNormalLike per level
    assert seed_random_nodes(other, 99.0) == 4
    assert model.ir_version == 8
    tile = np.random.default_rng(0).normal(size=(1, 1, 32, 32)).astype(np.float32)
    replicas = {"input": np.repeat(tile, 2, axis=0)}
    first, second = run_onnx(model, replicas), run_onnx(model, replicas)
    np.testing.assert_array_equal(first, second, err_msg="fresh sessions of a seeded graph must agree")
    assert np.abs(first[0] - first[1]).mean() > 1e-4, "each batch item needs its own latents"
    assert np.abs(run_onnx(other, replicas) - first).mean() > 1e-4, "different seeds must draw differently"


def test_size_auto_means_tiny_on_cpu_small_on_gpu_and_the_run_saves_the_choice(tmp_path) -> None:
    from selfden.methods.cosdd.config import CosddConfig
    from selfden.runs.plan import new_run_config

    assert CosddConfig().size == "auto"
    assert CosddConfig().device_defaults("cuda").config.size == "small"
    assert CosddConfig(size="large").device_defaults("cpu").config.size == "large", "an explicit size is kept"
    image = tmp_path / "noisy.npy"
    np.save(image, np.random.default_rng(0).normal(size=(2, 64, 64)).astype(np.float32))
    config = new_run_config("cosdd", [image], {"direction": "x"}, {}, {"device": "cpu", "max_steps": 1}, 0)
    assert config.method_config.size == "tiny", "the run's config must name the preset it trains"
    assert (config.data.patch_size, config.data.batch_size) == (64, 4), "CPU crops default to 64² x 4"
    explicit = new_run_config("cosdd", [image], {}, {"patch_size": 32}, {"device": "cpu", "max_steps": 1}, 0)
    assert explicit.data.patch_size == 32, "the user's choice wins over the method's CPU default"


def test_a_planned_run_measures_the_noise_direction_unless_the_user_chose_one(tmp_path: Path) -> None:
    import tifffile

    from selfden.errors import SelfdenError
    from selfden.runs.plan import new_run_config, plan_run
    from test_noise_analysis import blurred_noise, structured_images

    rng = np.random.default_rng(0)
    clean = structured_images(4, 96, rng)
    image = tmp_path / "rows.tif"
    tifffile.imwrite(image, (clean + blurred_noise(clean.shape, rng, -1)).astype(np.float32), photometric="minisblack")
    trainer = {"device": "cpu", "max_steps": 1}
    for options in ({}, {"direction": "auto"}):
        plan = plan_run(new_run_config("cosdd", [image], options, {}, trainer, 0))
        assert plan.config.method_config.direction == "x", plan.notes
        said = [(n.level, n.text.split(" — ")[0]) for n in plan.notes]
        assert said == [("note", "noise direction: x"), ("note", plan.notes[1].text)], plan.notes
        assert "along rows" in plan.notes[0].text and "COSDD prior" in plan.notes[1].text, plan.notes
    chosen = plan_run(new_run_config("cosdd", [image], {"direction": "y"}, {}, trainer, 0))
    assert chosen.config.method_config.direction == "y"
    assert not any("noise direction" in n.text for n in chosen.notes), chosen.notes
    with pytest.raises(SelfdenError, match="auto"):
        make_cosdd(direction="auto")


def test_a_planned_run_on_photon_counts_spreads_them_over_their_grid_unless_told_not_to(tmp_path: Path) -> None:
    import tifffile

    from selfden.runs.plan import new_run_config, plan_run
    from test_value_grid import counts_with_row_offsets

    image = tmp_path / "counts.tif"
    tifffile.imwrite(image, counts_with_row_offsets(np.random.default_rng(0)).astype(np.float32), photometric="minisblack")
    trainer = {"device": "cpu", "max_steps": 1}
    plan = plan_run(new_run_config("cosdd", [image], {"direction": "x"}, {}, trainer, 0))
    assert plan.config.method_config.value_step == pytest.approx(1 / 7, rel=1e-4)
    assert any("grid of step 0.1429" in n.text for n in plan.notes), plan.notes
    off = plan_run(new_run_config("cosdd", [image], {"direction": "x", "value_step": 0}, {}, trainer, 0))
    assert off.config.method_config.value_step == 0 and not any("grid" in n.text for n in off.notes), off.notes


def test_training_spreads_grid_values_over_one_step_and_runs_without_a_grid_train_as_before() -> None:
    step, scale = 0.25, 2.0
    method = Cosdd(CosddConfig(**TINY, value_step=step), Normalisation(0.0, scale), torch.device("cpu"))
    batch = torch.zeros(64, 1, 32, 32)
    spread = method._spread_over_grid(batch) - batch
    width = step / scale  # one grid step in normalised units
    assert float(spread.abs().max()) <= width / 2
    assert float(spread.std()) == pytest.approx(width / 12**0.5, rel=0.02)
    # a run saved before the grid was measured (value_step unset) and continuous data (0) train as before
    for value_step in (None, 0.0):
        plain = Cosdd(CosddConfig(**TINY, value_step=value_step), Normalisation(0.0, scale), torch.device("cpu"))
        assert plain._spread_over_grid(batch) is batch



# --- the split sampler: encoder once per tile, decoder per sample ----------------------------------


@pytest.fixture(scope="module")
def split_onnx(graphs: dict[str, torch.nn.Module], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The split graphs as export writes them (parity-checked against torch by export_graph)."""
    from selfden.export.onnx_graphs import export_graph

    folder = tmp_path_factory.mktemp("split")
    paths = {name: folder / f"{name}.onnx" for name in ("sampler_encoder", "sampler_decoder")}
    for name, path in paths.items():
        report = export_graph(graphs[name], path, sizes=((32, 32), (40, 48)))
        assert report.passed and not report.stochastic, report.format()
    return paths


def test_split_onnx_graphs_give_the_single_samplers_sample_for_the_same_noise(
    graphs: dict[str, torch.nn.Module], split_onnx: dict[str, Path]
) -> None:
    shape = (3, 1, 24, 40)
    x = torch.randn(1, 1, *shape[2:])
    eps = [torch.randn(s) for s in graphs["sampler"].latent_shapes(shape[0], *shape[2:])]
    encoder = ort.InferenceSession(str(split_onnx["sampler_encoder"]), providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(split_onnx["sampler_decoder"]), providers=["CPUExecutionProvider"])
    posts = encoder.run(None, {"input": x.numpy()})
    feeds = {f"post{i}": np.repeat(p, shape[0], axis=0) for i, p in enumerate(posts)}
    feeds.update({f"eps{i}": e.numpy() for i, e in enumerate(eps)})
    got = decoder.run(None, feeds)[0]
    with torch.no_grad():
        expected = graphs["sampler"](x.expand(shape), *eps).numpy()
    assert got.shape == shape and np.abs(got - expected).max() < 1e-4, np.abs(got - expected).max()
    assert np.abs(got[0] - got[1]).mean() > 1e-4, "different noise must give different samples"


def test_the_split_decoder_costs_half_a_sampler_pass_and_the_split_adds_no_work(
    graphs: dict[str, torch.nn.Module], split_onnx: dict[str, Path], tmp_path: Path
) -> None:
    from selfden.export.onnx_flops import count_macs

    size = (64, 64)
    shapes = graphs["sampler"].latent_shapes(1, *size)
    full = export(graphs["sampler"], (torch.randn(1, 1, *size),), tmp_path / "sampler.onnx")
    whole = count_macs(full, {"input": (1, 1, *size)})
    encoder = count_macs(onnx.load(str(split_onnx["sampler_encoder"])), {"input": (1, 1, *size)})
    inputs = {**{f"post{i}": (1, 2 * s[1], *s[2:]) for i, s in enumerate(shapes)},
              **{f"eps{i}": s for i, s in enumerate(shapes)}}
    decoder = count_macs(onnx.load(str(split_onnx["sampler_decoder"])), inputs)
    assert encoder + decoder == whole, (encoder, decoder, whole)
    # Measured 0.524 for the tiny preset (benchmarks/cosdd_sampling.py); this test model: see the message.
    assert decoder <= 0.55 * whole, decoder / whole


@pytest.mark.parametrize("lighter", [{"decoder_kernel": 1}, {"code_features": 4}], ids=["pointwise", "narrow-code"])
def test_lighter_full_resolution_decoding_costs_under_two_fifths_of_a_sampler_pass(
    lighter: dict[str, int], tmp_path: Path
) -> None:
    from selfden.export.onnx_flops import count_macs
    from selfden.export.onnx_graphs import export_graph

    torch.set_num_threads(1)
    method = make_cosdd(**lighter)
    method.training_step(row_noise_batch(4, 32, np.random.default_rng(0)))
    graphs = method.export_graphs()
    size = (64, 64)
    shapes = method.vae.latent_shapes(1, *size)
    macs = {}
    for name in ("sampler_encoder", "sampler_decoder"):
        report = export_graph(graphs[name], tmp_path / f"{name}.onnx", sizes=((32, 32),))
        assert report.passed, report.format()
        inputs = ({"input": (1, 1, *size)} if name == "sampler_encoder" else
                  {**{f"post{i}": (1, 2 * s[1], *s[2:]) for i, s in enumerate(shapes)},
                   **{f"eps{i}": s for i, s in enumerate(shapes)}})
        macs[name] = count_macs(onnx.load(str(tmp_path / f"{name}.onnx")), inputs)
    share = macs["sampler_decoder"] / (macs["sampler_encoder"] + macs["sampler_decoder"])
    # Measured for the tiny preset: 0.350 pointwise, 0.338 with a 16-channel code (32: 0.521); this model is smaller.
    assert share <= 0.4, share


def test_a_narrow_code_splits_into_graphs_that_give_the_single_samplers_sample(tmp_path: Path) -> None:
    from selfden.export.onnx_graphs import export_graph

    method = make_cosdd(code_features=4)
    method.training_step(row_noise_batch(4, 32, np.random.default_rng(0)))
    assert method.signal_decoder.net[0].in_channels == 4 and method.ar_decoder.s_proj[0].in_channels == 4
    graphs = method.export_graphs()
    for name in ("sampler_encoder", "sampler_decoder"):
        assert export_graph(graphs[name], tmp_path / f"{name}.onnx", sizes=((32, 32),)).passed
    single = PosteriorSampler(method.vae, method.signal_decoder).eval()
    x = torch.randn(1, 1, 24, 40)
    eps = [torch.randn(s) for s in single.latent_shapes(2, 24, 40)]
    encoder, decoder = (ort.InferenceSession(str(tmp_path / f"{n}.onnx"), providers=["CPUExecutionProvider"])
                        for n in ("sampler_encoder", "sampler_decoder"))
    feeds = {f"post{i}": np.repeat(p, 2, axis=0) for i, p in enumerate(encoder.run(None, {"input": x.numpy()}))}
    got = decoder.run(None, {**feeds, **{f"eps{i}": e.numpy() for i, e in enumerate(eps)}})[0]
    with torch.no_grad():
        expected = single(x.expand(2, 1, 24, 40), *eps).numpy()
    assert np.abs(got - expected).max() < 1e-4, np.abs(got - expected).max()


def test_new_tiny_runs_get_the_sampling_layout_and_saved_runs_without_it_rebuild_their_networks(
    tmp_path: Path,
) -> None:
    from selfden.runs.plan import new_run_config

    saved = CosddConfig(size="tiny").arch()  # a config saved before the options existed
    assert (saved.code_features, saved.stem_blocks) == (32, 1)
    image = tmp_path / "noisy.npy"
    np.save(image, np.random.default_rng(0).normal(size=(2, 64, 64)).astype(np.float32))
    new = new_run_config("cosdd", [image], {"direction": "x"}, {}, {"device": "cpu", "max_steps": 1}, 0)
    assert (new.method_config.code_features, new.method_config.stem_blocks) == (24, 2), "saved explicitly"
    wider = CosddConfig(size="tiny", features=48).device_defaults("cpu").config
    assert wider.code_features == 36, "the code keeps its share of wider features"
    chosen = CosddConfig(size="tiny", code_features=12, stem_blocks=1).device_defaults("cpu").config
    assert (chosen.code_features, chosen.stem_blocks) == (12, 1), "the user's choice wins"
    assert CosddConfig(size="small").device_defaults("cuda").config.arch().code_features == 64


def test_the_default_tiny_layout_samples_at_under_two_fifths_of_a_sampler_pass(tmp_path: Path) -> None:
    from selfden.export.onnx_flops import count_macs
    from selfden.export.onnx_graphs import export_graph

    config = CosddConfig(size="tiny", direction="x").device_defaults("cpu").config
    method = Cosdd(config, Normalisation(0.0, 1.0), torch.device("cpu"))
    graphs, shapes, macs = method.export_graphs(), method.vae.latent_shapes(1, 64, 64), {}
    for name in ("sampler_encoder", "sampler_decoder"):
        assert export_graph(graphs[name], tmp_path / f"{name}.onnx", sizes=((32, 32),)).passed
        inputs = ({"input": (1, 1, 64, 64)} if name == "sampler_encoder" else
                  {**{f"post{i}": (1, 2 * s[1], *s[2:]) for i, s in enumerate(shapes)},
                   **{f"eps{i}": s for i, s in enumerate(shapes)}})
        macs[name] = count_macs(onnx.load(str(tmp_path / f"{name}.onnx")), inputs)
    share = macs["sampler_decoder"] / (macs["sampler_encoder"] + macs["sampler_decoder"])
    assert share <= 0.4, share  # 0.37 (the old layout: 0.52)


def test_an_exported_package_ships_the_split_sampler_hashed_and_samples_through_it(tmp_path: Path) -> None:
    import yaml

    from selfden.errors import ModelError
    from selfden.export.package import export_package
    from selfden.inference.loading import load_predictor

    os.environ.setdefault("BIOIMAGEIO_CACHE_PATH", str(tmp_path / "bioimageio-cache"))
    raw = np.random.default_rng(2).normal(500.0, 50.0, (96, 96)).astype(np.float32)
    package = export_package(make_cosdd(), tmp_path / "model", raw, {})
    rdf = yaml.safe_load((package / "rdf.yaml").read_text())
    graphs = rdf["config"]["selfden"]["graphs"]
    assert {"sampler_encoder", "sampler_decoder"} <= set(graphs) and "sampler" not in graphs, graphs
    hashed = {a["source"] for a in rdf["attachments"] if a.get("sha256")}
    assert {"sampler_encoder.onnx", "sampler_decoder.onnx"} <= hashed, rdf["attachments"]
    with load_predictor(package, samples=4, std=True) as predictor:
        prediction = predictor.predict(raw[:64, :64])
    mean, std = prediction.image, prediction.std
    assert mean.shape == (64, 64) and np.isfinite(mean).all() and std.mean() > 0
    with (package / "sampler_decoder.onnx").open("ab") as graph:
        graph.write(b"\0")
    with pytest.raises(ModelError, match="sampler_decoder.*sha256"):
        load_predictor(package, samples=4)
