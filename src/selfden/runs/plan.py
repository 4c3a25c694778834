"""Planning a training: user options -> a checked RunConfig, before any run folder exists.

A new run validates every option (unknown keys and bad values are errors naming them), applies
the method's device defaults once, checks the crops, then lets the method look at the images
(``Method.prepare``: choices made from the data, notes for the user). A resumed run takes its
saved config with a new budget.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfden.errors import SelfdenError
from selfden.geometry.orientations import IDENTITY_ONLY
from selfden.methods.base import MethodConfig, Note
from selfden.runs.checks import check_crops, validated
from selfden.runs.config import DataConfig, RunConfig, load_run_config
from selfden.runs.warm_start import describe_source
from selfden.training.config import TrainerConfig


@dataclass(frozen=True)
class RunPlan:
    """A run's config, checked and ready to train, and what the method says about the data."""

    config: RunConfig
    notes: tuple[Note, ...] = ()


def new_run_config(
    method: str,
    inputs: Sequence[Path],
    method_options: dict[str, Any],
    data_options: dict[str, Any],
    trainer_options: dict[str, Any],
    seed: int | None,
    init_from: Path | None = None,
) -> RunConfig:
    """Validate user options into a RunConfig with the method's device defaults (no image is read).

    ``seed`` None draws one, which the config records. ``init_from``: a run of the same method
    whose networks the new run starts from (checked now, loaded when training starts).
    """
    from selfden.methods import get_method
    from selfden.training.device import resolve_device

    method_config = validated(get_method(method).config_class, method_options, f"{method} option")
    seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    trainer = validated(TrainerConfig, {**trainer_options, "seed": seed}, "trainer option")
    # Device-dependent defaults (e.g. COSDD's size "auto") are fixed now, so the saved config is explicit.
    defaults = method_config.device_defaults(resolve_device(trainer.device).type)
    crops = {"patch_size": defaults.patch_size, "batch_size": defaults.batch_size}
    data_options = {**{k: v for k, v in crops.items() if v is not None}, **data_options}
    data = validated(DataConfig, {"inputs": [str(Path(p).resolve()) for p in inputs], **data_options}, "data option")
    check_crops(method, defaults.config, data.patch_size, data.batch_size)
    if data.augment and defaults.config.training_orientations() == IDENTITY_ONLY:
        raise SelfdenError(
            f"--augment: {method} trains on crops as recorded (its noise model depends on the scan direction); leave it out"
        )
    source = None
    if init_from is not None:  # load_run_config: a clear error when it is not a run folder
        source = describe_source(init_from, load_run_config(init_from).method, method)
    return RunConfig(method=method, method_config=defaults.config, data=data, trainer=trainer, init_from=source)


def plan_run(config: RunConfig) -> RunPlan:
    """What ``selfden train`` trains: a :func:`new_run_config` after the method's look at its images."""
    from selfden.io.reading import open_image
    from selfden.methods import get_method

    _check_batch_split(config)
    stacks = [open_image(Path(p), config.data.max_pixels) for p in config.data.inputs]
    method_cls = get_method(config.method)
    method_config, notes = method_cls.prepare(config.method_config, stacks)
    start = method_cls.start_note(method_config) if config.init_from is None else None
    extra = [note for note in (start, _precision_note(config.method, config.trainer, method_config)) if note]
    return RunPlan(config.model_copy(update={"method_config": method_config}), (*notes, *extra))


def _precision_note(method: str, trainer: TrainerConfig, method_config: MethodConfig) -> Note | None:
    """Say so when a CPU run trains in bf16 without having been asked to (and how to turn it off)."""
    from selfden.training.device import resolve_device, uses_bf16

    device = resolve_device(trainer.device)
    if device.type != "cpu" or trainer.bf16_on_cpu is not None:
        return None
    if not uses_bf16(device, trainer, method_config.cpu_bf16_pays()):
        return None
    return Note("note", f"training in bf16 autocast: this CPU computes bf16 natively and {method} trains faster "
                        "in it (--no-cpu-bf16 trains in float32)")


def plan_resume(
    run_dir: Path,
    method: str,
    minutes: float | None = None,
    steps: int | None = None,
    devices: int | None = None,
    max_pixels: int | None = None,
) -> RunPlan:
    """The saved config of the run in ``run_dir`` with a new budget (total minutes and steps,
    resumes included), process count or image limit where given."""
    config = load_run_config(run_dir)
    if config.method != method:
        raise SelfdenError(f"{run_dir}: the run trains {config.method}, not {method}")
    changes = {"max_minutes": minutes, "max_steps": steps, "devices": devices}
    changes = {key: value for key, value in changes.items() if value is not None}
    trainer = config.trainer
    if changes:
        trainer = validated(TrainerConfig, {**trainer.model_dump(), **changes}, "trainer option")
    data = config.data
    if max_pixels is not None:
        data = validated(DataConfig, {**data.model_dump(), "max_pixels": max_pixels}, "data option")
    resumed = config.model_copy(update={"trainer": trainer, "data": data})
    _check_batch_split(resumed)
    return RunPlan(resumed)


def _check_batch_split(config: RunConfig) -> None:
    """The batch must split evenly over the processes: said before any note, run folder or process start."""
    from selfden.training import data_parallel

    data_parallel.per_rank_batch(config.data.batch_size, data_parallel.world_size_for(config.trainer.devices))
