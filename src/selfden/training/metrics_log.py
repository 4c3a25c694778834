"""``metrics.jsonl``: one JSON object per line, ``{"step", "elapsed_seconds", "kind", <metrics>}``.

``kind`` is ``"train"`` (metrics averaged over a logging interval) or ``"val"`` (averaged over
the validation batches). Non-finite values are written as ``null`` so every line is strict JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from selfden.io.atomic import atomic_write

MetricKind = Literal["train", "val"]


class MetricsLog:
    """Appends lines to a ``metrics.jsonl`` file (opened per write, so a crash loses nothing)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, step: int, elapsed_seconds: float, kind: MetricKind, metrics: Mapping[str, float]) -> None:
        """Append one line."""
        record: dict[str, Any] = {"step": step, "elapsed_seconds": round(elapsed_seconds, 3), "kind": kind}
        record.update({key: _finite_or_none(value) for key, value in metrics.items()})
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def reset(self) -> None:
        """Start an empty log (a fresh run in this folder)."""
        self.path.unlink(missing_ok=True)

    def drop_after(self, step: int) -> None:
        """Forget lines beyond ``step``: a resumed run redoes the steps after its checkpoint."""
        if not self.path.exists():
            return
        kept = [record for record in read_metrics(self.path) if record.get("step", 0) <= step]
        with atomic_write(self.path, binary=False) as handle:
            handle.write("".join(json.dumps(record) + "\n" for record in kept))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file; a half-written last line is skipped."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        if isinstance(record, dict):
            records.append(record)
    return records


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
