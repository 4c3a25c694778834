"""Outputs are sacred: what `selfden infer` and `selfden export` do to files that already exist,
to outputs another process is writing, to damaged partial results, and on full or read-only disks.

The model is a copy of a shipped package (bioimage_models/dnnet-poisson-gaussian): real
onnxruntime, nothing trained. Exit codes come from real `python -m selfden.cli` processes.
Full and read-only disks are real tmpfs mounts in a private mount namespace (`unshare -m`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import yaml

pytest.importorskip("onnxruntime")

from selfden.errors import SelfdenError  # noqa: E402
from selfden.export.ownership import check_export_target, run_identity  # noqa: E402
from selfden.inference.running import Progress, denoise_files  # noqa: E402
from selfden.io.progress import CHECKSUM_FILE, PROGRESS_FILE  # noqa: E402
from selfden.io.resumable_writer import InferenceInterrupted, partial_dir  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "bioimage_models" / "dnnet-poisson-gaussian"
SELFDEN = [sys.executable, "-m", "selfden.cli"]
ENV = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
FRAMES, SIDE = 6, 64


def selfden(*args: Any, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SELFDEN, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command printed (asserting it failed with exactly one line)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, f"rc={result.returncode}\n{result.stderr}"
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(SHIPPED, tmp_path_factory.mktemp("models") / "dnnet"))


@pytest.fixture()
def stack(tmp_path: Path) -> Path:
    path = tmp_path / "in.tif"
    data = np.random.default_rng(0).poisson(300, (FRAMES, SIDE, SIDE)).astype(np.uint16)
    tifffile.imwrite(path, data, photometric="minisblack")
    return path


@pytest.fixture(scope="module")
def reference(model: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The output of one uninterrupted run on the `stack` data."""
    folder = tmp_path_factory.mktemp("reference")
    data = np.random.default_rng(0).poisson(300, (FRAMES, SIDE, SIDE)).astype(np.uint16)
    tifffile.imwrite(folder / "in.tif", data, photometric="minisblack")
    (written,) = denoise_files(model, [folder / "in.tif"], folder / "out.tif", device="cpu")
    return tifffile.imread(written)


def interrupt_after(frames: int) -> Any:
    def on_progress(event: Progress) -> None:
        if event.frame >= frames:
            raise KeyboardInterrupt

    return on_progress


# --- existing outputs ------------------------------------------------------------------------------


def test_infer_refuses_to_replace_an_existing_output(model: Path, stack: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.tif"
    target.write_bytes(b"precious")
    line = error_line(selfden("infer", model, stack, "-o", target, "--device", "cpu"))
    assert f"{target}: exists; pass --overwrite to replace it or choose another -o" in line, line
    assert target.read_bytes() == b"precious"
    assert not partial_dir(target).exists()


def test_overwrite_replaces_an_existing_output(model: Path, stack: Path, tmp_path: Path, reference: np.ndarray) -> None:
    target = tmp_path / "out.tif"
    target.write_bytes(b"old")
    result = selfden("infer", model, stack, "-o", target, "--device", "cpu", "--overwrite")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(tifffile.imread(target), reference)


def test_an_existing_std_companion_is_refused_before_the_model_is_loaded(model: Path, stack: Path, tmp_path: Path) -> None:
    # This model has no sampler: had the model been loaded first, that would be the error.
    (tmp_path / "out_std.tif").write_bytes(b"precious")
    with pytest.raises(SelfdenError, match="out_std.tif: exists; pass --overwrite"):
        denoise_files(model, [stack], tmp_path / "out.tif", device="cpu", std=True)
    assert (tmp_path / "out_std.tif").read_bytes() == b"precious" and not (tmp_path / "out.tif").exists()


def test_overwrite_never_replaces_an_input(model: Path, stack: Path) -> None:
    before = stack.read_bytes()
    with pytest.raises(SelfdenError, match="refusing to overwrite the input"):
        denoise_files(model, [stack], stack, device="cpu", overwrite=True)
    assert stack.read_bytes() == before


def test_existing_results_in_an_output_folder_are_refused(model: Path, stack: Path, tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "in_denoised.tif").write_bytes(b"precious")
    with pytest.raises(SelfdenError, match="in_denoised.tif: exists"):
        denoise_files(model, [stack], folder, device="cpu")
    assert (folder / "in_denoised.tif").read_bytes() == b"precious"


def test_resume_still_skips_a_finished_output_without_overwrite(model: Path, stack: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.tif"
    denoise_files(model, [stack], target, device="cpu")
    before = target.stat().st_mtime_ns
    assert denoise_files(model, [stack], target, device="cpu", resume=True) == []
    assert target.stat().st_mtime_ns == before


# --- output paths --------------------------------------------------------------------------------


def test_an_unsupported_output_extension_is_an_error_not_a_folder(model: Path, stack: Path, tmp_path: Path) -> None:
    line = error_line(selfden("infer", model, stack, "-o", tmp_path / "name.jpg", "--device", "cpu"))
    assert "name.jpg" in line and "'.jpg'" in line and ".tif, .tiff, .png, .npy, .zarr" in line, line
    assert not (tmp_path / "name.jpg").exists()


def test_a_folder_output_is_a_path_without_suffix_or_an_existing_folder(model: Path, stack: Path, tmp_path: Path) -> None:
    dotted = tmp_path / "run.v2"
    dotted.mkdir()
    written = denoise_files(model, [stack], dotted, device="cpu")
    written += denoise_files(model, [stack], tmp_path / "plain", device="cpu")
    assert written == [dotted / "in_denoised.tif", tmp_path / "plain" / "in_denoised.tif"]


# --- two writers, and a killed one ---------------------------------------------------------------

HOLDER = """
import sys, time
from selfden.inference.running import denoise_files

def on_progress(event):
    if event.frame == 2:
        print("writing", flush=True)
        time.sleep(120)

denoise_files(sys.argv[1], [sys.argv[2]], sys.argv[3], device="cpu", on_progress=on_progress)
"""


def test_a_second_writer_fails_at_once_and_a_killed_writers_lock_does_not_block(
    model: Path, stack: Path, tmp_path: Path, reference: np.ndarray
) -> None:
    target = tmp_path / "out.tif"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(model), str(stack), str(target)],
                              stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "writing"
        for extra in ([], ["--resume"]):
            line = error_line(selfden("infer", model, stack, "-o", target, "--device", "cpu", *extra))
            lock = partial_dir(target) / "lock"
            expected = f"another process is writing {target} (lock held on {lock}); wait for it or choose another -o"
            assert expected in line, line
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (partial_dir(target) / "lock").exists(), "the killed writer's partial folder stays for --resume"
    result = selfden("infer", model, stack, "-o", target, "--device", "cpu", "--resume")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(tifffile.imread(target), reference)


# --- damaged partial results ---------------------------------------------------------------------


def _damage(folder: Path, how: str) -> None:
    progress = folder / PROGRESS_FILE
    if how == "bad json":
        progress.write_text("{not json")
    elif how in ("wrong type", "beyond the data"):
        saved = json.loads(progress.read_text())
        saved["frames_done"] = "three" if how == "wrong type" else FRAMES + 5
        progress.write_text(json.dumps(saved))
    elif how == "changed frame":
        with tifffile.TiffFile(folder / "data.tif") as tif:
            offset = tif.series[0].dataoffset
        with open(folder / "data.tif", "r+b") as handle:
            handle.seek(offset + SIDE * SIDE * 4 + 100)  # inside frame 1
            handle.write(b"\x00\x01\x02\x03")
    elif how == "checksums missing":
        (folder / CHECKSUM_FILE).unlink()


@pytest.mark.parametrize("how", ["bad json", "wrong type", "beyond the data", "changed frame", "checksums missing"])
def test_resume_refuses_a_damaged_partial_result_in_one_line(model: Path, stack: Path, tmp_path: Path, how: str) -> None:
    target = tmp_path / "out.tif"
    with pytest.raises(InferenceInterrupted):
        denoise_files(model, [stack], target, device="cpu", on_progress=interrupt_after(3))
    folder = partial_dir(target)
    _damage(folder, how)
    with pytest.raises(SelfdenError) as error:
        denoise_files(model, [stack], target, device="cpu", resume=True)
    message = str(error.value)
    assert "\n" not in message and f"delete {folder}" in message, message
    assert not target.exists() and folder.is_dir(), "a refused resume writes nothing and keeps the evidence"


def test_a_changed_frame_is_named_by_the_cli(model: Path, stack: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.tif"
    with pytest.raises(InferenceInterrupted):
        denoise_files(model, [stack], target, device="cpu", on_progress=interrupt_after(3))
    _damage(partial_dir(target), "changed frame")
    line = error_line(selfden("infer", model, stack, "-o", target, "--device", "cpu", "--resume"))
    assert "frame 1 " in line and "checksum" in line and str(target) in line, line


# --- full and read-only disks --------------------------------------------------------------------


def _private_mounts_reason() -> str | None:
    if shutil.which("unshare") is None or not Path("/bin/sh").exists():
        return "needs `unshare` (util-linux) and /bin/sh"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"private tmpfs mounts are not permitted here (unshare -m / mount: {probe.stderr.strip()})"
    return None


MOUNTS_MISSING = _private_mounts_reason()
needs_mounts = pytest.mark.skipif(MOUNTS_MISSING is not None, reason=str(MOUNTS_MISSING))


def in_private_tmpfs(mount: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (sh) with a fresh tmpfs at ``mount``, seen by this script only."""
    mount.mkdir(exist_ok=True)
    body = f'set -u\nD="{mount}"\nSELFDEN="{sys.executable} -m selfden.cli"\n{textwrap.dedent(script)}'
    return subprocess.run(["unshare", "-m", "sh", "-c", body], capture_output=True, text=True, env=ENV, timeout=120)


@needs_mounts
def test_a_read_only_output_folder_is_one_line_error(model: Path, stack: Path, tmp_path: Path) -> None:
    script = f"""
    mount -t tmpfs -o size=1m tmpfs "$D" && mkdir "$D/out" && mount -o remount,ro "$D" || exit 99
    $SELFDEN infer "{model}" "{stack}" -o "$D/out/x.tif" --device cpu
    echo "rc=$?" >&2
    $SELFDEN infer "{model}" "{stack}" -o "$D/new folder" --device cpu
    echo "rc=$?" >&2
    """
    result = in_private_tmpfs(tmp_path / "mnt", script)
    blocks = result.stderr.split("rc=")
    assert len(blocks) == 3, result.stderr
    for block, target in zip(blocks[:2], ("out/x.tif", "new folder")):
        lines = [line for line in block.splitlines() if line.strip() and not line[:1].isdigit()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert str(tmp_path / "mnt" / target) in lines[0] and "read-only" in lines[0], lines[0]
    assert result.stderr.count("rc=1") == 2, result.stderr


@needs_mounts
def test_a_full_disk_is_one_line_error_and_resume_works_once_space_is_freed(
    model: Path, stack: Path, tmp_path: Path, reference: np.ndarray
) -> None:
    # 48 kB: the sparse output gets two 16 kB frames (and its records) before the disk is full.
    report = tmp_path / "report"
    report.mkdir()
    script = f"""
    mount -t tmpfs -o size=48k tmpfs "$D" || exit 99
    $SELFDEN infer "{model}" "{stack}" -o "$D/out.tif" --device cpu 2> "{report}/first.err"
    echo $? > "{report}/first.rc"
    ls -A "$D/.out.tif.partial" > "{report}/partial.txt"
    cp "$D/.out.tif.partial/progress.json" "{report}/progress.json"
    mount -o remount,size=4m "$D"
    $SELFDEN infer "{model}" "{stack}" -o "$D/out.tif" --device cpu --resume 2> "{report}/second.err"
    echo $? > "{report}/second.rc"
    ls -A "$D" > "{report}/after.txt"
    cp "$D/out.tif" "{report}/out.tif"
    """
    result = in_private_tmpfs(tmp_path / "mnt", script)
    assert result.returncode == 0, result.stderr
    first = [line for line in (report / "first.err").read_text().splitlines() if line.strip().startswith("error")]
    assert (report / "first.rc").read_text().strip() == "1", (report / "first.err").read_text()
    assert len(first) == 1, (report / "first.err").read_text()
    assert str(tmp_path / "mnt" / "out.tif") in first[0] and "no space left" in first[0] and "--resume" in first[0]
    kept = json.loads((report / "progress.json").read_text())["frames_done"]
    assert 0 < kept < FRAMES, kept
    assert sorted((report / "partial.txt").read_text().split()) == [CHECKSUM_FILE, "data.tif", "lock", PROGRESS_FILE]
    assert (report / "second.rc").read_text().strip() == "0", (report / "second.err").read_text()
    assert (report / "after.txt").read_text().split() == ["out.tif"]
    np.testing.assert_array_equal(tifffile.imread(report / "out.tif"), reference)


# --- export --------------------------------------------------------------------------------------


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    """A run folder holding only its config: enough for export to decide where it may write."""
    folder = tmp_path / "run"
    folder.mkdir()
    config = {"method": "cae", "data": {"inputs": [str(tmp_path / "noisy.tif")]}, "seed": 7,
              "normalisation": {"offset": 10.0, "scale": 2.0}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def _run_id(run: Path) -> str:
    from selfden.runs.config import read_run_config

    return run_identity(read_run_config(run))


def _package_of(folder: Path, run_id: str | None) -> Path:
    package = Path(shutil.copytree(SHIPPED, folder))
    rdf = yaml.safe_load((package / "rdf.yaml").read_text())
    if run_id is not None:
        rdf["config"]["selfden"]["run_id"] = run_id
    (package / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return package


def test_export_refuses_a_folder_that_is_not_a_package(run: Path, tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    line = error_line(selfden("export", run, "-o", target))
    assert str(target) in line and "not a selfden model folder" in line, line
    assert (target / "notes.txt").read_text() == "keep me"


def test_export_refuses_the_package_of_another_run(run: Path, tmp_path: Path) -> None:
    target = _package_of(tmp_path / "model", "0123456789abcdef")
    with pytest.raises(SelfdenError, match=f"another run \\(run id 0123456789abcdef; this run is {_run_id(run)}\\)"):
        check_export_target(target, _run_id(run))
    assert (target / "denoiser.onnx").read_bytes() == (SHIPPED / "denoiser.onnx").read_bytes()


def test_export_refuses_its_own_package_when_the_user_added_files(run: Path, tmp_path: Path) -> None:
    target = _package_of(tmp_path / "model", _run_id(run))
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(SelfdenError, match=r"did not write \(notes.txt\)"):
        check_export_target(target, _run_id(run))
    assert (target / "notes.txt").read_text() == "keep me"


def test_export_may_replace_its_own_package_and_nothing_else(run: Path, tmp_path: Path) -> None:
    run_id = _run_id(run)
    check_export_target(_package_of(tmp_path / "same", run_id), run_id)  # no error: replaceable
    legacy = _package_of(run / "model", None)  # exported before run ids, in the run's own folder
    check_export_target(legacy, run_id, run)
    with pytest.raises(SelfdenError, match="unknown run"):
        check_export_target(_package_of(tmp_path / "stray", None), run_id, run)


def test_export_refuses_to_replace_a_zip_that_is_not_a_package_of_the_same_run(run: Path, tmp_path: Path) -> None:
    target = tmp_path / "upload.zip"
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("thesis.txt", "keep me")
    before = target.read_bytes()
    with pytest.raises(SelfdenError, match="not a selfden package of this run"):
        check_export_target(target, _run_id(run))
    assert target.read_bytes() == before


def test_zipping_replaces_a_zip_of_the_same_run_only(run: Path, tmp_path: Path) -> None:
    from selfden.export.archive import write_package_zip

    run_id = _run_id(run)
    package = _package_of(tmp_path / "model", run_id)
    target = write_package_zip(package, tmp_path / "upload.zip")
    assert write_package_zip(package, target) == target  # the same run's zip: replaced
    other = _package_of(tmp_path / "other", "0123456789abcdef")
    before = target.read_bytes()
    with pytest.raises(SelfdenError, match="another run"):
        write_package_zip(other, target)
    assert target.read_bytes() == before
