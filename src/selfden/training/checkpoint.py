"""Checkpoints: plain containers and tensors only, written atomically, read with ``weights_only``.

A checkpoint holds the method's ``state_dict()`` (networks and optimisers), the loop counters
and every random state the run draws from, so a resumed run continues where it stopped.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfden.errors import SelfdenError
from selfden.methods.base import Method
from selfden.io.atomic import atomic_write

logger = logging.getLogger(__name__)

#: Bumped when the layout below changes incompatibly.
CHECKPOINT_FORMAT = 1


@dataclass
class TrainingCounters:
    """Where a run stands; saved in every checkpoint."""

    step: int = 0
    elapsed_seconds: float = 0.0
    best_val_loss: float = float("inf")
    validations_since_best: int = 0


def make_checkpoint(
    method: Method, counters: TrainingCounters, data_rng: np.random.Generator | None
) -> dict[str, Any]:
    """Everything needed to resume, as plain containers and tensors."""
    return {
        "format": CHECKPOINT_FORMAT,
        "method_name": _method_name(method),
        "step": counters.step,
        "elapsed_seconds": counters.elapsed_seconds,
        "best_val_loss": counters.best_val_loss,
        "validations_since_best": counters.validations_since_best,
        "method": method.state_dict(),
        "rng": capture_rng(data_rng),
    }


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Write ``checkpoint`` to ``path`` via a temporary file and ``os.replace``.

    An interrupted write leaves the previous file intact and no temporary file behind.
    """
    with atomic_write(path) as handle:
        torch.save(checkpoint, handle)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` onto the CPU."""
    if not path.is_file():
        raise SelfdenError(f"cannot resume: checkpoint {path} does not exist; train without resuming")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise SelfdenError(
            f"cannot read checkpoint {path} ({type(exc).__name__}: {exc}); delete it or train without resuming"
        ) from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise SelfdenError(
            f"{path} is not a selfden checkpoint of format {CHECKPOINT_FORMAT}; train without resuming"
        )
    return checkpoint


def load_latest_checkpoint(last: Path, best: Path) -> dict[str, Any]:
    """``last``, or ``best`` (saying so) when ``last`` is missing or unreadable, e.g. cut short by a full disk.

    When neither loads, the error names the folder to delete: a run without checkpoints trains from scratch.
    """
    try:
        return load_checkpoint(last)
    except SelfdenError as last_error:
        if not best.is_file():
            raise
        try:
            checkpoint = load_checkpoint(best)
        except SelfdenError:
            raise SelfdenError(
                f"cannot resume: neither {last.name} nor {best.name} in {last.parent} can be read "
                f"({_first_line(last_error.__cause__ or last_error)}); delete {last.parent} and train with "
                "--resume again to start the run over from scratch"
            ) from None
        problem = "missing" if not last.is_file() else "unreadable"
        logger.warning("%s/%s is %s; resuming from %s (step %d)", last.parent.name, last.name, problem,
                       best.name, int(checkpoint["step"]))
        return checkpoint


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch's zip errors run on for lines)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].split(". ")[0]


def restore_checkpoint(
    checkpoint: dict[str, Any], method: Method, data_rng: np.random.Generator | None
) -> TrainingCounters:
    """Load the method's state and the random states; return the loop counters."""
    expected = _method_name(method)
    if checkpoint["method_name"] != expected:
        raise SelfdenError(
            f"checkpoint was written by method {checkpoint['method_name']!r}, not {expected!r}; "
            "resume with the same method or start a new run"
        )
    method.load_state_dict(checkpoint["method"])
    restore_rng(checkpoint["rng"], data_rng)
    return TrainingCounters(
        step=int(checkpoint["step"]),
        elapsed_seconds=float(checkpoint["elapsed_seconds"]),
        best_val_loss=float(checkpoint["best_val_loss"]),
        validations_since_best=int(checkpoint["validations_since_best"]),
    )


def _method_name(method: Method) -> str:
    return getattr(type(method), "name", type(method).__name__)


def capture_rng(data_rng: np.random.Generator | None) -> dict[str, Any]:
    """torch (CPU and CUDA), numpy's global, Python's and the data sampler's random states.

    numpy's states are stored as lists and ints: ``weights_only`` loading refuses numpy arrays.
    """
    name, key, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "key": key.tolist(), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": _python_state_to_plain(random.getstate()),
        "data": None if data_rng is None else data_rng.bit_generator.state,
    }


def restore_rng(state: dict[str, Any], data_rng: np.random.Generator | None) -> None:
    """Undo :func:`capture_rng`; CUDA states are skipped when the device count differs."""
    torch.set_rng_state(state["torch"])
    cuda_states = state["cuda"]
    if torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    elif cuda_states:
        logger.warning("checkpoint has CUDA random states for another device count; not restored")
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np.asarray(np_state["key"], dtype=np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    random.setstate(_python_state_from_plain(state["python"]))
    if data_rng is not None and state["data"] is not None:
        data_rng.bit_generator.state = state["data"]


def _python_state_to_plain(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_plain(plain: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = plain
    return (version, tuple(internal), gauss)
