"""An in-memory stack for the checks that look at training images (``selfden.data.StackLike``)."""

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
