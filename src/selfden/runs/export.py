"""Exporting a run: its exported checkpoint as a bioimage.io package folder (or .zip)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from selfden.methods.base import Method
from selfden.runs.checks import checkpoint_progress
from selfden.runs.config import METRICS_FILE, MODEL_DIR, RunConfig, load_run_config, read_run_config
from selfden.runs.weights import load_method_and_checkpoint, load_weights

if TYPE_CHECKING:
    from selfden.export.metadata import PackageMetadata


def export_run(
    run_dir: Path,
    out_dir: Path | None = None,
    method: Method | None = None,
    sample_raw: np.ndarray | None = None,
    validation: Sequence[str] = (),
    device: str | None = None,
    metadata: PackageMetadata | None = None,
) -> Path:
    """Export a run's best checkpoint (else its last; the last first for methods whose
    ``export_best_checkpoint`` is False) as a bioimage.io package folder.

    ``validation``: measured results (one sentence each) for the package README's Validation section.
    ``metadata``: names, people, purpose and data of the package.
    """
    from selfden.export.ownership import check_export_target, run_identity
    from selfden.export.package import export_package

    target = Path(out_dir) if out_dir is not None else run_dir / MODEL_DIR
    # The id comes from config.yaml as written (so runs of earlier layouts keep theirs); a target
    # it may not replace stops the export before any work.
    run_id = run_identity(read_run_config(run_dir))
    check_export_target(target.absolute(), run_id, run_dir)
    config = load_run_config(run_dir)
    if method is None:
        method, checkpoint = load_method_and_checkpoint(run_dir, config)
    else:
        checkpoint = load_weights(method, run_dir)
    progress = checkpoint_progress(checkpoint, run_dir, config.method) or training_progress(run_dir)
    if sample_raw is None:
        sample_raw = _sample_frame(config)
    layout = config.model_dump(mode="json")
    info = {
        "inputs": [Path(p).name for p in config.data.inputs],
        "method_config": layout["method_config"],
        "data": config.data.model_dump(mode="json", exclude={"inputs"}),
        "trainer": layout["trainer"],
        "seed": config.seed,
        **progress,
        **({"device": device} if device else {}),
        "validation": list(validation),
        "run_id": run_id,
    }
    orientations = trained_orientations(config, method)
    if target.suffix.lower() != ".zip":
        return export_package(method, target, sample_raw, info, orientations, metadata, run_folder=run_dir)
    from selfden.export.archive import write_package_zip

    with tempfile.TemporaryDirectory(prefix="selfden-export-") as temp:
        package = export_package(method, Path(temp) / "model", sample_raw, info, orientations, metadata)
        return write_package_zip(package, target)


def trained_orientations(config: RunConfig, method: Method) -> tuple[str, ...]:
    """The orientations the run's crops were drawn in: what ``--tta`` may average over."""
    return config.data.orientations(method.config.training_orientations())


def training_progress(run_dir: Path) -> dict[str, Any]:
    """Steps, minutes and best validation loss of a run, from its metrics log."""
    from selfden.training.metrics_log import read_metrics

    path = run_dir / METRICS_FILE
    entries = [e for e in read_metrics(path) if "step" in e] if path.is_file() else []
    if not entries:
        return {}
    last = max(entries, key=lambda e: (e["step"], e.get("elapsed_seconds", 0.0)))
    progress = {"steps": int(last["step"]), "minutes": round(float(last.get("elapsed_seconds", 0.0)) / 60, 2)}
    losses = [e["val_loss"] for e in entries if isinstance(e.get("val_loss"), (int, float))]
    if losses:
        progress["best_val_loss"] = min(losses)
    return progress


def _sample_frame(config: RunConfig) -> np.ndarray:
    from selfden.io.reading import open_image

    stack = open_image(Path(config.data.inputs[0]), config.data.max_pixels)
    return np.asarray(stack.frame(len(stack) - 1), dtype=np.float32)
