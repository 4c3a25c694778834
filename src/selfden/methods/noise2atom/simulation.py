"""The second data stream: simulated clean atom images matching each batch's crop size.

Built on ``selfden.synth.random_atom_scene`` (the paper's recipe): a canvas twice the crop
side, atoms on a jittered square lattice of ``spacing`` px occupying a fraction of its sites,
Gaussian peaks of one sigma per image, the central crop scaled to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from selfden.synth import random_atom_scene, render_atoms


@dataclass(frozen=True)
class AtomRecipe:
    """What the simulated clean atoms look like (pixel units of the user's data)."""

    spacing: float
    sigma: tuple[float, float]
    occupancy: tuple[float, float]
    intensity: tuple[float, float]

    def atom_count_range(self, canvas: int) -> tuple[int, int]:
        """Atoms per canvas: the occupancy range times the number of lattice sites (at least 1)."""
        sites = max(int(canvas // self.spacing), 1) ** 2
        low, high = (max(1, round(f * sites)) for f in self.occupancy)
        return low, max(low, high)


def simulate_clean(recipe: AtomRecipe, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """One clean ``(height, width)`` float32 image in [0, 1] drawn with ``rng``."""
    side = max(height, width)
    canvas = 2 * side
    scene = random_atom_scene(
        rng,
        canvas=canvas,
        spacing=recipe.spacing,
        sigma_range=recipe.sigma,
        n_atoms_range=recipe.atom_count_range(canvas),
        intensity_range=recipe.intensity,
    )
    image = render_atoms(scene, side)[:height, :width]
    peak = float(image.max())
    return (image / peak if peak > 0 else image).astype(np.float32)


def simulate_batch(recipe: AtomRecipe, n: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 1, height, width)`` clean images in [0, 1]."""
    return np.stack([simulate_clean(recipe, height, width, rng) for _ in range(n)])[:, None]


class CleanAtomStream:
    """Endless simulated clean batches from a seeded Generator, plus fixed validation sets."""

    def __init__(self, recipe: AtomRecipe, seed: int) -> None:
        self.recipe, self.seed = recipe, seed
        self.rng = np.random.default_rng(seed)
        self._fixed: dict[tuple[int, int, int], np.ndarray] = {}

    def batch(self, n: int, height: int, width: int) -> np.ndarray:
        """The next ``(n, 1, height, width)`` training batch in [0, 1]."""
        return simulate_batch(self.recipe, n, height, width, self.rng)

    def fixed_batch(self, n: int, height: int, width: int) -> np.ndarray:
        """The same ``(n, 1, height, width)`` batch at every call (validation), independent of training draws."""
        key = (n, height, width)
        if key not in self._fixed:
            rng = np.random.default_rng([self.seed, 1, n, height, width])
            self._fixed[key] = simulate_batch(self.recipe, n, height, width, rng)
        return self._fixed[key]

    def reseed_for_rank(self, rank: int) -> None:
        """A distinct training stream for data-parallel rank ``rank`` (validation sets unchanged)."""
        self.rng = np.random.default_rng([self.seed, 2, rank])

    def get_state(self) -> dict[str, Any]:
        """The Generator's state (plain ints and strings: loadable with ``weights_only``)."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state
