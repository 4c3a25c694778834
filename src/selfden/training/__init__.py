"""The generic trainer: time budget, validation, checkpoints and resume, metrics log, progress.

A run folder receives ``metrics.jsonl``, ``checkpoints/last.pt`` (+ ``best.pt`` by ``val_loss``)
and ``report.png``. The trainer talks to methods only through :class:`selfden.methods.base.Method`.
"""

from selfden.training.checkpoint import load_checkpoint
from selfden.training.config import TrainerConfig
from selfden.training.device import resolve_device, seed_everything
from selfden.training.loop import train
from selfden.training.progress import ProgressReporter, ProgressState, RichProgress
from selfden.training.result import RunPaths, TrainingDiverged, TrainResult

__all__ = [
    "ProgressReporter",
    "ProgressState",
    "RichProgress",
    "RunPaths",
    "TrainResult",
    "TrainerConfig",
    "TrainingDiverged",
    "load_checkpoint",
    "resolve_device",
    "seed_everything",
    "train",
]
