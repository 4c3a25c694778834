"""A run's trained weights: rebuild its method on the CPU and load the checkpoint it exports."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from selfden.errors import InputError
from selfden.methods.base import Method
from selfden.runs.checks import first_line
from selfden.runs.config import RunConfig, load_run_config

log = logging.getLogger(__name__)


def load_method(run_dir: Path, config: RunConfig | None = None) -> Method:
    """Rebuild a run's method on the CPU with its best (else last) weights; see :func:`load_weights`."""
    return load_method_and_checkpoint(run_dir, config)[0]


def load_method_and_checkpoint(run_dir: Path, config: RunConfig | None = None) -> tuple[Method, dict[str, Any]]:
    """The method of :func:`load_method` and the checkpoint its weights came from (for its step count)."""
    import torch

    from selfden.methods import get_method

    config = config or load_run_config(run_dir)
    if config.normalisation is None:
        raise InputError(f"{run_dir}: the run has no normalisation recorded; it never started training")
    method = get_method(config.method)(config.method_config, config.normalisation, torch.device("cpu"))
    return method, load_weights(method, run_dir)


def load_weights(method: Method, run_dir: Path) -> dict[str, Any]:
    """Load the method's preferred checkpoint into ``method`` and return it: best.pt, else last.pt (the
    other way round when ``export_best_checkpoint`` is False), passing over one that cannot be read or
    that holds the untrained baseline (the step-0 best.pt of older versions) when the other can stand in."""
    import torch

    names = ("best.pt", "last.pt") if method.export_best_checkpoint else ("last.pt", "best.pt")
    loaded, failure = [], None
    for path in (run_dir / "checkpoints" / name for name in names):
        if not path.is_file():
            continue
        try:
            checkpoint = torch.load(path, map_location=method.device, weights_only=True)
            loaded.append((path, checkpoint, checkpoint["method"]))
        except Exception as exc:
            failure = failure or f"{path}: cannot load checkpoint: {first_line(exc)}"
    if not loaded:
        raise InputError(failure or f"{run_dir}: no checkpoint found in checkpoints/ (best.pt or last.pt)")
    path, checkpoint, state = ([item for item in loaded if item[1].get("step") != 0] or loaded)[0]
    if failure:
        log.warning("%s; using %s", failure, path.name)
    try:
        method.load_state_dict(state)
    except Exception as exc:
        raise InputError(f"{path}: cannot load checkpoint: {first_line(exc)}") from None
    return checkpoint
