"""A toy Method for the trainer's tests: a 3×3 convolution learning ``x → 3×3 mean of x`` with Adam.

In a module of its own so that the data-parallel tests' spawned ranks can import it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from selfden.methods.base import Method, MethodConfig, Normalisation


class ToyConfig(MethodConfig):
    lr: float = 0.05


class ToyBlur(Method):
    """Learns ``x → 3×3 mean of x``; every optimiser step goes through ``Method.optimise``."""

    name = "toy-blur"
    config_class = ToyConfig

    def __init__(self, config: ToyConfig | None = None, *, seed: int = 0, device: str = "cpu") -> None:
        config = config or ToyConfig()
        super().__init__(config, Normalisation(0.0, 1.0), torch.device(device))
        torch.manual_seed(seed)
        self.net = torch.nn.Conv2d(1, 1, 3, padding=1).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        target = F.avg_pool2d(batch, 3, stride=1, padding=1, count_include_pad=False)
        return F.mse_loss(self.net(batch), target)

    def training_step(self, batch: torch.Tensor) -> dict[str, float]:
        loss = self.loss(batch)
        self.optimise(self.opt, loss)
        return {"loss": loss.item()}

    def validation_step(self, batch: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            return {"val_loss": self.loss(batch).item()}

    def denoise(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net(batch)

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])

    def warm_start(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])

    def export_graphs(self) -> dict[str, torch.nn.Module]:
        return {"denoiser": self.net.eval()}

    @property
    def size_step(self) -> int:
        return 1

    @property
    def halo(self) -> int:
        return 1
