"""Trainer settings: budget, validation and checkpoint cadence, device, precision, seed."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DeviceName = Literal["auto", "cpu", "cuda"]


class TrainerConfig(BaseModel):
    """How long and how to train; method-independent.

    Training stops at whichever budget ends first: ``max_minutes`` of wall-clock time
    (counting time carried over by a resume) or ``max_steps`` training steps.
    """

    model_config = ConfigDict(extra="forbid")

    max_minutes: float | None = Field(default=None, gt=0, description="wall-clock budget, resumes included")
    max_steps: int | None = Field(default=None, ge=1, description="total training steps, resumes included")
    val_every_steps: int = Field(default=200, ge=1, description="validate after this many steps ...")
    val_every_seconds: float = Field(default=30.0, gt=0, description="... and at least this often")
    log_every_steps: int = Field(default=50, ge=1, description="one averaged 'train' line per interval")
    # A minute: a kill -9 (or a power cut) loses at most that; a save takes well under a second.
    checkpoint_every_minutes: float = Field(default=1.0, ge=0, description="0 saves after every step")
    early_stopping_patience: int | None = Field(
        default=None, ge=1, description="stop after this many validations without a better val_loss"
    )
    device: DeviceName = "auto"
    devices: int = Field(
        default=1, ge=1,
        description="data-parallel processes (one GPU each on CUDA); the batch is split evenly over them. "
        "Started by selfden.runs.train.train_run, or by torchrun, whose world size then applies",
    )
    bf16: bool = Field(default=True, description="bf16 autocast on CUDA (when the GPU supports it)")
    bf16_on_cpu: bool | None = Field(
        default=None, description="bf16 autocast on CPU: None turns it on where the CPU computes bf16 natively "
        "(AVX512-BF16 or AMX) and the method measured it paying (MethodConfig.cpu_bf16_pays); true or false forces it"
    )
    seed: int = 0
    write_report: bool = Field(default=True, description="write report.png at the end")

    @model_validator(mode="after")
    def _needs_a_budget(self) -> TrainerConfig:
        if self.max_minutes is None and self.max_steps is None:
            raise ValueError("no training budget: set max_minutes, max_steps or both")
        return self

    @property
    def max_seconds(self) -> float | None:
        """``max_minutes`` in seconds."""
        return None if self.max_minutes is None else 60.0 * self.max_minutes
