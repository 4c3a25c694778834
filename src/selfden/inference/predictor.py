"""Run a bioimage.io package (ONNX weights) on images of any size, frame by frame.

package -> preprocess (whole image) -> tiles -> onnxruntime in batches -> stitch ->
postprocess. Memory is bounded by one frame plus one batch of tiles.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from selfden.errors import InputError, ModelError, SelfdenError
from selfden.io.paths import IMAGE_SUFFIXES, OUTPUT_SUFFIXES, check_output_path, check_output_target
from selfden.io.reading import open_image
from selfden.io.stack import ImageStack
from selfden.package.files import extract_zip
from selfden.package.processing import apply_steps
from selfden.package.rdf import ModelSpec, find_rdf, read_spec
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
from selfden.package.runtime import Device, OnnxRunner, create_runner
from selfden.geometry.orientations import IDENTITY_ONLY, check_names, running_mean, self_ensemble
from selfden.geometry.tile_plan import TilePlan, fixed_plan, plan_tiles, run_pixel_budget
from selfden.geometry.tiles import run_tiled, tile_image

log = logging.getLogger(__name__)

DEFAULT_TILE_SIZE = 256
DEFAULT_TILE_BATCH = 4


def arrange(array: np.ndarray, source: str, target: str) -> np.ndarray:
    """Reorder axes named by letters; letters only in ``target`` become size-1 axes,
    letters only in ``source`` must be size 1 and are dropped."""
    for letter in [a for a in source if a not in target]:
        axis = source.index(letter)
        if array.shape[axis] != 1:
            raise ValueError(f"cannot drop axis {letter} of size {array.shape[axis]} ({source} -> {target})")
        array, source = array.squeeze(axis), source.replace(letter, "")
    for letter in [a for a in target if a not in source]:
        array, source = array[..., None], source + letter
    return array.transpose([source.index(a) for a in target])


def _extract_zip(path: Path) -> tuple[Path, tempfile.TemporaryDirectory[str]]:
    temp = tempfile.TemporaryDirectory(prefix="selfden-model-")
    root = Path(temp.name) / "package"
    try:
        extracted = extract_zip(path, root)  # size/count/ratio limits; never a symlink or a path outside
    except BaseException:
        temp.cleanup()
        raise
    # Skipped, not refused: a skipped entry was never written, and the rdf may only name files
    # inside the package, so nothing the model needs is lost (validate fails such a zip).
    if extracted.skipped:
        log.warning("%s: skipped zip entries: %s", path, ", ".join(extracted.skipped))
    folders = [p for p in root.iterdir() if p.is_dir()]
    rdf = find_rdf(root) or (find_rdf(folders[0]) if len(folders) == 1 else None)
    if rdf is None:
        temp.cleanup()
        raise ModelError(f"{path}: the package holds no rdf.yaml; expected a bioimage.io model .zip")
    return rdf, temp


def locate_rdf(model_path: Path) -> tuple[Path, tempfile.TemporaryDirectory[str] | None]:
    """The rdf.yaml of a model folder, a run folder (``model/``) or a .zip package.

    For a .zip the package is extracted into a temporary folder, returned for cleanup.
    """
    if not model_path.exists():
        raise ModelError(f"{model_path}: no such model folder or package; give a model folder, a run folder or a .zip")
    if model_path.is_file():
        if model_path.suffix.lower() == ".zip":
            return _extract_zip(model_path)
        if model_path.name in ("rdf.yaml", "bioimageio.yaml"):
            return model_path, None
        raise ModelError(f"{model_path}: not a model; expected a model folder (with rdf.yaml) or a .zip package")
    rdf = find_rdf(model_path) or find_rdf(model_path / "model")
    if rdf is None:
        raise ModelError(
            f"{model_path}: no rdf.yaml here or in {model_path / 'model'}; "
            "give a model folder, or export the run first (selfden export)"
        )
    return rdf, None


class Predictor:
    """A loaded model that denoises 2-D frames of any size.

    Subclasses may replace ``run_tiles`` (e.g. to draw several samples per tile) and keep
    the tiling, batching and stitching.
    """

    def __init__(
        self,
        spec: ModelSpec,
        runner: OnnxRunner,
        tile_size: int | None = None,
        tile_batch: int = DEFAULT_TILE_BATCH,
        overlap: int | None = None,
        tta: bool = False,
    ) -> None:
        self.spec = spec
        self.runner = runner
        self.tile_size = int(tile_size if tile_size is not None else _suggested_tile(spec))
        self.auto_tiles = tile_size is None  # plan per image size (tile_plan); --tile-size overrides
        self.max_pixels = run_pixel_budget(spec.config_selfden)
        self._plans: dict[tuple[int, int], TilePlan] = {}
        if self.tile_size < 1 or tile_batch < 1:
            raise SelfdenError(
                f"tile size {tile_size} and tile batch {tile_batch} must be positive (e.g. --tile-size 256)"
            )
        self.tile_batch = tile_batch if spec.batch_size is None else spec.batch_size
        self.overlap = overlap
        self.orientations = model_symmetries(spec) if tta else IDENTITY_ONLY
        if tta and len(self.orientations) < 2:
            raise ModelError(
                f"{spec.rdf_path}: the model was trained without flips or rotations, so --tta has no "
                "orientations to average; leave --tta out (methods that train with them: cae, dnnet)"
            )
        if runner.input_rank != len(spec.input_axes):
            raise ModelError(
                f"{spec.weights}: graph input has {runner.input_rank} dimensions but rdf.yaml "
                f"describes axes '{spec.input_axes}'"
            )
        self._cleanup: Callable[[], Any] | None = None

    @classmethod
    def from_path(
        cls,
        model_path: str | os.PathLike[str],
        device: Device = "auto",
        tile_size: int | None = None,
        tile_batch: int = DEFAULT_TILE_BATCH,
        threads: int | None = None,
        tta: bool = False,
    ) -> Predictor:
        """Load a model folder, run folder or .zip package (ModelError if unusable).

        ``threads``: CPU threads for onnxruntime (default: all cores). ``tta``: average over
        the orientations the model was trained with (see ``selfden.geometry.orientations``).
        """
        rdf, temp = locate_rdf(Path(model_path))
        try:
            spec = read_spec(rdf)
            runner = create_runner(tiled_graph(spec), device, spec.output_id, threads)
            predictor = cls(spec, runner, tile_size, tile_batch, tta=tta)
        except BaseException:
            if temp is not None:
                temp.cleanup()
            raise
        if temp is not None:
            predictor._cleanup = weakref.finalize(predictor, temp.cleanup)
        tiles = "planned per image size" if predictor.auto_tiles else f"of {predictor.tile_size}, batch {predictor.tile_batch}"
        log.info("model %s (%s): tiles %s", spec.name, rdf, tiles)
        return predictor

    @property
    def provider(self) -> str:
        """The onnxruntime execution provider running the graph, e.g. CUDAExecutionProvider."""
        return self.runner.provider

    @property
    def providers(self) -> list[str]:
        return list(self.runner.session.get_providers())

    @property
    def config_selfden(self) -> dict[str, Any]:
        return dict(self.spec.config_selfden)

    def close(self) -> None:
        """Delete a temporary extraction of a .zip package (no-op for folders)."""
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the pipeline ----------------------------------------------------------------
    def run_tiles(self, batch: np.ndarray) -> np.ndarray:
        """Network outputs ``(B, K, Py, Px)`` for preprocessed tiles ``(B, Py, Px)``."""
        spec = self.spec
        if "b" not in spec.input_axes:
            return np.concatenate([self._run_one(tile) for tile in batch])
        count = len(batch)
        if spec.batch_size is not None and count < spec.batch_size:  # fixed batch: fill up, drop later
            batch = np.concatenate([batch, np.repeat(batch[-1:], spec.batch_size - count, axis=0)])
        model_input = arrange(batch[:, None], "bcyx", spec.input_axes)
        return arrange(self.runner.run(model_input), spec.output_axes, "bcyx")[:count]

    def _run_one(self, tile: np.ndarray) -> np.ndarray:
        output = self.runner.run(arrange(tile[None], "cyx", self.spec.input_axes))
        return arrange(output, self.spec.output_axes, "cyx")[None]

    def plan(self, shape: Sequence[int]) -> TilePlan:
        """How frames of ``shape`` are tiled (``tile_plan``; ``--tile-size`` as given), logged once per size."""
        key = (int(shape[-2]), int(shape[-1]))
        if key not in self._plans:
            spec = self.spec
            if self.auto_tiles and self.overlap is None:
                plan = plan_tiles(key, spec.min_size, spec.size_step, spec.halo, self.max_pixels, fixed_batch=spec.batch_size)
            else:
                plan = fixed_plan(key, self.tile_size, spec.min_size, spec.size_step, spec.halo, self.overlap, self.tile_batch)
            log.info("%s", plan.describe())
            self._plans[key] = plan
        return self._plans[key]

    def _run_checked(self, inputs: np.ndarray) -> np.ndarray:
        outputs = self.run_tiles(inputs)
        if outputs.shape[-2:] != inputs.shape[-2:] or outputs.shape[0] != len(inputs):
            raise ModelError(f"{self.spec.weights}: output shape {outputs.shape} does not match the tiles {inputs.shape}")
        return outputs

    def predict_tiled_many(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Preprocessed ``(H, W)`` images of one shape -> stitched outputs ``(K, H, W)``, tiles batched across them."""
        spec, plan = self.spec, self.plan(images[0].shape)
        tiles = tile_image(images[0].shape, plan.tile, spec.min_size, spec.size_step, spec.halo, plan.overlap)
        return run_tiled(images, tiles, plan.batch, self._run_checked)

    def predict_tiled(self, image: np.ndarray) -> np.ndarray:
        """Preprocessed ``(H, W)`` image -> stitched network output ``(K, H, W)``."""
        return self.predict_tiled_many([image])[0]

    @property
    def tta(self) -> bool:
        """Whether outputs average several orientations of each frame."""
        return len(self.orientations) > 1

    def predict_oriented(self, image: np.ndarray) -> np.ndarray:
        """``predict_tiled``, averaged over ``orientations`` with ``combine_orientations``."""
        if not self.tta:
            return self.predict_tiled(image)
        return self_ensemble(image, self.predict_tiled, self.orientations, self.combine_orientations)

    def combine_orientations(self, outputs: Iterable[np.ndarray]) -> np.ndarray:
        """One output from those of several orientations (turned back): their mean."""
        return running_mean(outputs)

    def predict_image(self, frame: np.ndarray) -> np.ndarray:
        """Denoise one 2-D frame (raw intensities in, float32 of the same shape out)."""
        if frame.ndim != 2:
            raise ValueError(f"expected a 2-D frame, got shape {frame.shape}")
        raw = np.asarray(frame, dtype=np.float32)
        normalised = apply_steps(raw, self.spec.preprocessing, {self.spec.input_id: raw})
        output = self.predict_oriented(np.asarray(normalised, dtype=np.float32))[0]
        references = {self.spec.input_id: raw}
        return np.asarray(apply_steps(output, self.spec.postprocessing, references), dtype=np.float32)

    def frames_per_run(self, shape: Sequence[int]) -> int:
        """Frames of ``shape`` worth handing ``predict_frames`` together: those one session run
        holds when a frame is a single tile (``tile_plan``), else 1."""
        plan = self.plan(shape)
        return plan.batch if plan.n_tiles == 1 and not self.tta else 1

    def predict_frames(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """What ``predict_image`` gives for each of equally shaped 2-D frames, their tiles sharing session runs."""
        spec, raws = self.spec, [np.asarray(frame, dtype=np.float32) for frame in frames]
        normalised = [np.asarray(apply_steps(r, spec.preprocessing, {spec.input_id: r}), np.float32) for r in raws]
        outputs = [self.predict_oriented(n) for n in normalised] if self.tta else self.predict_tiled_many(normalised)
        return [np.asarray(apply_steps(out[0], spec.postprocessing, {spec.input_id: r}), np.float32)
                for out, r in zip(outputs, raws)]


def model_symmetries(spec: ModelSpec) -> tuple[str, ...]:
    """The orientations a package says its model was trained with (``config.selfden.symmetries``)."""
    names = spec.config_selfden.get("symmetries", IDENTITY_ONLY)
    try:
        return check_names([str(n) for n in names])
    except (TypeError, ValueError) as error:
        raise ModelError(f"{spec.rdf_path}: config.selfden.symmetries: {error}") from None


def trained_orientations(model_path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The orientations a model folder, run folder or .zip lists (``--tta`` needs more than one)."""
    rdf, temp = locate_rdf(Path(model_path))
    try:
        return model_symmetries(read_spec(rdf))
    finally:
        if temp is not None:
            temp.cleanup()


def tiled_graph(spec: ModelSpec) -> Path:
    """The graph the tiler runs: the package's plain core network (``config.selfden.graphs.core``) when
    it has one, its weights otherwise. Weights with a core wrap it in the reflect border the tiler
    does itself (export/border_graph.py), so tiling the core pays that padding once, at the image edge."""
    graphs = spec.config_selfden.get("graphs")
    core = graphs.get("core") if isinstance(graphs, dict) else None
    return spec.weights.parent / str(core) if core else spec.weights  # read_spec checked it: inside, hashed


def _suggested_tile(spec: ModelSpec) -> int:
    value = spec.config_selfden.get("tile_size")
    if isinstance(value, int) and value > 0:
        return value
    return DEFAULT_TILE_SIZE


# --- files in, files out -----------------------------------------------------------------


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
    """Yields the outputs of frames ``start, start+1, ...`` of ``stack`` in order:
    ``(denoised,)``, or ``(mean, std)`` when ``with_std``."""

    def __call__(
        self, predictor: Predictor, stack: ImageStack, start: int, with_std: bool
    ) -> Iterator[tuple[np.ndarray, ...]]: ...


def local_frames(predictor: Predictor, stack: ImageStack, start: int, with_std: bool) -> Iterator[tuple[np.ndarray, ...]]:
    """The single-process FrameMapper: one frame in memory at a time, or the few small frames
    that share a session run (``Predictor.frames_per_run``)."""
    group = 1 if with_std or start >= len(stack) else predictor.frames_per_run(stack.frame_shape)
    for first in range(start, len(stack), group):
        if with_std:
            yield predictor.predict_mean_and_std(stack.frame(first))  # type: ignore[attr-defined]
        elif group == 1:
            yield (predictor.predict_image(stack.frame(first)),)
        else:
            frames = [stack.frame(index) for index in range(first, min(first + group, len(stack)))]
            yield from ((output,) for output in predictor.predict_frames(frames))
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


def load_predictor(
    model_path: str | os.PathLike[str],
    device: Device = "auto",
    tile_size: int | None = None,
    tile_batch: int = DEFAULT_TILE_BATCH,
    samples: int | str | None = None,  # a count, or "auto" (inference/sample_count.py)
    std: bool = False,
    threads: int | None = None,
    tta: bool = False,
) -> Predictor:
    """The deterministic predictor, or COSDD's sampling one when samples or std are asked for;
    ``tta`` averages each over the orientations the model was trained with."""
    predictor = Predictor.from_path(model_path, device, tile_size, tile_batch, threads, tta)
    if samples is None and not std:
        return predictor
    from selfden.inference.sampling import SamplingPredictor

    try:
        return SamplingPredictor.from_predictor(predictor, samples, device)
    except BaseException:
        predictor.close()
        raise


def model_files(predictor: Predictor) -> list[Path]:
    """The files whose contents decide the outputs: rdf.yaml and the graphs it runs."""
    # The core graph too: read_spec insists on it even when only sampling graphs run (Dask workers).
    files = list(dict.fromkeys([predictor.spec.rdf_path, predictor.spec.weights, tiled_graph(predictor.spec)]))
    graphs = getattr(predictor, "graph_files", [getattr(predictor.runner, "model_file", None)])  # sampling graphs
    files.extend(f for f in graphs if f is not None and f not in files)
    return files


def run_fingerprint(predictor: Predictor, model_digest: str, std: bool) -> dict[str, Any]:
    """What, besides the input file, decides the output pixels (recorded for --resume)."""
    options = {"tile_size": "auto" if predictor.auto_tiles else predictor.tile_size, "overlap": predictor.overlap,
               "samples": getattr(predictor, "n_samples", None), "std": std, "provider": predictor.provider,
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
    ``resumable``): after an interruption, ``resume=True`` continues where it stopped.
    Folders among ``inputs`` stand for the images in them. For COSDD packages, ``samples``
    averages that many posterior samples and ``std`` also writes the per-pixel standard
    deviation to ``<stem>_std.tif``. ``tta`` averages every frame over the flips and
    rotations the model was trained with (8x the work). Inputs whose frames declare more than
    ``max_pixels`` pixels are refused before decoding (see ``image_limits``). ``mapper``
    computes the frames (default: in this process; see ``selfden.inference.dask_cluster`` for Dask).
    """
    paths = expand_inputs([Path(p) for p in inputs])
    output = Path(output)
    jobs = _plan_jobs(paths, output, std, resume, max_pixels, overwrite)
    targets, folder = plan_outputs(paths, output)
    with load_predictor(model_path, device, tile_size, tile_batch, samples, std, tta=tta) as predictor:
        make_output_folder(folder or targets[0].parent, targets[0])
        fingerprint = run_fingerprint(predictor, files_digest(model_files(predictor)), std)
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
            for index, results in enumerate(mapper(predictor, stack, start, job.std_target is not None), start):
                for writer, result in zip(writers, results):
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
