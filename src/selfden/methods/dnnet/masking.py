"""Grid masking for blind-spot training (Noise2Self: Batson & Royer, ICML 2019; dnnet: Ollion et al. 2021).

A random grid of pixels is hidden from the D-net: each hidden pixel is replaced by a
Gaussian-weighted average of its 8 neighbours (its own value gets weight 0), so the network
must predict it from context. With pixel-independent noise the prediction's error at a
hidden pixel is then independent of that pixel's noise, and the loss on hidden pixels
measures the denoiser without a clean target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Width of the Gaussian that weights the 8 neighbours (px): edges 0.61, corners 0.37 before normalising.
NEIGHBOUR_SIGMA = 1.0


def neighbour_kernel(sigma: float = NEIGHBOUR_SIGMA) -> torch.Tensor:
    """3×3 Gaussian weights with the centre set to 0, summing to 1, shaped ``(1, 1, 3, 3)``."""
    offsets = torch.arange(-1, 2, dtype=torch.float32)
    squared = offsets[:, None] ** 2 + offsets[None, :] ** 2
    weights = torch.exp(-squared / (2 * sigma**2))
    weights[1, 1] = 0.0
    return (weights / weights.sum())[None, None]


def neighbour_average(batch: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
    """Every pixel's Gaussian-weighted 8-neighbour average (centre excluded), reflecting at the borders."""
    kernel = neighbour_kernel() if kernel is None else kernel
    padded = F.pad(batch, (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, kernel.to(device=batch.device, dtype=batch.dtype))


@dataclass(frozen=True)
class GridMask:
    """Which pixels are hidden: ``mask`` (B, 1, H, W) bool; the grid's ``spacing`` (y, x) and per-image
    ``offsets`` (B, 2) that drew it."""

    mask: torch.Tensor
    spacing: tuple[int, int]
    offsets: torch.Tensor


def draw_grid_mask(
    shape: tuple[int, int, int],
    generator: torch.Generator,
    spacing_range: tuple[int, int] = (3, 5),
    drop_fraction: float = 0.1,
) -> GridMask:
    """A grid mask for ``shape`` = (B, H, W) on the generator's device.

    One spacing per axis for the whole batch (inclusive ``spacing_range``), a random offset per
    image, and each grid point dropped (left visible) with probability ``drop_fraction``, so the
    network cannot rely on the mask being perfectly regular.
    """
    batch, height, width = shape
    device = generator.device
    low, high = spacing_range
    spacing = tuple(int(s) for s in torch.randint(low, high + 1, (2,), generator=generator, device=device))
    offsets = torch.stack(
        [torch.randint(0, s, (batch,), generator=generator, device=device) for s in spacing], dim=1
    )
    on_y = (torch.arange(height, device=device)[None] - offsets[:, :1]) % spacing[0] == 0
    on_x = (torch.arange(width, device=device)[None] - offsets[:, 1:]) % spacing[1] == 0
    grid = on_y[:, :, None] & on_x[:, None, :]
    kept = torch.rand((batch, height, width), generator=generator, device=device) >= drop_fraction
    return GridMask(mask=(grid & kept)[:, None], spacing=spacing, offsets=offsets)  # type: ignore[arg-type]


def apply_mask(batch: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``batch`` with the masked pixels replaced by their neighbour average."""
    return torch.where(mask, neighbour_average(batch), batch)
