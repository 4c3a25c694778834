"""Training a run: check everything, train on one or more ranks, export the model, report.

images -> statistics and crops (``selfden.data``) -> a method from the registry -> the generic
trainer -> the exported package in ``RUN/model/``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from selfden.data import StackLike
from selfden.normalisation import NormalisationKind
from selfden.runs.checks import check_crops, check_run_dir, has_checkpoint, removed_if_untrained
from selfden.runs.config import RunConfig, save_run_config
from selfden.runs.crops import training_data
from selfden.runs.export import export_run, trained_orientations
from selfden.runs.warm_start import apply_source
from selfden.training.progress import ProgressReporter

if TYPE_CHECKING:  # the methods import torch, which this module loads only to train
    from selfden.methods.base import Method, Note

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What a finished (or interrupted) training produced."""

    run_dir: Path
    model_dir: Path | None
    steps: int
    elapsed_seconds: float
    best_val_loss: float | None
    interrupted: bool
    parameter_count: int
    device: str
    method: str = ""
    #: Orientations the exported model was trained in (what ``--tta`` averages); 1 without a model.
    orientations: int = 1
    #: What the exported model achieves, judged without a clean image (``Method.outcome_notes``).
    outcome: tuple[Note, ...] = ()


def train_run(
    config: RunConfig, run_dir: Path, resume: bool = False, progress: ProgressReporter | None = None
) -> RunResult | None:
    """Train ``config`` in ``run_dir`` (new, or resumed from its last checkpoint), then export the model.

    With ``trainer.devices`` > 1 (or under torchrun) the training is data-parallel: this process
    is rank 0 and returns the result; ranks > 0 started by torchrun return None.

    Every option is checked before ``run_dir`` is touched; a new run that fails before its first
    checkpoint removes what it created; SIGTERM stops it as Ctrl-C does (checkpoint, ``interrupted``).
    """
    from selfden.training import data_parallel, resolve_device
    from selfden.training.signals import sigterm_as_interrupt

    check_crops(config.method, config.method_config, config.data.patch_size, config.data.batch_size)
    world_size = data_parallel.world_size_for(config.trainer.devices)
    data_parallel.per_rank_batch(config.data.batch_size, world_size)
    backend = data_parallel.backend_for(resolve_device(config.trainer.device))
    launched = data_parallel.torchrun_world()
    if launched is not None and not launched.is_main:  # rank 0 checks and cleans the folder
        restore = resume and has_checkpoint(run_dir)
        return data_parallel.run_ranks(world_size, backend, _train_rank, config, run_dir, restore, progress=progress)
    restore = check_run_dir(run_dir, resume)
    with sigterm_as_interrupt(), removed_if_untrained(run_dir):
        return data_parallel.run_ranks(world_size, backend, _train_rank, config, run_dir, restore, progress=progress)


def _train_rank(
    config: RunConfig, run_dir: Path, resume: bool, progress: ProgressReporter | None = None
) -> RunResult | None:
    """One process's part of :func:`train_run`; rank 0 (the only one without a group) writes and exports."""
    from selfden.io.reading import open_image
    from selfden.methods import get_method
    from selfden.training import data_parallel, resolve_device, seed_everything, train

    rank = data_parallel.current()
    stacks = [open_image(Path(p), config.data.max_pixels) for p in config.data.inputs]
    method_cls = get_method(config.method)
    if rank.is_main and config.normalisation is None:
        config = _with_normalisation(config, stacks, method_cls.normalisation_kind)
    config = data_parallel.broadcast(config)  # torchrun ranks may have drawn other seeds; rank 0's config rules
    norm = config.normalisation
    assert norm is not None  # set just above, or by the run's first start
    seed_everything(config.seed)  # the same on every rank: identical initial weights
    device = data_parallel.rank_device(resolve_device(config.trainer.device))
    method = method_cls(config.method_config, norm, device)
    if not resume:  # every rank: identical initial weights
        if config.init_from is not None:
            apply_source(method, config.init_from)
        elif (prior := method.prior_weights()) is not None:
            method.warm_start(prior)

    data_rng = np.random.default_rng(config.seed)
    crops = data_parallel.per_rank_batch(config.data.batch_size, rank.world_size)
    data = training_data(config, stacks, norm, method.config.training_orientations(), data_rng, crops)
    if rank.is_main:  # only now: every check above could still fail, and a failed start leaves nothing
        run_dir.mkdir(parents=True, exist_ok=True)
        save_run_config(run_dir, config)
    result = train(
        method, data.next_batch, data.val_batches, run_dir, config.trainer,
        resume=resume, progress=progress, data_rng=data_rng,
    )
    if not rank.is_main:
        return None
    model_dir, outcome = None, ()
    if not result.interrupted:
        model_dir = export_run(run_dir, method=method, sample_raw=data.val_frame, device=str(device))
        outcome = _outcome(method, data.val_batches)  # the exported weights: export_run loaded them
    return RunResult(
        run_dir=run_dir,
        model_dir=model_dir,
        steps=result.steps,
        elapsed_seconds=result.elapsed_seconds,
        best_val_loss=result.best_val_loss,
        interrupted=result.interrupted,
        parameter_count=method.parameter_count(),
        device=str(device) if rank.world_size == 1 else f"{rank.world_size} x {device.type}",
        method=config.method,
        orientations=len(trained_orientations(config, method)) if model_dir is not None else 1,
        outcome=outcome,
    )


def _outcome(method: Method, val_batches: Sequence[np.ndarray]) -> tuple[Note, ...]:
    """The method's ground-truth-free verdict on its validation crops; nothing if it fails (a check
    must not cost a finished training its result)."""
    import torch

    try:
        return method.outcome_notes([torch.from_numpy(np.asarray(b)).to(method.device) for b in val_batches])
    except Exception:
        logger.exception("could not judge the trained model against a simple filter")
        return ()


def _with_normalisation(config: RunConfig, stacks: list[StackLike], kind: NormalisationKind) -> RunConfig:
    """``config`` with the training set's intensity statistics and the method's normalisation."""
    from selfden.data import compute_stats, normalisation_for

    stats = compute_stats(stacks)
    return config.model_copy(update={"normalisation": normalisation_for(stats, kind), "intensity_stats": stats})
