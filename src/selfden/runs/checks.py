"""What a training checks before it writes anything, and what it leaves when it fails or is killed.

The rules: every option is checked before a run folder is made; an attempt that fails before it
saved a checkpoint removes what it created, so the same command can be rerun; a run folder left
without a checkpoint (a ``kill -9`` before the first save) trains from scratch with ``--resume``;
an export packages trained weights only and says how many steps trained them.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from selfden.errors import InputError, SelfdenError

if TYPE_CHECKING:  # the methods import torch; run folders are also read where torch is not wanted
    from selfden.methods.base import MethodConfig

log = logging.getLogger(__name__)

CHECKPOINTS = ("last.pt", "best.pt")


def validated(model: type[BaseModel], values: dict[str, Any], what: str) -> Any:
    """``model`` validated from ``values``; a one-line SelfdenError naming each bad key and value."""
    try:
        return model.model_validate(values)
    except Exception as exc:
        raise SelfdenError(f"invalid {what}: {pydantic_message(exc)}") from None


def pydantic_message(exc: Exception) -> str:
    """``key=received: problem; ...`` from a pydantic error (its first line for anything else)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return first_line(exc)
    parts = []
    for err in errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        received = err.get("input")
        if where and isinstance(received, (int, float, str)) and not isinstance(received, bool):
            where = f"{where}={received}"
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts)


def check_crops(method: str, method_config: MethodConfig, patch_size: int, batch_size: int) -> None:
    """The method's rule for training crops (e.g. multiples of its size step), as a one-line error."""
    problem = method_config.patch_size_problem(patch_size, batch_size)
    if problem:
        raise SelfdenError(f"{method}: {problem}")


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir/checkpoints`` holds a checkpoint to continue from (readable or not)."""
    return any((run_dir / "checkpoints" / name).is_file() for name in CHECKPOINTS)


def check_run_dir(run_dir: Path, resume: bool) -> bool:
    """Whether the training restores a checkpoint; a one-line error when ``run_dir`` cannot take the run.

    ``--resume`` of a folder without checkpoints (killed before its first save) trains from scratch.
    """
    if resume:
        if has_checkpoint(run_dir):
            return True
        log.warning("%s has no checkpoint yet (its training stopped before the first save); "
                    "training it from scratch with its saved options", run_dir)
        return False
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"{run_dir}: exists and is not a folder; choose a new run folder")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if (run_dir / "config.yaml").is_file() and not has_checkpoint(run_dir):
            raise InputError(
                f"{run_dir}: holds a run that stopped before its first checkpoint; add --resume to train it "
                "from scratch with its saved options, or choose a new run folder"
            )
        raise InputError(
            f"{run_dir}: already exists and is not empty; choose a new run folder or add --resume to continue it"
        )
    return False


@contextlib.contextmanager
def removed_if_untrained(run_dir: Path) -> Iterator[None]:
    """Remove what a new run created in ``run_dir`` when it fails before saving a checkpoint.

    Only for a folder that was missing or empty before: an existing empty folder is emptied again.
    """
    existed = run_dir.is_dir()
    was_empty = not run_dir.exists() or (existed and not any(run_dir.iterdir()))
    try:
        yield
    except BaseException:
        if was_empty and run_dir.is_dir() and not has_checkpoint(run_dir):
            _remove(run_dir, keep_folder=existed)
        raise


def _remove(run_dir: Path, keep_folder: bool) -> None:
    for path in list(run_dir.iterdir()) if keep_folder else [run_dir]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def checkpoint_progress(checkpoint: dict[str, Any], run_dir: Path, method: str) -> dict[str, Any]:
    """Steps, minutes and best validation loss of the checkpoint whose weights are exported.

    A checkpoint of step 0 holds untrained weights: exporting it is a one-line error.
    """
    if "step" not in checkpoint:  # written by hand or by an old version: nothing to check or report
        return {}
    steps = int(checkpoint["step"])
    if steps == 0:
        command = shlex.join(["selfden", "train", method, "--resume", "-o", str(run_dir)])
        raise SelfdenError(f"{run_dir} has no trained steps yet; train it ({command})")
    progress: dict[str, Any] = {"steps": steps, "minutes": round(float(checkpoint.get("elapsed_seconds", 0.0)) / 60, 2)}
    best = float(checkpoint.get("best_val_loss", float("inf")))
    if best != float("inf"):
        progress["best_val_loss"] = best
    return progress


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
