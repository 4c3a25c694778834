"""Signal decoder: maps s_code to the expected clean image E[x | z].

Trained with MSE against the noisy input on a detached s_code, so its loss never reaches the
encoder: by the Noise2Noise argument its optimum is the signal (Salmon & Krull, WACV 2025).
"""

from __future__ import annotations

import torch
from torch import nn


class SignalDecoder(nn.Module):
    """Three kxk convs F -> F (k = 3 unless given; ReLU after each), then a 3x3 conv F -> 1."""

    def __init__(self, features: int, kernel: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(3):
            layers += [nn.Conv2d(features, features, kernel, padding=kernel // 2), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Conv2d(features, 1, 3, padding=1))

    def forward(self, s_code: torch.Tensor) -> torch.Tensor:
        return self.net(s_code)
