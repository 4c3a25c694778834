"""Running a model over files: inputs (folders expanded) -> planned outputs -> frames -> resumable writers.

Every input is opened and every output checked before the model loads; frames are computed by
a ``FrameMapper`` (this process, or Dask: ``dask_cluster.py``) and written as they come, so an
interrupted run resumes where it stopped. What decides the output pixels besides the input is
recorded as the run's fingerprint (``run_fingerprint``), which ``--resume`` checks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from selfden.errors import InputError
from selfden.inference.loading import load_predictor, tiled_graph
from selfden.inference.predictors import DEFAULT_TILE_BATCH, Prediction, Predictor
from selfden.io.paths import IMAGE_SUFFIXES, OUTPUT_SUFFIXES, check_output_path, check_output_target
from selfden.io.reading import open_image
from selfden.io.stack import ImageStack
from selfden.io.resumable_writer import (
    InferenceInterrupted,
    ResumableWriter,
    check_output_free,
    file_identity,
    files_digest,
    make_output_folder,
    partial_dir,
    refuse_partial,
)
from selfden.package.runtime import Device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """Where ``denoise_files`` is: ``frame`` of ``n_frames`` done in file ``file_index`` (0-based).

    Sent once when a file starts (``frame`` = frames already done: 0, or more with
    ``resume``), then after every frame. ``provider`` is the onnxruntime provider really
    running the model (for the CLI to report); ``resumed_from`` the frames found on disk.
    """

    path: Path
    file_index: int
    n_files: int
    frame: int
    n_frames: int
    provider: str
    resumed_from: int = 0


class FrameMapper(Protocol):
    """Yields the predictions of frames ``start, start+1, ...`` of ``stack`` in order."""

    def __call__(self, predictor: Predictor, stack: ImageStack, start: int) -> Iterator[Prediction]: ...


def local_frames(predictor: Predictor, stack: ImageStack, start: int) -> Iterator[Prediction]:
    """The single-process FrameMapper: one frame in memory at a time, or the few small frames
    that share a session run (``Predictor.frames_per_run``)."""
    group = 1 if start >= len(stack) else predictor.frames_per_run(stack.frame_shape)
    for first in range(start, len(stack), group):
        indices = range(first, min(first + group, len(stack)))
        yield from predictor.predict_frames([stack.frame(index) for index in indices])
        stack.release_pages()  # mapped input pages would otherwise add up over the stack


def _stem(path: Path) -> str:
    name = path.name[: -len(path.suffix)] if path.suffix else path.name
    return name[:-4] if name.lower().endswith(".ome") else name


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def expand_inputs(inputs: Sequence[Path]) -> list[Path]:
    """Inputs with each folder (other than a .zarr store) replaced by its images, in natural order."""
    expanded: list[Path] = []
    for path in inputs:
        if not path.is_dir() or path.suffix.lower() == ".zarr":
            expanded.append(path)
            continue
        images = [p for p in path.iterdir() if p.suffix.lower() in (*IMAGE_SUFFIXES, ".zarr")
                  and not p.name.startswith(".")]
        if not images:
            raise InputError(f"{path}: the folder holds no images; expected .tif, .png, .npy or .zarr files in it")
        expanded += sorted(images, key=_natural_key)
    return expanded


def plan_outputs(inputs: Sequence[Path], output: Path) -> tuple[list[Path], Path | None]:
    """Output path of each input, and the folder to create (None when writing one file).

    One input and an image suffix (or .zarr): ``output`` is the file. A path without a
    suffix, or an existing folder, is a folder and each result is ``<stem>_denoised.tif``.
    Raises InputError for other suffixes (``-o name.jpg``), collisions and for outputs that
    would overwrite an input.
    """
    if not inputs:
        raise InputError("no input images given")
    is_file = output.suffix.lower() in OUTPUT_SUFFIXES
    if not is_file and output.suffix and not output.is_dir():
        raise InputError(
            f"{output}: unsupported output type {output.suffix!r}; write a file ending in "
            f"{', '.join(OUTPUT_SUFFIXES)}, or give a folder (a path without a suffix, or an existing folder)"
        )
    if is_file and len(inputs) > 1:
        raise InputError(f"{output}: {len(inputs)} inputs need an output folder, not a file name")
    if not is_file and output.exists() and not output.is_dir():
        raise InputError(f"{output}: exists and is not a folder; give a folder for the results")
    targets = [output] if is_file else [output / f"{_stem(p)}_denoised.tif" for p in inputs]
    seen: dict[Path, Path] = {}
    for source, target in zip(inputs, targets):
        if target.resolve() in seen:
            raise InputError(f"{target}: both {seen[target.resolve()]} and {source} would be written here; rename one")
        seen[target.resolve()] = source
        if target.is_dir() and target.suffix.lower() != ".zarr":
            raise InputError(f"{target}: is a folder; cannot write the result of {source} there")
        check_output_path(target, inputs)
    return targets, None if is_file else output


def _output_dtype(stack: ImageStack, target: Path) -> np.dtype:
    """float32 everywhere except PNG, which keeps the input's 8/16-bit type."""
    if target.suffix.lower() != ".png":
        return np.dtype(np.float32)
    if stack.dtype.kind != "u" or stack.dtype.itemsize > 2 or len(stack.shape) != 2:
        raise InputError(f"{target}: PNG holds one 8/16-bit image, input {stack.path} is not; write .tif instead")
    return stack.dtype


def std_path(target: Path) -> Path:
    """Where the per-pixel standard deviation of ``target`` goes: ``<stem>_std.tif`` beside it."""
    return target.with_name(f"{_stem(target)}_std.tif")


def model_files(predictor: Predictor) -> list[Path]:
    """The files whose contents decide the outputs: rdf.yaml and the graphs it runs."""
    # The core graph too: read_spec insists on it even when only sampling graphs run (Dask workers).
    files = list(dict.fromkeys([predictor.spec.rdf_path, predictor.spec.weights, tiled_graph(predictor.spec)]))
    files.extend(f for f in predictor.graph_files if f not in files)
    return files


def run_fingerprint(predictor: Predictor, model_digest: str) -> dict[str, Any]:
    """What, besides the input file, decides the output pixels (recorded for --resume)."""
    options = {"tile_size": "auto" if predictor.auto_tiles else predictor.tile_size, "overlap": predictor.overlap,
               "samples": predictor.n_samples, "std": predictor.with_std, "provider": predictor.provider,
               "orientations": list(predictor.orientations)}
    return {"model": model_digest, "options": options}


@dataclass(frozen=True)
class _Job:
    stack: ImageStack
    target: Path
    dtype: np.dtype
    std_target: Path | None


def _plan_jobs(
    paths: list[Path], output: Path, std: bool, resume: bool, max_pixels: int | None = None, overwrite: bool = False
) -> list[_Job]:
    """Open every input and check every output before anything runs; with ``resume``,
    inputs whose output is complete (present, no partial folder) are left out. Existing
    outputs are refused unless ``overwrite``; outputs another process writes, always."""
    stacks = [open_image(p, max_pixels) for p in paths]
    targets, _ = plan_outputs(paths, output)
    jobs = []
    for stack, target in zip(stacks, targets):
        dtype = _output_dtype(stack, target)
        std_target = std_path(target) if std else None
        outputs = [target] + ([std_target] if std_target else [])
        if resume and all(t.exists() and not partial_dir(t).exists() for t in outputs):
            log.info("%s: already denoised into %s; skipped (--resume)", stack.path, target)
            continue
        for path in outputs:
            if not resume:
                refuse_partial(path)
            if not (resume and partial_dir(path).exists()):
                check_output_target(path, paths, need_folder=False)
            check_output_free(path, overwrite)
        jobs.append(_Job(stack, target, dtype, std_target))
    return jobs


def denoise_files(
    model_path: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    device: Device = "auto",
    tile_size: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    tile_batch: int = DEFAULT_TILE_BATCH,
    samples: int | str | None = None,  # a count, or "auto" (inference/sample_count.py)
    std: bool = False,
    resume: bool = False,
    mapper: FrameMapper | None = None,
    tta: bool = False,
    max_pixels: int | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Denoise ``inputs`` with the model at ``model_path``; returns the files written.

    Every input is opened and every output path checked before the model is loaded or
    anything is written; outputs appear atomically, never replace an input, and replace an
    existing file only with ``overwrite`` (with ``resume``, finished outputs are skipped). Frames
    are written as they are done into a partial folder beside each output (see
    ``selfden.io.resumable_writer``): after an interruption, ``resume=True`` continues where it stopped.
    Folders among ``inputs`` stand for the images in them. For COSDD packages, ``samples``
    averages that many posterior samples and ``std`` also writes the per-pixel standard
    deviation to ``<stem>_std.tif``. ``tta`` averages every frame over the flips and
    rotations the model was trained with (8x the work). Inputs whose frames declare more than
    ``max_pixels`` pixels are refused before decoding (see ``selfden.io.limits``). ``mapper``
    computes the frames (default: in this process; see ``selfden.inference.dask_cluster`` for Dask).
    """
    paths = expand_inputs([Path(p) for p in inputs])
    output = Path(output)
    jobs = _plan_jobs(paths, output, std, resume, max_pixels, overwrite)
    targets, folder = plan_outputs(paths, output)
    with load_predictor(model_path, device, tile_size, tile_batch, samples, std, tta=tta) as predictor:
        make_output_folder(folder or targets[0].parent, targets[0])
        fingerprint = run_fingerprint(predictor, files_digest(model_files(predictor)))
        for index, job in enumerate(jobs):
            def report(done: int, start: int, job: _Job = job, index: int = index) -> None:
                if on_progress is not None:
                    event = Progress(job.stack.path, index, len(jobs), done, len(job.stack), predictor.provider, start)
                    on_progress(event)

            _denoise_job(predictor, job, fingerprint, paths, resume, mapper or local_frames, report, overwrite)
    return [path for job in jobs for path in ([job.target, job.std_target] if job.std_target else [job.target])]


def _denoise_job(
    predictor: Predictor,
    job: _Job,
    fingerprint: dict[str, Any],
    inputs: list[Path],
    resume: bool,
    mapper: FrameMapper,
    report: Callable[[int, int], None],
    overwrite: bool = False,
) -> None:
    """One input into its output(s), resumably; Ctrl-C becomes InferenceInterrupted."""
    stack = job.stack
    run = {**fingerprint, "input": file_identity(stack.path)}
    outputs = [(job.target, job.dtype)] + ([(job.std_target, np.dtype(np.float32))] if job.std_target else [])
    with contextlib.ExitStack() as scope:
        scope.enter_context(stack)
        writers = [
            scope.enter_context(
                ResumableWriter(path, stack.shape, stack.axes, stack.metadata, dtype, run, resume, inputs, overwrite)
            )
            for path, dtype in outputs
        ]
        start = min(w.done for w in writers)
        try:
            report(start, start)
            for index, prediction in enumerate(mapper(predictor, stack, start), start):
                for writer, result in zip(writers, prediction.arrays(), strict=True):
                    if index >= writer.done:  # a resumed std output may be one frame behind
                        writer.write(result)
                report(index + 1, start)
        except KeyboardInterrupt as stop:
            done = min(w.done for w in writers)
            raise InferenceInterrupted(
                f"{done} of {len(stack)} frames of {job.target} are saved in {writers[0].folder}; "
                "run the same command with --resume to continue"
            ) from stop
    log.info("denoised %s -> %s", stack.path, job.target)
