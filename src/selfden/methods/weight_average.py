"""An exponential moving average of a network's weights (Polyak averaging).

GAN generators oscillate around a good solution; the running average of their weights
sits near its centre (Yazıcı et al., "The unusual effectiveness of averaging in GAN
training", ICLR 2019). The average is bias-corrected (as Adam's moments): after ``n``
updates it is the exponentially weighted mean of those ``n`` weights alone, a plain mean
while ``n`` is small against ``1 / (1 - decay)``, so the initial weights carry no fixed share.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def warm_decay(decay: float, updates: int) -> float:
    """The decay at update number ``updates`` (0-based) that keeps the average bias-corrected:
    ``decay * (1 - decay**n) / (1 - decay**(n + 1))``; 0 at the first update (a copy)."""
    return decay * (1.0 - decay**updates) / (1.0 - decay ** (updates + 1))


class WeightAverage:
    """``avg <- d * avg + (1 - d) * weights`` after every update; off (the network itself) when decay is 0."""

    def __init__(self, network: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.average: nn.Module | None = None
        if decay > 0:
            self.average = copy.deepcopy(network).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        if self.average is None:
            return
        d = warm_decay(self.decay, self.updates)
        for avg, new in zip(self.average.state_dict().values(), network.state_dict().values()):
            if avg.dtype.is_floating_point:
                avg.mul_(d).add_(new.detach(), alpha=1.0 - d)
            else:
                avg.copy_(new)
        self.updates += 1

    def model(self, network: nn.Module) -> nn.Module:
        """The averaged network in eval mode (``network`` itself when averaging is off)."""
        return (self.average if self.average is not None else network).eval()

    def state_dict(self) -> dict[str, Any]:
        weights = self.average.state_dict() if self.average is not None else {}
        return {"updates": self.updates, "weights": weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        if self.average is not None and state["weights"]:
            self.average.load_state_dict(state["weights"])
