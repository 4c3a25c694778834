"""ONNX export (opset 17, IR 8, one file, parity with torch) and the bioimage.io model folder."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch
import yaml
from PIL import Image

from selfden.export.onnx import ExportError, export_onnx
from selfden.export.package import export_package
from selfden.export.package_assets import crop_for_test_tensor, package_min_size, predict_raw
from selfden.methods.base import Normalisation
from selfden.methods.cae import Cae, CaeConfig

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is needed to check exported graphs")

TINY = dict(widths=(4, 4, 8, 8, 8, 8), residual_blocks=1, residual_width=8, bottleneck=2, halo=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_cae(offset: float = 0.0, scale: float = 1.0) -> Cae:
    torch.manual_seed(0)
    return Cae(CaeConfig(**TINY), Normalisation(offset, scale), torch.device("cpu"))


def run_onnx(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


class _DataDependentBranch(torch.nn.Module):
    """Tracing bakes in the branch taken for the all-zero example input, so ONNX differs from torch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1 if bool(x.sum() > 0) else x - 1


class _Noisy(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn_like(x)


# --- ONNX -----------------------------------------------------------------------------------


def test_onnx_matches_torch_at_two_sizes(tmp_path) -> None:
    report = export_onnx(make_cae().export_graphs()["denoiser"], tmp_path / "denoiser.onnx")
    assert report.passed, report.format()
    assert [s[2:] for s in report.shapes] == [(64, 64), (96, 160)]
    assert max(report.max_abs_diff) <= 1e-4, report.format()
    assert not report.stochastic


def test_onnx_is_one_file_with_ir_version_8_and_opset_17(tmp_path) -> None:
    path = tmp_path / "denoiser.onnx"
    report = export_onnx(make_cae().export_graphs()["denoiser"], path)
    model = onnx.load(str(path))
    assert (report.ir_version, model.ir_version) == (8, 8)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert sorted(os.listdir(tmp_path)) == ["denoiser.onnx"], "external data or temp files were left behind"


def test_onnx_batch_and_spatial_axes_are_dynamic(tmp_path) -> None:
    path = tmp_path / "denoiser.onnx"
    graph = make_cae().export_graphs()["denoiser"]
    export_onnx(graph, path)
    x = np.random.default_rng(0).random((3, 1, 128, 96), dtype=np.float32)
    with torch.no_grad():
        expected = graph(torch.from_numpy(x)).numpy()
    got = run_onnx(path, x)
    assert got.shape == (3, 1, 128, 96)
    assert np.abs(got - expected).max() <= 1e-4
    names = [d.dim_param for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert names == ["b", "", "y", "x"]


def test_failing_parity_raises_export_error_and_leaves_no_file(tmp_path) -> None:
    path = tmp_path / "broken.onnx"
    with pytest.raises(ExportError, match=r"parity.*max \|diff\|"):
        export_onnx(_DataDependentBranch(), path)
    assert os.listdir(tmp_path) == []


def test_random_nodes_are_seeded_so_fresh_sessions_agree(tmp_path) -> None:
    path = tmp_path / "sampler.onnx"
    report = export_onnx(_Noisy(), path)
    assert report.stochastic and report.passed, report.format()
    random_nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type.startswith("Random")]
    assert random_nodes and all(any(a.name == "seed" for a in n.attribute) for n in random_nodes)
    x = np.zeros((1, 1, 32, 32), np.float32)
    assert np.array_equal(run_onnx(path, x), run_onnx(path, x))


# --- package ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """One exported package, written over a stale earlier selfden export (which it must replace)."""
    os.environ.setdefault("BIOIMAGEIO_CACHE_PATH", str(tmp_path_factory.mktemp("bioimageio-cache")))
    out_dir = tmp_path_factory.mktemp("run") / "model"
    out_dir.mkdir()
    (out_dir / "rdf.yaml").write_text("config:\n  selfden:\n    method: cae\n")
    (out_dir / "stale.onnx").write_text("old")
    raw = np.random.default_rng(0).normal(500.0, 50.0, (300, 280)).astype(np.float32)
    method = make_cae(offset=400.0, scale=200.0)
    info = {"steps": 3, "minutes": 0.1, "inputs": ["a.tif"], "authors": ["Test Author"]}
    path = export_package(method, out_dir, raw, info)  # raises unless bioimageio.core's test_model passed
    return path, method, raw


def test_pytorch_state_dict_weights_rebuild_the_network_that_made_the_onnx_graph(package) -> None:
    import importlib.util

    import torch
    import yaml

    path, method, _ = package
    weights = yaml.safe_load((path / "rdf.yaml").read_text())["weights"]
    assert weights["onnx"]["parent"] == "pytorch_state_dict"
    arch = weights["pytorch_state_dict"]["architecture"]
    assert (arch["source"], arch["callable"]) == ("architecture.py", "ReflectBorder")  # torch only: no selfden needed
    assert arch["kwargs"]["network"] == "CaeNet" and (arch["kwargs"]["pad_before"], arch["kwargs"]["pad_after"]) == (32, 32)
    spec = importlib.util.spec_from_file_location("package_architecture", path / arch["source"])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    network = getattr(module, arch["callable"])(**arch["kwargs"]).eval()
    network.load_state_dict(torch.load(path / weights["pytorch_state_dict"]["source"], weights_only=True))
    x = torch.from_numpy(np.load(path / "test_input.npy")).float()
    x = (x - method.normalisation.offset) / method.normalisation.scale
    padded = torch.nn.functional.pad(x, (32, 32, 32, 32), mode="reflect")  # the border is part of the model
    with torch.no_grad():
        expected = method.export_graphs()["denoiser"].eval()(padded)[..., 32:-32, 32:-32]
        assert torch.allclose(network(x), expected, atol=1e-5), "state dict + architecture must give the exported network"


def test_package_folder_holds_the_model_folder_files(package) -> None:
    path, _, _ = package
    expected = {"rdf.yaml", "denoiser.onnx", "denoiser_core.onnx", "denoiser.pt", "test_input.npy", "test_output.npy", "sample_input.tif",
                "sample_output.tif", "cover.png", "README.md", "architecture.py"}
    assert set(os.listdir(path)) == expected, "stale files of the earlier export must be gone"
    assert not [p for p in os.listdir(path.parent) if p.startswith(".")], "temp folders left behind"


def test_package_rdf_describes_axes_processing_and_selfden_config(package) -> None:
    path, method, _ = package
    rdf = yaml.safe_load((path / "rdf.yaml").read_text())
    assert rdf["format_version"].startswith("0.5") and "id" not in rdf
    assert all("github_user" not in a for a in rdf["authors"])
    size = [a["size"] for a in rdf["inputs"][0]["axes"] if a.get("type") == "space"]
    assert size == [{"min": package_min_size(method), "step": 32}] * 2
    assert [a.get("halo") for a in rdf["outputs"][0]["axes"] if a.get("type") == "space"] == [32, 32]
    pre = [p for p in rdf["inputs"][0]["preprocessing"] if p["id"] == "scale_linear"][0]["kwargs"]
    assert pre == pytest.approx({"gain": 1 / 200.0, "offset": -2.0})
    assert rdf["weights"]["onnx"] == {**rdf["weights"]["onnx"], "source": "denoiser.onnx", "opset_version": 17}
    selfden = rdf["config"]["selfden"]
    assert selfden["method"] == "cae" and selfden["halo"] == 32 and selfden["size_step"] == 32
    assert selfden["normalisation"] == {"offset": 400.0, "scale": 200.0}
    assert selfden["graphs"] == {"denoiser": "denoiser.onnx", "core": "denoiser_core.onnx"} and selfden["bottleneck"] == 2
    assert [a["source"] for a in rdf["attachments"]] == ["denoiser_core.onnx"] and rdf["attachments"][0]["sha256"]
    assert selfden["training"]["steps"] == 3
    assert [c["doi"] for c in rdf["cite"]][0] == "10.48550/arXiv.2110.11911"


def test_package_test_output_is_what_a_user_gets_on_raw_intensities(package) -> None:
    path, method, _ = package
    test_input, test_output = np.load(path / "test_input.npy"), np.load(path / "test_output.npy")
    assert test_input.shape == test_output.shape == (1, 1, 256, 256)
    assert test_input.dtype == test_output.dtype == np.float32
    manual = run_onnx(path / "denoiser.onnx", (test_input - 400.0) / 200.0) * 200.0 + 400.0
    assert np.abs(manual - test_output).max() < 1e-3
    assert np.array_equal(predict_raw(path / "denoiser.onnx", test_input[0, 0], method), test_output[0, 0])


def test_package_cover_is_two_to_one_and_small_and_readme_has_validation(package) -> None:
    path, _, _ = package
    with Image.open(path / "cover.png") as cover:
        assert cover.size[0] == 2 * cover.size[1]
    assert (path / "cover.png").stat().st_size < 500_000
    assert "\n## Validation\n" in (path / "README.md").read_text()


def test_export_refuses_to_replace_a_folder_that_is_not_a_selfden_export(tmp_path) -> None:
    out_dir = tmp_path / "precious"
    out_dir.mkdir()
    (out_dir / "data.tif").write_text("keep me")
    with pytest.raises(ExportError, match="not a selfden model folder"):
        export_package(make_cae(), out_dir, np.zeros((128, 128), np.float32), {})
    assert (out_dir / "data.tif").read_text() == "keep me"


def test_a_sample_smaller_than_the_minimum_tile_is_mirror_padded_to_a_valid_size() -> None:
    method = make_cae()
    crop = crop_for_test_tensor(method, np.arange(64 * 300, dtype=np.float32).reshape(64, 300))
    min_size = package_min_size(method)
    assert crop.dtype == np.float32
    assert all(n >= min_size and (n - min_size) % 32 == 0 for n in crop.shape), crop.shape


def test_a_sample_with_nan_pixels_is_refused_before_any_export(tmp_path) -> None:
    raw = np.zeros((256, 256), np.float32)
    raw[3, 4] = np.nan
    with pytest.raises(ExportError, match="NaN"):
        export_package(make_cae(), tmp_path / "model", raw, {})
    assert os.listdir(tmp_path) == []


def test_identity_normalisation_exports_without_processing_ops(tmp_path) -> None:
    os.environ.setdefault("BIOIMAGEIO_CACHE_PATH", str(tmp_path / "cache"))
    raw = np.random.default_rng(1).random((128, 128)).astype(np.float32)  # data already in [0, 1]
    path = export_package(make_cae(offset=0.0, scale=1.0), tmp_path / "model", raw, {})
    rdf = yaml.safe_load((path / "rdf.yaml").read_text())
    ops = [p["id"] for p in rdf["inputs"][0].get("preprocessing", []) + rdf["outputs"][0].get("postprocessing", [])]
    assert "scale_linear" not in ops, ops
    assert rdf["config"]["selfden"]["tile_size"] % rdf["config"]["selfden"]["size_step"] == 0


# --- borders are part of the model ----------------------------------------------------------------


def _tiny(method_name: str):
    """A tiny network of each method, untrained (borders do not depend on training), non-trivial scaling."""
    from selfden.methods.cosdd import Cosdd, CosddConfig
    from selfden.methods.dnnet import Dnnet, DnnetConfig
    from selfden.methods.noise2atom import Noise2Atom, Noise2AtomConfig

    torch.manual_seed(0)
    norm = Normalisation(400.0, 200.0)
    built = {
        "cae": lambda: Cae(CaeConfig(**TINY), norm, torch.device("cpu")),
        "cosdd": lambda: Cosdd(CosddConfig(size="tiny", levels=4, features=8, latent_channels=4, components=3,
                                           downsamplings=2), norm, torch.device("cpu")),
        "dnnet": lambda: Dnnet(DnnetConfig(filters=8, noise_net_width=16), norm, torch.device("cpu")),
        "noise2atom": lambda: Noise2Atom(Noise2AtomConfig(widths=(4, 8, 8, 16), residual_blocks=1, residual_width=16,
                                                          critic_widths=(4, 8, 8, 16)), norm, torch.device("cpu")),
    }  # fmt: skip
    return built[method_name]()


METHODS = ["cae", "cosdd", "dnnet", "noise2atom"]


@pytest.fixture(scope="module", params=METHODS)
def method_package(request, tmp_path_factory):
    """One package per method; export_package runs bioimageio.core's test_model for the ONNX and the
    PyTorch weights (both must reproduce the test output, borders included) or raises."""
    os.environ.setdefault("BIOIMAGEIO_CACHE_PATH", str(tmp_path_factory.mktemp("bioimageio-cache")))
    raw = np.random.default_rng(2).normal(500.0, 50.0, (200, 232)).astype(np.float32)
    path = export_package(_tiny(request.param), tmp_path_factory.mktemp(request.param) / "model", raw, {})
    return path


def _infer(package, image: np.ndarray, tmp_path, **options) -> np.ndarray:
    from selfden.inference.running import denoise_files

    np.save(tmp_path / "input.npy", image)
    written = denoise_files(package, [tmp_path / "input.npy"], tmp_path / "output.npy", device="cpu", overwrite=True, **options)
    return np.load(written[0])


def test_selfden_infer_equals_the_package_test_output_everywhere_borders_included(method_package, tmp_path) -> None:
    test_input = np.load(method_package / "test_input.npy")[0, 0]
    expected = np.load(method_package / "test_output.npy")[0, 0]
    # bioimageio.core's default tolerance for the ONNX weights (the rdf lists one only for PyTorch).
    np.testing.assert_allclose(_infer(method_package, test_input, tmp_path), expected, rtol=1e-3, atol=1e-3)


def test_tiled_equals_untiled_everywhere(method_package, tmp_path) -> None:
    rdf = yaml.safe_load((method_package / "rdf.yaml").read_text())
    image = np.load(method_package / "test_input.npy")[0, 0]
    whole = _infer(method_package, image, tmp_path)
    step = rdf["config"]["selfden"]["size_step"]
    tiled = _infer(method_package, image, tmp_path, tile_size=max(step, image.shape[0] // 3 // step * step))
    # Border tiles see the same reflection as the whole image; what is left is the receptive field
    # reaching past the halo between tiles (these random tiny networks: below 1e-5 of the output range).
    spread = float(np.ptp(whole))
    assert np.max(np.abs(tiled - whole)) <= 1e-3 * spread, f"tiled differs by {np.max(np.abs(tiled - whole)):.3g} of {spread:.3g}"


def test_the_bordered_graph_run_by_plain_onnxruntime_equals_selfden_infer(method_package, tmp_path) -> None:
    selfden = yaml.safe_load((method_package / "rdf.yaml").read_text())["config"]["selfden"]
    low, step, (offset, scale) = selfden["min_size"], selfden["size_step"], selfden["normalisation"].values()
    image = np.random.default_rng(3).normal(500.0, 50.0, (low + step, low + 3 * step)).astype(np.float32)
    plain = run_onnx(method_package / "denoiser.onnx", ((image - offset) / scale)[None, None])[0, 0] * scale + offset
    np.testing.assert_allclose(_infer(method_package, image, tmp_path), plain, rtol=1e-3, atol=1e-3)


def test_the_border_pads_are_what_the_tiler_reads_around_a_whole_image() -> None:
    from selfden.export.border_graph import border_pads
    from selfden.geometry.tiles import tile_image

    for halo, step, size in [(28, 4, 60), (32, 32, 96), (20, 32, 96), (48, 8, 104)]:
        before, after = border_pads(halo, step)
        assert (before + after) % step == 0 and before == halo <= after < halo + step
        (tile,) = tile_image((size, size + step), 4096, size, step, halo)
        assert [(r.start, r.stop) for r in tile.read] == [(-before, size + after), (-before, size + step + after)]


def test_the_reflect_border_repeats_no_edge_pixel_like_numpy_reflect(tmp_path) -> None:
    from selfden.export.border_graph import add_reflect_border, border_of

    class Shift(torch.nn.Module):  # output depends on the padded neighbours: a 3x3 box sum
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1) * 9

    export_onnx(Shift(), tmp_path / "core.onnx")
    bordered = add_reflect_border(onnx.load(str(tmp_path / "core.onnx")), 2, 3)
    onnx.save(bordered, str(tmp_path / "bordered.onnx"))
    x = np.random.default_rng(0).random((1, 1, 8, 9), dtype=np.float32)
    padded = np.pad(x, ((0, 0), (0, 0), (2, 3), (2, 3)), mode="reflect")
    expected = run_onnx(tmp_path / "core.onnx", padded)[..., 2:-3, 2:-3]
    assert np.allclose(run_onnx(tmp_path / "bordered.onnx", x), expected, atol=1e-5)
    assert border_of(bordered) == (2, 3) and border_of(onnx.load(str(tmp_path / "core.onnx"))) is None
    with pytest.raises(ExportError, match="already has"):
        add_reflect_border(bordered, 2, 3)
