"""Every package shipped in bioimage_models/ passes validation and `selfden infer` reproduces it,
up to the image edge: the weights carry selfden's reflect border (export/border_graph.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

SHIPPED = Path(__file__).resolve().parents[1] / "bioimage_models"
PACKAGES = sorted(p.parent for p in SHIPPED.glob("*/rdf.yaml"))
MAX_MB = 20.0


def test_at_least_one_package_is_shipped() -> None:
    assert PACKAGES, f"no packages under {SHIPPED}: run `python bioimage_models/build.py`"


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_shipped_package_passes_validation(package: Path, tmp_path, monkeypatch) -> None:
    from selfden.export.validation import validate_package

    monkeypatch.setenv("BIOIMAGEIO_CACHE_PATH", str(tmp_path / "cache"))
    report = validate_package(package, trust_code=True)  # ours: bioimageio.core's test_model for ONNX and PyTorch
    assert report.passed, report.format()
    size = sum(p.stat().st_size for p in package.rglob("*") if p.is_file()) / 1e6
    assert size <= MAX_MB, f"{package.name} is {size:.1f} MB, over the {MAX_MB:g} MB limit"


def _infer(package: Path, image: np.ndarray, folder: Path, **options: object) -> np.ndarray:
    from selfden.inference.running import denoise_files

    np.save(folder / "input.npy", image)
    written = denoise_files(package, [folder / "input.npy"], folder / "output.npy", device="cpu", overwrite=True, **options)
    return np.load(written[0])


def _selfden_config(package: Path) -> dict:
    return yaml.safe_load((package / "rdf.yaml").read_text())["config"]["selfden"]


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_selfden_infer_reproduces_the_shipped_test_output_everywhere_borders_included(package: Path, tmp_path) -> None:
    output = _infer(package, np.load(package / "test_input.npy")[0, 0], tmp_path)
    # bioimageio.core's default tolerance for the ONNX weights (the rdf lists one only for PyTorch).
    np.testing.assert_allclose(output, np.load(package / "test_output.npy")[0, 0], rtol=1e-3, atol=1e-3, err_msg=package.name)


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_shipped_package_tiled_equals_untiled_everywhere(package: Path, tmp_path) -> None:
    image = np.load(package / "test_input.npy")[0, 0]
    whole = _infer(package, image, tmp_path)
    tiled = _infer(package, image, tmp_path, tile_size=64)
    # Border tiles get the same reflection as the whole image; between tiles a receptive field
    # longer than the halo (COSDD's) leaves a little (measured: at most 0.004 % of the range).
    worst = float(np.max(np.abs(tiled - whole))) / float(np.ptp(whole))
    assert worst < 1e-3, f"{package.name}: tiled differs from untiled by {worst:.2e} of the output range"


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_the_shipped_weights_run_by_plain_onnxruntime_equal_selfden_infer(package: Path, tmp_path) -> None:
    import onnxruntime as ort

    selfden = _selfden_config(package)
    low, step, norm = selfden["min_size"], selfden["size_step"], selfden["normalisation"]
    image = np.load(package / "test_input.npy")[0, 0]
    image = np.tile(image, (2, 2))[: low + step, : low + 3 * step]  # another valid size, not square
    session = ort.InferenceSession(str(package / "denoiser.onnx"), providers=["CPUExecutionProvider"])
    x = ((image - norm["offset"]) / norm["scale"]).astype(np.float32)[None, None]
    plain = session.run(None, {"input": x})[0][0, 0] * norm["scale"] + norm["offset"]
    np.testing.assert_allclose(_infer(package, image, tmp_path), plain, rtol=1e-3, atol=1e-3, err_msg=package.name)


SAMPLERS = [p for p in PACKAGES  # the old single sampler graph, or the split pair
            if {"sampler", "sampler_decoder"} & set(yaml.safe_load((p / "rdf.yaml").read_text())["config"]["selfden"]["graphs"])]


@pytest.mark.parametrize("package", SAMPLERS, ids=[p.name for p in SAMPLERS])
def test_shipped_sampler_gives_a_posterior_mean_and_a_spread(package: Path, tmp_path) -> None:
    from selfden.inference.running import denoise_files

    np.save(tmp_path / "input.npy", np.load(package / "test_input.npy")[0, 0])
    mean_path, std_path = denoise_files(package, [tmp_path / "input.npy"], tmp_path / "mean.tif", samples=3, std=True)
    import tifffile

    mean, std = tifffile.imread(mean_path), tifffile.imread(std_path)
    assert np.isfinite(mean).all() and np.isfinite(std).all()
    assert (std >= 0).all() and std.mean() > 0, "posterior samples must differ somewhere"


# Rebuilds the PyTorch weights as a consumer without selfden would: architecture.py + state dict.
TORCH_ONLY = """
import importlib.util, sys
import numpy as np, torch, yaml
sys.modules["selfden"] = None  # importing selfden now fails
folder = sys.argv[1]
rdf = yaml.safe_load(open(folder + "/rdf.yaml"))
weights = rdf["weights"]["pytorch_state_dict"]
spec = importlib.util.spec_from_file_location("architecture", folder + "/" + weights["architecture"]["source"])
module = importlib.util.module_from_spec(spec)
sys.modules["architecture"] = module
spec.loader.exec_module(module)
network = getattr(module, weights["architecture"]["callable"])(**weights["architecture"].get("kwargs", {})).eval()
network.load_state_dict(torch.load(folder + "/" + weights["source"], weights_only=True))
def affine(x, steps):
    for step in steps:  # selfden packages use scale_linear (and ensure_dtype, a no-op on float32)
        if step["id"] == "scale_linear":
            x = x * step["kwargs"]["gain"] + step["kwargs"]["offset"]
    return x
x = affine(np.load(folder + "/test_input.npy").astype(np.float32), rdf["inputs"][0].get("preprocessing", []))
with torch.no_grad():
    y = network(torch.from_numpy(x)).numpy()
np.save(sys.argv[2], affine(y, rdf["outputs"][0].get("postprocessing", [])))
"""


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_shipped_pytorch_weights_load_without_selfden(package: Path, tmp_path) -> None:
    import subprocess
    import sys

    out = tmp_path / "torch_output.npy"
    done = subprocess.run([sys.executable, "-c", TORCH_ONLY, str(package), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = np.load(package / "test_output.npy")
    rdf = yaml.safe_load((package / "rdf.yaml").read_text())
    tolerance = rdf["config"]["bioimageio"]["reproducibility_tolerance"][0]  # the one for these weights
    limit = tolerance["absolute_tolerance"] + tolerance["relative_tolerance"] * np.abs(expected)
    mismatched_ppm = 1e6 * float(np.mean(np.abs(np.load(out) - expected) > limit))
    assert mismatched_ppm <= tolerance["mismatched_elements_per_million"], f"{package.name}: {mismatched_ppm:.0f} ppm"
