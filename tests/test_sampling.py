"""COSDD-style posterior sampling at inference: N copies per tile, mean and std, no seams."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import tifffile
import yaml
from onnx import TensorProto, helper, numpy_helper

from selfden.errors import ModelError
from selfden.inference.posterior_draws import SplitSource
from selfden.inference.loading import load_direct, load_predictor
from selfden.inference.running import denoise_files, model_files
from selfden.inference.sample_count import AUTO_MAX_SAMPLES, AUTO_MIN_SAMPLES
from selfden.inference.sampling import SamplingPredictor
from test_predictor import OFFSET, SCALE, mean3_reflect, write_model

SIGMA = 0.6  # noise the toy sampler adds before its 3x3 mean: sample std = SIGMA / 3


def save_noisy_sampler(path: Path, seed: float = 7.0) -> None:
    """sample = mean3(x + SIGMA * N(0, 1)): mean mean3(x), per-pixel std SIGMA / 3 (away from borders)."""
    weight = numpy_helper.from_array(np.full((1, 1, 3, 3), 1 / 9, np.float32), "w")
    nodes = [
        helper.make_node("RandomNormalLike", ["input"], ["eps"], scale=SIGMA, seed=seed),
        helper.make_node("Add", ["input", "eps"], ["noisy"]),
        helper.make_node("Conv", ["noisy", "w"], ["output"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
    ]
    dims = ["b", 1, "y", "x"]
    graph = helper.make_graph(
        nodes, "sampler", [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, dims)], initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def write_sampler_model(folder: Path, orientations: list[str] | None = None) -> Path:
    """A COSDD-like model folder: the mean3 denoiser plus the toy sampler, 20 samples by default."""
    write_model(folder, tile_size=16, orientations=orientations)
    save_noisy_sampler(folder / "sampler.onnx")
    return _with_sampler_graphs(folder, sampler="sampler.onnx")


def _with_sampler_graphs(folder: Path, **graphs: str) -> Path:
    """Name the sampler ``graphs`` in the folder's rdf, with 20 samples by default."""
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    rdf["config"]["selfden"]["graphs"].update(graphs)
    rdf["config"]["selfden"]["default_samples"] = 20
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def cosdd_like_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sampler_model(tmp_path_factory.mktemp("models") / "cosdd")


def smooth_image(shape: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (OFFSET + SCALE * np.sin(xx / 6.0) * np.cos(yy / 9.0)).astype(np.float32)


def test_mmse_and_std_match_the_known_sample_distribution(cosdd_like_model: Path) -> None:
    image = smooth_image((40, 36))
    with load_predictor(cosdd_like_model, samples=400, std=True, tile_size=64) as predictor:
        prediction = predictor.predict(image)
    mean, std = prediction.image, prediction.std
    expected_mean = mean3_reflect((image - OFFSET) / SCALE) * SCALE + OFFSET
    inner = (slice(2, -2), slice(2, -2))  # away from zero padding the toy conv sees at tile edges
    expected_std = SIGMA / 3 * SCALE
    standard_error = expected_std / np.sqrt(400)
    assert np.abs(mean - expected_mean)[inner].max() < 5 * standard_error
    assert np.median(std[inner]) == pytest.approx(expected_std, rel=0.05)


def test_tiled_mmse_has_no_seams(cosdd_like_model: Path) -> None:
    flat = np.full((96, 96), OFFSET, np.float32)
    with load_predictor(cosdd_like_model, samples=64, tile_size=16) as predictor:
        mean = predictor.predict(flat).image
    steps = np.abs(np.diff(mean, axis=1))  # steps[:, j] is between columns j and j+1
    borders = [j for j in range(15, 95, 16)]  # the last column of each 16-px tile core
    inside = [j for j in range(steps.shape[1]) if j not in borders]
    assert steps[:, borders].mean() <= 1.2 * steps[:, inside].mean(), (steps[:, borders].mean(), steps[:, inside].mean())


def test_default_sample_count_comes_from_the_package(cosdd_like_model: Path) -> None:
    with load_predictor(cosdd_like_model, std=True) as predictor:
        assert isinstance(predictor, SamplingPredictor) and predictor.n_samples == 20


def test_samples_beyond_one_batch_are_chunked(cosdd_like_model: Path) -> None:
    base = load_direct(cosdd_like_model, tile_size=16)
    predictor = SamplingPredictor.from_predictor(base, n_samples=10)
    predictor.max_batch = 3  # 10 samples -> runs of 3, 3, 3, 1
    calls: list[int] = []
    run = predictor.runner.run
    predictor.runner = SimpleNamespace(run=lambda array: calls.append(len(array)) or run(array))  # type: ignore[assignment]
    predictor.predict(smooth_image((16, 16)))
    assert calls == [3, 3, 3, 1]


def test_std_is_written_next_to_the_output(cosdd_like_model: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, np.stack([smooth_image((30, 20))] * 2), photometric="minisblack")
    written = denoise_files(cosdd_like_model, [source], tmp_path / "out.tif", samples=8, std=True)
    assert [p.name for p in written] == ["out.tif", "out_std.tif"]
    std = tifffile.imread(tmp_path / "out_std.tif")
    assert std.shape == (2, 30, 20) and std.dtype == np.float32 and (std > 0).mean() > 0.9


def test_samples_on_a_model_without_sampler_is_a_clear_error(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "plain")
    with pytest.raises(ModelError, match="no sampler graph"):
        load_predictor(folder, samples=10)


# --- split sampler: encoder once per tile, decoder per sample ---------------------------------------


def save_split_sampler(folder: Path, scale: float, curve: float = 0.0) -> None:
    """encoder: post0 = mean3(x); decoder: post0 + scale * eps0 + curve * (eps0² - 1) — the toy of a
    split COSDD sampler (mean post0 either way; antithetic pairs cancel only the linear part)."""
    weight = numpy_helper.from_array(np.full((1, 1, 3, 3), 1 / 9, np.float32), "w")
    dims = ["b", 1, "y", "x"]
    encoder = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["post0"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])], "encoder",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("post0", TensorProto.FLOAT, dims)], initializer=[weight],
    )
    constants = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("scale", scale), ("curve", curve), ("one", 1.0))]
    decoder = helper.make_graph(
        [helper.make_node("Mul", ["eps0", "scale"], ["spread"]), helper.make_node("Add", ["post0", "spread"], ["linear"]),
         helper.make_node("Mul", ["eps0", "eps0"], ["square"]), helper.make_node("Sub", ["square", "one"], ["centred"]),
         helper.make_node("Mul", ["centred", "curve"], ["bend"]), helper.make_node("Add", ["linear", "bend"], ["output"])],
        "decoder", [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in ("post0", "eps0")],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, dims)], initializer=constants,
    )
    for graph, name in ((encoder, "sampler_encoder.onnx"), (decoder, "sampler_decoder.onnx")):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(folder / name))


def write_split_model(folder: Path, scale: float = SIGMA / 3, curve: float = 0.0) -> Path:
    """A model folder as this version exports COSDD: the split sampler pair instead of one sampler."""
    write_model(folder, tile_size=16)
    save_split_sampler(folder, scale, curve)
    return _with_sampler_graphs(folder, sampler_encoder="sampler_encoder.onnx", sampler_decoder="sampler_decoder.onnx")


@pytest.fixture(scope="module")
def split_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_split_model(tmp_path_factory.mktemp("models") / "split")


def noisy_image(shape: tuple[int, int], sigma: float, seed: int = 0) -> np.ndarray:
    """The smooth image plus white noise of ``sigma`` normalised units."""
    return smooth_image(shape) + np.float32(sigma * SCALE) * np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_split_package_mmse_and_std_match_the_known_sample_distribution(split_model: Path) -> None:
    image = smooth_image((40, 36))
    with load_predictor(split_model, samples=400, std=True, tile_size=64) as predictor:
        prediction = predictor.predict(image)
    mean, std = prediction.image, prediction.std
    expected_mean = mean3_reflect((image - OFFSET) / SCALE) * SCALE + OFFSET
    inner = (slice(2, -2), slice(2, -2))
    expected_std = SIGMA / 3 * SCALE
    assert np.abs(mean - expected_mean)[inner].max() < 5 * expected_std / np.sqrt(400)
    assert np.median(std[inner]) == pytest.approx(expected_std, rel=0.05)


def test_split_encoder_runs_once_per_tile_and_decoder_per_chunk(split_model: Path) -> None:
    with load_predictor(split_model, samples=10, tile_size=16) as predictor:
        assert isinstance(predictor.source, SplitSource)
        predictor.max_batch = 3  # 10 samples -> decoder runs of 3, 3, 3, 1 per tile
        shape = (40, 36)
        predictor.predict(smooth_image(shape))
        tiles = predictor.plan(shape).n_tiles
        assert tiles > 1 and predictor.source.encoder_runs == tiles, (tiles, predictor.source.encoder_runs)
        assert predictor.tile_counts and set(predictor.tile_counts) == {10}


def test_split_samples_are_reproducible_in_a_fresh_predictor(split_model: Path) -> None:
    image = noisy_image((40, 36), 0.3)
    outputs = []
    for _ in range(2):
        with load_predictor(split_model, samples=6, std=True, tile_size=16) as predictor:
            outputs.append(predictor.predict(image).arrays())
    np.testing.assert_array_equal(outputs[0][0], outputs[1][0])
    np.testing.assert_array_equal(outputs[0][1], outputs[1][1])
    assert outputs[0][1].mean() > 0, "the samples must differ from one another"


def _two_level_source(folder: Path) -> SplitSource:
    """encoder: post0 = post1 = input; decoder: post0 + eps0 + 2 * eps1 (two latent levels)."""
    from selfden.package.runtime import open_session

    dims = ["b", 1, "y", "x"]
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)  # noqa: E731
    encoder = helper.make_graph([helper.make_node("Identity", ["input"], ["post0"]),
                                 helper.make_node("Identity", ["input"], ["post1"])],
                                "encoder", [value("input")], [value("post0"), value("post1")])  # fmt: skip
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    decoder = helper.make_graph([helper.make_node("Mul", ["eps1", "two"], ["e1"]), helper.make_node("Add", ["post0", "eps0"], ["a"]),
                                 helper.make_node("Add", ["a", "e1"], ["b0"]), helper.make_node("Add", ["b0", "post1"], ["output"])],
                                "decoder", [value(n) for n in ("post0", "post1", "eps0", "eps1")], [value("output")],
                                initializer=[two])  # fmt: skip
    files = []
    for graph, name in ((encoder, "encoder.onnx"), (decoder, "decoder.onnx")):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(folder / name))
        files.append(folder / name)
    return SplitSource(open_session(files[0]), open_session(files[1]), (files[0], files[1]), [1, 1])


def test_samples_are_the_same_however_they_are_split_into_session_runs(tmp_path: Path) -> None:
    source, tile = _two_level_source(tmp_path), smooth_image((12, 10))
    at_once = source.start(tile).draw(7)  # a GPU runs many samples at once, a CPU few
    draws = source.start(tile)
    in_pieces = np.concatenate([draws.draw(2), draws.draw(1), draws.draw(4)])
    np.testing.assert_array_equal(in_pieces, at_once)
    assert np.ptp(at_once[:, 0, 0]) > 0, "the samples must differ from one another"


def test_antithetic_pairs_mirror_each_other_and_do_not_depend_on_the_split(tmp_path: Path) -> None:
    source, tile = _two_level_source(tmp_path), smooth_image((12, 10))
    source.antithetic = True
    at_once = source.start(tile).draw(6)
    draws = source.start(tile)
    np.testing.assert_array_equal(np.concatenate([draws.draw(1), draws.draw(4), draws.draw(1)]), at_once)
    # the toy decoder is linear in its draws, so each pair averages to the draw-free output exactly
    np.testing.assert_allclose((at_once[0::2] + at_once[1::2]) / 2, np.broadcast_to(2 * tile, (3, *tile.shape)), atol=1e-5)
    assert np.ptp(at_once[0::2, 0, 0]) > 0, "the pairs must differ from one another"
    source.antithetic = False
    independent = source.start(tile).draw(2)
    assert np.abs(independent.mean(axis=0) - 2 * tile).max() > 1e-2, "independent samples do not cancel"


def test_predictions_carry_a_std_only_when_asked_and_the_same_mean_either_way(split_model: Path) -> None:
    image = noisy_image((24, 20), 0.3)
    with load_predictor(split_model, samples=4, tile_size=16) as plain, \
            load_predictor(split_model, samples=4, std=True, tile_size=16) as with_std:
        without, both = plain.predict(image), with_std.predict(image)
    assert without.std is None and both.std is not None and both.std.shape == image.shape
    np.testing.assert_array_equal(without.image, both.image)


def test_model_files_of_a_split_package_name_both_sampler_graphs(split_model: Path) -> None:
    with load_predictor(split_model, samples=4) as predictor:
        names = [p.name for p in model_files(predictor)]
    assert {"sampler_encoder.onnx", "sampler_decoder.onnx"} <= set(names), names


def auto_count(model: Path, image: np.ndarray, antithetic: bool = True) -> tuple[list[int], np.ndarray]:
    with load_predictor(model, samples="auto", tile_size=64) as predictor:
        if predictor.source is not None:
            predictor.source.antithetic = antithetic
        mean = predictor.predict(image).image
        return list(predictor.tile_counts), mean


def test_samples_auto_draws_more_when_samples_spread_more_than_the_noise(tmp_path: Path) -> None:
    image = noisy_image((40, 36), 0.5)
    easy, _ = auto_count(write_split_model(tmp_path / "easy", scale=0.05, curve=0.02), image)
    hard, hard_mean = auto_count(write_split_model(tmp_path / "hard", scale=0.4, curve=0.15), image)
    assert easy == [AUTO_MIN_SAMPLES], easy
    assert AUTO_MIN_SAMPLES < hard[0] < AUTO_MAX_SAMPLES and hard[0] % 2 == 0, hard
    again, again_mean = auto_count(tmp_path / "hard", image)
    assert again == hard and np.array_equal(again_mean, hard_mean), "auto must be reproducible"


def test_samples_auto_judges_antithetic_pairs_by_their_means(tmp_path: Path) -> None:
    # A decoder linear in its draws: each pair's mean is exact, so pairs settle at once where
    # independent samples, spread just as much, need many.
    image, model = noisy_image((40, 36), 0.5), write_split_model(tmp_path / "linear", scale=0.4)
    paired, _ = auto_count(model, image, antithetic=True)
    independent, _ = auto_count(model, image, antithetic=False)
    assert paired == [AUTO_MIN_SAMPLES] and independent[0] > 2 * AUTO_MIN_SAMPLES, (paired, independent)


def test_samples_auto_is_capped_when_the_samples_never_settle(tmp_path: Path) -> None:
    counts, _ = auto_count(write_split_model(tmp_path / "wild", scale=20.0, curve=20.0), noisy_image((24, 24), 0.1))
    assert counts == [AUTO_MAX_SAMPLES]


def test_old_single_sampler_package_also_samples_auto(cosdd_like_model: Path) -> None:
    counts, mean = auto_count(cosdd_like_model, noisy_image((24, 24), 0.5))
    assert AUTO_MIN_SAMPLES <= counts[0] <= AUTO_MAX_SAMPLES and np.isfinite(mean).all()


def test_infer_cli_samples_auto_reports_how_many_samples_it_drew(split_model: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from selfden.cli import app

    source = tmp_path / "in.tif"
    tifffile.imwrite(source, noisy_image((24, 24), 0.5), photometric="minisblack")
    result = CliRunner().invoke(app, ["infer", str(split_model), str(source), "-o", str(tmp_path / "o.tif"), "--samples", "auto"])
    assert result.exit_code == 0, result.output
    assert "--samples auto:" in result.output and "posterior samples per tile" in result.output, result.output
    bad = CliRunner().invoke(app, ["infer", str(split_model), str(source), "-o", str(tmp_path / "p.tif"), "--samples", "many"])
    assert bad.exit_code != 0 and "expected a whole number of posterior samples or 'auto'" in bad.output, bad.output
