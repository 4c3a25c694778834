"""The posterior sampler split in two graphs, so posterior samples share the deterministic work.

``SamplerEncoder`` (noisy tile -> one tensor per level) runs once per tile; ``SamplerDecoder``
(those tensors repeated per sample, plus the standard-normal draws ``eps``) runs per sample.
The encoder ends each level with the part of the posterior convolution that sees only the
bottom-up features: posterior(cat[h, d]) = W_h * h + (W_d * d + b), and the bracket is the
same for every sample (for the top level, whose posterior sees only d, all of it). Both graphs
are deterministic: the caller draws ``eps`` (numpy, seeded), so samples are reproducible
independently of onnxruntime's random number generators, and decoder(encoder(x), eps) equals
``PosteriorSampler(x, *eps)`` up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfden.methods.cosdd.ladder_vae import SIGMA_FLOOR, LadderVAE
from selfden.methods.cosdd.signal_decoder import SignalDecoder


def _feature_half(posterior: nn.Conv2d, features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight over the h channels, weight over the d channels) of a posterior conv on cat[h, d];
    ``features`` (the level's width, a Python int) makes the slices fold to constants at export."""
    return posterior.weight[:, :features], posterior.weight[:, features:]


class SamplerEncoder(nn.Module):
    """Noisy tile (B, 1, H, W) -> per level (bottom first) the sample-independent posterior term (B, 2Z, H_i, W_i)."""

    def __init__(self, vae: LadderVAE) -> None:
        super().__init__()
        self.vae = vae
        self.input_names = ["input"]
        self.output_names = [f"post{i}" for i in range(len(vae.top_down))]

    def example_inputs(self, batch: int, height: int, width: int) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch, 1, height, width),)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.vae.bottom_up(x)
        out = []
        for level, d in zip(self.vae.top_down, features):
            if level.top:
                out.append(level.posterior(d))
            else:
                weight_d = _feature_half(level.posterior, level.features)[1]
                out.append(F.conv2d(d, weight_d, level.posterior.bias, padding=1))
        return tuple(out)


class SamplerDecoder(nn.Module):
    """(post0..post{L-1}, eps0..eps{L-1}) -> one posterior sample (B, 1, H, W) per batch item."""

    def __init__(self, vae: LadderVAE, signal_decoder: SignalDecoder) -> None:
        super().__init__()
        self.vae = vae
        self.signal_decoder = signal_decoder
        levels = len(vae.top_down)
        self.input_names = [f"post{i}" for i in range(levels)] + [f"eps{i}" for i in range(levels)]
        self.output_names = ["output"]

    def example_inputs(self, batch: int, height: int, width: int) -> tuple[torch.Tensor, ...]:
        shapes = self.vae.latent_shapes(batch, height, width)
        post = [torch.randn(b, 2 * z, h, w) for b, z, h, w in shapes]
        return (*post, *(torch.randn(s) for s in shapes))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        levels = len(self.vae.top_down)
        post, eps = inputs[:levels], inputs[levels:]
        h: torch.Tensor | None = None
        for i in reversed(range(levels)):
            level = self.vae.top_down[i]
            raw = post[i]
            if h is not None:
                raw = raw + F.conv2d(h, _feature_half(level.posterior, level.features)[0], padding=1)
            mu, s = raw.chunk(2, dim=1)
            z = mu + (F.softplus(s) + SIGMA_FLOOR) * eps[i]
            h = level.output(h, z)
        assert h is not None
        return self.signal_decoder(h)
