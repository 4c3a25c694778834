"""The `selfden` command line, end to end, as a user runs it (real subprocesses where it matters)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

# A tiny cae so the end-to-end tests train in seconds; the real defaults are measured elsewhere.
TINY_CAE = [
    "--set", "widths=[4,4,4,4,4,4]",
    "--set", "residual_blocks=1",
    "--set", "residual_width=8",
    "--set", "bottleneck=2",
    "--set", "halo=32",
]
SELFDEN = [sys.executable, "-m", "selfden.cli"]


def run_selfden(*args: str | os.PathLike[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run(
        [*SELFDEN, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def noisy_stack(n: int = 12, size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    clean = 200 + 800 * (np.sin(xx / 5.0) * np.cos(yy / 7.0) > 0)
    return rng.poisson(np.broadcast_to(clean, (n, size, size))).astype(np.uint16)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A run folder trained for a few steps by `selfden train`, and its input stack."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "noisy.tif"
    tifffile.imwrite(data, noisy_stack(), imagej=True, metadata={"axes": "TYX"})
    run = root / "run"
    result = run_selfden(
        "train", "cae", data, "-o", run, "--steps", "3", "--patch-size", "64", "--batch-size", "2", "--seed", "1",
        *TINY_CAE,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "selfden infer" in result.stdout, result.stdout
    return run, data


def test_train_writes_the_run_folder_and_the_model(trained_run: tuple[Path, Path]) -> None:
    run, _ = trained_run
    for name in ("config.yaml", "metrics.jsonl", "report.png", "checkpoints/last.pt", "model/rdf.yaml"):
        assert (run / name).is_file(), f"missing {name}"


def test_resume_continues_from_the_last_checkpoint(trained_run: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)
    before = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    result = run_selfden("train", "cae", "-o", run, "--resume", "--steps", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    after = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert before["step"] == 3 and after["step"] == 5
    optimiser_steps = [s["step"] for s in _adam_states(after["method"])]
    assert optimiser_steps and all(int(s) == 5 for s in optimiser_steps), optimiser_steps


def _adam_states(state: dict) -> list[dict]:
    found = []
    for value in state.values():
        if isinstance(value, dict):
            if "state" in value and "param_groups" in value:
                found.extend(value["state"].values())
            else:
                found.extend(_adam_states(value))
    return found


def test_infer_stack_keeps_shape_metadata_and_writes_float32(trained_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = trained_run
    stack = noisy_stack(n=3, size=70, seed=5)
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, stack, imagej=True, resolution=(1 / 0.25, 1 / 0.25), metadata={"axes": "TYX", "unit": "nm"})
    output = tmp_path / "out.tif"
    result = run_selfden("infer", run, source, "-o", output)
    assert result.returncode == 0, result.stdout + result.stderr
    with tifffile.TiffFile(output) as tif:
        denoised = tif.asarray()
        assert tif.imagej_metadata.get("unit") == "nm"
        x_resolution = tif.pages[0].tags["XResolution"].value
    assert denoised.shape == stack.shape and denoised.dtype == np.float32
    assert x_resolution[0] / x_resolution[1] == pytest.approx(4.0)
    assert np.isfinite(denoised).all()


def test_infer_never_imports_torch(trained_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, data = trained_run
    output = tmp_path / "out.tif"
    code = (
        "import sys\n"
        "from selfden.cli import app\n"
        f"try:\n    app(['infer', {str(run / 'model')!r}, {str(data)!r}, '-o', {str(output)!r}])\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not loaded, loaded[:5]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert output.is_file()


def test_export_writes_a_package_folder(trained_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = trained_run
    result = run_selfden("export", run, "-o", tmp_path / "pkg")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "pkg" / "rdf.yaml").is_file()


def _bad_inputs(root: Path) -> dict[str, Path]:
    """One file per kind of bad input a user may hand to selfden."""
    files = {}
    files["missing"] = root / "does_not_exist.tif"
    (root / "notes.tif").write_text("these are my notes, not an image")
    files["not an image"] = root / "notes.tif"
    good = root / "good.tif"
    tifffile.imwrite(good, noisy_stack(n=4, size=64), photometric="minisblack")
    truncated = root / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["truncated"] = truncated
    files["empty stack"] = root / "empty.npy"
    np.save(files["empty stack"], np.zeros((0, 64, 64), np.float32))
    nan = np.random.default_rng(0).random((2, 64, 64)).astype(np.float32)
    nan[1, 5, 5] = np.nan
    files["nan"] = root / "nan.tif"
    tifffile.imwrite(files["nan"], nan, photometric="minisblack")
    inf = nan.copy()
    inf[1, 5, 5] = np.inf
    files["inf"] = root / "inf.tif"
    tifffile.imwrite(files["inf"], inf, photometric="minisblack")
    return files


@pytest.mark.parametrize("kind", ["missing", "not an image", "truncated", "empty stack", "nan", "inf"])
def test_bad_input_to_infer_is_one_line_error_and_no_output(
    kind: str, trained_run: tuple[Path, Path], tmp_path: Path
) -> None:
    bad = _bad_inputs(tmp_path)[kind]
    output = tmp_path / "out.tif"
    result = run_selfden("infer", trained_run[0], bad, "-o", output)
    _assert_clean_failure(result, mention=bad.name)
    assert not output.exists()
    assert not any(p.name.startswith(".out.tif") for p in tmp_path.iterdir()), list(tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["missing", "not an image", "truncated", "empty stack", "nan"])
def test_bad_input_to_train_is_one_line_error_and_no_run(kind: str, tmp_path: Path) -> None:
    bad = _bad_inputs(tmp_path)[kind]
    run = tmp_path / "run"
    result = run_selfden("train", "cae", bad, "-o", run, "--steps", "2", "--patch-size", "64", *TINY_CAE)
    _assert_clean_failure(result, mention=bad.name)
    assert not (run / "model").exists()


def test_image_smaller_than_the_patch_is_refused(tmp_path: Path) -> None:
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, noisy_stack(n=12, size=40), photometric="minisblack")
    result = run_selfden("train", "cae", small, "-o", tmp_path / "run", "--steps", "2", "--patch-size", "64")
    _assert_clean_failure(result, mention="small.tif")
    assert "patch" in result.stderr


def test_unknown_method_is_one_line_error(tmp_path: Path) -> None:
    image = tmp_path / "x.tif"
    tifffile.imwrite(image, noisy_stack(n=2), photometric="minisblack")
    result = run_selfden("train", "magic", image, "-o", tmp_path / "run", "--steps", "1")
    _assert_clean_failure(result, mention="magic")
    assert not (tmp_path / "run").exists()


def test_broken_model_folder_is_one_line_error(trained_run: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(trained_run[0] / "model", model)
    for onnx_file in model.glob("*.onnx"):
        onnx_file.unlink()
    output = tmp_path / "out.tif"
    result = run_selfden("infer", model, trained_run[1], "-o", output)
    _assert_clean_failure(result, mention="model")
    assert not output.exists()


def test_infer_refuses_to_overwrite_its_input(trained_run: tuple[Path, Path], tmp_path: Path) -> None:
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, noisy_stack(n=2), photometric="minisblack")
    original = source.read_bytes()
    result = run_selfden("infer", trained_run[0], source, "-o", source)
    _assert_clean_failure(result, mention="in.tif")
    assert source.read_bytes() == original


def test_train_refuses_an_existing_run_folder(trained_run: tuple[Path, Path]) -> None:
    run, data = trained_run
    result = run_selfden("train", "cae", data, "-o", run, "--steps", "1")
    _assert_clean_failure(result, mention=run.name)
    assert (run / "model" / "rdf.yaml").is_file()


def test_infer_tta_averages_the_eight_orientations_cae_trained_with(
    trained_run: tuple[Path, Path], tmp_path: Path
) -> None:
    import yaml

    from selfden.inference.loading import load_predictor
    from selfden.geometry.orientations import DIHEDRAL, transform, untransform

    run, data = trained_run
    rdf = yaml.safe_load((run / "model" / "rdf.yaml").read_text())
    assert rdf["config"]["selfden"]["orientations"] == list(DIHEDRAL)  # cae trains on flipped, turned crops
    output = tmp_path / "tta.tif"
    result = run_selfden("infer", run, data, "-o", output, "--tta")
    assert result.returncode == 0, result.stdout + result.stderr
    frame = tifffile.imread(data)[0].astype(np.float32)
    plain = load_predictor(run / "model")
    by_hand = np.mean([untransform(plain.predict(transform(frame, name)).image, name) for name in DIHEDRAL], axis=0)
    assert np.allclose(tifffile.imread(output)[0], by_hand, atol=1e-3 * float(np.abs(by_hand).max()))


def test_tta_on_a_model_trained_without_flips_is_one_line_error(
    trained_run: tuple[Path, Path], tmp_path: Path
) -> None:
    from test_predictor import write_model

    output = tmp_path / "out.tif"
    result = run_selfden("infer", write_model(tmp_path / "plain"), trained_run[1], "-o", output, "--tta")
    _assert_clean_failure(result, mention="--tta")
    assert not output.exists()


def test_no_augment_trains_on_crops_as_recorded_and_the_package_says_so(
    trained_run: tuple[Path, Path], tmp_path: Path
) -> None:
    import yaml

    run = tmp_path / "run"
    result = run_selfden("train", "cae", trained_run[1], "-o", run, "--steps", "1", "--patch-size", "64",
                         "--batch-size", "2", "--no-augment", *TINY_CAE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["augment"] is False
    assert yaml.safe_load((run / "model" / "rdf.yaml").read_text())["config"]["selfden"]["orientations"] == ["identity"]
    assert "--tta" not in result.stdout


def test_dnnet_trains_in_bf16_on_a_native_bf16_cpu_says_so_and_no_cpu_bf16_keeps_float32(
    trained_run: tuple[Path, Path], tmp_path: Path
) -> None:
    import yaml

    from selfden.training.device import cpu_has_native_bf16

    common = ["--steps", "1", "--patch-size", "64", "--batch-size", "2", "--device", "cpu", "--set", "filters=8"]
    default = run_selfden("train", "dnnet", trained_run[1], "-o", tmp_path / "default", *common)
    assert default.returncode == 0, default.stdout + default.stderr
    assert ("bf16 autocast" in default.stdout + default.stderr) == cpu_has_native_bf16(), default.stderr
    assert yaml.safe_load((tmp_path / "default" / "config.yaml").read_text())["trainer"]["bf16_on_cpu"] is None

    refused = run_selfden("train", "dnnet", trained_run[1], "-o", tmp_path / "fp32", *common, "--no-cpu-bf16")
    assert refused.returncode == 0, refused.stdout + refused.stderr
    assert "bf16 autocast" not in refused.stdout + refused.stderr
    assert yaml.safe_load((tmp_path / "fp32" / "config.yaml").read_text())["trainer"]["bf16_on_cpu"] is False


def test_augment_for_a_method_bound_to_the_scan_direction_is_one_line_error(
    trained_run: tuple[Path, Path], tmp_path: Path
) -> None:
    result = run_selfden("train", "noise2atom", trained_run[1], "-o", tmp_path / "run", "--steps", "1", "--augment")
    _assert_clean_failure(result, mention="--augment")
    assert not (tmp_path / "run").exists()


def _assert_clean_failure(result: subprocess.CompletedProcess[str], mention: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr  # one line, and the last word
    assert mention in errors[0], errors[0]
