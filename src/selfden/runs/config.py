"""A run's config, typed: what RUN/config.yaml holds, and reading and writing it.

The method config is validated once, by the method's own config class; the trainer's settings
are a :class:`~selfden.training.config.TrainerConfig`, which holds the run's seed. config.yaml
keeps the layout run ids are computed from: the seed at the top level, the trainer's settings
without it. Files of earlier versions, whose trainer section also held an unused seed of 0,
load and resume: the top-level seed is the run's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel, ConfigDict, Field, SerializeAsAny, SerializerFunctionWrapHandler, ValidationInfo, field_validator,
    model_serializer, model_validator,
)

from selfden import __version__
from selfden.data import IntensityStats
from selfden.errors import InputError
from selfden.geometry.orientations import IDENTITY_ONLY
from selfden.io.atomic import atomic_write_text
from selfden.methods.base import MethodConfig
from selfden.normalisation import Normalisation
from selfden.runs.checks import first_line
from selfden.runs.warm_start import InitFrom
from selfden.training.config import TrainerConfig

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
        None, ge=1, description="Refuse input frames of more pixels, before decoding (None: selfden.io.limits' default)."
    )

    def orientations(self, method_allows: Sequence[str]) -> tuple[str, ...]:
        """The orientations training crops are drawn in: the method's, unless augmentation is off."""
        return IDENTITY_ONLY if self.augment is False else tuple(method_allows)


class RunConfig(BaseModel):
    """Everything needed to rebuild a run: saved as RUN/config.yaml."""

    model_config = ConfigDict(extra="forbid")

    method: str
    method_config: SerializeAsAny[MethodConfig]
    data: DataConfig
    trainer: TrainerConfig
    #: Set when training starts, from the training set's statistics (None before).
    normalisation: Normalisation | None = None
    intensity_stats: IntensityStats | None = None
    #: The checkpoint whose networks the run started from (``--init-from``); None: fresh weights.
    init_from: InitFrom | None = None
    selfden_version: str = __version__

    @property
    def seed(self) -> int:
        """The run's seed (initial weights, crops, masks): the trainer's, recorded even when the user gave none."""
        return self.trainer.seed

    @model_validator(mode="before")
    @classmethod
    def _seed_into_trainer(cls, values: Any) -> Any:
        """config.yaml's top-level seed is the trainer's (it overrides the unused one older files kept there)."""
        if not isinstance(values, dict) or "seed" not in values:
            return values
        values = dict(values)
        seed = values.pop("seed")
        trainer = values.get("trainer")
        if isinstance(trainer, dict):
            values["trainer"] = {**trainer, "seed": seed}
        elif isinstance(trainer, TrainerConfig):
            values["trainer"] = trainer.model_copy(update={"seed": seed})
        return values

    @field_validator("method_config", mode="before")
    @classmethod
    def _method_config(cls, value: Any, info: ValidationInfo) -> MethodConfig:
        """Validated by the config class of the run's method (looked up in the registry)."""
        from selfden.methods import get_method

        if "method" not in info.data:  # the method's own error says what is wrong with it
            raise ValueError("needs a valid method")
        config_class = get_method(info.data["method"]).config_class
        if isinstance(value, MethodConfig) and not isinstance(value, config_class):
            raise ValueError(f"a {type(value).__name__} is not a config of {info.data['method']}")
        return value if isinstance(value, config_class) else config_class.model_validate(value)

    @model_serializer(mode="wrap")
    def _file_layout(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """config.yaml's layout: the seed after the trainer's settings, at the top level."""
        fields = handler(self)
        if "trainer" not in fields:
            return fields
        layout: dict[str, Any] = {}
        for key, value in fields.items():
            if key == "init_from" and value is None:
                continue  # written only when set: the files (and run ids) of fresh runs stay as they were
            if key == "trainer":
                layout["trainer"] = {k: v for k, v in value.items() if k != "seed"}
                layout["seed"] = value["seed"]
            else:
                layout[key] = value
        return layout


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """RUN/config.yaml as written (what run ids are computed from); a clear error when missing or broken."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise InputError(f"{run_dir}: not a selfden run folder (no {CONFIG_FILE})")
    try:
        values = yaml.safe_load(path.read_text())
    except Exception as exc:  # unreadable or not YAML: either way the file is unusable
        raise InputError(f"{path}: cannot read run config: {first_line(exc)}") from None
    if not isinstance(values, dict):
        raise InputError(f"{path}: cannot read run config: expected a mapping of settings, got {type(values).__name__}")
    return values


def load_run_config(run_dir: Path) -> RunConfig:
    """Read RUN/config.yaml, with a clear error when it is missing or broken."""
    values = read_run_config(run_dir)
    try:
        return RunConfig.model_validate(values)
    except Exception as exc:  # pydantic, or a method the registry does not know
        raise InputError(f"{run_dir / CONFIG_FILE}: cannot read run config: {first_line(exc)}") from None


def save_run_config(run_dir: Path, config: RunConfig) -> None:
    """Write RUN/config.yaml atomically."""
    atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
