"""What a training run leaves behind: the run folder's layout and the result of ``train``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from selfden.errors import SelfdenError


class TrainingDiverged(SelfdenError):
    """A training or validation loss became NaN or infinite; training stopped."""


@dataclass(frozen=True)
class RunPaths:
    """Files the trainer writes inside a run folder."""

    run_dir: Path

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    @property
    def report(self) -> Path:
        return self.run_dir / "report.png"


StopReason = Literal["max_steps", "max_minutes", "early_stopping", "interrupted"]


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`selfden.training.train`."""

    steps: int
    elapsed_seconds: float
    #: Lowest averaged ``val_loss`` seen over the whole run (resumes included); None if never validated.
    best_val_loss: float | None
    paths: RunPaths
    #: Last logged train metrics (averaged over the last interval) merged with the last validation's.
    final_metrics: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    stop_reason: StopReason = "max_steps"
    #: Whether ``report.png`` was written this time.
    report_written: bool = False

    @property
    def best_checkpoint(self) -> Path | None:
        """``best.pt`` if it exists."""
        return self.paths.best_checkpoint if self.paths.best_checkpoint.exists() else None
