"""Package validation (bioimage.io format, test_model, deepImageJ limits, upload rules) and zips.

One tiny, untrained cae package is exported per module; broken variants are copies of it
edited with onnx and yaml. A third-party-style package is written by hand (onnx.helper).
Everything runs offline with bioimageio's cache in a temporary folder.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("bioimageio.core", reason="bioimageio.core runs the packages' test_model")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from selfden.errors import ModelError, SelfdenError  # noqa: E402
from selfden.export.archive import write_package_zip  # noqa: E402
from selfden.export.metadata import PackageMetadata, Person  # noqa: E402
from selfden.export.package import export_package  # noqa: E402
from selfden.export.validation import validate_package  # noqa: E402
from selfden.export.validation_report import ValidationReport  # noqa: E402
from selfden.inference.running import denoise_files  # noqa: E402
from selfden.methods.base import Normalisation  # noqa: E402
from selfden.methods.cae import Cae, CaeConfig  # noqa: E402
from selfden.package.files import source_entries  # noqa: E402

TINY_CAE = CaeConfig(widths=(4, 4, 4, 4, 4, 4), residual_blocks=1, residual_width=8, bottleneck=2, halo=32)
MEAN, STD = 100.0, 50.0  # the hand-made package's fixed_zero_mean_unit_variance


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """bioimageio's cache in a temporary folder, for every test of this module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BIOIMAGEIO_CACHE_PATH", str(tmp_path_factory.mktemp("bioimageio-cache")))
        yield


@pytest.fixture(scope="module")
def package(cache: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported cae package with random weights (nothing is trained)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared CPU cores: one thread is much faster there
    try:
        torch.manual_seed(0)
        method = Cae(TINY_CAE, Normalisation(400.0, 200.0), torch.device("cpu"))
        frame = np.random.default_rng(0).normal(500.0, 50.0, (128, 128)).astype(np.float32)
        named = PackageMetadata(authors=[Person(name="Test Author")])  # an upload-ready package names a person
        return export_package(method, tmp_path_factory.mktemp("export") / "model", frame, {"steps": 0}, metadata=named)
    finally:
        torch.set_num_threads(threads)


def failed(report: ValidationReport) -> set[str]:
    return {c.name for c in report.checks if not (c.passed or c.warning)}


def copy_package(package: Path, target: Path) -> Path:
    shutil.copytree(package, target)
    return target


def edit_rdf(folder: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    edit(rdf)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))


def edit_onnx(folder: Path, edit: Callable[[Any], None]) -> None:
    """Change denoiser.onnx and record its new hash (and opset) in the rdf, as a careful author would."""
    import hashlib

    path = folder / "denoiser.onnx"
    model = onnx.load(str(path))
    edit(model)
    onnx.save(model, str(path))
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    edit_rdf(folder, lambda rdf: rdf["weights"]["onnx"].update(sha256=digest, opset_version=opset))


def assert_one_line_details(report: ValidationReport) -> None:
    for check in report.checks:
        assert "\n" not in check.detail and "Traceback" not in check.detail, check


# --- a selfden export ---------------------------------------------------------------------------


def test_an_exported_package_passes_every_check(package: Path) -> None:
    report = validate_package(package, trust_code=True)  # our own export: its architecture.py is ours
    assert report.passed, report.format()
    assert all(c.passed for c in report.checks), report.format()
    expected = {"bioimageio.spec", "bioimageio.core test_model", "ONNX opset <= 17", "deterministic", "no id field"}
    assert expected <= {c.name for c in report.checks}, report.format()
    assert report.format().splitlines()[-1] == "PASSED"


@pytest.mark.parametrize(
    ("edit", "check", "reason"),
    [
        (lambda m: m.opset_import[0].__setattr__("version", 18), "ONNX opset <= 17", "ONNX opset 18 > 17: deepImageJ"),
        (lambda m: m.__setattr__("ir_version", 10), "ONNX IR version <= 8", "ONNX IR version 10 > 8: deepImageJ"),
    ],
    ids=["opset18", "ir10"],
)
def test_a_graph_deepimagej_cannot_load_is_reported_with_the_reason(
    package: Path, tmp_path: Path, edit: Callable[[Any], None], check: str, reason: str
) -> None:
    folder = copy_package(package, tmp_path / "model")
    edit_onnx(folder, edit)
    report = validate_package(folder)
    assert not report.passed and failed(report) == {check}, report.format()
    assert report.check(check).detail.startswith(reason), report.check(check)
    assert "selfden export" in report.check(check).detail


def _add_second_input(model: Any) -> None:
    """output = network(input) + extra: a graph with two inputs."""
    producer = next(n for n in model.graph.node if "output" in n.output)
    producer.output[list(producer.output).index("output")] = "network_output"
    model.graph.node.append(helper.make_node("Add", ["network_output", "extra"], ["output"]))
    model.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["b", 1, "y", "x"]))


def test_a_graph_with_two_inputs_is_reported_incompatible(package: Path, tmp_path: Path) -> None:
    folder = copy_package(package, tmp_path / "model")
    edit_onnx(folder, _add_second_input)
    report = validate_package(folder)
    assert not report.passed and "one input" in failed(report), report.format()
    assert "(input, extra)" in report.check("one input").detail
    assert "deepImageJ feeds exactly one tensor" in report.check("one input").detail
    assert_one_line_details(report)


def test_unsupported_processing_and_axes_are_reported(package: Path, tmp_path: Path) -> None:
    folder = copy_package(package, tmp_path / "model")

    def edit(rdf: dict[str, Any]) -> None:
        rdf["outputs"][0]["postprocessing"].append({"id": "stardist_postprocessing", "kwargs": {}})
        rdf["inputs"][0]["axes"][2]["id"] = "z"

    edit_rdf(folder, edit)
    report = validate_package(folder)
    assert {"processing ops", "axes b,c,y,x"} <= failed(report), report.format()
    assert "output postprocessing 'stardist_postprocessing'" in report.check("processing ops").detail
    assert "input 'input' has axes 'bczx'" in report.check("axes b,c,y,x").detail


def test_a_sample_that_differs_from_the_test_input_is_reported(package: Path, tmp_path: Path) -> None:
    import tifffile

    folder = copy_package(package, tmp_path / "model")
    tifffile.imwrite(folder / "sample_input.tif", np.load(folder / "test_input.npy") + 1)
    report = validate_package(folder)
    assert "sample = test input" in failed(report), report.format()
    assert "max |diff| 1" in report.check("sample = test input").detail


# --- corrupted packages ---------------------------------------------------------------------------


def test_a_missing_weights_file_fails_with_a_one_line_detail(package: Path, tmp_path: Path) -> None:
    folder = copy_package(package, tmp_path / "model")
    (folder / "denoiser.onnx").unlink()
    report = validate_package(folder)
    assert not report.passed
    assert {"bioimageio.spec", "ONNX weights", "files and hashes"} <= failed(report), report.format()
    assert "denoiser.onnx does not point to an existing file" in report.check("bioimageio.spec").detail
    assert report.check("bioimageio.core test_model").status == "skip"
    assert report.check("files and hashes").detail.startswith("missing: denoiser.onnx")
    assert_one_line_details(report)


def test_a_wrong_sha256_fails_with_a_one_line_detail(package: Path, tmp_path: Path) -> None:
    folder = copy_package(package, tmp_path / "model")
    edit_rdf(folder, lambda rdf: rdf["weights"]["onnx"].update(sha256="a" * 64))
    report = validate_package(folder)
    assert {"bioimageio.spec", "files and hashes"} <= failed(report), report.format()
    assert "weights.onnx: SHA256 mismatch for denoiser.onnx" in report.check("bioimageio.spec").detail
    assert "sha256 differs: denoiser.onnx" in report.check("files and hashes").detail
    assert_one_line_details(report)


def test_invalid_yaml_fails_with_the_line_number(package: Path, tmp_path: Path) -> None:
    folder = copy_package(package, tmp_path / "model")
    with (folder / "rdf.yaml").open("a") as rdf:
        rdf.write("inputs: [unclosed\n")
    report = validate_package(folder / "rdf.yaml")  # the rdf itself may be given instead of its folder
    assert not report.passed and failed(report) == {"rdf.yaml is YAML"}, report.format()
    assert "rdf.yaml line" in report.check("rdf.yaml is YAML").detail
    assert_one_line_details(report)


def test_an_invalid_description_fails_bioimageio_spec(package: Path, tmp_path: Path) -> None:
    folder = copy_package(package, tmp_path / "model")
    edit_rdf(folder, lambda rdf: rdf.update(license=5, id="affable-shark"))
    report = validate_package(folder)
    assert {"bioimageio.spec", "no id field"} <= failed(report), report.format()
    assert report.check("bioimageio.spec").detail.startswith("license:")
    assert "uploader assigns ids" in report.check("no id field").detail
    assert_one_line_details(report)


def test_a_missing_path_is_a_failed_report_not_an_exception(tmp_path: Path) -> None:
    report = validate_package(tmp_path / "nothing")
    assert not report.passed and "does not exist" in report.checks[0].detail


# --- a third-party package ---------------------------------------------------------------------


def _mean3_graph(path: Path) -> None:
    """A (b, 1, y, x) 3x3 mean filter, zero padded, opset 17, IR 8."""
    kernel = numpy_helper.from_array(np.full((1, 1, 3, 3), 1 / 9, np.float32), "kernel")
    conv = helper.make_node("Conv", ["raw", "kernel"], ["smooth"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    dims = ["b", 1, "y", "x"]
    graph = helper.make_graph(
        [conv], "mean3", [helper.make_tensor_value_info("raw", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("smooth", TensorProto.FLOAT, dims)], initializer=[kernel],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="a third party")
    model.ir_version = 8
    onnx.save(model, str(path))


def _mean3_reflect(image: np.ndarray) -> np.ndarray:
    padded = np.pad(image.astype(np.float64), 1, mode="reflect")
    h, w = image.shape
    return sum(padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0


def _third_party_rdf() -> dict[str, Any]:
    space = [{"type": "space", "id": a, "size": {"min": 16, "step": 8}} for a in "yx"]
    out_space = [{"type": "space", "id": a, "size": {"tensor_id": "raw", "axis_id": a}, "halo": 4} for a in "yx"]
    channel = {"type": "channel", "channel_names": ["intensity"]}
    return {
        "type": "model", "format_version": "0.5.4", "name": "mean3 from a third party",
        "description": "A 3x3 mean filter written with onnx.helper.", "authors": [{"name": "A. Person"}],
        "cite": [{"text": "none", "url": "https://bioimage.io"}], "license": "CC-BY-4.0",
        "documentation": "README.md", "covers": ["cover.png"], "tags": ["denoising"],
        "inputs": [{
            "id": "raw", "axes": [{"type": "batch"}, channel, *space], "data": {"type": "float32"},
            "test_tensor": {"source": "in.npy"}, "sample_tensor": {"source": "in.tif"},
            "preprocessing": [{"id": "fixed_zero_mean_unit_variance", "kwargs": {"mean": MEAN, "std": STD}}],
        }],
        "outputs": [{
            "id": "smooth", "axes": [{"type": "batch"}, channel, *out_space], "data": {"type": "float32"},
            "test_tensor": {"source": "out.npy"},
            "postprocessing": [{"id": "scale_linear", "kwargs": {"gain": STD, "offset": MEAN}}],
        }],
        "weights": {"onnx": {"source": "mean3.onnx", "opset_version": 17}},
    }  # fmt: skip


@pytest.fixture(scope="module")
def third_party(cache: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A package as another tool would write it: no config.selfden, no hashes, other tensor ids."""
    import tifffile
    from PIL import Image

    folder = tmp_path_factory.mktemp("third_party") / "mean3"
    folder.mkdir()
    _mean3_graph(folder / "mean3.onnx")
    raw = np.random.default_rng(1).normal(MEAN, STD, (1, 1, 32, 40)).astype(np.float32)
    padded = np.pad((raw[0, 0] - MEAN) / STD, 1)  # the graph pads with zeros
    smooth = sum(padded[dy : dy + 32, dx : dx + 40] for dy in range(3) for dx in range(3)) / 9.0
    np.save(folder / "in.npy", raw)
    np.save(folder / "out.npy", (smooth * STD + MEAN).astype(np.float32)[None, None])
    tifffile.imwrite(folder / "in.tif", raw)
    Image.new("L", (64, 32), 128).save(folder / "cover.png")
    (folder / "README.md").write_text("# mean3\n\nA 3x3 mean filter.\n\n## Validation\n\nBy eye.\n")
    (folder / "rdf.yaml").write_text(yaml.safe_dump(_third_party_rdf(), sort_keys=False))
    return folder


def test_a_third_party_package_runs_in_selfden_and_validates(third_party: Path, tmp_path: Path) -> None:
    import tifffile

    image = np.random.default_rng(2).normal(MEAN, STD, (45, 38)).astype(np.float32)
    tifffile.imwrite(tmp_path / "noisy.tif", image)
    [written] = denoise_files(third_party, [tmp_path / "noisy.tif"], tmp_path / "smooth.tif", device="cpu")
    expected = _mean3_reflect((image - MEAN) / STD) * STD + MEAN
    got = tifffile.imread(written)
    assert np.abs(got - expected).max() < 1e-3, np.abs(got - expected).max()

    report = validate_package(third_party)
    assert report.passed, report.format()
    assert report.check("all files hashed").status == "warn", "hand-written rdf has no sha256: a warning, not a failure"
    assert "fixed_zero_mean_unit_variance" in report.check("processing ops").detail


def test_an_unseeded_random_graph_is_reported_non_deterministic(third_party: Path, tmp_path: Path) -> None:
    folder = copy_package(third_party, tmp_path / "noisy")
    model = onnx.load(str(folder / "mean3.onnx"))
    model.graph.node[0].output[0] = "mean"
    model.graph.node.extend([
        helper.make_node("RandomNormalLike", ["mean"], ["noise"]),
        helper.make_node("Add", ["mean", "noise"], ["smooth"]),
    ])  # fmt: skip
    onnx.save(model, str(folder / "mean3.onnx"))
    report = validate_package(folder)
    assert "deterministic" in failed(report), report.format()
    assert "unseeded RandomNormalLike" in report.check("deterministic").detail


# --- zips ------------------------------------------------------------------------------------


def _rdf_in_zip(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as archive:
        return yaml.safe_load(archive.read("rdf.yaml"))


def test_the_zip_validates_with_no_id_and_every_file_hashed(package: Path, tmp_path: Path) -> None:
    path = write_package_zip(package, tmp_path / "upload" / "cae.zip")
    assert path == tmp_path / "upload" / "cae.zip" and sorted(p.name for p in path.parent.iterdir()) == ["cae.zip"]
    report = validate_package(path, trust_code=True)
    assert report.passed and all(c.passed for c in report.checks), report.format()
    rdf = _rdf_in_zip(path)
    assert "id" not in rdf
    entries = list(source_entries(rdf))
    assert len(entries) >= 6 and all(len(str(e.get("sha256", ""))) == 64 for e in entries), entries
    with zipfile.ZipFile(path) as archive:
        assert {e["source"] for e in entries} | {"rdf.yaml"} == set(archive.namelist())


def test_an_exported_folder_gives_every_file_a_sha256(package: Path) -> None:
    """selfden infer checks these before it runs a graph; a package without them runs unchecked."""
    entries = list(source_entries(yaml.safe_load((package / "rdf.yaml").read_text())))
    assert len(entries) >= 6 and all(len(str(e.get("sha256", ""))) == 64 for e in entries), entries


def test_zipping_adds_the_hashes_a_hand_written_rdf_lacks(third_party: Path, tmp_path: Path) -> None:
    path = write_package_zip(third_party, tmp_path / "mean3.zip")
    entries = list(source_entries(_rdf_in_zip(path)))
    assert entries and all(len(str(e.get("sha256", ""))) == 64 for e in entries), entries
    report = validate_package(path)
    assert report.passed and report.check("all files hashed").passed, report.format()


def test_zipping_refuses_targets_inside_the_package_or_without_zip_suffix(package: Path, tmp_path: Path) -> None:
    before = sorted(p.name for p in package.iterdir())
    with pytest.raises(SelfdenError, match="inside the package folder"):
        write_package_zip(package, package / "model.zip")
    with pytest.raises(SelfdenError, match="must end in .zip"):
        write_package_zip(package, tmp_path / "model.tar")
    (tmp_path / "notes.zip").write_text("not a zip")
    with pytest.raises(SelfdenError, match="not a zip package"):
        write_package_zip(package, tmp_path / "notes.zip")
    assert sorted(p.name for p in package.iterdir()) == before
    assert (tmp_path / "notes.zip").read_text() == "not a zip"


def test_zipping_a_broken_package_raises_a_one_line_error(package: Path, tmp_path: Path) -> None:
    folder = copy_package(package, tmp_path / "model")
    (folder / "test_output.npy").unlink()
    with pytest.raises(ModelError, match="not a valid bioimage.io package") as error:
        write_package_zip(folder, tmp_path / "broken.zip")
    assert "\n" not in str(error.value) and not (tmp_path / "broken.zip").exists()


def test_a_zip_without_rdf_at_its_root_fails_the_layout_check(package: Path, tmp_path: Path) -> None:
    path = tmp_path / "nested.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for file in package.iterdir():
            archive.write(file, f"model/{file.name}")
    report = validate_package(path)
    assert not report.passed and "found model/rdf.yaml" in report.check("zip layout").detail, report.format()
