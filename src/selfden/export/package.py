"""Write a trained method as a bioimage.io (format 0.5) model folder: selfden's MODEL FOLDER.

Export validates itself: every graph is checked against torch (``export_onnx``), the folder is
built next to ``out_dir``, tested with ``bioimageio.core.test_model`` (ONNX, CPU, offline) and
only then renamed into place, so a broken package never appears at ``out_dir``.

This module stages the model files (graphs, state dict, architecture.py) and runs those steps;
``package_assets`` writes the example files, ``package_readme`` the README and ``package_rdf``
the description.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from selfden.export.architecture import ARCHITECTURE_FILE, bordered_architecture, bundle_source
from selfden.export.bioimageio_bridge import bioimageio_quietly, ensure_bioimageio_cache, failed_tests
from selfden.export.border_graph import CORE, border_pads, write_bordered
from selfden.export.metadata import PackageMetadata
from selfden.export.onnx import ExportError, ParityReport
from selfden.export.onnx_graphs import export_graph
from selfden.export.ownership import check_same_run
from selfden.export.package_assets import (
    DENOISER,
    README,
    TORCH_WEIGHTS,
    crop_for_test_tensor,
    package_min_size,
    write_examples,
)
from selfden.export.package_rdf import model_descr, plain
from selfden.export.package_readme import readme
from selfden.geometry.orientations import IDENTITY_ONLY, check_names
from selfden.io.atomic import replace_folder
from selfden.methods.base import Method, TorchArchitecture

logger = logging.getLogger(__name__)


def export_package(
    method: Method,
    out_dir: str | os.PathLike[str],
    sample_raw: np.ndarray,
    training_info: dict[str, Any],
    orientations: Sequence[str] = IDENTITY_ONLY,
    metadata: PackageMetadata | None = None,
    run_folder: Path | None = None,
) -> Path:
    """Export ``method`` as a tested bioimage.io package folder at ``out_dir``; returns its path.

    ``sample_raw``: a 2-D image in raw intensities; a centred crop becomes the test tensor and cover.
    ``training_info``: plain values, recorded under ``config.selfden.training``; ``name``,
    ``description`` and ``authors`` (list of names) are used for the package when present.
    ``orientations``: the orientations training showed the model (``selfden infer --tta`` averages them).
    ``metadata``: names, authors, maintainers, git_repo, tags and the training data's description.
    An existing ``out_dir`` is replaced only if it is an earlier selfden export (or empty);
    with ``training_info["run_id"]`` (exports of a run), only one of the same run holding
    nothing but the files it wrote; ``run_folder``, the folder of that run, is the one place a
    package that records no run id (exported before run ids) may be replaced.
    """
    out_dir = Path(out_dir).absolute()
    run_id = training_info.get("run_id")
    _check_replaceable(out_dir, run_id, run_folder)
    ensure_bioimageio_cache()  # before bioimageio is first imported: its settings read the cache path once
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-build-", dir=out_dir.parent))
    try:
        staging = build / "staging"
        staging.mkdir()
        metadata = metadata or PackageMetadata()
        description = _describe(method, staging, sample_raw, plain(training_info), check_names(orientations), metadata)
        # test_model asks GitHub about every github_user, which fails offline: test a copy without them.
        offline = _without_github_users(description)
        package = _save(offline, build / "tested")
        _test_package(package)
        if offline is not description:
            package = _save(description, build / "package")
        _check_replaceable(out_dir, run_id, run_folder)  # again: the folder may have changed while we built
        replace_folder(package, out_dir)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    logger.info("wrote bioimage.io package %s", out_dir)
    return out_dir


def is_selfden_package(folder: Path) -> bool:
    """Whether ``folder`` holds an rdf.yaml written by selfden (one with ``config.selfden``)."""
    try:
        rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(rdf, dict) and isinstance((rdf.get("config") or {}).get("selfden"), dict)


# --- building ----------------------------------------------------------------------------


def _check_replaceable(out_dir: Path, run_id: str | None, run_folder: Path | None) -> None:
    """ExportError unless ``out_dir`` is absent, empty or an earlier selfden export it may replace."""
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return
    if not (out_dir.is_dir() and is_selfden_package(out_dir)):
        raise ExportError(
            f"{out_dir} exists and is not a selfden model folder (no rdf.yaml with config.selfden); "
            "choose another output folder or remove it first"
        )
    if run_id is not None:
        check_same_run(out_dir, run_id, run_folder)


def _describe(
    method: Method, staging: Path, sample_raw: np.ndarray, info: dict[str, Any], orientations: tuple[str, ...],
    metadata: PackageMetadata,
) -> Any:
    """Write every file of the package into ``staging`` and return its ModelDescr."""
    test_input = crop_for_test_tensor(method, sample_raw)  # first: a bad sample should fail before the slow steps
    architecture = _write_architecture(method, staging)
    graphs, reports = _export_graphs(method, staging)
    _save_state_dict(method, staging / TORCH_WEIGHTS)
    test_output = write_examples(staging, staging / graphs[DENOISER], method, sample_raw, test_input)
    text = readme(method, info, reports, (test_input, test_output), orientations, architecture.callable, metadata)
    (staging / README).write_text(text, encoding="utf-8")
    from bioimageio.spec import ValidationContext
    from pydantic import ValidationError

    try:
        if not metadata.github_users:
            return model_descr(method, staging, graphs, info, orientations, architecture, metadata)
        # bioimageio looks every github_user up on GitHub while validating; export runs offline (the
        # zoo's CI, online, checks them on upload). Files are still hashed when the folder is saved.
        with ValidationContext(perform_io_checks=False):
            return model_descr(method, staging, graphs, info, orientations, architecture, metadata)
    except ValidationError as error:  # selfden wrote a description bioimageio.spec refuses: say which rule
        rule = " ".join(str(error).split("\n")[1].split())[:300] if "\n" in str(error) else str(error)[:300]
        raise ExportError(f"the package description breaks a bioimage.io rule ({rule}); the run is saved: "
                          "please report this as a selfden bug") from None


def _export_graphs(method: Method, staging: Path) -> tuple[dict[str, str], list[ParityReport]]:
    """Every graph of ``export_graphs()`` as ``<name>.onnx``, each checked against torch; the denoiser's
    is the core (``denoiser_core.onnx``, tiled by selfden infer) and ``denoiser.onnx`` wraps it in the
    reflect border (the weights every other tool runs)."""
    modules = method.export_graphs()
    if DENOISER not in modules:
        raise ExportError(f"method {method.name} exports {sorted(modules)}, expected a {DENOISER!r} graph; this is a bug")
    size, step = _parity_base_size(method), method.size_step
    sizes = ((size, size), (size + step, size + 2 * step))
    files, reports = {DENOISER: f"{DENOISER}.onnx"}, []
    for name, module in modules.items():
        key = CORE if name == DENOISER else name  # the plain network, which selfden infer tiles itself
        files[key] = f"{DENOISER}_core.onnx" if name == DENOISER else f"{name}.onnx"
        reports.append(export_graph(module, staging / files[key], sizes=sizes))
    # The weights every other tool runs: the core inside selfden's reflect border (border_graph.py).
    low = package_min_size(method)
    border_sizes = ((low, low), (low + step, low + 2 * step))
    reports.append(write_bordered(staging / files[CORE], staging / files[DENOISER], method.halo, step, border_sizes))
    return files, reports


def _parity_base_size(method: Method) -> int:
    """A valid network size of at least 64 px, so parity is tested beyond degenerate 1-pixel codes."""
    size = method.min_size
    while size < 64:
        size += method.size_step
    return size


def _save_state_dict(method: Method, path: Path) -> None:
    """The denoiser graph's weights for PyTorch users (fine-tuning, retraining): plain tensors only."""
    import torch

    from selfden.export.reflect_border import ReflectBorder

    wrapped = ReflectBorder(method.export_graphs()[DENOISER], None, *border_pads(method.halo, method.size_step))
    state = {k: v.detach().cpu().contiguous() for k, v in wrapped.state_dict().items()}
    torch.save(state, path)


def _write_architecture(method: Method, staging: Path) -> TorchArchitecture:
    """architecture.py: the denoiser's torch-only source, so PyTorch consumers need no selfden."""
    described = method.torch_architecture()
    if described is None:
        raise ExportError(f"method {method.name} does not describe its network (torch_architecture); this is a bug")
    described = bordered_architecture(described, *border_pads(method.halo, method.size_step))
    (staging / ARCHITECTURE_FILE).write_text(bundle_source(described.modules), encoding="utf-8")
    return described


def _without_github_users(descr: Any) -> Any:
    """``descr`` with no github_user anywhere (itself when it has none), for testing offline."""
    if not descr.maintainers and not any(a.github_user for a in descr.authors):
        return descr
    authors = [a.model_copy(update={"github_user": None}) for a in descr.authors]
    return descr.model_copy(update={"authors": authors, "maintainers": []})


# --- saving, testing, renaming -------------------------------------------------------------


def _save(descr: Any, folder: Path) -> Path:
    from bioimageio.spec import save_bioimageio_package_as_folder

    with bioimageio_quietly(warnings_too=False):
        return Path(save_bioimageio_package_as_folder(descr, output_path=folder))


def _test_package(folder: Path) -> None:
    """``bioimageio.core.test_model`` on CPU, offline, for the ONNX graph and the PyTorch state dict:
    both must reproduce the test output. Raises ExportError with the summary if either fails."""
    from bioimageio.core import test_model

    for weight_format, devices in (("onnx", ["CPUExecutionProvider"]), ("pytorch_state_dict", ["cpu"])):
        with bioimageio_quietly(warnings_too=False):
            summary = test_model(folder / "rdf.yaml", weight_format=weight_format, devices=devices)
        if summary.status != "passed":
            raise ExportError(f"the exported package failed bioimageio.core's test_model ({weight_format}): {failed_tests(summary)}")
        logger.info("bioimageio.core test_model passed for %s (%d checks)", weight_format, len(summary.details))


