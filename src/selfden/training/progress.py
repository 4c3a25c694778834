"""Progress reporting: what the trainer tells a progress display, and a rich progress bar.

The trainer only calls a :class:`ProgressReporter`; the terminal belongs to the CLI, which
builds a :class:`RichProgress` (or passes nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn


@dataclass(frozen=True)
class ProgressState:
    """A snapshot of a training run, sent after every step."""

    step: int
    elapsed_seconds: float
    max_steps: int | None
    max_seconds: float | None
    #: Steps per second measured in this session (None before the first step).
    steps_per_second: float | None = None
    #: Latest train metrics (smoothed) and latest validation metrics.
    train: Mapping[str, float] = field(default_factory=dict)
    val: Mapping[str, float] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Share of the budget used: whichever of steps or time ends first decides."""
        parts = [0.0]
        if self.max_steps:
            parts.append(self.step / self.max_steps)
        if self.max_seconds:
            parts.append(self.elapsed_seconds / self.max_seconds)
        return min(1.0, max(parts))

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left until the first budget ends, or None when unknown."""
        etas = []
        if self.max_seconds:
            etas.append(max(0.0, self.max_seconds - self.elapsed_seconds))
        if self.max_steps and self.steps_per_second:
            etas.append(max(0, self.max_steps - self.step) / self.steps_per_second)
        return min(etas) if etas else None


class ProgressReporter(Protocol):
    """Receives training progress; ``start`` once, ``update`` after steps, ``finish`` once."""

    def start(self, state: ProgressState) -> None: ...

    def update(self, state: ProgressState) -> None: ...

    def finish(self, state: ProgressState) -> None: ...


class RichProgress:
    """A rich progress bar: step, losses, elapsed time and ETA to the first budget's end."""

    def __init__(
        self,
        console: Console | None = None,
        description: str = "training",
        metric_keys: Sequence[str] = ("loss", "val_loss"),
    ) -> None:
        self._description = description
        self._metric_keys = tuple(metric_keys)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[status]}"),
            console=console,
            refresh_per_second=4,
        )
        self._task: TaskID | None = None

    def start(self, state: ProgressState) -> None:
        """Show the bar."""
        self._progress.start()
        self._task = self._progress.add_task(self._description, total=1000, status=self.status(state))
        self.update(state)

    def update(self, state: ProgressState) -> None:
        """Move the bar and refresh the status text."""
        if self._task is not None:
            self._progress.update(self._task, completed=1000 * state.fraction, status=self.status(state))

    def finish(self, state: ProgressState) -> None:
        """Draw the final state and release the terminal."""
        self.update(state)
        self._progress.stop()

    def status(self, state: ProgressState) -> str:
        """``step 120/1000 · loss 0.0123 · val_loss 0.0145 · 1:02/15:00 · ETA 3:10``."""
        steps = f"step {state.step}" + (f"/{state.max_steps}" if state.max_steps else "")
        parts = [steps, *self._metric_texts(state)]
        budget = f"/{format_seconds(state.max_seconds)}" if state.max_seconds else ""
        parts.append(format_seconds(state.elapsed_seconds) + budget)
        eta = state.eta_seconds
        parts.append("ETA " + ("--:--" if eta is None else format_seconds(eta)))
        return " · ".join(parts)

    def _metric_texts(self, state: ProgressState) -> list[str]:
        values = {**state.train, **state.val}
        return [f"{key} {values[key]:.4g}" for key in self._metric_keys if key in values]


def format_seconds(seconds: float) -> str:
    """``75`` → ``1:15``; ``3725`` → ``1:02:05``."""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
