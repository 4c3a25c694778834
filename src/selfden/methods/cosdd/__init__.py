"""``cosdd``: Correlated and Signal-Dependent Denoising (Salmon & Krull, WACV 2025).

A ladder VAE whose decoder is an autoregressive noise model that sees only the pixels
before the current one along the noise axis; a signal decoder turns posterior samples into
clean images and a direct denoiser (Salmon & Krull, ICCVW 2023) learns their mean.
Exported graphs: "denoiser" (direct denoiser, deterministic) and "sampler" (one posterior
sample per batch item; average N replicas of a tile for the MMSE estimate, their std is an
uncertainty map).
"""

from selfden.methods.cosdd.config import CosddConfig
from selfden.methods.cosdd.method import Cosdd

__all__ = ["Cosdd", "CosddConfig"]
