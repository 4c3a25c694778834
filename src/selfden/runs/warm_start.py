"""Starting a new run from the network weights of a finished one (``selfden train --init-from RUN``).

Fine-tuning, not resuming: the new run keeps its own data, normalisation, seed, budget and fresh
optimiser; only the networks' weights come from the other run's checkpoint. The source is
checked when the run is planned (same method, same networks, a readable checkpoint) and its
SHA-256 recorded in the new run's config.yaml, so the run says where it started and a source
that changed between planning and training is refused rather than silently used.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from selfden.errors import InputError
from selfden.runs.checks import first_line

if TYPE_CHECKING:  # the methods import torch
    from selfden.methods.base import Method

#: Preferred checkpoint of the source run first (the weights its export used).
CHECKPOINT_NAMES = ("best.pt", "last.pt")
#: A checkpoint larger than this is not one (the largest preset's is ~100 MB): refused before reading.
MAX_CHECKPOINT_BYTES = 2**31


class InitFrom(BaseModel):
    """Where a run's initial weights came from: recorded in its config.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: str = Field(description="absolute path of the source run's checkpoint")
    sha256: str = Field(description="SHA-256 of that file when the run was planned")
    step: int = Field(ge=0, description="training steps the source had taken")


def describe_source(run_dir: Path, trained: str, method: str) -> InitFrom:
    """Check that ``run_dir``, a run that ``trained`` a method, is a run of ``method`` with a trained
    checkpoint; say which checkpoint and its hash."""
    if trained != method:
        raise InputError(
            f"{run_dir}: --init-from needs a run of {method}, but it trained {trained}; "
            f"give a {method} run folder"
        )
    for name in CHECKPOINT_NAMES:
        path = run_dir / "checkpoints" / name
        if path.is_file():
            sha256, checkpoint = _read(path)
            if int(checkpoint.get("step", 0)) > 0:
                return InitFrom(checkpoint=str(path.resolve()), sha256=sha256, step=int(checkpoint["step"]))
    raise InputError(f"{run_dir}: --init-from found no trained checkpoint in checkpoints/; train that run first")


def apply_source(method: Method, source: InitFrom) -> None:
    """Load the networks of ``source`` into ``method`` (its optimiser stays fresh)."""
    path = Path(source.checkpoint)
    if not path.is_file():
        raise InputError(f"{path}: --init-from checkpoint is gone; give the run again or train without --init-from")
    sha256, checkpoint = _read(path)  # hashed and loaded from the same bytes: nothing can swap the file between
    if sha256 != source.sha256:
        raise InputError(
            f"{path}: --init-from checkpoint changed since this run was planned (its SHA-256 differs); "
            "start a new run with --init-from"
        )
    try:
        method.warm_start(checkpoint["method"])
    except InputError:
        raise
    except Exception as exc:  # shapes or names differ: another size, direction or option
        raise InputError(
            f"{path}: its networks do not fit this run's ({_mismatch(exc)}); train with the options the source "
            "was trained with (see its config.yaml) or without --init-from"
        ) from None


def _mismatch(exc: Exception, limit: int = 160) -> str:
    """The first specific line of torch's load_state_dict error (which tensor differs), shortened."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict") else first_line(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    """(SHA-256, checkpoint) of one read of ``path``: tensors and plain containers only (``weights_only``)."""
    import torch

    if path.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise InputError(f"{path}: {path.stat().st_size / 2**30:.1f} GiB is far more than a selfden checkpoint; "
                         "give a run folder of selfden train")
    data = path.read_bytes()
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: cannot read checkpoint: {first_line(exc)}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("method"), dict):
        raise InputError(f"{path}: not a selfden checkpoint (no method state)")
    return hashlib.sha256(data).hexdigest(), checkpoint
