"""Quality against training time: copies of a run's checkpoints taken while it trains.

A run writes ``checkpoints/last.pt`` about once a minute; ``Snapshots`` copies each new one aside
(named by its modification time) so that, after training, every copy can be scored. Used by
bsd68.py and peers.py.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any


class Snapshots(threading.Thread):
    """Copies each new ``last.pt`` of a training run aside until stopped."""

    def __init__(self, run_dir: Path, folder: Path) -> None:
        super().__init__(daemon=True)
        self.source, self.folder = run_dir / "checkpoints" / "last.pt", folder
        self.done = threading.Event()

    def run(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        seen = None
        while not self.done.wait(2.0):
            try:
                stamp = self.source.stat().st_mtime_ns
                if stamp != seen:
                    shutil.copyfile(self.source, self.folder / f"snap-{stamp}.pt")
                    seen = stamp
            except FileNotFoundError:
                continue


def load_snapshots(folder: Path) -> list[dict[str, Any]]:
    """Every snapshot's checkpoint, in step order (read once: there can be dozens)."""
    import torch

    saved = [torch.load(p, map_location="cpu", weights_only=True) for p in folder.glob("snap-*.pt")]
    return sorted(saved, key=lambda checkpoint: checkpoint["step"])


def at_marks(saved: list[dict[str, Any]], marks: list[float]) -> list[dict[str, Any]]:
    """For each mark (minutes), the last snapshot saved by then, each once, plus the last of all."""
    chosen = {saved[-1]["step"]: saved[-1]} if saved else {}
    for mark in marks:
        before = [checkpoint for checkpoint in saved if checkpoint["elapsed_seconds"] <= 60 * mark + 1]
        if before:
            chosen[before[-1]["step"]] = before[-1]
    return [chosen[step] for step in sorted(chosen)]
