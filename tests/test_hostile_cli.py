"""The command line under careless input: every mistake is one line on stderr, exit code not 0.

User text (paths, messages) is printed exactly as written, brackets included: rich must never
read it as markup, and help text such as ``selfden[scale]`` prints literally.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

SELFDEN = [sys.executable, "-m", "selfden"]


def selfden(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([*SELFDEN, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr (asserting there is exactly one)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "noisy.tif"
    frames = np.random.default_rng(0).poisson(50, (6, 64, 64)).astype(np.uint16)
    tifffile.imwrite(path, frames, imagej=True, metadata={"axes": "TYX"})
    return path


@pytest.mark.parametrize("name", ["[bold]frames.tif", "frames[/].tif", "a [red]b[/red] c.tif", "x[/]y"])
def test_brackets_in_a_path_are_printed_literally(tmp_path: Path, name: str) -> None:
    missing = tmp_path / name
    result = selfden("noise", missing)
    assert result.returncode == 1
    assert one_error_line(result) == f"error: {missing}: no such file; check the path"


def test_brackets_in_a_message_do_not_break_the_error_line(stack: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model[" / "]"  # the path reads ".../model[/]"
    folder.mkdir(parents=True)
    result = selfden("infer", folder, stack, "-o", tmp_path / "out.tif")
    assert result.returncode == 1
    assert "model[/]" in one_error_line(result)


def test_help_text_prints_extras_literally() -> None:
    result = selfden("infer", "--help")
    assert result.returncode == 0, result.stderr
    assert "selfden[scale]" in " ".join(result.stdout.split())


@pytest.mark.parametrize(
    "args",
    [
        ["train", "cae", "x.tif", "-o", "run", "--batch-size", "abc"],
        ["infer", "model", "x.tif", "-o", "y.tif", "--no-such-option"],
        ["no-such-command"],
    ],
)
def test_usage_mistakes_are_one_line_with_exit_code_2(args: list[str]) -> None:
    result = selfden(*args)
    assert result.returncode == 2
    assert "--help" in one_error_line(result)


def test_plot_with_a_non_png_name_is_refused_before_any_work(stack: Path, tmp_path: Path) -> None:
    result = selfden("noise", stack, "--plot", tmp_path / "acf.jpg")
    assert result.returncode == 1
    assert ".png" in one_error_line(result)
    assert result.stdout == "" and not list(tmp_path.iterdir())


def test_a_file_in_the_way_of_an_output_folder_is_one_line(stack: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "notafolder"
    blocker.write_text("mine")
    result = selfden("noise", stack, "--plot", blocker / "acf.png")
    assert result.returncode == 1
    assert one_error_line(result).startswith(f"error: {blocker}: a file is in the way")
    assert blocker.read_text() == "mine"


def test_os_errors_a_user_causes_become_one_line_and_others_do_not() -> None:
    import errno

    from selfden.errors import os_error_message

    full = OSError(errno.ENOSPC, "No space left on device", "/data/out.tif")
    assert os_error_message(full) == (
        "/data/out.tif: the disk is full; free some space (or choose another folder) and run again "
        "(selfden infer: add --resume to keep the frames already written)"
    )
    assert os_error_message(OSError(errno.EROFS, "Read-only file system", "/ro/x")).startswith("/ro/x: ")
    assert os_error_message(OSError(errno.EIO, "Input/output error")) is None  # not the user's doing
