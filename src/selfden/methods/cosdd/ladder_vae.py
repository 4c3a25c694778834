"""Hierarchical ("ladder") VAE: the encoder and prior of COSDD.

Bottom-up features at each level feed a top-down pass in which each level has a diagonal
Gaussian prior p(z_i | z_>i) and posterior q(z_i | z_>i, x) (Sønderby et al., "Ladder
Variational Autoencoders", NeurIPS 2016; the layout follows Prakash et al., HDN, ICLR 2022,
and Salmon & Krull, arXiv 2310.07887). The top prior is a learned per-channel constant,
so the network runs on any multiple of the size step, not only on the training crop size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfden.methods.cosdd.blocks import BottomUp, GatedResBlock, Upsample, conv_of_concat
from selfden.methods.cosdd.config import CosddArch

#: Smallest latent standard deviation: keeps log(sigma) and the KL finite.
SIGMA_FLOOR = 1e-3


def split_gaussian(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, sigma) from a tensor of 2Z channels; sigma = softplus + floor."""
    mu, s = raw.chunk(2, dim=1)
    return mu, F.softplus(s) + SIGMA_FLOOR


def gaussian_kl_sum(q: tuple[torch.Tensor, torch.Tensor], p: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Analytic KL(q || p) of diagonal Gaussians, summed over every element, in float32."""
    with torch.autocast(device_type=q[0].device.type, enabled=False):
        mu_q, s_q, mu_p, s_p = (t.float() for t in (*q, *p))
        kl = torch.log(s_p / s_q) + (s_q.square() + (mu_q - mu_p).square()) / (2 * s_p.square()) - 0.5
        return kl.sum()


@dataclass(frozen=True)
class VaeOutput:
    """s_code (B, F, H, W) at full resolution and the KL of each level (summed over the batch), top last."""

    s_code: torch.Tensor
    kl_levels: torch.Tensor | None


class TopDownLevel(nn.Module):
    """Prior and posterior of one level, the merge of z into the top-down features, optional x2 upsampling.

    The level works at ``features`` channels (its top-down input h has as many) and sees bottom-up
    features of ``bottom_up_features`` channels; it hands ``out_features`` to the level below.
    """

    def __init__(
        self, features: int, latents: int, top: bool, upsample: bool, kernel: int = 3,
        bottom_up_features: int | None = None, out_features: int | None = None,
    ) -> None:
        super().__init__()
        seen, out = bottom_up_features or features, out_features or features
        self.top, self.features = top, features
        self.prior = None if top else nn.Conv2d(features, 2 * latents, 3, padding=1)
        self.posterior = nn.Conv2d(seen if top else features + seen, 2 * latents, 3, padding=1)
        self.merge = nn.Conv2d(latents if top else features + latents, features, 1)
        self.block = GatedResBlock(features, kernel)
        self.up: nn.Module | None = None
        if upsample:
            self.up = Upsample(features, out)
        elif out != features:  # hands the level below another width without upsampling: a 1x1 projection
            self.up = nn.Conv2d(features, out, 1)

    def posterior_of(self, h: torch.Tensor | None, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_gaussian(self.posterior(d if h is None else torch.cat([h, d], dim=1)))

    def prior_of(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.prior is not None
        return split_gaussian(self.prior(h))

    def output(self, h: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        merged = self.merge(z) if h is None else conv_of_concat(self.merge, h, z, self.features)
        h = self.block(merged)
        return h if self.up is None else self.up(h)


class LadderVAE(nn.Module):
    """Encoder (bottom-up) and top-down inference/generative path producing ``s_code``."""

    def __init__(self, arch: CosddArch) -> None:
        super().__init__()
        flags = [arch.downsample_at(i) for i in range(arch.levels)]
        self.bottom_up = BottomUp(arch.features, flags, arch.stem_blocks)
        # The bottom level, at full resolution, works at code_features (the s_code it returns); each
        # posterior sample repeats it, so it is where narrowing saves the most.
        self.top_down = nn.ModuleList(
            TopDownLevel(arch.code_features if i == 0 else arch.features, arch.latent_channels,
                         top=i == arch.levels - 1, upsample=flags[i], kernel=arch.decoder_kernel if i == 0 else 3,
                         bottom_up_features=arch.features, out_features=arch.code_features if i == 1 else None)
            for i in range(arch.levels)
        )
        # Spatially constant top prior: mean and softplus-inverse scale per channel.
        self.top_prior = nn.Parameter(torch.zeros(1, 2 * arch.latent_channels, 1, 1))
        self.top_prior.data[:, arch.latent_channels :] = 0.5413  # softplus(0.5413) ~= 1
        self.downsample_flags = flags
        self.latent_channels = arch.latent_channels

    def latent_shapes(self, batch: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """Shape of each level's latent (bottom level first) for an input of this size."""
        shapes = []
        for down in self.downsample_flags:
            height, width = (height // 2, width // 2) if down else (height, width)
            shapes.append((batch, self.latent_channels, height, width))
        return shapes

    def forward(
        self,
        x: torch.Tensor,
        noise: Sequence[torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
        compute_kl: bool = True,
    ) -> VaeOutput:
        """One posterior sample: z_i = mu + sigma * eps_i, eps from ``noise`` (bottom level first),
        else from ``generator``, else ``randn_like`` (an ONNX RandomNormalLike node)."""
        features = self.bottom_up(x)
        h: torch.Tensor | None = None
        kls = []
        for i in reversed(range(len(self.top_down))):
            level = self.top_down[i]
            q = level.posterior_of(h, features[i])
            if compute_kl:
                kls.append(gaussian_kl_sum(q, self._top_prior(q[0]) if h is None else level.prior_of(h)))
            z = q[0] + q[1] * _standard_normal(q[0], i, noise, generator)
            h = level.output(h, z)
        assert h is not None
        kl_levels = torch.stack(kls[::-1]) if compute_kl else None
        return VaeOutput(s_code=h, kl_levels=kl_levels)

    def _top_prior(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, sigma = split_gaussian(self.top_prior)
        return mu.expand_as(like), sigma.expand_as(like)


def _standard_normal(
    like: torch.Tensor, level: int, noise: Sequence[torch.Tensor] | None, generator: torch.Generator | None
) -> torch.Tensor:
    if noise is not None:
        return noise[level].to(like.dtype)
    if generator is not None:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    return torch.randn_like(like)
