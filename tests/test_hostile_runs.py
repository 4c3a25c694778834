"""Trainings that are killed, interrupted, given bad options or left corrupted: never a stuck or lying run.

Real `python -m selfden.cli` subprocesses of a tiny cae, real signals, real (truncated) checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import tifffile
import torch
from typer.testing import CliRunner

from selfden.cli import app
from test_cli import SELFDEN, noisy_stack

# A cae of a few hundred parameters (size step 4) on 16² crops: its steps cost little more than
# the trainer's own overhead, and it exports in seconds. One thread: the test machine's cores are shared.
TINY = ["--set", "widths=[4,4,4]", "--set", "residual_blocks=1", "--set", "residual_width=4",
        "--set", "bottleneck=2", "--set", "halo=8"]
TRAIN = ["--patch-size", "16", "--batch-size", "2", "--seed", "1", *TINY]
ENV = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "noisy.tif"
    tifffile.imwrite(path, noisy_stack(), imagej=True, metadata={"axes": "TYX"})
    return path


def run_selfden(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SELFDEN, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300)


def start_training(run: Path, data: Path, *extra: str) -> subprocess.Popen[str]:
    command = [*SELFDEN, "train", "cae", str(data), "-o", str(run), *TRAIN, *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def wait_until(condition: Callable[[], bool], process: subprocess.Popen[str], what: str, timeout: float = 40) -> None:
    """Poll ``condition`` while the training runs; fail (killing it) when it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"never saw {what} (exit {process.returncode}):\n{out}\n{err}")
        time.sleep(0.05)


def train_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [r["step"] for r in map(json.loads, filter(None, lines)) if r["kind"] == "train"]


def checkpoint_step(path: Path) -> int | None:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except (FileNotFoundError, RuntimeError, EOFError):
        return None


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) == 1 and lines[0].startswith("error:"), stderr
    return lines[0]


@pytest.fixture(scope="module")
def killed_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training killed with SIGKILL after its first checkpoint, once it had trained past it."""
    run = tmp_path_factory.mktemp("killed") / "run"
    process = start_training(run, data, "--minutes", "5")
    last = run / "checkpoints" / "last.pt"

    def trained_past_checkpoint() -> bool:
        saved = checkpoint_step(last) if last.is_file() else None
        return saved is not None and max(train_steps(run), default=0) > saved

    wait_until(trained_past_checkpoint, process, "a first checkpoint at the first validation and training past it")
    process.kill()
    process.communicate()
    return run


# --- bad options fail in one line, before anything is written ------------------------------
@pytest.mark.parametrize(
    ("options", "mention"),
    [
        (["--batch-size", "0"], "batch_size"),
        (["--batch-size", "-2"], "batch_size"),
        (["--patch-size", "0"], "patch_size"),
        (["--patch-size", "7"], "patch size 7 must be a multiple of 4"),
        (["--patch-size", "2"], "patch size 2 must be a multiple of 4"),
        (["--patch-size", "4", "--batch-size", "1"], "batch norm"),
        (["--patch-size", "128"], "128"),
        (["--minutes", "0"], "max_minutes"),
        (["--steps", "0"], "max_steps"),
    ],
)
def test_bad_training_option_is_one_line_error_and_creates_no_run_folder(
    options: list[str], mention: str, data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "cae", str(data), "-o", str(run), "--steps", "2", *TRAIN, *options])
    assert result.exit_code == 1 and not isinstance(result.exception, (ValueError, RuntimeError, ArithmeticError)), (
        result.output, result.exception)
    assert mention in one_error_line(result.output), result.output
    assert not run.exists(), sorted(run.rglob("*"))


def test_unreadable_input_leaves_an_existing_empty_run_folder_empty(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff")
    run = tmp_path / "run"
    run.mkdir()
    result = CliRunner().invoke(app, ["train", "cae", str(bad), "-o", str(run), "--steps", "2", *TRAIN])
    assert result.exit_code == 1 and "bad.tif" in one_error_line(result.output), result.output
    assert run.is_dir() and not any(run.iterdir()), sorted(run.rglob("*"))


def test_resume_with_a_bad_budget_is_one_line_error_and_leaves_the_run_as_it_was(
    killed_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(killed_run, run)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    result = CliRunner().invoke(app, ["train", "cae", "-o", str(run), "--resume", "--minutes", "-1"])
    assert result.exit_code == 1 and "max_minutes" in one_error_line(result.output), (result.output, result.exception)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


# --- signals ---------------------------------------------------------------------------------
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_stopped_training_checkpoints_exits_130_and_prints_the_resume_command(
    stop: signal.Signals, data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "my run"  # a space: the printed command must quote it
    process = start_training(run, data, "--minutes", "5")
    wait_until(lambda: bool(train_steps(run)), process, "training steps in metrics.jsonl")
    process.send_signal(stop)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, (process.returncode, out, err)
    assert f"selfden train cae --resume -o '{run}'" in out, out
    saved = checkpoint_step(run / "checkpoints" / "last.pt")
    assert saved is not None and saved >= max(train_steps(run)), (saved, train_steps(run))


def test_run_killed_before_any_checkpoint_starts_over_with_resume(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = start_training(run, data, "--minutes", "5")
    wait_until(lambda: (run / "config.yaml").is_file(), process, "the run's config.yaml")
    process.kill()
    process.communicate()
    assert not (run / "checkpoints" / "last.pt").exists()

    again = CliRunner().invoke(app, ["train", "cae", str(data), "-o", str(run), "--steps", "3", *TRAIN])
    assert again.exit_code == 1 and "add --resume" in one_error_line(again.output), again.output
    resumed = run_selfden("train", "cae", "-o", run, "--resume", "--steps", "3")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "from scratch" in resumed.stderr, resumed.stderr
    assert checkpoint_step(run / "checkpoints" / "last.pt") == 3


def test_first_checkpoint_is_written_at_the_first_validation(killed_run: Path) -> None:
    # the fixture waited for it (before: not until 5 minutes in); it is the first validation's
    validations = [json.loads(line) for line in (killed_run / "metrics.jsonl").read_text().splitlines()]
    first = min(r["step"] for r in validations if r["kind"] == "val" and r["step"] > 0)
    assert checkpoint_step(killed_run / "checkpoints" / "last.pt") == first


# --- config.yaml of the previous version ------------------------------------------------------
def test_config_yaml_stores_the_seed_once_at_the_top_level(killed_run: Path) -> None:
    import yaml

    saved = yaml.safe_load((killed_run / "config.yaml").read_text())
    assert saved["seed"] == 1 and "seed" not in saved["trainer"], saved
    assert list(saved) == ["method", "method_config", "data", "trainer", "seed", "normalisation",
                           "intensity_stats", "selfden_version"], list(saved)


def test_a_run_config_in_the_previous_layout_loads_and_resumes(killed_run: Path, tmp_path: Path) -> None:
    import yaml

    from selfden.runs.config import load_run_config

    run = tmp_path / "run"
    shutil.copytree(killed_run, run)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    # the previous version kept the trainer's unused default seed of 0 beside the run's own
    previous = {**saved, "trainer": {**saved["trainer"], "seed": 0}}
    (run / "config.yaml").write_text(yaml.safe_dump(previous, sort_keys=False))
    assert load_run_config(run).seed == 1
    steps = max(train_steps(run)) + 2
    result = run_selfden("train", "cae", "-o", run, "--resume", "--steps", str(steps))
    assert result.returncode == 0, result.stdout + result.stderr
    assert checkpoint_step(run / "checkpoints" / "last.pt") == steps
    resaved = yaml.safe_load((run / "config.yaml").read_text())
    assert resaved["seed"] == 1 and "seed" not in resaved["trainer"] and resaved["trainer"]["max_steps"] == steps


# --- corrupted checkpoints -------------------------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_resume_with_a_truncated_last_checkpoint_falls_back_to_best(killed_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(killed_run, run)
    best = checkpoint_step(run / "checkpoints" / "best.pt")
    assert best is not None and best > 0
    _truncate(run / "checkpoints" / "last.pt")
    result = run_selfden("train", "cae", "-o", run, "--resume", "--steps", str(best + 2))
    assert result.returncode == 0, result.stdout + result.stderr
    mentions = [line for line in result.stderr.splitlines() if "best.pt" in line]
    assert len(mentions) == 1 and "last.pt" in mentions[0], result.stderr
    assert checkpoint_step(run / "checkpoints" / "last.pt") == best + 2


def test_resume_with_no_readable_checkpoint_says_what_to_delete(killed_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(killed_run, run)
    for name in ("last.pt", "best.pt"):
        _truncate(run / "checkpoints" / name)
    result = run_selfden("train", "cae", "-o", run, "--resume", "--steps", "5")
    line = one_error_line(result.stderr)
    assert result.returncode == 1 and f"delete {run / 'checkpoints'}" in line and "--resume" in line, line


# --- export tells the truth about the weights it packages ------------------------------------
def test_export_of_a_run_without_trained_steps_is_refused(killed_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(killed_run, run)
    (run / "checkpoints" / "best.pt").unlink()
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    torch.save({**checkpoint, "step": 0}, run / "checkpoints" / "last.pt")  # as left by a stop before step 1
    result = run_selfden("export", run, "-o", tmp_path / "pkg")
    line = one_error_line(result.stderr)
    assert result.returncode == 1 and "has no trained steps yet" in line and "--resume" in line, line
    assert not (tmp_path / "pkg").exists()


def test_exported_readme_counts_the_steps_of_the_exported_checkpoint(killed_run: Path, tmp_path: Path) -> None:
    exported = checkpoint_step(killed_run / "checkpoints" / "best.pt")
    logged = max(train_steps(killed_run))
    assert exported is not None and logged > exported, (exported, logged)
    result = run_selfden("export", killed_run, "-o", tmp_path / "pkg")
    assert result.returncode == 0, result.stdout + result.stderr
    readme = (tmp_path / "pkg" / "README.md").read_text()
    assert f"{exported} optimiser steps" in readme, readme


def test_export_passes_over_an_untrained_best_checkpoint_of_older_versions(killed_run: Path, tmp_path: Path) -> None:
    from selfden.runs.weights import load_method_and_checkpoint

    run = tmp_path / "run"
    shutil.copytree(killed_run, run)
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    torch.save({**best, "step": 0}, run / "checkpoints" / "best.pt")  # older versions saved the baseline as best
    _, checkpoint = load_method_and_checkpoint(run)
    assert checkpoint["step"] == checkpoint_step(run / "checkpoints" / "last.pt") > 0
