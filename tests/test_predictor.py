"""ONNX inference on model folders: tiling, layouts, processing ops, files in and out.

Models are built here with onnx.helper (no torch): a 3x3 mean convolution (translation
equivariant, so tiles must reproduce the whole image) and an identity graph.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import yaml

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from selfden.errors import InputError, ModelError, SelfdenError  # noqa: E402
from selfden.io.reading import open_image  # noqa: E402
from selfden.inference.loading import load_predictor  # noqa: E402
from selfden.inference.running import Progress, denoise_files  # noqa: E402
from selfden.package.rdf import ProcessingStep  # noqa: E402
from selfden.package.processing import apply_steps  # noqa: E402

OFFSET, SCALE = 100.0, 50.0  # the model's normalisation: x_norm = (x - OFFSET) / SCALE


# --- building models ------------------------------------------------------------------------


def _layout_nodes(layout: str) -> tuple[list[Any], list[Any], list[Any]]:
    """Nodes taking a tensor in ``layout`` to NCHW before the conv, and back after it."""
    if layout == "bcyx":
        return [helper.make_node("Identity", ["input"], ["nchw"])], [
            helper.make_node("Identity", ["conv"], ["output"])], []
    if layout == "cyx":
        axes = numpy_helper.from_array(np.array([0], np.int64), "axes0")
        return [helper.make_node("Unsqueeze", ["input", "axes0"], ["nchw"])], [
            helper.make_node("Squeeze", ["conv", "axes0"], ["output"])], [axes]
    if layout == "byxc":
        return [helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2])], [
            helper.make_node("Transpose", ["conv"], ["output"], perm=[0, 2, 3, 1])], []
    raise ValueError(layout)


def save_graph(path: Path, kind: str = "mean3", layout: str = "bcyx", batch: int | str = "b") -> None:
    """A 3x3 mean ('mean3', zero padded), the left neighbour ('left', zero padded) or an
    identity graph, opset 17, IR 8."""
    before, after, initialisers = _layout_nodes(layout)
    if kind in ("mean3", "left"):
        kernel = np.full((1, 1, 3, 3), 1 / 9, np.float32)
        if kind == "left":
            kernel = np.zeros((1, 1, 3, 3), np.float32)
            kernel[0, 0, 1, 0] = 1.0  # output[y, x] = input[y, x - 1]
        weight = numpy_helper.from_array(kernel, "w")
        core = [helper.make_node("Conv", ["nchw", "w"], ["conv"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])]
        initialisers = [*initialisers, weight]
    else:
        core = [helper.make_node("Identity", ["nchw"], ["conv"])]
    dims = {"bcyx": [batch, 1, "y", "x"], "cyx": [1, "y", "x"], "byxc": [batch, "y", "x", 1]}[layout]
    graph = helper.make_graph(
        before + core + after,
        kind,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, dims)],
        initializer=initialisers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _axes(layout: str, output: bool, min_size: int, step: int, halo: int) -> list[dict[str, Any]]:
    axes = []
    for letter in layout:
        if letter == "b":
            axes.append({"type": "batch"})
        elif letter == "c":
            axes.append({"type": "channel", "channel_names": ["c0"]})
        elif output:
            axes.append({"type": "space", "id": letter, "size": {"tensor_id": "input", "axis_id": letter}, "halo": halo})
        else:
            axes.append({"type": "space", "id": letter, "size": {"min": min_size, "step": step}})
    return axes


def selfden_processing() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    pre = [{"id": "scale_linear", "kwargs": {"gain": 1 / SCALE, "offset": -OFFSET / SCALE}}]
    post = [{"id": "scale_linear", "kwargs": {"gain": SCALE, "offset": OFFSET}}]
    return pre, post


def write_model(
    folder: Path,
    kind: str = "mean3",
    layout: str = "bcyx",
    pre: list[dict[str, Any]] | None = None,
    post: list[dict[str, Any]] | None = None,
    min_size: int = 16,
    step: int = 8,
    halo: int = 4,
    tile_size: int = 64,
    orientations: list[str] | None = None,
) -> Path:
    """A model folder in the MODEL FOLDER format of the selfden brief (rdf.yaml written by hand);
    ``orientations``: those it claims to have been trained with (``config.selfden.orientations``; default: none)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_graph(folder / "denoiser.onnx", kind, layout)
    default_pre, default_post = selfden_processing()
    rdf = {
        "format_version": "0.5.4",
        "type": "model",
        "name": f"test {kind} {layout}",
        "description": "test model",
        "inputs": [{"id": "input", "axes": _axes(layout, False, min_size, step, halo),
                    "data": {"type": "float32"}, "preprocessing": default_pre if pre is None else pre}],
        "outputs": [{"id": "output", "axes": _axes(layout, True, min_size, step, halo),
                     "postprocessing": default_post if post is None else post}],
        "weights": {"onnx": {"source": "denoiser.onnx", "opset_version": 17}},
        "config": {"selfden": {"method": "test", "halo": halo, "size_step": step, "min_size": min_size,
                               "tile_size": tile_size, "normalisation": {"offset": OFFSET, "scale": SCALE},
                               "graphs": {"denoiser": "denoiser.onnx"}}},
    }
    if orientations is not None:
        rdf["config"]["selfden"]["orientations"] = orientations
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder


def mean3_reflect(image: np.ndarray) -> np.ndarray:
    padded = np.pad(image.astype(np.float64), 1, mode="reflect")
    height, width = image.shape
    return sum(padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)) / 9.0


@pytest.fixture(scope="module")
def mean_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("models") / "mean3")


@pytest.fixture(scope="module")
def identity_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("models") / "identity", kind="identity", halo=0)


def noisy(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return (OFFSET + SCALE * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


# --- tiling and sizes -------------------------------------------------------------------------


def test_tiled_inference_matches_whole_image(mean_model: Path) -> None:
    image = noisy((203, 157))
    tiled = load_predictor(mean_model, device="cpu", tile_size=32).predict(image).image
    whole = load_predictor(mean_model, device="cpu", tile_size=512).predict(image).image
    expected = mean3_reflect(image)
    assert np.abs(tiled - whole).max() < 1e-5 * SCALE, np.abs(tiled - whole).max()
    assert np.abs(tiled - expected).max() < 1e-5 * SCALE, np.abs(tiled - expected).max()


def _with_core(folder: Path, core_sha256: str | None = None) -> Path:
    """``folder``'s model with an identity graph as weights and its mean as the core graph selfden tiles."""
    save_graph(folder / "denoiser_core.onnx", "mean3")
    save_graph(folder / "denoiser.onnx", "identity")  # stands for the bordered weights: must not be tiled
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    rdf["config"]["selfden"]["graphs"]["core"] = "denoiser_core.onnx"
    rdf["attachments"] = [{"source": "denoiser_core.onnx", **({"sha256": core_sha256} if core_sha256 else {})}]
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder


def test_a_package_with_a_core_graph_is_tiled_with_its_core_not_its_weights(tmp_path: Path) -> None:
    model = _with_core(write_model(tmp_path / "model"))
    predictor = load_predictor(model, device="cpu", tile_size=32)
    assert predictor.runner.model_file == model / "denoiser_core.onnx"
    image = noisy((70, 45), seed=3)
    assert np.abs(predictor.predict(image).image - mean3_reflect(image)).max() < 1e-5 * SCALE


def test_a_core_graph_that_does_not_match_its_sha256_is_refused(tmp_path: Path) -> None:
    model = _with_core(write_model(tmp_path / "model"), core_sha256="0" * 64)
    with pytest.raises(ModelError, match="denoiser_core.onnx.*sha256"):
        load_predictor(model, device="cpu")


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (17, 40), (64, 64), (65, 33), (130, 7)])
def test_any_image_size_gives_the_same_shape_back(identity_model: Path, mean_model: Path, shape: tuple[int, int]) -> None:
    image = noisy(shape, seed=1)
    result = load_predictor(identity_model, device="cpu", tile_size=16).predict(image).image
    assert result.shape == shape and result.dtype == np.float32
    np.testing.assert_allclose(result, image, rtol=1e-6, atol=1e-4)
    assert load_predictor(mean_model, device="cpu", tile_size=16).predict(image).image.shape == shape


@pytest.mark.parametrize("tile_batch", [1, 3, 64])
def test_tile_batch_does_not_change_the_result(mean_model: Path, tile_batch: int) -> None:
    image = noisy((70, 90), seed=2)
    result = load_predictor(mean_model, device="cpu", tile_size=16, tile_batch=tile_batch).predict(image).image
    assert np.abs(result - mean3_reflect(image)).max() < 1e-5 * SCALE


def test_predictor_exposes_spec_provider_and_selfden_config(mean_model: Path) -> None:
    predictor = load_predictor(mean_model)
    assert predictor.provider in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert predictor.providers[0] == predictor.provider
    assert predictor.config_selfden["normalisation"] == {"offset": OFFSET, "scale": SCALE}
    assert predictor.tile_size == 64, "the package's suggested tile size is the default"
    spec = predictor.spec
    assert (spec.input_axes, spec.min_size, spec.size_step, spec.halo) == ("bcyx", (16, 16), (8, 8), (4, 4))


# --- third-party layouts and processing -------------------------------------------------------


@pytest.mark.parametrize("layout", ["cyx", "byxc"])
def test_third_party_layouts_with_fixed_zero_mean_unit_variance(tmp_path: Path, layout: str) -> None:
    pre = [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
           {"id": "fixed_zero_mean_unit_variance", "kwargs": {"mean": [OFFSET], "std": [SCALE], "axis": "channel"}}]
    post = [{"id": "scale_linear", "kwargs": {"gain": [2.0], "offset": [1.0], "axis": "channel"}}]
    folder = write_model(tmp_path / layout, layout=layout, pre=pre, post=post)
    image = noisy((45, 38), seed=3)
    result = load_predictor(folder, device="cpu", tile_size=16).predict(image).image
    expected = 2.0 * mean3_reflect((image - OFFSET) / (SCALE + 1e-6)) + 1.0
    assert np.abs(result - expected).max() < 1e-4, np.abs(result - expected).max()


@pytest.mark.parametrize("op", [
    {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"]}},
    {"id": "scale_range", "kwargs": {"axes": ["y", "x"], "min_percentile": 1, "max_percentile": 99}},
])
def test_per_image_statistics_do_not_depend_on_tiling(tmp_path: Path, op: dict[str, Any]) -> None:
    folder = write_model(tmp_path / op["id"], kind="identity", halo=0, pre=[op], post=[])
    image = noisy((60, 50), seed=4)
    small = load_predictor(folder, device="cpu", tile_size=8).predict(image).image
    large = load_predictor(folder, device="cpu", tile_size=256).predict(image).image
    np.testing.assert_allclose(small, large, atol=1e-6)
    if op["id"] == "zero_mean_unit_variance":
        assert abs(small.mean()) < 1e-4 and abs(small.std() - 1) < 1e-4


def test_postprocessing_ops_clip_sigmoid_binarize() -> None:
    image = np.array([[-2.0, 0.0, 3.0]], np.float32)
    clip = ProcessingStep("clip", {"min": -1.0, "max": 1.0})
    np.testing.assert_allclose(apply_steps(image, [clip]), [[-1, 0, 1]])
    np.testing.assert_allclose(apply_steps(image, [ProcessingStep("sigmoid")]), 1 / (1 + np.exp(-image)), rtol=1e-6)
    np.testing.assert_array_equal(apply_steps(image, [ProcessingStep("binarize", {"threshold": 0.5})]), [[0, 0, 1]])


def test_format_04_package_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "v04"
    folder.mkdir()
    save_graph(folder / "weights.onnx", "mean3")
    rdf = {
        "format_version": "0.4.10", "type": "model", "name": "old",
        "inputs": [{"name": "raw", "axes": "bcyx", "data_type": "float32",
                    "shape": {"min": [1, 1, 16, 16], "step": [0, 0, 16, 16]},
                    "preprocessing": [{"name": "zero_mean_unit_variance",
                                       "kwargs": {"mode": "fixed", "axes": "xy", "mean": 100.0, "std": 50.0}}]}],
        "outputs": [{"name": "out", "axes": "bcyx", "data_type": "float32", "halo": [0, 0, 8, 8],
                     "shape": {"reference_tensor": "raw", "scale": [1, 1, 1, 1], "offset": [0, 0, 0, 0]}}],
        "weights": {"onnx": {"source": "weights.onnx", "opset_version": 17}},
    }
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    image = noisy((40, 30), seed=5)
    predictor = load_predictor(folder, device="cpu", tile_size=16)
    assert predictor.spec.halo == (8, 8) and predictor.tile_batch == 1, "min 1 step 0 batch is fixed at 1"
    result = predictor.predict(image).image
    expected = mean3_reflect((image - 100.0) / (50.0 + 1e-6))
    assert np.abs(result - expected).max() < 1e-5


def test_fixed_batch_size_model_always_gets_full_batches(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "fixed")
    save_graph(folder / "denoiser.onnx", "mean3", batch=2)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    for tensor in ("inputs", "outputs"):
        rdf[tensor][0]["axes"][0]["size"] = 2
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    predictor = load_predictor(folder, device="cpu", tile_size=16, tile_batch=8)
    assert predictor.tile_batch == 2
    image = noisy((30, 30), seed=6)  # 9 tiles: the last batch holds one tile
    assert np.abs(predictor.predict(image).image - mean3_reflect(image)).max() < 1e-5 * SCALE


# --- model locations and broken models ----------------------------------------------------------


def test_run_directory_and_zip_package_load(tmp_path: Path, mean_model: Path) -> None:
    run = tmp_path / "run"
    write_model(run / "model")
    assert load_predictor(run).spec.root == run / "model"
    package = tmp_path / "package.zip"
    with zipfile.ZipFile(package, "w") as archive:
        for file in mean_model.iterdir():
            archive.write(file, file.name)
    with load_predictor(package, device="cpu") as predictor:
        extracted = predictor.spec.root
        assert extracted.is_dir() and predictor.predict(noisy((20, 20))).image.shape == (20, 20)
    assert not extracted.exists(), "the temporary extraction must be removed on close"


def _broken(tmp_path: Path, case: str) -> Path:
    folder = write_model(tmp_path / case)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    if case == "missing_folder":
        return tmp_path / "nowhere"
    if case == "no_rdf":
        (folder / "rdf.yaml").unlink()
    elif case == "bad_yaml":
        (folder / "rdf.yaml").write_text("inputs: [unclosed\n  - {")
    elif case == "no_onnx_weights":
        rdf["weights"] = {"pytorch_state_dict": {"source": "weights.pt"}}
    elif case == "missing_weights_file":
        (folder / "denoiser.onnx").unlink()
    elif case == "corrupt_onnx":
        (folder / "denoiser.onnx").write_bytes(b"not a protobuf at all")
    elif case == "three_channels":
        rdf["inputs"][0]["axes"][1]["channel_names"] = ["r", "g", "b"]
    elif case == "z_axis":
        rdf["inputs"][0]["axes"].append({"type": "space", "id": "z", "size": 8})
    elif case == "unsupported_op":
        rdf["inputs"][0]["preprocessing"] = [{"id": "scale_mean_variance", "kwargs": {"reference_tensor": "x"}}]
    elif case == "not_a_zip":
        bogus = tmp_path / "model.zip"
        bogus.write_text("hello")
        return bogus
    elif case == "zip_without_rdf":
        bogus = tmp_path / "empty.zip"
        with zipfile.ZipFile(bogus, "w") as archive:
            archive.writestr("README.md", "nothing")
        return bogus
    if case not in ("no_rdf", "bad_yaml"):
        (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    return folder


BROKEN = ["missing_folder", "no_rdf", "bad_yaml", "no_onnx_weights", "missing_weights_file", "corrupt_onnx",
          "three_channels", "z_axis", "unsupported_op", "not_a_zip", "zip_without_rdf"]


@pytest.mark.parametrize("case", BROKEN)
def test_broken_model_folders_raise_model_error(tmp_path: Path, case: str) -> None:
    path = _broken(tmp_path, case)
    with pytest.raises(ModelError) as error:
        load_predictor(path, device="cpu")
    message = str(error.value)
    assert "\n" not in message, message
    assert path.name in message, message


def test_cuda_requested_without_cuda_is_a_clear_error(mean_model: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the error path cannot be shown here")
    with pytest.raises(SelfdenError, match="--device cuda"):
        load_predictor(mean_model, device="cuda")


# --- files in, files out ------------------------------------------------------------------------


def test_stack_in_same_shape_float32_out_with_imagej_metadata(tmp_path: Path, mean_model: Path) -> None:
    data = noisy((2, 3, 30, 26)).clip(0, 65535).astype(np.uint16)
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, data, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "TZYX", "spacing": 0.3, "unit": "um"})
    events: list[Progress] = []
    written = denoise_files(mean_model, [source], tmp_path / "out.tif", device="cpu", tile_size=16,
                            on_progress=events.append)
    assert written == [tmp_path / "out.tif"]
    with tifffile.TiffFile(written[0]) as tif:
        series, ij = tif.series[0], tif.imagej_metadata
        assert (series.shape, series.axes, series.dtype) == ((2, 3, 30, 26), "TZYX", np.float32)
        assert (ij["spacing"], ij["unit"]) == (0.3, "um") and tif.pages[0].resolution == (2.0, 2.0)
        np.testing.assert_allclose(series.asarray()[1, 2], mean3_reflect(data[1, 2]), atol=1e-3)
    assert [e.frame for e in events] == list(range(7)), "one event at the start, then one per frame"
    assert (events[-1].n_frames, events[-1].n_files, events[-1].provider) == (6, 1, "CPUExecutionProvider")


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float64"])
def test_input_dtypes_give_float32_results(tmp_path: Path, identity_model: Path, dtype: str) -> None:
    data = np.random.default_rng(6).integers(0, 200, (3, 20, 24)).astype(dtype)
    source = tmp_path / f"in_{dtype}.npy"
    np.save(source, data)
    written = denoise_files(identity_model, [source], tmp_path / "results", device="cpu")
    assert written == [tmp_path / "results" / f"in_{dtype}_denoised.tif"]
    result = tifffile.imread(written[0])
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, data, atol=1e-3)


def test_png_in_png_out_keeps_the_bit_depth(tmp_path: Path, identity_model: Path) -> None:
    from PIL import Image

    data = np.random.default_rng(7).integers(0, 60000, (20, 24)).astype(np.uint16)
    Image.fromarray(data).save(tmp_path / "in.png")
    (out,) = denoise_files(identity_model, [tmp_path / "in.png"], tmp_path / "out.png", device="cpu")
    np.testing.assert_array_equal(open_image(out).frame(0), data)


def test_a_bad_second_input_stops_everything_before_any_output(tmp_path: Path, mean_model: Path) -> None:
    good, bad = tmp_path / "good.tif", tmp_path / "bad.tif"
    tifffile.imwrite(good, noisy((4, 20, 20)), photometric="minisblack")
    bad.write_text("not an image")
    with pytest.raises(InputError, match="bad.tif"):
        denoise_files(mean_model, [good, bad], tmp_path / "results", device="cpu")
    assert not (tmp_path / "results").exists()


def test_a_failing_frame_leaves_no_partial_output(tmp_path: Path, mean_model: Path) -> None:
    data = noisy((3, 20, 20))
    data[2, 5, 5] = np.nan
    source = tmp_path / "nan.tif"
    tifffile.imwrite(source, data, photometric="minisblack")
    with pytest.raises(InputError, match="NaN"):
        denoise_files(mean_model, [source], tmp_path / "out.tif", device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.tif"]


def test_never_overwrites_an_input(tmp_path: Path, mean_model: Path) -> None:
    source = tmp_path / "a.tif"
    tifffile.imwrite(source, noisy((20, 20)))
    before = source.read_bytes()
    with pytest.raises(InputError, match="refusing to overwrite"):
        denoise_files(mean_model, [source], source, device="cpu")
    other = tmp_path / "a_denoised.tif"
    tifffile.imwrite(other, noisy((20, 20)))
    with pytest.raises(InputError, match="refusing to overwrite"):
        denoise_files(mean_model, [source, other], tmp_path, device="cpu")
    assert source.read_bytes() == before


def test_output_naming_rules(tmp_path: Path, identity_model: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    first, second = tmp_path / "x" / "s.ome.tif", tmp_path / "y" / "s.tif"
    for path in (first, second):
        tifffile.imwrite(path, noisy((20, 20)))
    with pytest.raises(InputError, match="need an output folder"):
        denoise_files(identity_model, [first, second], tmp_path / "out.tif")
    with pytest.raises(InputError, match="both"):
        denoise_files(identity_model, [first, second], tmp_path / "results")
    written = denoise_files(identity_model, [first], tmp_path / "results")
    assert written == [tmp_path / "results" / "s_denoised.tif"]


def test_denoise_files_reports_every_frame_of_a_stack_and_writes_it_whole(tmp_path: Path, identity_model: Path) -> None:
    source = tmp_path / "stack.npy"
    np.save(source, noisy((5, 16, 16)))
    done: list[tuple[int, int]] = []
    denoise_files(identity_model, [source], tmp_path / "out.npy", device="cpu",
                  on_progress=lambda p: done.append((p.frame, p.n_frames)))
    assert done == [(i, 5) for i in range(0, 6)]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), np.load(source), atol=1e-4)


def test_inference_imports_neither_torch_nor_bioimageio() -> None:
    code = (
        "import sys, selfden.io.reading, selfden.inference.loading, selfden.inference.running\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'bioimageio'))\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
