"""Padding that lets a method's ``denoise`` take any image size (networks need multiples of a step)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(batch: torch.Tensor, step: int) -> torch.Tensor:
    """Pad the bottom/right edge of ``(B, C, H, W)`` up to multiples of ``step`` (reflect where possible)."""
    height, width = batch.shape[-2:]
    pad_y, pad_x = -height % step, -width % step
    if not (pad_y or pad_x):
        return batch
    mode = "reflect" if pad_y < height and pad_x < width else "replicate"
    return F.pad(batch, (0, pad_x, 0, pad_y), mode=mode)
