"""Run directories: create one from noisy images, train it, resume it, export its model.

This is where the pieces meet: images -> statistics and crops (data) -> a method from the
registry -> the generic trainer -> the exported package in ``RUN/model/``. The CLI calls
these functions and only prints.
"""

from __future__ import annotations

import logging
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from selfden import __version__
from selfden.errors import InputError, SelfdenError
from selfden.geometry.orientations import IDENTITY_ONLY
from selfden.io.atomic import atomic_write_text
from selfden.runs.checks import check_crops, check_run_dir, checkpoint_progress, has_checkpoint
from selfden.runs.checks import first_line as _first_line, removed_if_untrained, validated

if TYPE_CHECKING:  # the methods import torch; run folders are also read where it is not needed yet
    from selfden.methods.base import Note

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
MODEL_DIR = "model"


class DataConfig(BaseModel):
    """How training crops are drawn from the input images."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[str] = Field(description="Noisy training images (absolute paths).")
    patch_size: int = Field(128, ge=1, description="Side of the square training crops, in pixels.")
    batch_size: int = Field(8, ge=1, description="Crops per training step.")
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of frames (or rows, for few frames) kept for validation."
    )
    val_batches: int = Field(4, ge=1, description="Fixed validation batches evaluated at each validation.")
    augment: bool | None = Field(
        None, description="Flip/turn crops into the orientations the method allows; None = yes, False = no."
    )
    max_pixels: int | None = Field(
        None, ge=1, description="Refuse input frames of more pixels, before decoding (None: image_limits' default)."
    )

    def orientations(self, method_allows: Sequence[str]) -> tuple[str, ...]:
        """The orientations training crops are drawn in: the method's, unless augmentation is off."""
        return IDENTITY_ONLY if self.augment is False else tuple(method_allows)


class RunConfig(BaseModel):
    """Everything needed to rebuild a run: saved as RUN/config.yaml."""

    model_config = ConfigDict(extra="forbid")

    method: str
    method_config: dict[str, Any] = Field(default_factory=dict)
    data: DataConfig
    trainer: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    normalisation: dict[str, float] | None = None
    intensity_stats: dict[str, Any] | None = None
    selfden_version: str = __version__


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


def load_run_config(run_dir: Path) -> RunConfig:
    """Read RUN/config.yaml, with a clear error when it is missing or broken."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise InputError(f"{run_dir}: not a selfden run folder (no {CONFIG_FILE})")
    try:
        return RunConfig.model_validate(yaml.safe_load(path.read_text()))
    except Exception as exc:  # pydantic or yaml: either way the file is unusable
        raise InputError(f"{path}: cannot read run config: {_first_line(exc)}") from None


def save_run_config(run_dir: Path, config: RunConfig) -> None:
    """Write RUN/config.yaml atomically."""
    atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


@dataclass(frozen=True)
class RunPlan:
    """A new run's config, checked and ready to train, and what the method says about the data."""

    config: RunConfig
    notes: tuple[Note, ...] = ()


def new_run_config(
    method: str,
    inputs: Sequence[Path],
    method_options: dict[str, Any],
    data_options: dict[str, Any],
    trainer_options: dict[str, Any],
    seed: int | None,
) -> RunConfig:
    """Validate user options into a RunConfig (unknown keys and bad values are errors naming them)."""
    return _planned(method, inputs, method_options, data_options, trainer_options, seed, prepare=False).config


def plan_run(
    method: str,
    inputs: Sequence[Path],
    method_options: dict[str, Any],
    data_options: dict[str, Any],
    trainer_options: dict[str, Any],
    seed: int | None,
) -> RunPlan:
    """What ``selfden train`` trains: :func:`new_run_config`, then the method's look at the images
    (``Method.prepare``: choices made from the data, warnings about it)."""
    return _planned(method, inputs, method_options, data_options, trainer_options, seed, prepare=True)


def _planned(
    method: str,
    inputs: Sequence[Path],
    method_options: dict[str, Any],
    data_options: dict[str, Any],
    trainer_options: dict[str, Any],
    seed: int | None,
    prepare: bool,
) -> RunPlan:
    from selfden.methods import get_method
    from selfden.training import TrainerConfig, resolve_device

    method_cls = get_method(method)
    method_config = validated(method_cls.config_class, method_options, f"{method} option")
    trainer_config = validated(TrainerConfig, trainer_options, "trainer option")
    # Device-dependent defaults (e.g. COSDD's size "auto") are fixed now, so the saved config is explicit.
    device_type = resolve_device(trainer_config.device).type
    defaults = method_config.device_defaults(device_type)
    method_config = defaults.config
    crops = {"patch_size": defaults.patch_size, "batch_size": defaults.batch_size}
    data_options = {**{k: v for k, v in crops.items() if v is not None}, **data_options}
    data = validated(DataConfig, {"inputs": [str(Path(p).resolve()) for p in inputs], **data_options}, "data option")
    check_crops(method, method_config, data.patch_size, data.batch_size)
    if data.augment and method_config.training_orientations() == IDENTITY_ONLY:
        raise SelfdenError(
            f"--augment: {method} trains on crops as recorded (its noise model depends on the scan direction); leave it out"
        )
    notes: tuple[Note, ...] = ()
    if prepare:
        from selfden.io.images import open_image

        method_config, notes = method_cls.prepare(method_config, [open_image(p, data.max_pixels) for p in inputs])
    config = RunConfig(
        method=method,
        method_config=method_config.model_dump(mode="json"),
        data=data,
        trainer=trainer_config.model_dump(mode="json"),
        seed=seed if seed is not None else random.SystemRandom().randrange(2**31),
    )
    return RunPlan(config, notes)


def train_run(config: RunConfig, run_dir: Path, resume: bool = False, progress: Any = None) -> RunResult | None:
    """Train ``config`` in ``run_dir`` (new, or resumed from its last checkpoint), then export the model.

    With ``trainer.devices`` > 1 (or under torchrun) the training is data-parallel: this process
    is rank 0 and returns the result; ranks > 0 started by torchrun return None.

    Every option is checked before ``run_dir`` is touched; a new run that fails before its first
    checkpoint removes what it created; SIGTERM stops it as Ctrl-C does (checkpoint, ``interrupted``).
    """
    from selfden.methods import get_method
    from selfden.training import TrainerConfig, resolve_device
    from selfden.training import data_parallel
    from selfden.training.signals import sigterm_as_interrupt

    trainer_config = validated(TrainerConfig, {**config.trainer, "seed": config.seed}, "trainer option")
    method_config = validated(get_method(config.method).config_class, config.method_config, f"{config.method} option")
    check_crops(config.method, method_config, config.data.patch_size, config.data.batch_size)
    world_size = data_parallel.world_size_for(trainer_config.devices)
    data_parallel.per_rank_batch(config.data.batch_size, world_size)
    backend = data_parallel.backend_for(resolve_device(trainer_config.device))
    launched = data_parallel.torchrun_world()
    if launched is not None and not launched.is_main:  # rank 0 checks and cleans the folder
        restore = resume and has_checkpoint(run_dir)
        return data_parallel.run_ranks(world_size, backend, _train_rank, config, run_dir, restore, progress=progress)
    restore = check_run_dir(run_dir, resume)
    with sigterm_as_interrupt(), removed_if_untrained(run_dir):
        return data_parallel.run_ranks(world_size, backend, _train_rank, config, run_dir, restore, progress=progress)


def _train_rank(config: RunConfig, run_dir: Path, resume: bool, progress: Any = None) -> RunResult | None:
    """One process's part of :func:`train_run`; rank 0 (the only one without a group) writes and exports."""
    from selfden.io.images import open_image
    from selfden.methods import get_method
    from selfden.normalisation import Normalisation
    from selfden.training import TrainerConfig, resolve_device, seed_everything, train
    from selfden.training import data_parallel

    rank = data_parallel.current()
    stacks = [open_image(Path(p), config.data.max_pixels) for p in config.data.inputs]
    method_cls = get_method(config.method)
    if rank.is_main and config.normalisation is None:
        config = _with_normalisation(config, stacks, method_cls.normalisation_kind)
    config = data_parallel.broadcast(config)  # torchrun ranks may have drawn other seeds; rank 0's config rules
    norm = Normalisation(**config.normalisation)
    trainer_config = TrainerConfig.model_validate({**config.trainer, "seed": config.seed})
    seed_everything(config.seed)  # the same on every rank: identical initial weights
    device = data_parallel.rank_device(resolve_device(trainer_config.device))
    method = method_cls(method_cls.config_class.model_validate(config.method_config), norm, device)

    data_rng = np.random.default_rng(config.seed)
    crops = data_parallel.per_rank_batch(config.data.batch_size, rank.world_size)
    next_batch, val_batches, val_frame = _training_data(
        config, stacks, norm, method.config.training_orientations(), data_rng, crops
    )
    if rank.is_main:  # only now: every check above could still fail, and a failed start leaves nothing
        run_dir.mkdir(parents=True, exist_ok=True)
        save_run_config(run_dir, config)
    result = train(
        method, next_batch, val_batches, run_dir, trainer_config, resume=resume, progress=progress, data_rng=data_rng
    )
    if not rank.is_main:
        return None
    model_dir = None
    if not result.interrupted:
        model_dir = export_run(run_dir, method=method, sample_raw=val_frame, device=str(device))
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
    )


def _with_normalisation(config: RunConfig, stacks: list, kind: Any) -> RunConfig:
    """``config`` with the training set's intensity statistics and the method's normalisation."""
    from selfden.data import compute_stats, normalisation_for

    stats = compute_stats(stacks)
    norm = normalisation_for(stats, kind)
    return config.model_copy(
        update={"normalisation": {"offset": norm.offset, "scale": norm.scale}, "intensity_stats": _plain(stats)}
    )


def export_run(
    run_dir: Path,
    out_dir: Path | None = None,
    method: Any = None,
    sample_raw: np.ndarray | None = None,
    validation: Sequence[str] = (),
    device: str | None = None,
    metadata: Any = None,
) -> Path:
    """Export a run's best checkpoint (else its last; the last first for methods whose
    ``export_best_checkpoint`` is False) as a bioimage.io package folder.

    ``validation``: measured results (one sentence each) for the package README's Validation section.
    ``metadata``: a ``selfden.export.metadata.PackageMetadata`` (names, people, purpose, data).
    """
    from selfden.export.ownership import check_export_target, run_identity
    from selfden.export.package import export_package

    config = load_run_config(run_dir)
    target = Path(out_dir) if out_dir is not None else run_dir / MODEL_DIR
    run_id = run_identity(config.model_dump(mode="json"))
    check_export_target(target.absolute(), run_id)  # a target it may not replace stops it before any work
    if method is None:
        method, checkpoint = load_method_and_checkpoint(run_dir, config)
    else:
        checkpoint = _load_weights(method, run_dir)
    progress = checkpoint_progress(checkpoint, run_dir, config.method) or training_progress(run_dir)
    if sample_raw is None:
        sample_raw = _sample_frame(config)
    info = {
        "inputs": [Path(p).name for p in config.data.inputs],
        "method_config": config.method_config,
        "data": config.data.model_dump(mode="json", exclude={"inputs"}),
        "trainer": config.trainer,
        "seed": config.seed,
        **progress,
        **({"device": device} if device else {}),
        "validation": list(validation),
        "run_id": run_id,
    }
    # --tta may average over the orientations the training crops were drawn in.
    symmetries = config.data.orientations(method.config.training_orientations())
    if target.suffix.lower() != ".zip":
        return export_package(method, target, sample_raw, info, symmetries, metadata)
    from selfden.export.archive import write_package_zip

    with tempfile.TemporaryDirectory(prefix="selfden-export-") as temp:
        package = export_package(method, Path(temp) / "model", sample_raw, info, symmetries, metadata)
        return write_package_zip(package, target)


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


def load_method(run_dir: Path, config: RunConfig | None = None) -> Any:
    """Rebuild a run's method on the CPU with its best (else last) weights; see ``_load_weights``."""
    return load_method_and_checkpoint(run_dir, config)[0]


def load_method_and_checkpoint(run_dir: Path, config: RunConfig | None = None) -> tuple[Any, dict[str, Any]]:
    """The method of :func:`load_method` and the checkpoint its weights came from (for its step count)."""
    import torch

    from selfden.methods import get_method
    from selfden.normalisation import Normalisation

    config = config or load_run_config(run_dir)
    if config.normalisation is None:
        raise InputError(f"{run_dir}: the run has no normalisation recorded; it never started training")
    method_cls = get_method(config.method)
    method = method_cls(
        method_cls.config_class.model_validate(config.method_config),
        Normalisation(**config.normalisation),
        torch.device("cpu"),
    )
    return method, _load_weights(method, run_dir)


def _load_weights(method: Any, run_dir: Path) -> dict[str, Any]:
    """Load the method's preferred checkpoint into ``method`` and return it: best.pt, else last.pt (the
    other way round when ``export_best_checkpoint`` is False), passing over one that cannot be read or
    that holds the untrained baseline (the step-0 best.pt of older versions) when the other can stand in."""
    import torch

    names = ("best.pt", "last.pt") if getattr(method, "export_best_checkpoint", True) else ("last.pt", "best.pt")
    loaded, failure = [], None
    for path in (run_dir / "checkpoints" / name for name in names):
        if not path.is_file():
            continue
        try:
            checkpoint = torch.load(path, map_location=method.device, weights_only=True)
            loaded.append((path, checkpoint, checkpoint["method"]))
        except Exception as exc:
            failure = failure or f"{path}: cannot load checkpoint: {_first_line(exc)}"
    if not loaded:
        raise InputError(failure or f"{run_dir}: no checkpoint found in checkpoints/ (best.pt or last.pt)")
    path, checkpoint, state = ([item for item in loaded if item[1].get("step") != 0] or loaded)[0]
    if failure:
        log.warning("%s; using %s", failure, path.name)
    try:
        method.load_state_dict(state)
    except Exception as exc:
        raise InputError(f"{path}: cannot load checkpoint: {_first_line(exc)}") from None
    return checkpoint


def _training_data(
    config: RunConfig,
    stacks: list,
    norm: Any,
    method_orientations: Sequence[str],
    rng: np.random.Generator,
    crops_per_step: int | None = None,
):
    """The trainer's batch source, the fixed validation batches and a raw frame for the package.

    ``crops_per_step``: this rank's share of the batch in data-parallel training (default: all of it).
    """
    from selfden.data import CropSampler, split_train_val, validation_batches

    data = config.data
    train_regions, val_regions = split_train_val(
        stacks, val_fraction=data.val_fraction, rng=rng, patch_size=data.patch_size
    )
    sampler = CropSampler(
        train_regions, data.patch_size, norm, data.orientations(method_orientations), rng=rng
    )
    val = validation_batches(
        val_regions, data.patch_size, data.batch_size, norm, data.val_batches, np.random.default_rng(config.seed + 1)
    )
    first = val_regions[0]
    val_frame = np.asarray(first.stack.frame(first.frame_index), dtype=np.float32)
    crops = crops_per_step or data.batch_size
    return (lambda: sampler.sample(crops)), val, val_frame


def _sample_frame(config: RunConfig) -> np.ndarray:
    from selfden.io.images import open_image

    stack = open_image(Path(config.data.inputs[0]), config.data.max_pixels)
    return np.asarray(stack.frame(len(stack) - 1), dtype=np.float32)


def _plain(stats: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: (list(v) if isinstance(v, tuple) else float(v)) for k, v in asdict(stats).items()}
