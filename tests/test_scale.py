"""Inference at scale: resumable streaming outputs, BigTIFF and Zarr, folders of frames, Dask.

Models are the hand-made ONNX graphs of test_predictor (no torch): a 3x3 mean convolution.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

pytest.importorskip("onnxruntime")
from test_predictor import mean3_reflect, noisy, write_model  # noqa: E402

from selfden.io import metadata as io_metadata  # noqa: E402
from selfden.errors import InputError  # noqa: E402
from selfden.io.reading import open_image  # noqa: E402
from selfden.inference.predictors import Prediction, Predictor  # noqa: E402
from selfden.inference.running import Progress, denoise_files  # noqa: E402
from selfden.io.progress import PROGRESS_FILE  # noqa: E402
from selfden.io.resumable_writer import InferenceInterrupted, partial_dir  # noqa: E402

N_FRAMES = 8


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("models") / "mean3")


@pytest.fixture()
def stack_file(tmp_path: Path) -> Path:
    """An ImageJ time series with a pixel size, a frame interval and a unit."""
    path = tmp_path / "movie.tif"
    metadata = {"axes": "TYX", "finterval": 0.5, "unit": "um"}
    tifffile.imwrite(path, noisy((N_FRAMES, 24, 20)), imagej=True, resolution=(4.0, 4.0), metadata=metadata)
    return path


def interrupt_after(frames: int) -> Any:
    """An on_progress callback that presses Ctrl-C once ``frames`` frames are done."""

    def on_progress(event: Progress) -> None:
        if event.frame >= frames:
            raise KeyboardInterrupt

    return on_progress


def count_frames(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the frames the predictor computes from now on."""
    calls: list[int] = []
    original_many = Predictor.predict_frames

    def counting_many(self: Predictor, frames: list[np.ndarray]) -> list[Prediction]:
        calls.extend([1] * len(frames))  # small frames computed together (tile_plan)
        return original_many(self, frames)

    monkeypatch.setattr(Predictor, "predict_frames", counting_many)
    return calls


def read_output(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix == ".zarr":
        import zarr

        return np.asarray(zarr.open_group(str(path), mode="r")["0"][:])
    return tifffile.imread(path)


# --- resume --------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tif", ".npy", ".zarr"])
def test_resumed_run_equals_an_uninterrupted_run_without_recomputing_frames(
    tmp_path: Path, model: Path, stack_file: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if suffix == ".zarr":
        pytest.importorskip("zarr")
    whole, resumed = tmp_path / f"whole{suffix}", tmp_path / f"resumed{suffix}"
    denoise_files(model, [stack_file], whole, device="cpu")

    with pytest.raises(InferenceInterrupted, match="3 of 8 frames .* --resume"):
        denoise_files(model, [stack_file], resumed, device="cpu", on_progress=interrupt_after(3))
    assert not resumed.exists(), "an interrupted run must not leave a half-written output"
    saved = json.loads((partial_dir(resumed) / PROGRESS_FILE).read_text())
    assert saved["frames_done"] == 3, saved

    calls = count_frames(monkeypatch)
    events: list[Progress] = []
    denoise_files(model, [stack_file], resumed, device="cpu", resume=True, on_progress=events.append)
    assert len(calls) == N_FRAMES - 3, f"recomputed finished frames: {len(calls)} calls"
    assert (events[0].frame, events[0].resumed_from, events[-1].frame) == (3, 3, N_FRAMES)
    assert not partial_dir(resumed).exists()
    if suffix == ".zarr":
        np.testing.assert_array_equal(read_output(resumed), read_output(whole))
    else:
        assert resumed.read_bytes() == whole.read_bytes(), "resumed file differs from the uninterrupted one"


def test_a_partial_run_is_never_silently_redone_or_overwritten(tmp_path: Path, model: Path, stack_file: Path) -> None:
    target = tmp_path / "out.tif"
    with pytest.raises(InferenceInterrupted):
        denoise_files(model, [stack_file], target, device="cpu", on_progress=interrupt_after(2))
    with pytest.raises(InputError, match="--resume") as error:
        denoise_files(model, [stack_file], target, device="cpu")
    assert "\n" not in str(error.value) and partial_dir(target).is_dir()


@pytest.mark.parametrize("change", ["input", "tile size", "model"])
def test_resuming_with_other_settings_is_a_one_line_error(
    tmp_path: Path, model: Path, stack_file: Path, change: str
) -> None:
    target = tmp_path / "out.tif"
    with pytest.raises(InferenceInterrupted):
        denoise_files(model, [stack_file], target, device="cpu", tile_size=16, on_progress=interrupt_after(2))
    options: dict[str, Any] = {"device": "cpu", "tile_size": 16, "resume": True}
    if change == "input":
        tifffile.imwrite(stack_file, noisy((N_FRAMES, 24, 20), seed=1)[:, :, :18], imagej=True)
        expected = "input file changed"
    elif change == "tile size":
        options["tile_size"] = 32
        expected = "option tile_size was 16, now 32"
    else:
        model = write_model(tmp_path / "other", halo=2)
        expected = "model is not the same"
    with pytest.raises(InputError, match=expected) as error:
        denoise_files(model, [stack_file], target, **options)
    message = str(error.value)
    assert "\n" not in message and "cannot resume" in message and str(target) in message, message
    assert partial_dir(target).is_dir(), "a refused resume must keep the partial result"


def test_a_bad_frame_removes_the_partial_result(tmp_path: Path, model: Path) -> None:
    data = noisy((4, 20, 20))
    data[2, 3, 3] = np.nan
    source = tmp_path / "nan.tif"
    tifffile.imwrite(source, data, photometric="minisblack")
    with pytest.raises(InputError, match="NaN"):
        denoise_files(model, [source], tmp_path / "out.tif", device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.tif"], "resuming would fail again: nothing kept"


def test_resume_skips_files_already_finished(tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in (2, 10, 1):  # natural order: 1, 2, 10
        tifffile.imwrite(folder / f"frame_{index}.tif", noisy((20, 20), seed=index))

    def stop_in_the_second_file(event: Progress) -> None:
        if event.file_index == 1:
            raise KeyboardInterrupt

    with pytest.raises(InferenceInterrupted):
        denoise_files(model, [folder], tmp_path / "out", device="cpu", on_progress=stop_in_the_second_file)
    calls = count_frames(monkeypatch)
    written = denoise_files(model, [folder], tmp_path / "out", device="cpu", resume=True)
    assert [p.name for p in written] == [f"frame_{i}_denoised.tif" for i in (2, 10)], "finished file left out"
    assert len(calls) == 2
    np.testing.assert_allclose(tifffile.imread(written[1]), mean3_reflect(noisy((20, 20), seed=10)), atol=1e-3)


# --- output formats ------------------------------------------------------------------------------


def test_large_output_is_bigtiff_with_shape_and_calibration(
    tmp_path: Path, model: Path, stack_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(io_metadata, "BIGTIFF_THRESHOLD", 1000)
    target = tmp_path / "big.tif"
    denoise_files(model, [stack_file], target, device="cpu")
    with tifffile.TiffFile(target) as tif:
        assert tif.is_bigtiff and tif.is_ome, "past the threshold the output must be an OME BigTIFF"
        assert (tif.series[0].shape, tif.series[0].axes) == ((N_FRAMES, 24, 20), "TYX")
        assert 'PhysicalSizeX="0.25"' in tif.ome_metadata and 'TimeIncrement="0.5"' in tif.ome_metadata
        result = tif.series[0].asarray()
    np.testing.assert_allclose(result[5], mean3_reflect(tifffile.imread(stack_file)[5]), atol=1e-3)


def test_zarr_output_is_ome_zarr_with_shape_and_scale(tmp_path: Path, model: Path, stack_file: Path) -> None:
    zarr = pytest.importorskip("zarr")
    target = tmp_path / "movie.ome.zarr"
    denoise_files(model, [stack_file], target, device="cpu")
    group = zarr.open_group(str(target), mode="r")
    (image,) = group.attrs["multiscales"]
    assert [a["name"] for a in image["axes"]] == ["t", "y", "x"]
    assert image["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.5, 0.25, 0.25]
    assert image["axes"][2]["unit"] == "micrometer"
    assert group["0"].shape == (N_FRAMES, 24, 20) and group["0"].dtype == np.float32
    np.testing.assert_allclose(group["0"][3], mean3_reflect(tifffile.imread(stack_file)[3]), atol=1e-3)
    with pytest.raises(InputError, match="already exists"):
        denoise_files(model, [stack_file], target, device="cpu")


def test_zarr_inputs_plain_and_ome_are_read_frame_by_frame(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    from selfden.io.zarr_store import create_ngff

    data = noisy((2, 3, 16, 12)).astype(np.uint16)
    plain = zarr.open_array(str(tmp_path / "plain.zarr"), mode="w", shape=data.shape, chunks=(1, 1, 16, 12), dtype=data.dtype)
    plain[:] = data
    meta = io_metadata.ImageMetadata(imagej={"unit": "um", "spacing": 2.0}, resolution=(10.0, 10.0))
    ome = create_ngff(tmp_path / "ome.zarr", data.shape, "TZYX", np.dtype(np.uint16), meta)
    ome[:] = data
    for name in ("plain.zarr", "ome.zarr"):
        stack = open_image(tmp_path / name)
        assert (stack.shape, stack.axes, stack.dtype, len(stack)) == (data.shape, "TZYX", np.uint16, 6), name
        np.testing.assert_array_equal(stack.frame(4), data[1, 1])
    calibration = open_image(tmp_path / "ome.zarr").metadata
    assert calibration.resolution == (10.0, 10.0) and calibration.imagej["spacing"] == 2.0


# --- Dask ----------------------------------------------------------------------------------------


def test_dask_output_equals_the_single_process_output(tmp_path: Path, model: Path, stack_file: Path) -> None:
    """Two in-process (threaded) workers: process workers give the same bytes but start slowly."""
    pytest.importorskip("distributed")
    from selfden.inference.dask_cluster import _PREDICTORS, dask_frames

    single = denoise_files(model, [stack_file], tmp_path / "single.tif", device="cpu")[0]
    with dask_frames("local", "cpu", n_workers=2, processes=False) as mapper:
        with pytest.raises(InferenceInterrupted):
            denoise_files(model, [stack_file], tmp_path / "dask.tif", device="cpu", mapper=mapper,
                          on_progress=interrupt_after(5))
        loaded = len(_PREDICTORS)
        (distributed,) = denoise_files(model, [stack_file], tmp_path / "dask.tif", device="cpu", mapper=mapper,
                                       resume=True)
        assert len(_PREDICTORS) == loaded, "workers must reuse their onnxruntime session"
    assert distributed.read_bytes() == single.read_bytes(), "Dask output differs from the single-process output"


# --- the command line -----------------------------------------------------------------------------


def test_cli_resume_continues_and_refuses_without_the_flag(tmp_path: Path, model: Path, stack_file: Path) -> None:
    target = tmp_path / "out.tif"
    with pytest.raises(InferenceInterrupted):
        denoise_files(model, [stack_file], target, device="cpu", on_progress=interrupt_after(4))
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "selfden.cli", "infer", str(model), str(stack_file), "-o", str(target), "--device", "cpu"]
    refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 1 and "--resume" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    np.testing.assert_allclose(tifffile.imread(target)[7], mean3_reflect(tifffile.imread(stack_file)[7]), atol=1e-3)


def test_dask_runs_on_an_existing_cluster_by_address(tmp_path: Path, model: Path, stack_file: Path) -> None:
    distributed = pytest.importorskip("distributed")
    from selfden.inference.dask_cluster import dask_frames

    single = denoise_files(model, [stack_file], tmp_path / "single.npy", device="cpu")[0]
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        with dask_frames(cluster.scheduler_address, "cpu") as mapper:
            (result,) = denoise_files(model, [stack_file], tmp_path / "dask.npy", device="cpu", mapper=mapper)
    np.testing.assert_array_equal(np.load(result), np.load(single))


@pytest.mark.slow
def test_dask_process_workers_give_the_single_process_bytes(tmp_path: Path, model: Path, stack_file: Path) -> None:
    """Separate worker processes (what --dask starts): about 5 s, mostly starting them."""
    pytest.importorskip("distributed")
    from selfden.inference.dask_cluster import dask_frames

    single = denoise_files(model, [stack_file], tmp_path / "single.tif", device="cpu")[0]
    with dask_frames("local", "cpu", n_workers=2, processes=True) as mapper:
        (result,) = denoise_files(model, [stack_file], tmp_path / "dask.tif", device="cpu", mapper=mapper)
    assert result.read_bytes() == single.read_bytes()
