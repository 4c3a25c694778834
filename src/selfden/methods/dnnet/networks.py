"""dnnet's two networks: the D-net (a small U-Net denoiser) and the N-net (a per-pixel noise model).

The N-net maps a predicted signal value to the distribution of the noise around it: a
Gaussian (one scale) or a K-component Gaussian mixture whose mean is pinned to exactly zero,
so the D-net alone carries the expected value (Ollion et al., arXiv 2102.08023).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: Poolings of the D-net: inputs must be multiples of 2**DEPTH.
DEPTH = 2
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class ConvBlock(nn.Sequential):
    """Two 3×3 convolutions (zero padding), each followed by LeakyReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.LeakyReLU(0.1),
        )


class UpConv(nn.Sequential):
    """×2 nearest-neighbour upsampling then a 3×3 convolution (no checkerboard artefacts of transposed convs)."""

    def __init__(self, channels: int) -> None:
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1))


class DNet(nn.Module):
    """U-Net with two 2×2 max-poolings and ``filters`` channels at every level; no residual to the input
    (at inference the input pixel itself is visible, in training it was masked)."""

    def __init__(self, filters: int) -> None:
        super().__init__()
        self.encoders = nn.ModuleList([ConvBlock(1, filters), *(ConvBlock(filters, filters) for _ in range(DEPTH))])
        self.ups = nn.ModuleList(UpConv(filters) for _ in range(DEPTH))
        self.decoders = nn.ModuleList(ConvBlock(2 * filters, filters) for _ in range(DEPTH))
        self.head = nn.Conv2d(filters, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for level, encoder in enumerate(self.encoders):
            h = encoder(F.max_pool2d(h, 2) if level else h)
            skips.append(h)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips[:-1])):
            h = decoder(torch.cat([up(h), skip], dim=1))
        return self.head(h)


@dataclass(frozen=True)
class Mixture:
    """Per-pixel Gaussian mixtures of the noise, each row one pixel: ``log_weights``, ``means``, ``scales`` (N, K).

    Log-weights, not weights: a component whose softmax weight underflows to 0 must not make
    the likelihood's gradient NaN.
    """

    log_weights: torch.Tensor
    means: torch.Tensor
    scales: torch.Tensor

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    def nll(self, residual: torch.Tensor) -> torch.Tensor:
        """Negative log-density of ``residual`` (N,) under each pixel's mixture (nats)."""
        z = (residual[:, None] - self.means) / self.scales
        log_components = -0.5 * z**2 - torch.log(self.scales) - _LOG_SQRT_2PI
        return -torch.logsumexp(self.log_weights + log_components, dim=1)

    def log_cdf(self, threshold: torch.Tensor) -> torch.Tensor:
        """log P(noise <= threshold) per pixel (``threshold`` (N,)): the likelihood of a pixel clipped below."""
        z = (threshold[:, None] - self.means) / self.scales
        return torch.logsumexp(self.log_weights + torch.special.log_ndtr(z), dim=1)

    def log_survival(self, threshold: torch.Tensor) -> torch.Tensor:
        """log P(noise >= threshold) per pixel: the likelihood of a pixel clipped above."""
        z = (threshold[:, None] - self.means) / self.scales
        return torch.logsumexp(self.log_weights + torch.special.log_ndtr(-z), dim=1)

    def mean(self) -> torch.Tensor:
        return (self.weights * self.means).sum(dim=1)

    def variance(self) -> torch.Tensor:
        centred = self.means - self.mean()[:, None]
        return (self.weights * (self.scales**2 + centred**2)).sum(dim=1)

    def std(self) -> torch.Tensor:
        return self.variance().sqrt()

    def skewness(self) -> torch.Tensor:
        """Third standardised moment: sum_k w_k (d_k^3 + 3 d_k s_k^2) / var^1.5 with d_k the centred means."""
        centred = self.means - self.mean()[:, None]
        third = (self.weights * (centred**3 + 3 * centred * self.scales**2)).sum(dim=1)
        return third / self.variance() ** 1.5


class NoiseNet(nn.Module):
    """Per-pixel MLP (equivalent to 1×1 convolutions) from a signal value to a zero-mean noise mixture.

    ``components`` = 1 is the Gaussian model (mean 0, one scale). For K > 1: softmax weights,
    scales ``softplus + floor``, and raw means shifted by their weighted average so that the
    mixture mean is exactly zero.
    """

    def __init__(self, components: int, width: int, scale_floor: float) -> None:
        super().__init__()
        self.components, self.scale_floor = components, scale_floor
        outputs = 1 if components == 1 else 3 * components
        self.body = nn.Sequential(
            nn.Linear(1, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, outputs)
        )

    def forward(self, signal: torch.Tensor) -> Mixture:
        """Noise distribution for each signal value (any shape; flattened to N pixels)."""
        out = self.body(signal.reshape(-1, 1).float())
        if self.components == 1:
            scales = F.softplus(out) + self.scale_floor
            return Mixture(torch.zeros_like(scales), torch.zeros_like(scales), scales)
        logits, raw_means, raw_scales = out.chunk(3, dim=1)
        log_weights = torch.log_softmax(logits, dim=1)
        means = raw_means - (log_weights.exp() * raw_means).sum(dim=1, keepdim=True)
        return Mixture(log_weights, means, F.softplus(raw_scales) + self.scale_floor)
