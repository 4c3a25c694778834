"""Learning-rate schedules that follow the training budget (steps or minutes, whichever ends first).

The trainer reports the share of the budget used before every step
(``Method.on_budget_progress``); a schedule that knows where the budget ends can anneal to
zero exactly there, which a step-based schedule cannot do under a wall-clock budget.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

LrSchedule = Literal["constant", "cosine"]


def cosine_rate(peak: float, fraction: float) -> float:
    """``peak`` at the start of the budget, half-cosine down to 0 at its end."""
    fraction = min(max(fraction, 0.0), 1.0)
    return 0.5 * peak * (1.0 + math.cos(math.pi * fraction))


def follow_budget(optimizer: torch.optim.Optimizer, schedule: LrSchedule, peak: float, fraction: float) -> None:
    """Set every parameter group's learning rate for ``fraction`` of the budget used."""
    if schedule == "constant":
        return
    rate = cosine_rate(peak, fraction)
    for group in optimizer.param_groups:
        group["lr"] = rate
