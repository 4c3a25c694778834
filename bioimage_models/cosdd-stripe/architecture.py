"""Network architecture of a selfden 0.1.0 package: the source of selfden.methods.cosdd.blocks, selfden.methods.cosdd.direct_denoiser,
copied at export time. Needs only PyTorch."""
from __future__ import annotations

# ---- selfden.methods.cosdd.blocks --------------------------------------------
"""Building blocks shared by the ladder VAE and the direct denoiser."""


import torch
import torch.nn.functional as F
from torch import nn


class GatedResBlock(nn.Module):
    """2 x [BatchNorm -> Mish -> 3x3 conv], a tanh*sigmoid gate (1x1 conv to 2F), plus the skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels), nn.Mish(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels), nn.Mish(), nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.gate = nn.Conv2d(channels, 2 * channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.gate(self.body(x)).chunk(2, dim=1)
        return x + torch.tanh(a) * torch.sigmoid(b)


class Upsample(nn.Module):
    """Bilinear x2 then a 1x1 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))


def downsample(channels: int) -> nn.Conv2d:
    """3x3 stride-2 conv: halves height and width (inputs are multiples of the size step)."""
    return nn.Conv2d(channels, channels, 3, stride=2, padding=1)


def stem(features: int) -> nn.Sequential:
    """5x5 conv from the one input channel, then a residual block."""
    return nn.Sequential(nn.Conv2d(1, features, 5, padding=2), GatedResBlock(features))


class BottomUp(nn.Module):
    """Stem then one residual block per level, some levels downsampling first; returns every level's features."""

    def __init__(self, features: int, downsample_flags: list[bool]) -> None:
        super().__init__()
        self.stem = stem(features)
        self.levels = nn.ModuleList(
            nn.Sequential(*([downsample(features)] if down else []), GatedResBlock(features))
            for down in downsample_flags
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(x)
        out = []
        for level in self.levels:
            h = level(h)
            out.append(h)
        return out

# ---- selfden.methods.cosdd.direct_denoiser -----------------------------------
"""Direct denoiser: one deterministic pass to the MMSE estimate.

Salmon & Krull, "Direct Unsupervised Denoising", ICCVW 2023 (arXiv 2310.18116): a network
trained with MSE to map the noisy image to the signal decoder's output for one posterior
sample converges to the mean over samples, i.e. the MMSE estimate, without sampling.
Architecture: the ladder VAE's bottom-up path with a deterministic U-Net-like top-down path
(skip connections instead of latents).
"""


from collections.abc import Sequence

import torch
from torch import nn



class DirectDenoiser(nn.Module):
    """Noisy normalised (B, 1, H, W) -> estimate of the signal (B, 1, H, W)."""

    def __init__(self, features: int, downsample: Sequence[bool]) -> None:
        """``downsample[i]``: whether level ``i`` (bottom first) halves the resolution."""
        super().__init__()
        f, flags, levels = features, list(downsample), len(downsample)
        self.bottom_up = BottomUp(f, flags)
        self.merges = nn.ModuleList(nn.Conv2d(f if i == levels - 1 else 2 * f, f, 1) for i in range(levels))
        self.blocks = nn.ModuleList(GatedResBlock(f) for _ in range(levels))
        self.ups = nn.ModuleList(Upsample(f) if down else nn.Identity() for down in flags)
        self.head = nn.Conv2d(f, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.bottom_up(x)
        h = skips[-1]
        for i in reversed(range(len(skips))):
            merged = self.merges[i](h if i == len(skips) - 1 else torch.cat([h, skips[i]], dim=1))
            h = self.ups[i](self.blocks[i](merged))
        return self.head(h)
