"""The Fiji macros in fiji_macros/, run by headless ImageJ (Debian's `imagej`: the macro language
Fiji runs) against the real `selfden` executable and a hand-built ONNX model folder.

Each ImageJ launch starts a JVM, so each scenario runs once (module fixtures) and several tests
read its result. Every path handed to the macros holds spaces and a single quote.

No test tells the macros where the real selfden is: they find it on the PATH given to ImageJ (the
venv's bin folder) or remember it from an earlier run. Every ImageJ run has its own home folder
(ImageJ's preferences, hence the remembered selfden, live there), and apart from the folders a
test adds, its PATH holds no selfden and no VIRTUAL_ENV/CONDA_PREFIX points at one.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from fiji_helpers import (
    MACRO_DIR,
    build_mean_model,
    fake_selfden,
    imagej_missing_reason,
    path_without_selfden,
    remembered_selfden,
    run_macro,
    selfden_executable,
)
from PIL import Image

IMAGEJ_MISSING = imagej_missing_reason()
SHAPE = (3, 40, 50)  # frames, y, x
VENV_BIN = selfden_executable().parent  # put on ImageJ's PATH where a test wants selfden found there


def imagej(test: Any) -> Any:
    """Mark a test as needing headless ImageJ; skipped, saying what is missing, without it."""
    skip = pytest.mark.skipif(IMAGEJ_MISSING is not None, reason=str(IMAGEJ_MISSING))
    return pytest.mark.imagej(skip(test))


def _stack(seed: int, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, shape, dtype=np.uint16)


def _write_imagej_stack(path: Path, data: np.ndarray) -> None:
    metadata = {"axes": "TYX", "finterval": 2.5, "unit": "um"}
    tifffile.imwrite(path, data, imagej=True, metadata=metadata, resolution=(2.0, 2.0))


def _selfden_infer(model: Path, image: Path, output: Path) -> subprocess.CompletedProcess[str]:
    command = [str(selfden_executable()), "infer", str(model), str(image), "-o", str(output), "--device", "cpu"]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def _error_line(text: str) -> str:
    """selfden's one-line message: the text after "error:" on stderr."""
    lines = [line.split("error:", 1)[1].strip() for line in text.splitlines() if "error:" in line]
    assert lines, f"no 'error:' line in:\n{text}"
    return lines[0]


def _contents(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fiji") / "a folder with spaces and 'quotes'"
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def model(workspace: Path) -> Path:
    return build_mean_model(workspace / "it's a model")


# ------------------------------------------------------------------------------ selfden_denoise.ijm
@pytest.fixture(scope="module")
def single(workspace: Path, model: Path) -> dict[str, Any]:
    """The single-image macro on a uint16 ImageJ stack, and `selfden infer` run on the same file."""
    folder = workspace / "single run"
    temp = folder / "temp"
    temp.mkdir(parents=True)
    image = folder / "noisy cell's stack.tif"
    _write_imagej_stack(image, _stack(1))
    home = folder / "imagej home"
    argument = f"model=[{model}] input=[{image}] output=[{folder / 'macro result.tif'}] device=cpu tmpdir=[{temp}]"
    run = run_macro("selfden_denoise.ijm", argument, cwd=folder, home=home, path=[VENV_BIN])
    direct = _selfden_infer(model, image, folder / "direct.tif")
    return {"run": run, "direct": direct, "folder": folder, "temp": temp, "home": home}


@imagej
def test_denoise_macro_finds_selfden_on_the_path_when_none_is_given(single: dict[str, Any]) -> None:
    run = single["run"]
    assert f"[selfden] using {selfden_executable()} (selfden " in run.output, run.output
    assert "found)" in run.output, run.output
    assert remembered_selfden(single["home"]) == str(selfden_executable()), "the selfden found is remembered"


@imagej
def test_denoise_macro_gives_the_pixels_of_selfden_infer(single: dict[str, Any]) -> None:
    run, direct, folder = single["run"], single["direct"], single["folder"]
    assert direct.returncode == 0, f"selfden infer itself failed:\n{direct.stderr}"
    assert (folder / "macro result.tif").is_file(), run.output
    from_macro = tifffile.imread(folder / "macro result.tif").astype(np.float32)
    expected = tifffile.imread(folder / "direct.tif").astype(np.float32)
    assert from_macro.shape == expected.shape == SHAPE, (from_macro.shape, expected.shape, run.output)
    worst = float(np.abs(from_macro - expected).max())
    assert worst <= 1e-5, f"max |macro - selfden infer| = {worst}\n{run.output}"


@imagej
def test_denoise_macro_handles_spaces_and_quotes_in_model_and_image_paths(single: dict[str, Any]) -> None:
    run = single["run"]
    assert "'" in str(single["folder"]) and " " in str(single["folder"])
    assert "[selfden] done: noisy cell's stack_denoised" in run.output, run.output


@imagej
def test_denoise_macro_keeps_calibration_and_stack_layout(single: dict[str, Any]) -> None:
    with tifffile.TiffFile(single["folder"] / "macro result.tif") as tif:
        meta = tif.imagej_metadata or {}
        x_resolution = tif.pages[0].tags["XResolution"].value
    assert meta.get("frames") == 3 and meta.get("slices", 1) == 1, meta
    assert meta.get("finterval") == pytest.approx(2.5), meta
    assert meta.get("unit") in ("um", "µm", "\\u00B5m", "micron"), meta
    assert x_resolution[0] / x_resolution[1] == pytest.approx(2.0), x_resolution


@imagej
def test_denoise_macro_leaves_no_temporary_files_after_success(single: dict[str, Any]) -> None:
    assert _contents(single["temp"]) == [], single["run"].output


@pytest.fixture(scope="module")
def missing_model(workspace: Path, single: dict[str, Any]) -> dict[str, Any]:
    """The macro pointed at a model that does not exist, arguments one key=value per line, run in the
    ImageJ home of `single` (which remembered selfden) with no selfden on the PATH."""
    folder = workspace / "missing model"
    temp = folder / "temp"
    temp.mkdir(parents=True)
    image = folder / "it's noisy.tif"
    _write_imagej_stack(image, _stack(2))
    absent = folder / "no such 'model'"
    lines = [f"model={absent}", f"input={image}", f"tmpdir={temp}"]
    run = run_macro("selfden_denoise.ijm", "\n".join(lines), cwd=folder, home=single["home"])
    direct = _selfden_infer(absent, image, folder / "direct.tif")
    return {"run": run, "direct": direct, "temp": temp}


@imagej
def test_denoise_macro_uses_the_selfden_remembered_from_an_earlier_run(missing_model: dict[str, Any]) -> None:
    assert not any((Path(folder) / "selfden").exists() for folder in path_without_selfden())
    expected = f"[selfden] using {selfden_executable()} (selfden "
    assert expected in missing_model["run"].output and "remembered from an earlier run)" in missing_model["run"].output, (
        missing_model["run"].output
    )


@imagej
def test_denoise_macro_shows_selfdens_error_for_a_missing_model(missing_model: dict[str, Any]) -> None:
    run, direct = missing_model["run"], missing_model["direct"]
    assert direct.returncode == 1, direct.stderr
    message = _error_line(direct.stderr)
    assert f"selfden infer failed: {message}" in run.output, f"expected {message!r} in:\n{run.output}"
    assert "[selfden] done" not in run.output, run.output


@imagej
def test_denoise_macro_leaves_no_temporary_files_after_failure(missing_model: dict[str, Any]) -> None:
    assert _contents(missing_model["temp"]) == [], missing_model["run"].output


@imagej
def test_denoise_macro_refuses_a_given_selfden_that_does_not_work_instead_of_looking_elsewhere(
    workspace: Path, model: Path
) -> None:
    folder = workspace / "no executable"
    temp = folder / "temp"
    temp.mkdir(parents=True)
    image = folder / "noisy.tif"
    _write_imagej_stack(image, _stack(3))
    argument = f"model=[{model}] input=[{image}] selfden=selfden-not-installed-here tmpdir=[{temp}]"
    run = run_macro("selfden_denoise.ijm", argument, cwd=folder, home=folder / "home", path=[VENV_BIN])
    assert "selfden=selfden-not-installed-here is not a working selfden" in run.output, run.output
    assert "`which selfden`" in run.output and "[selfden] using" not in run.output, run.output
    assert _contents(temp) == [], run.output


@pytest.fixture(scope="module")
def nothing_found(workspace: Path, model: Path) -> dict[str, dict[str, Any]]:
    """Both selfden macros with no selfden given, none remembered, none on the PATH or in the home."""
    folder = workspace / "no selfden anywhere"
    temp, inputs, outputs = folder / "temp", folder / "raw", folder / "denoised"
    temp.mkdir(parents=True)
    inputs.mkdir()
    _write_imagej_stack(inputs / "noisy.tif", _stack(11))
    arguments = {
        "selfden_denoise.ijm": f"model=[{model}] input=[{inputs / 'noisy.tif'}] output=[{folder / 'out.tif'}] tmpdir=[{temp}]",
        "selfden_denoise_folder.ijm": f"input=[{inputs}] output=[{outputs}] model=[{model}]",
    }
    runs = {}
    for macro, argument in arguments.items():
        home = folder / f"home for {macro}"
        runs[macro] = {"run": run_macro(macro, argument, cwd=folder, home=home, timeout=60), "home": home}
    return {"runs": runs, "folder": folder}


@imagej
@pytest.mark.parametrize("macro", ["selfden_denoise.ijm", "selfden_denoise_folder.ijm"])
def test_macro_without_any_selfden_stops_saying_what_it_tried_and_how_to_give_the_path(
    nothing_found: dict[str, Any], macro: str
) -> None:
    run, home = nothing_found["runs"][macro]["run"], nothing_found["runs"][macro]["home"]
    assert "selfden was not found. Tried, in order:" in run.output, run.output
    assert "selfden in every folder on the PATH" in run.output and "$VIRTUAL_ENV" in run.output, run.output
    tried = [f"{home}/.local/bin/selfden", *(f"{folder}/selfden" for folder in path_without_selfden())]
    assert all(f"\n  {path}\n" in run.output for path in tried), f"every path tried is logged:\n{run.output}"
    assert "selfden=[/full/path/to/selfden]" in run.output and "`which selfden`" in run.output, run.output
    assert "[selfden] using" not in run.output and "[selfden] done" not in run.output, run.output
    assert remembered_selfden(home) is None, "nothing found, nothing remembered"


@imagej
def test_macros_without_any_selfden_leave_nothing_behind(nothing_found: dict[str, Any]) -> None:
    folder = nothing_found["folder"]
    left = [name for name in _contents(folder) if not name.startswith("home for")]
    assert left == ["raw", "raw/noisy.tif", "temp"], left


@imagej
def test_denoise_macro_passes_sampling_and_tta_options_and_opens_the_std_map(workspace: Path, model: Path) -> None:
    # selfden infer cannot sample yet, so a stand-in executable writes the std map.
    folder = workspace / "std map"
    temp = folder / "temp"
    temp.mkdir(parents=True)
    image = folder / "noisy.tif"
    _write_imagej_stack(image, _stack(8))
    selfden = fake_selfden(folder)
    argument = (
        f"model=[{model}] input=[{image}] output=[{folder / 'result.tif'}] samples=5 std tta "
        f"selfden=[{selfden}] tmpdir=[{temp}]"
    )
    # selfden on the PATH too: the one given wins.
    run = run_macro("selfden_denoise.ijm", argument, cwd=folder, home=folder / "home", path=[VENV_BIN])
    assert f"[selfden] using {selfden} (selfden 0.0+fake, given)" in run.output, run.output
    passed = Path(f"{selfden}.args").read_text().splitlines()
    assert passed[:2] == ["infer", str(model)] and passed[3] == "-o", passed
    # --overwrite: selfden writes into the macro's fresh private folder only.
    assert passed[5:] == ["--device", "auto", "--samples", "5", "--std", "--tta", "--overwrite"], passed
    assert tifffile.imread(folder / "result_std.tif").shape == SHAPE, run.output
    assert "[selfden] saved " + str(folder / "result_std.tif") in run.output, run.output
    assert _contents(temp) == [], run.output


@imagej
def test_denoise_macro_refuses_an_existing_output_unless_told_to_overwrite(workspace: Path, model: Path) -> None:
    folder = workspace / "existing output"
    temp = folder / "temp"
    temp.mkdir(parents=True)
    image = folder / "noisy.tif"
    _write_imagej_stack(image, _stack(9))
    selfden = fake_selfden(folder)
    result = folder / "result.tif"
    result.write_bytes(b"precious")
    argument = f"model=[{model}] input=[{image}] output=[{result}] selfden=[{selfden}] tmpdir=[{temp}]"
    refused = run_macro("selfden_denoise.ijm", argument, cwd=folder, home=folder / "home")
    assert f"{result} exists; pass overwrite=true" in refused.output, refused.output
    assert result.read_bytes() == b"precious" and not Path(f"{selfden}.args").exists(), "refused before any work"
    replaced = run_macro("selfden_denoise.ijm", argument + " overwrite=true", cwd=folder, home=folder / "home")
    assert tifffile.imread(result).shape == SHAPE, replaced.output
    assert _contents(temp) == [], replaced.output


# ------------------------------------------------------------------------------ selfden_denoise_folder.ijm
@pytest.fixture(scope="module")
def batch(workspace: Path, model: Path) -> dict[str, Any]:
    """The folder macro on three images (two TIFF stacks of different sizes, one PNG) and a broken file."""
    inputs, outputs = workspace / "raw images", workspace / "denoised 'batch'"
    inputs.mkdir()
    _write_imagej_stack(inputs / "cell 1.tif", _stack(4))
    tifffile.imwrite(inputs / "cell's 2.tiff", _stack(5, (2, 33, 47)))
    Image.fromarray(_stack(6, (36, 44)).astype(np.uint8)).save(inputs / "plain.png")
    (inputs / "broken.tif").write_bytes(b"II*\x00 this is not a TIFF")
    (inputs / "notes.txt").write_text("not an image")
    argument = f"input=[{inputs}] output=[{outputs}] model=[{model}] device=cpu"
    home = workspace / "batch home"
    run = run_macro("selfden_denoise_folder.ijm", argument, cwd=workspace, home=home, path=[VENV_BIN], timeout=300)
    return {"run": run, "inputs": inputs, "outputs": outputs}


@imagej
def test_folder_macro_denoises_every_image_and_goes_on_after_a_failure(batch: dict[str, Any]) -> None:
    outputs, run = batch["outputs"], batch["run"]
    expected = ["cell 1_denoised.tif", "cell's 2_denoised.tif", "plain_denoised.tif", "selfden_batch_log.txt"]
    assert _contents(outputs) == expected, run.output
    shapes = {name: tifffile.imread(outputs / name).shape for name in expected[:3]}
    assert shapes == {expected[0]: SHAPE, expected[1]: (2, 33, 47), expected[2]: (36, 44)}, shapes


@imagej
def test_folder_macro_logs_file_status_and_time(batch: dict[str, Any]) -> None:
    log = (batch["outputs"] / "selfden_batch_log.txt").read_text()
    rows = [line.split("\t") for line in log.splitlines() if line and not line.startswith("#")]
    assert rows[0] == ["time", "file", "status", "seconds", "message"], log
    status = {row[1]: row[2] for row in rows[1:]}
    assert status == {"broken.tif": "failed", "cell 1.tif": "ok", "cell's 2.tiff": "ok", "plain.png": "ok"}, log
    broken = next(row for row in rows[1:] if row[1] == "broken.tif")
    assert "broken.tif" in broken[4], f"the failure should carry selfden's message naming the file:\n{log}"
    assert all(re.fullmatch(r"\d+\.\d", row[3]) for row in rows[1:]), log


@imagej
def test_folder_macro_redoes_existing_results_only_with_overwrite(workspace: Path, model: Path) -> None:
    inputs, outputs = workspace / "redo raw", workspace / "redo denoised"
    inputs.mkdir()
    outputs.mkdir()
    _write_imagej_stack(inputs / "cell.tif", _stack(10))
    (outputs / "cell_denoised.tif").write_bytes(b"earlier result")
    argument = f"input=[{inputs}] output=[{outputs}] model=[{model}] device=cpu"
    home = workspace / "redo home"
    skipped = run_macro("selfden_denoise_folder.ijm", argument, cwd=workspace, home=home, path=[VENV_BIN])
    assert (outputs / "cell_denoised.tif").read_bytes() == b"earlier result", skipped.output
    redone = run_macro("selfden_denoise_folder.ijm", argument + " overwrite=true", cwd=workspace, home=home)
    log = (outputs / "selfden_batch_log.txt").read_text()
    assert "--overwrite" in log and "\tok\t" in log, f"{log}\n{redone.output}"
    assert tifffile.imread(outputs / "cell_denoised.tif").shape == SHAPE, redone.output


# ------------------------------------------------------------------------------ deepimagej_denoise.ijm
@pytest.fixture(scope="module")
def deepimagej_dry_run(workspace: Path, model: Path) -> dict[str, Any]:
    folder = workspace / "deepimagej run"
    folder.mkdir()
    image = folder / "noisy cell's stack.tif"
    _write_imagej_stack(image, _stack(7))
    # A relative output folder: the macro must hand deepImageJ an absolute path.
    argument = f"model=[{model}] input=[{image}] output=[deepimagej 'out'] dry_run"
    run = run_macro("deepimagej_denoise.ijm", argument, cwd=folder, home=folder / "home")
    return {"run": run, "image": image, "output": folder / "deepimagej 'out'"}


@imagej
def test_deepimagej_dry_run_prints_a_well_formed_command(deepimagej_dry_run: dict[str, Any], model: Path) -> None:
    output = deepimagej_dry_run["run"].output
    found = re.search(r'run\("DeepImageJ Run", "(.*)"\);', output)
    assert found, output
    options = dict(re.findall(r"(\w+)=(\[[^\]]*\]|\S+)", found.group(1)))
    assert list(options) == ["model_path", "input_path", "output_folder", "display_output"], options
    assert options["display_output"] == "null", options
    expected = {
        "model_path": model,
        "input_path": deepimagej_dry_run["image"],
        "output_folder": deepimagej_dry_run["output"],
    }
    assert {key: options[key] for key in expected} == {key: f"[{path}]" for key, path in expected.items()}, options
    assert all(Path(options[key][1:-1]).is_absolute() for key in expected), options
    assert not deepimagej_dry_run["output"].exists(), "a dry run must not create the output folder"


def test_selfden_packages_given_to_deepimagej_pass_its_compatibility_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    from selfden.export.package import export_package
    from selfden.export.validation import validate_package
    from selfden.methods.cae import Cae, CaeConfig
    from selfden.normalisation import Normalisation

    monkeypatch.setenv("BIOIMAGEIO_CACHE_PATH", str(tmp_path / "cache"))
    torch.manual_seed(0)
    config = CaeConfig(widths=(4, 4, 4, 4, 4, 4), residual_blocks=1, residual_width=8, bottleneck=2, halo=32)
    method = Cae(config, Normalisation(100.0, 50.0), torch.device("cpu"))
    frame = np.random.default_rng(0).normal(100, 50, (128, 128)).astype(np.float32)
    package = export_package(method, tmp_path / "model", frame, {"steps": 0})
    report = validate_package(package)
    assert report.passed, report.format()
    deepimagej = ["one input", "axes b,c,y,x", "processing ops", "ONNX opset <= 17", "ONNX IR version <= 8",
                  "ONNX in one file", "sample = test input", "deterministic"]
    assert all(report.check(name).passed for name in deepimagej), report.format()


# ------------------------------------------------------------------------------ the macros' shared code
def _shared_sections(text: str) -> dict[str, str]:
    marker = "// " + "-" * 77 + " shared: "
    parts = text.split(marker)[1:]
    return {part.split("\n", 1)[0]: part.split("\n// " + "-" * 77)[0] for part in parts}


def test_shared_macro_sections_are_identical_in_every_macro() -> None:
    reference = _shared_sections((MACRO_DIR / "selfden_denoise.ijm").read_text())
    assert set(reference) == {"temporary copies", "finding selfden", "running selfden", "cleanup, errors", "argument parsing"}
    for name in ("selfden_denoise_folder.ijm", "deepimagej_denoise.ijm"):
        sections = _shared_sections((MACRO_DIR / name).read_text())
        assert sections, f"{name} has no shared sections"
        differing = [title for title, body in sections.items() if body != reference.get(title)]
        assert not differing, f"{name}: shared sections {differing} differ from selfden_denoise.ijm"


def test_selfden_macros_start_programs_without_a_shell() -> None:
    # The error text comes back through selfden's own Python (see pythonProgram in the macros), so
    # Windows, which has no /bin/sh, shows the same messages as Linux.
    for name in ("selfden_denoise.ijm", "selfden_denoise_folder.ijm"):
        text = (MACRO_DIR / name).read_text()
        started = re.findall(r"exec(?:Array)?\(([^,)]+)", text)
        shells = [first for first in started if re.search(r"/bin/sh|cmd|bash|powershell", first)]
        assert started and not shells, f"{name} starts {shells}"
