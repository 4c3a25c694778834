"""Predicting arrays: one interface for every loaded model, and the direct (deterministic) predictor.

raw frame -> preprocess (whole frame) -> tiles -> onnxruntime in batches -> stitch -> orientations
averaged (``--tta``) -> postprocess. Memory is bounded by one frame plus one batch of tiles.
``Predictor`` is what running over files, Dask workers, the CLI and benchmarks use; COSDD's
sampling predictor (``sampling.py``) implements it too, so none of them asks which kind it has.
Loading a package into a predictor is ``loading.py``.
"""

from __future__ import annotations

import logging
import tempfile
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selfden.errors import ModelError, SelfdenError
from selfden.geometry.orientations import IDENTITY_ONLY, running_mean, self_ensemble
from selfden.geometry.tile_plan import CPU_RUN_PIXELS, TilePlan, fixed_plan, plan_tiles, run_pixel_budget
from selfden.geometry.tiles import run_tiled, tile_image
from selfden.inference.sample_count import SampleCount
from selfden.package.processing import apply_steps
from selfden.package.rdf import ModelSpec
from selfden.package.runtime import CPU, OnnxRunner

log = logging.getLogger(__name__)

DEFAULT_TILE_SIZE = 256
DEFAULT_TILE_BATCH = 4


@dataclass(frozen=True)
class Prediction:
    """One denoised frame in raw units (float32, the frame's shape), and its per-pixel standard
    deviation when the predictor was asked for one (COSDD ``--std``)."""

    image: np.ndarray
    std: np.ndarray | None = None

    def arrays(self) -> tuple[np.ndarray, ...]:
        """What the outputs of a frame receive, in order: ``(image,)`` or ``(image, std)``."""
        return (self.image,) if self.std is None else (self.image, self.std)


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


class Predictor(ABC):
    """A loaded model that denoises 2-D frames of any size.

    Callers use ``predict_frames`` / ``predict``, ``frames_per_run``, ``provider``, ``close`` (or
    ``with``) and the settings that decide the output pixels (tiles, ``orientations``,
    ``n_samples``, ``with_std``, ``graph_files``). Subclasses supply ``run_tiles`` (network outputs
    of a batch of tiles), ``finish`` (one frame's output in raw units) and ``graph_files``, and keep
    the tiling, batching, stitching and orientations.
    """

    #: Posterior samples per tile (COSDD), None for a deterministic model.
    n_samples: SampleCount | None = None
    #: Whether predictions carry a per-pixel standard deviation.
    with_std: bool = False

    def __init__(
        self,
        spec: ModelSpec,
        runner: OnnxRunner,
        tile_size: int | None = None,
        tile_batch: int = DEFAULT_TILE_BATCH,
        overlap: int | None = None,
        orientations: tuple[str, ...] = IDENTITY_ONLY,
    ) -> None:
        self.spec = spec
        self.runner = runner
        self.tile_size = int(tile_size if tile_size is not None else _suggested_tile(spec))
        self.auto_tiles = tile_size is None  # plan per image size (tile_plan); --tile-size overrides
        self.max_pixels = run_pixel_budget(spec.config_selfden)
        # Pixels per session run: the memory budget on a GPU, a cache-sized batch on a CPU.
        self.batch_pixels = min(self.max_pixels, CPU_RUN_PIXELS) if runner.provider == CPU else self.max_pixels
        self._plans: dict[tuple[int, int], TilePlan] = {}
        if self.tile_size < 1 or tile_batch < 1:
            raise SelfdenError(
                f"tile size {tile_size} and tile batch {tile_batch} must be positive (e.g. --tile-size 256)"
            )
        self.tile_batch = tile_batch if spec.batch_size is None else spec.batch_size
        self.overlap = overlap
        self.orientations = orientations
        if runner.input_rank != len(spec.input_axes):
            raise ModelError(
                f"{spec.weights}: graph input has {runner.input_rank} dimensions but rdf.yaml "
                f"describes axes '{spec.input_axes}'"
            )
        self._cleanup: Callable[[], Any] | None = None

    # --- what callers use ----------------------------------------------------------------
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

    @property
    def tta(self) -> bool:
        """Whether outputs average several orientations of each frame."""
        return len(self.orientations) > 1

    @property
    @abstractmethod
    def graph_files(self) -> list[Path]:
        """The ONNX graphs this predictor runs (their contents decide the outputs)."""

    def own_extraction(self, temp: tempfile.TemporaryDirectory[str]) -> None:
        """Delete ``temp`` (a .zip package's extraction) on ``close`` or when garbage collected."""
        self._cleanup = weakref.finalize(self, temp.cleanup)

    def close(self) -> None:
        """Delete a temporary extraction of a .zip package (no-op for folders)."""
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def frames_per_run(self, shape: Sequence[int]) -> int:
        """Frames of ``shape`` worth handing ``predict_frames`` together: those one session run
        holds when a frame is a single tile (``tile_plan``), else 1."""
        plan = self.plan(shape)
        return plan.batch if plan.n_tiles == 1 and not self.tta else 1

    def predict_frames(self, frames: Sequence[np.ndarray]) -> list[Prediction]:
        """Denoise equally shaped raw 2-D frames, their tiles sharing session runs."""
        spec, raws = self.spec, [_frame(frame) for frame in frames]
        normalised = [np.asarray(apply_steps(r, spec.preprocessing, {spec.input_id: r}), np.float32) for r in raws]
        outputs = [self.predict_oriented(n) for n in normalised] if self.tta else self.predict_tiled_many(normalised)
        return [self.finish(output, raw) for output, raw in zip(outputs, raws)]

    def predict(self, frame: np.ndarray) -> Prediction:
        """Denoise one raw 2-D frame."""
        return self.predict_frames([frame])[0]

    # --- the pipeline, in normalised units -------------------------------------------------
    @abstractmethod
    def run_tiles(self, batch: np.ndarray) -> np.ndarray:
        """Network outputs ``(B, K, Py, Px)`` for preprocessed tiles ``(B, Py, Px)``."""

    @abstractmethod
    def finish(self, output: np.ndarray, raw: np.ndarray) -> Prediction:
        """One frame's stitched output ``(K, H, W)`` postprocessed into raw units (``raw``: its input)."""

    def postprocess(self, output: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """``output`` (H, W) in raw units with the package's postprocessing."""
        return np.asarray(apply_steps(output, self.spec.postprocessing, {self.spec.input_id: raw}), np.float32)

    def plan(self, shape: Sequence[int]) -> TilePlan:
        """How frames of ``shape`` are tiled (``tile_plan``; ``--tile-size`` as given), logged once per size."""
        key = (int(shape[-2]), int(shape[-1]))
        if key not in self._plans:
            spec = self.spec
            if self.auto_tiles and self.overlap is None:
                plan = plan_tiles(key, spec.min_size, spec.size_step, spec.halo, self.max_pixels,
                                  fixed_batch=spec.batch_size, batch_pixels=self.batch_pixels)  # fmt: skip
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

    def predict_oriented(self, image: np.ndarray) -> np.ndarray:
        """``predict_tiled``, averaged over ``orientations`` with ``combine_orientations``."""
        if not self.tta:
            return self.predict_tiled(image)
        return self_ensemble(image, self.predict_tiled, self.orientations, self.combine_orientations)

    def combine_orientations(self, outputs: Iterable[np.ndarray]) -> np.ndarray:
        """One output from those of several orientations (turned back): their mean."""
        return running_mean(outputs)


class DirectPredictor(Predictor):
    """The package's deterministic network: one pass per tile, the denoised frame out."""

    @property
    def graph_files(self) -> list[Path]:
        return [self.runner.model_file]

    def run_tiles(self, batch: np.ndarray) -> np.ndarray:
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

    def finish(self, output: np.ndarray, raw: np.ndarray) -> Prediction:
        return Prediction(self.postprocess(output[0], raw))


def _frame(frame: np.ndarray) -> np.ndarray:
    if frame.ndim != 2:
        raise ValueError(f"expected a 2-D frame, got shape {frame.shape}")
    return np.asarray(frame, dtype=np.float32)


def _suggested_tile(spec: ModelSpec) -> int:
    value = spec.config_selfden.get("tile_size")
    if isinstance(value, int) and value > 0:
        return value
    return DEFAULT_TILE_SIZE
