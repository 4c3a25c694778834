"""Loading a model: a package folder, run folder or .zip -> rdf.yaml -> onnxruntime sessions -> a Predictor.

A .zip is extracted into a temporary folder that lives as long as the predictor. What the
package says about itself that inference needs beyond ``package.rdf`` (the orientations it was
trained with, the graph the tiler runs) is read here too.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from selfden.errors import ModelError
from selfden.geometry.orientations import IDENTITY_ONLY, check_names
from selfden.inference.predictors import DEFAULT_TILE_BATCH, DirectPredictor, Predictor
from selfden.inference.sampling import SamplingPredictor
from selfden.package.files import extract_zip
from selfden.package.rdf import ModelSpec, find_rdf, read_spec
from selfden.package.runtime import Device, create_runner

log = logging.getLogger(__name__)


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


LEGACY_ORIENTATIONS_KEY = "symmetries"  # the field's name in packages of earlier versions


def package_orientations(spec: ModelSpec) -> tuple[str, ...]:
    """The orientations a package says its model was trained with (``config.selfden.orientations``;
    packages from earlier selfden versions call the field ``symmetries``)."""
    key = "orientations" if "orientations" in spec.config_selfden else LEGACY_ORIENTATIONS_KEY
    names = spec.config_selfden.get(key, IDENTITY_ONLY)
    try:
        return check_names([str(n) for n in names])
    except (TypeError, ValueError) as error:
        raise ModelError(f"{spec.rdf_path}: config.selfden.{key}: {error}") from None


def trained_orientations(model_path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The orientations a model folder, run folder or .zip lists (``--tta`` needs more than one)."""
    rdf, temp = locate_rdf(Path(model_path))
    try:
        return package_orientations(read_spec(rdf))
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


def _tta_orientations(spec: ModelSpec) -> tuple[str, ...]:
    """What ``--tta`` averages over; ModelError when the package lists nothing to average."""
    orientations = package_orientations(spec)
    if len(orientations) < 2:
        raise ModelError(
            f"{spec.rdf_path}: the model was trained without flips or rotations, so --tta has no "
            "orientations to average; leave --tta out (methods that train with them: cae, dnnet)"
        )
    return orientations


def load_direct(
    model_path: str | os.PathLike[str],
    device: Device = "auto",
    tile_size: int | None = None,
    tile_batch: int = DEFAULT_TILE_BATCH,
    threads: int | None = None,
    tta: bool = False,
) -> DirectPredictor:
    """The package's deterministic predictor (ModelError if the model is unusable).

    ``threads``: CPU threads for onnxruntime (default: all cores). ``tta``: average over
    the orientations the model was trained with (see ``selfden.geometry.orientations``).
    """
    rdf, temp = locate_rdf(Path(model_path))
    try:
        spec = read_spec(rdf)
        runner = create_runner(tiled_graph(spec), device, spec.output_id, threads)
        orientations = _tta_orientations(spec) if tta else IDENTITY_ONLY
        predictor = DirectPredictor(spec, runner, tile_size, tile_batch, orientations=orientations)
    except BaseException:
        if temp is not None:
            temp.cleanup()
        raise
    if temp is not None:
        predictor.own_extraction(temp)
    tiles = "planned per image size" if predictor.auto_tiles else f"of {predictor.tile_size}, batch {predictor.tile_batch}"
    log.info("model %s (%s): tiles %s", spec.name, rdf, tiles)
    return predictor


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
    """The deterministic predictor, or COSDD's sampling one when samples or std are asked for
    (its predictions then carry the std when ``std``); ``tta`` averages each over the
    orientations the model was trained with."""
    predictor = load_direct(model_path, device, tile_size, tile_batch, threads, tta)
    if samples is None and not std:
        return predictor
    try:
        return SamplingPredictor.from_predictor(predictor, samples, device, with_std=std)
    except BaseException:
        predictor.close()
        raise
