"""Direct denoiser: one deterministic pass to the MMSE estimate.

Salmon & Krull, "Direct Unsupervised Denoising", ICCVW 2023 (arXiv 2310.18116): a network
trained with MSE to map the noisy image to the signal decoder's output for one posterior
sample converges to the mean over samples, i.e. the MMSE estimate, without sampling.
Architecture: the ladder VAE's bottom-up path with a deterministic U-Net-like top-down path
(skip connections instead of latents).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from selfden.methods.cosdd.blocks import BottomUp, GatedResBlock, Upsample, conv_of_concat


class DirectDenoiser(nn.Module):
    """Noisy normalised (B, 1, H, W) -> estimate of the signal (B, 1, H, W)."""

    def __init__(self, features: int, downsample: Sequence[bool]) -> None:
        """``downsample[i]``: whether level ``i`` (bottom first) halves the resolution."""
        super().__init__()
        f, flags, levels = features, list(downsample), len(downsample)
        self.features = f
        self.bottom_up = BottomUp(f, flags)
        self.merges = nn.ModuleList(nn.Conv2d(f if i == levels - 1 else 2 * f, f, 1) for i in range(levels))
        self.blocks = nn.ModuleList(GatedResBlock(f) for _ in range(levels))
        self.ups = nn.ModuleList(Upsample(f) if down else nn.Identity() for down in flags)
        self.head = nn.Conv2d(f, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.bottom_up(x)
        h = skips[-1]
        for i in reversed(range(len(skips))):
            top = i == len(skips) - 1
            merged = self.merges[i](h) if top else conv_of_concat(self.merges[i], h, skips[i], self.features)
            h = self.ups[i](self.blocks[i](merged))
        return self.head(h)
