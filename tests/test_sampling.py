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
from selfden.inference.predictor import Predictor, denoise_files, load_predictor
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


def write_sampler_model(folder: Path, symmetries: list[str] | None = None) -> Path:
    """A COSDD-like model folder: the mean3 denoiser plus the toy sampler, 20 samples by default."""
    write_model(folder, tile_size=16, symmetries=symmetries)
    save_noisy_sampler(folder / "sampler.onnx")
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    rdf["config"]["selfden"]["graphs"]["sampler"] = "sampler.onnx"
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
    with load_predictor(cosdd_like_model, samples=400, tile_size=64) as predictor:
        mean, std = predictor.predict_mean_and_std(image)
    expected_mean = mean3_reflect((image - OFFSET) / SCALE) * SCALE + OFFSET
    inner = (slice(2, -2), slice(2, -2))  # away from zero padding the toy conv sees at tile edges
    expected_std = SIGMA / 3 * SCALE
    standard_error = expected_std / np.sqrt(400)
    assert np.abs(mean - expected_mean)[inner].max() < 5 * standard_error
    assert np.median(std[inner]) == pytest.approx(expected_std, rel=0.05)


def test_tiled_mmse_has_no_seams(cosdd_like_model: Path) -> None:
    flat = np.full((96, 96), OFFSET, np.float32)
    with load_predictor(cosdd_like_model, samples=64, tile_size=16) as predictor:
        mean, _ = predictor.predict_mean_and_std(flat)
    steps = np.abs(np.diff(mean, axis=1))  # steps[:, j] is between columns j and j+1
    borders = [j for j in range(15, 95, 16)]  # the last column of each 16-px tile core
    inside = [j for j in range(steps.shape[1]) if j not in borders]
    assert steps[:, borders].mean() <= 1.2 * steps[:, inside].mean(), (steps[:, borders].mean(), steps[:, inside].mean())


def test_default_sample_count_comes_from_the_package(cosdd_like_model: Path) -> None:
    with load_predictor(cosdd_like_model, std=True) as predictor:
        assert isinstance(predictor, SamplingPredictor) and predictor.n_samples == 20


def test_samples_beyond_one_batch_are_chunked(cosdd_like_model: Path) -> None:
    base = Predictor.from_path(cosdd_like_model, tile_size=16)
    predictor = SamplingPredictor.from_predictor(base, n_samples=10)
    predictor.max_batch = 3  # 10 samples -> runs of 3, 3, 3, 1
    calls: list[int] = []
    run = predictor.runner.run
    predictor.runner = SimpleNamespace(run=lambda array: calls.append(len(array)) or run(array))  # type: ignore[assignment]
    predictor.predict_mean_and_std(smooth_image((16, 16)))
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
