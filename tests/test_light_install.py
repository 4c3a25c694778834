"""An inference-only install (`pip install 'selfden[cpu]'`, no PyTorch) denoises, validates and
serves the Fiji macro; training commands there say in one line which extra they need.

The install is a real one: `.ci/run` builds selfden's wheel with `python -m build`, installs it
with the `cpu` extra alone into a fresh virtual environment and names that environment in
SELFDEN_LIGHT_VENV. Without it (a developer's plain `pytest`) these tests skip and say why.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile

from fiji_helpers import imagej_missing_reason, remembered_selfden, run_macro

SHIPPED = Path(__file__).resolve().parents[1] / "bioimage_models"
PACKAGES = sorted(p.parent for p in SHIPPED.glob("*/rdf.yaml"))
LIGHT = os.environ.get("SELFDEN_LIGHT_VENV")
pytestmark = pytest.mark.skipif(
    not LIGHT,
    reason="SELFDEN_LIGHT_VENV is not set: .ci/run builds the inference-only environment (wheel + [cpu]) and sets it",
)


def light(*args: str | os.PathLike[str], cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a program of the inference-only environment (bin/selfden, bin/python)."""
    assert LIGHT is not None
    program, *rest = args
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    if cache is not None:
        env["BIOIMAGEIO_CACHE_PATH"] = str(cache)
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [str(Path(LIGHT) / "bin" / str(program)), *map(str, rest)],
        capture_output=True, text=True, env=env, timeout=600,
    )


def test_the_inference_only_install_has_no_torch_and_does_not_run_from_the_source_tree() -> None:
    done = light("python", "-c", "import selfden, onnxruntime, bioimageio.core; print(selfden.__file__)")
    assert done.returncode == 0, done.stderr
    assert "site-packages" in done.stdout, f"selfden should come from the installed wheel: {done.stdout}"
    missing = light("python", "-c", "import torch")
    assert missing.returncode != 0 and "No module named 'torch'" in missing.stderr, missing.stdout + missing.stderr


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_the_inference_only_install_reproduces_every_shipped_package(package: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "input.npy", np.load(package / "test_input.npy")[0, 0])
    done = light("selfden", "infer", package, tmp_path / "input.npy", "-o", tmp_path / "output.npy", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    expected, output = np.load(package / "test_output.npy")[0, 0], np.load(tmp_path / "output.npy")
    # Everywhere, borders included: the weights reflect-pad inside the graph as selfden infer does.
    # bioimageio.core's default tolerance for ONNX weights (the rdf lists one only for PyTorch).
    np.testing.assert_allclose(output, expected, rtol=1e-3, atol=1e-3, err_msg=package.name)


def test_the_inference_only_install_validates_a_package_with_its_onnx_weights(tmp_path: Path) -> None:
    done = light("selfden", "validate", SHIPPED / "noise2atom-atoms", cache=tmp_path / "cache")
    assert done.returncode == 0 and "PASSED" in done.stdout, done.stdout + done.stderr
    rows = {line.split("  ")[0]: line for line in done.stdout.splitlines()}
    assert " pass " in rows["bioimageio.core test_model"], done.stdout  # the ONNX weights, run by bioimageio.core
    assert " warn " in rows["bioimageio.core test_model (PyTorch)"], done.stdout  # not run: no torch, no trusted code


@pytest.mark.parametrize("command", ["train", "export", "demo"])
def test_training_commands_name_the_extra_they_need(command: str, tmp_path: Path) -> None:
    args = {"train": ["cae", tmp_path / "x.tif", "-o", tmp_path / "run"], "export": [tmp_path / "run", "-o", tmp_path / "pkg"],
            "demo": ["-o", tmp_path / "demo"]}[command]
    done = light("selfden", command, *args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert "selfden[cpu,train]" in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert not list(tmp_path.iterdir()), "nothing is written"


@pytest.mark.imagej
@pytest.mark.skipif(imagej_missing_reason() is not None, reason=str(imagej_missing_reason()))
def test_the_fiji_macro_runs_with_the_inference_only_selfden(tmp_path: Path) -> None:
    assert LIGHT is not None
    package = SHIPPED / "dnnet-poisson-gaussian"
    image, result = tmp_path / "noisy.tif", tmp_path / "denoised.tif"
    tifffile.imwrite(image, np.load(package / "test_input.npy")[0, 0].astype(np.float32))
    argument = f"model=[{package}] input=[{image}] output=[{result}] device=cpu tmpdir=[{tmp_path / 'temp'}]"
    (tmp_path / "temp").mkdir()
    run = run_macro("selfden_denoise.ijm", argument, cwd=tmp_path, home=tmp_path / "home", path=[Path(LIGHT) / "bin"])
    assert result.is_file(), run.output
    assert remembered_selfden(tmp_path / "home") == str(Path(LIGHT) / "bin" / "selfden"), run.output
