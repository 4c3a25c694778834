"""Failure-mode checks of a trained Noise2Atom on raw frames (wraps ``selfden.methods.noise2atom.atom_check``)."""

from __future__ import annotations

import numpy as np
import torch

from selfden.methods.noise2atom.atom_check import diagnose_run
from selfden.methods.noise2atom.method import Noise2Atom


def denoise_frames(method: Noise2Atom, frames: np.ndarray) -> np.ndarray:
    """Raw ``(N, H, W)`` frames -> denoised frames in normalised [0, 1] units (whole frames, no tiling)."""
    norm = method.normalisation
    batch = (np.asarray(frames, dtype=np.float32) - norm.offset) / norm.scale
    with torch.no_grad():
        out = [method.denoise(torch.from_numpy(f[None, None]).to(method.device)) for f in batch]
    return torch.cat(out)[:, 0].cpu().numpy()


def diagnose_method(method: Noise2Atom, frames: np.ndarray) -> list[str]:
    """Warnings (inverted contrast, false atoms on background gradients) for raw ``(N, H, W)`` frames."""
    frames = np.asarray(frames, dtype=np.float32)
    frames = frames[None] if frames.ndim == 2 else frames
    sigma = float(np.sqrt(method.config.atom_sigma[0] * method.config.atom_sigma[1]))
    return diagnose_run(frames, denoise_frames(method, frames), sigma=sigma)
