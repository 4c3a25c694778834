"""Noise2Atom's losses: the WGAN-GP critic objective and the two cycle losses.

Critics here must score each sample independently (no batch statistics): the critic loss
scores real, fake and interpolated images in one batched forward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Net = Callable[[torch.Tensor], torch.Tensor]


def interpolate(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Random points on the lines between real and fake samples (one uniform weight per sample)."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    return (alpha * real + (1.0 - alpha) * fake.detach()).requires_grad_(True)


def penalty(scores: torch.Tensor, mixed: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight * mean((||d scores / d mixed||_2 - 1)^2)``, differentiable for the critic's update."""
    (grads,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    # the epsilon keeps the norm differentiable where a gradient is exactly zero
    norms = torch.sqrt(grads.flatten(1).pow(2).sum(dim=1) + 1e-12)
    return weight * (norms - 1.0).pow(2).mean()


def gradient_penalty(critic: Net, real: torch.Tensor, fake: torch.Tensor, weight: float) -> torch.Tensor:
    """The WGAN-GP term at random interpolates of real and fake (Gulrajani et al., "Improved
    training of Wasserstein GANs", NeurIPS 2017)."""
    mixed = interpolate(real, fake)
    return penalty(critic(mixed), mixed, weight)


def critic_loss(
    critic: Net, real: torch.Tensor, fake: torch.Tensor, gp_weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss to minimise, Wasserstein estimate E[D(real)] - E[D(fake)], gradient penalty)."""
    mixed = interpolate(real, fake)
    scores_real, scores_fake, scores_mixed = critic(torch.cat([real, fake.detach(), mixed])).split(real.shape[0])
    distance = scores_real.mean() - scores_fake.mean()
    gp = penalty(scores_mixed, mixed, gp_weight)
    return gp - distance, distance.detach(), gp.detach()


def cycle_losses(
    ms2c: Net, mc2s: Net, lowpass: Net, noisy: torch.Tensor, clean: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(``mean |c - Ms2c(Mc2s(c))|``, ``mean |LPF(s) - LPF(Mc2s(Ms2c(s)))|``, ``Ms2c(s)``).

    A clean image survives noising and denoising; denoising then re-noising keeps the low
    frequencies. Ms2c runs once on noisy and re-noised clean images together.
    """
    renoised_clean = mc2s(clean)
    denoised, cycled_clean = ms2c(torch.cat([noisy, renoised_clean])).split(noisy.shape[0])
    cycle = (clean - cycled_clean).abs().mean()
    lowpass_cycle = (lowpass(noisy) - lowpass(mc2s(denoised))).abs().mean()
    return cycle, lowpass_cycle, denoised
