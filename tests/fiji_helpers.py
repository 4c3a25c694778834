"""Helpers for the Fiji macro tests: a hand-built model folder and a headless ImageJ runner.

The model is a single 3x3 averaging convolution written with onnx.helper (opset 17, IR 8,
dynamic b/y/x), wrapped in a bioimage.io 0.5 rdf.yaml following the MODEL FOLDER format.
Nothing is trained: it only has to be a real package that `selfden infer` runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

IMAGEJ_JAR = Path("/usr/share/java/ij.jar")
MACRO_DIR = Path(__file__).resolve().parents[1] / "fiji_macros"
OFFSET, SCALE = 100.0, 1000.0  # the model's Normalisation: x_norm = (x - OFFSET) / SCALE
HALO, SIZE_STEP, MIN_SIZE, TILE_SIZE = 4, 8, 16, 32


def imagej_missing_reason() -> str | None:
    """Why the ImageJ tests cannot run here, or None when they can."""
    if not IMAGEJ_JAR.is_file():
        return f"{IMAGEJ_JAR} not found (install the Debian package `imagej`)"
    if shutil.which("java") is None:
        return "no `java` on PATH (install a Java runtime, e.g. openjdk-17-jre-headless)"
    return None


def selfden_executable() -> Path:
    """The `selfden` console script of the Python running the tests."""
    found = shutil.which("selfden")
    return Path(found) if found else Path(sys.executable).parent / "selfden"


@dataclass(frozen=True)
class MacroRun:
    """What a headless ImageJ run printed (stdout and stderr together) and its exit code."""

    output: str
    returncode: int


def path_without_selfden() -> list[str]:
    """The PATH of the tests, less every folder that holds a `selfden`."""
    folders = os.environ.get("PATH", "").split(os.pathsep)
    return [folder for folder in folders if folder and not (Path(folder) / "selfden").exists()]


def imagej_environment(home: Path, path: Sequence[Path]) -> dict[str, str]:
    """Environment for ImageJ: HOME = home, PATH = path + the tests' PATH without selfden, and none
    of the variables that name an environment (so the macro sees only the selfden a test gives it)."""
    hidden = {"VIRTUAL_ENV", "CONDA_PREFIX", "PIPX_BIN_DIR"}
    env = {key: value for key, value in os.environ.items() if key not in hidden}
    env["HOME"] = str(home)
    env["PATH"] = os.pathsep.join([*map(str, path), *path_without_selfden()])
    return env


def run_macro(
    macro: str, argument: str, cwd: Path, home: Path, path: Sequence[Path] = (), timeout: float = 180.0
) -> MacroRun:
    """Run fiji_macros/<macro> in headless ImageJ with getArgument() = argument.

    home is ImageJ's home folder (user.home and HOME): its preferences, hence the remembered selfden,
    live there, so each home is a fresh ImageJ. path: folders put before the PATH, which otherwise
    holds no selfden.
    """
    home.mkdir(parents=True, exist_ok=True)
    java = shutil.which("java") or "java"
    command = [java, "-Djava.awt.headless=true", f"-Duser.home={home}", "-jar", str(IMAGEJ_JAR),
               "-batch", str(MACRO_DIR / macro), argument]
    env = imagej_environment(home, path)
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return MacroRun(done.stdout + done.stderr, done.returncode)


def remembered_selfden(home: Path) -> str | None:
    """The selfden the macros remembered in ImageJ's preferences folder under home, if any."""
    file = home / ".imagej" / "selfden_executable.txt"
    return file.read_text().strip() if file.is_file() else None


FAKE_SELFDEN = """\
import sys
from pathlib import Path

import numpy as np
import tifffile

# Stand-in for `selfden infer MODEL IMAGE -o OUT ...`: answers --version like selfden (the macros
# check it), records its arguments, writes the image as float32 to OUT and, with --std, a map of
# ones to OUT_std.tif.
args = sys.argv[1:]
if args == ["--version"]:
    print("selfden 0.0+fake")
    sys.exit(0)
Path(sys.argv[0] + ".args").write_text("\\n".join(args))
image, out = args[2], Path(args[4])
data = tifffile.imread(image).astype(np.float32)
tifffile.imwrite(out, data, imagej=True)
if "--std" in args:
    tifffile.imwrite(out.with_name(out.stem + "_std.tif"), np.ones_like(data), imagej=True)
print(f"wrote {out}")
"""


def fake_selfden(folder: Path) -> Path:
    """An executable standing in for selfden (see FAKE_SELFDEN); its arguments land in PATH.args."""
    script = folder / "fake selfden"
    script.write_text(f"#!{sys.executable}\n{FAKE_SELFDEN}")
    script.chmod(0o755)
    return script


def averaging_onnx(path: Path) -> None:
    """Write a (b, 1, y, x) -> (b, 1, y, x) 3x3 mean filter as ONNX (opset 17, IR 8)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    kernel = numpy_helper.from_array(np.full((1, 1, 3, 3), 1.0 / 9.0, np.float32), name="kernel")
    conv = helper.make_node("Conv", ["input", "kernel"], ["output"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [conv],
        "mean3x3",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 1, "y", "x"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["b", 1, "y", "x"])],
        initializer=[kernel],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="selfden-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _axes(kind: str) -> list[dict]:
    batch = {"type": "batch", "id": "b"}
    channel = {"type": "channel", "id": "c", "channel_names": ["c0"]}
    if kind == "input":
        space = [{"type": "space", "id": a, "size": {"min": MIN_SIZE, "step": SIZE_STEP}} for a in "yx"]
    else:
        space = [{"type": "space", "id": a, "size": {"tensor_id": "input", "axis_id": a}, "halo": HALO} for a in "yx"]
    return [batch, channel, *space]


def _rdf() -> dict:
    return {
        "type": "model",
        "format_version": "0.5.4",
        "name": "mean3x3 test model",
        "description": "A 3x3 mean filter with scale_linear pre/post-processing, built by hand for tests.",
        "authors": [{"name": "selfden tests"}],
        "cite": [{"text": "selfden", "url": "https://github.com/selfden/selfden"}],
        "license": "MIT",
        "documentation": "README.md",
        "covers": [],
        "tags": ["denoising", "test"],
        "inputs": [{
            "id": "input",
            "axes": _axes("input"),
            "data": {"type": "float32"},
            "test_tensor": {"source": "test_input.npy"},
            "preprocessing": [{"id": "scale_linear", "kwargs": {"gain": 1 / SCALE, "offset": -OFFSET / SCALE}}],
        }],
        "outputs": [{
            "id": "output",
            "axes": _axes("output"),
            "data": {"type": "float32"},
            "test_tensor": {"source": "test_output.npy"},
            "postprocessing": [{"id": "scale_linear", "kwargs": {"gain": SCALE, "offset": OFFSET}}],
        }],
        "weights": {"onnx": {"source": "denoiser.onnx", "opset_version": 17}},
        "config": {"selfden": {
            "method": "cae", "halo": HALO, "size_step": SIZE_STEP, "min_size": MIN_SIZE, "tile_size": TILE_SIZE,
            "normalisation": {"offset": OFFSET, "scale": SCALE}, "graphs": {"denoiser": "denoiser.onnx"},
            "selfden_version": "tests",
        }},
    }


def _mean3x3(image: np.ndarray) -> np.ndarray:
    """Zero-padded 3x3 mean over the last two axes (what the ONNX graph computes)."""
    padded = np.pad(image, [(0, 0)] * (image.ndim - 2) + [(1, 1), (1, 1)])
    h, w = image.shape[-2:]
    return sum(padded[..., dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9.0


def build_mean_model(folder: Path) -> Path:
    """Write the model folder (rdf.yaml, denoiser.onnx, test tensors, README.md); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    averaging_onnx(folder / "denoiser.onnx")
    raw = np.random.default_rng(0).uniform(0, 4000, (1, 1, MIN_SIZE, MIN_SIZE)).astype(np.float32)
    np.save(folder / "test_input.npy", raw)
    expected = _mean3x3((raw - OFFSET) / SCALE) * SCALE + OFFSET
    np.save(folder / "test_output.npy", expected.astype(np.float32))
    readme = "# mean3x3 test model\n\nA 3x3 mean filter for tests.\n\n## Validation\n\nNone.\n"
    (folder / "README.md").write_text(readme)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(_rdf(), sort_keys=False))
    return folder
