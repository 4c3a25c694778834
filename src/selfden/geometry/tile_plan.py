"""Tile sizes chosen per image size: little halo overhead, within a memory budget.

Every tile computes a halo of context on each side that is thrown away, so the network
computes more pixels than it outputs. Small tiles waste most (a 256 core in a 48-px halo
computes 1.9x its pixels, blending overlap aside); one tile over the whole image wastes only
the halo around the image (reflect padding at the borders, which defines the output there, so
it is never skipped). ``plan_tiles`` picks, per image size, the tiling that computes the fewest
pixels while one session run stays within a pixel budget: the whole image when it fits, else
cores of many halos. Frames small enough share session runs (``batch`` frames at a time).

The budget (``run_pixel_budget``): 4 GiB of onnxruntime working memory per session run. Measured
once per shipped graph as the rise of peak RSS over one run at 256² and 512² inputs (onnxruntime
1.32, CPU, 2 threads; linear in the pixels): dnnet 1.6 kB per input pixel, cosdd denoiser and
sampler 1.05 kB, cae 0.26 kB, noise2atom 0.27 kB. With the worst of these (1600 B, used when a
package states no ``config.selfden.activation_bytes_per_pixel``) a run holds 2.7 Mpx: one 1638²
tile, or 53 frames of 224². 4 GiB is the top of what a 16 GB workstation spares beside the frame
and its output, and the least at which halos up to 64 px reach 1.25x from 2048² on (at 3 GiB
noise2atom stays at 1.28x at 2048²). Estimating the number from the graph (live tensors after
shape inference) missed the measurements by 1.5-10x either way, so it is measured, not guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from selfden.errors import ModelError
from selfden.geometry.tiles import axis_layout

Pair = tuple[int, int]

MEMORY_BUDGET_BYTES = 4 * 2**30
#: Peak working memory per network-input pixel of the hungriest shipped graph (dnnet, measured).
DEFAULT_BYTES_PER_PIXEL = 1600
#: Blending width between planned cores: the halo already holds the receptive field, so a short
#: ramp only hides residual seams; a long one (an eighth of a 1024 core) would cost 12 % more work.
PLAN_OVERLAP = 16
#: Most tiles (or small frames) per session run, however small they are.
MAX_BATCH = 64
#: Network-input pixels per session run on a CPU, where a batch buys nothing: onnxruntime's CPU
#: kernels loop over it, and one small tile's activations stay in cache between the elementwise
#: passes. Measured (2 cores, onnxruntime 1.32): 32 frames of 128² took 3.76 s one per run against
#: 4.63 s 53 per run (cosdd), 3.21 against 3.87 s (dnnet); 16 decoder samples of a 224² tile 0.98
#: against 1.19 s; at 608² batching made no difference.
CPU_RUN_PIXELS = 256 * 256
#: The aim for images of at least 1024² (reachable when the border halo leaves room for it).
TARGET_OVERHEAD = 1.25


@dataclass(frozen=True)
class TilePlan:
    """How one image size is cut: ``tile`` is the wanted core per axis (``tile_image``'s
    ``tile_size``), ``input_shape`` the network input, ``batch`` the tiles per session run,
    ``overhead`` network pixels computed per output pixel."""

    shape: Pair
    tile: Pair
    input_shape: Pair
    counts: Pair
    overlap: int | None
    batch: int
    overhead: float

    @property
    def n_tiles(self) -> int:
        """Tiles per image."""
        return self.counts[0] * self.counts[1]

    def describe(self) -> str:
        """One line for the log: what is computed for an image of this size and what it costs."""
        (height, width), (ty, tx) = self.shape, self.input_shape
        return (f"{height}x{width} frames: {self.n_tiles} tile(s) of {ty}x{tx} each, {self.batch} tile(s) per "
                f"session run; the network computes {self.overhead:.2f}x the image's pixels")


def run_pixel_budget(config: Mapping[str, Any] | None = None, budget_bytes: int = MEMORY_BUDGET_BYTES) -> int:
    """Network-input pixels one session run may hold: ``budget_bytes`` over the package's
    ``activation_bytes_per_pixel`` (default: the hungriest shipped graph's)."""
    per_pixel = (config or {}).get("activation_bytes_per_pixel", DEFAULT_BYTES_PER_PIXEL)
    if not isinstance(per_pixel, (int, float)) or per_pixel <= 0:
        raise ModelError(f"config.selfden.activation_bytes_per_pixel is {per_pixel!r}; expected a positive "
                         "number of bytes (or leave it out of rdf.yaml)")
    return max(1, int(budget_bytes // per_pixel))


def _axis_options(length: int, min_size: int, step: int, halo: int, overlap: int | None) -> dict[int, Pair]:
    """For each possible tile count along an axis, the smallest (wanted core, input size) giving it."""
    align = max(step, 1)
    options: dict[int, Pair] = {}
    for tile in range(align, math.ceil(length / align) * align + 1, align):
        padded, count, _, _ = axis_layout(length, tile, min_size, step, halo, overlap)
        if count not in options or padded < options[count][1]:
            options[count] = (tile, padded)
        if step <= 0:  # a fixed-size model has one layout
            break
    return options


def plan_tiles(
    shape: Sequence[int],
    min_size: Pair,
    step: Pair,
    halo: Pair,
    max_pixels: int,
    max_batch: int = MAX_BATCH,
    fixed_batch: int | None = None,
    batch_pixels: int | None = None,
) -> TilePlan:
    """The tiling of an ``(H, W)`` image that computes the fewest network pixels with tiles of at
    most ``max_pixels`` (ties: fewer tiles); ``fixed_batch`` for models with a fixed batch axis;
    ``batch_pixels``: pixels per session run when fewer than ``max_pixels`` run best (a CPU's cache)."""
    height, width = (int(s) for s in shape[-2:])
    overlap = PLAN_OVERLAP
    along_y = _axis_options(height, min_size[0], step[0], halo[0], overlap)
    along_x = _axis_options(width, min_size[1], step[1], halo[1], overlap)
    pairs = [(ny, nx) for ny in along_y for nx in along_x]
    fits = [p for p in pairs if along_y[p[0]][1] * along_x[p[1]][1] <= max_pixels]

    def cost(counts: Pair) -> tuple[int, int]:
        (ny, nx), py, px = counts, along_y[counts[0]][1], along_x[counts[1]][1]
        return ny * py * nx * px, ny * nx

    def tile_pixels(counts: Pair) -> int:
        return along_y[counts[0]][1] * along_x[counts[1]][1]

    ny, nx = min(fits, key=cost) if fits else min(pairs, key=tile_pixels)  # over budget: the smallest tile
    (ty, py), (tx, px) = along_y[ny], along_x[nx]
    batch = fixed_batch or max(1, min(max_batch, (batch_pixels or max_pixels) // (py * px)))
    overhead = ny * py * nx * px / (height * width)
    return TilePlan((height, width), (ty, tx), (py, px), (ny, nx), overlap, batch, overhead)


def fixed_plan(
    shape: Sequence[int], tile_size: int, min_size: Pair, step: Pair, halo: Pair, overlap: int | None, batch: int
) -> TilePlan:
    """The plan for a tile size the user chose (``--tile-size``): as asked, with its overhead."""
    height, width = (int(s) for s in shape[-2:])
    layouts = [axis_layout(n, tile_size, m, s, h, overlap) for n, m, s, h in zip((height, width), min_size, step, halo)]
    (py, count_y, _, _), (px, count_x, _, _) = layouts
    counts = (count_y, count_x)
    overhead = counts[0] * py * counts[1] * px / (height * width)
    return TilePlan((height, width), (tile_size, tile_size), (py, px), counts, overlap, batch, overhead)


def suggested_tile_size(min_size: int, step: int, halo: int, size: int = 1024, max_pixels: int | None = None) -> int:
    """The core ``plan_tiles`` picks for a ``size``² image: what a package suggests."""
    budget = run_pixel_budget() if max_pixels is None else max_pixels
    plan = plan_tiles((size, size), (min_size, min_size), (step, step), (halo, halo), budget)
    return max(plan.tile)
