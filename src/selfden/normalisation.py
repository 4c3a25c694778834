"""The intensity normalisation stored with every model (torch-free, shared by training and inference)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

NormalisationKind = Literal["range", "standardise"]


@dataclass(frozen=True)
class Normalisation:
    """Affine map applied before the network: ``x_norm = (x - offset) / scale``.

    Computed from training statistics, stored with the model and undone at the output,
    so exported packages run on raw intensities.
    """

    offset: float
    scale: float
