"""The single-graph posterior sampler: noisy tile -> one sample of the clean signal.

Packages exported before the split (``split_sampler.py``) ship it as ``sampler.onnx``; it stays
the reference the split graphs are tested against.
"""

from __future__ import annotations

import torch
from torch import nn

from selfden.methods.cosdd.ladder_vae import LadderVAE
from selfden.methods.cosdd.signal_decoder import SignalDecoder


class PosteriorSampler(nn.Module):
    """Encoder -> top-down with z = mu + sigma * eps per level -> signal decoder.

    ``forward(x)`` draws eps inside the graph (``randn_like``: an ONNX RandomNormalLike node), so
    every batch item gets independent latents: replicate a tile N times in a batch to get N
    samples. ``forward(x, *eps)`` takes eps from the caller instead (bottom level first, shapes
    from ``latent_shapes``), for parity tests.
    """

    def __init__(self, vae: LadderVAE, signal_decoder: SignalDecoder) -> None:
        super().__init__()
        self.vae = vae
        self.signal_decoder = signal_decoder

    def latent_shapes(self, batch: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
        return self.vae.latent_shapes(batch, height, width)

    def forward(self, x: torch.Tensor, *eps: torch.Tensor) -> torch.Tensor:
        s_code = self.vae(x, noise=eps or None, compute_kl=False).s_code
        return self.signal_decoder(s_code)
