"""Test images: an in-memory stack for the checks that look at training images (``selfden.data.StackLike``),
and sharp-edged scenes for the verdicts against a blur."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class Frames:
    """A minimal ImageStack-like: ``path``, ``len`` and ``frame(i)`` over an array (N, H, W)."""

    path = Path("frames.tif")

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def frame(self, index: int) -> np.ndarray:
        return self.array[index]


def squares(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Piecewise-constant scenes (sharp-edged squares): what a blur cannot denoise without loss."""
    rng = np.random.default_rng(seed)
    scenes = np.zeros((n, size, size), np.float32)
    for scene in scenes:
        for _ in range(12):
            y, x, side = rng.integers(0, size - 8), rng.integers(0, size - 8), rng.integers(4, 16)
            scene[y : y + side, x : x + side] = rng.uniform(-1, 1)
    return scenes
