"""``DnnetConfig``: the user-facing hyper-parameters of dnnet (the one place their defaults live)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from selfden.methods.base import MethodConfig
from selfden.methods.dnnet.networks import DEPTH

NoiseModelKind = Literal["gmm", "gaussian", "none"]


class DnnetConfig(MethodConfig):
    """D-net (denoiser) + N-net (noise model) trained jointly on grid-masked pixels."""

    noise_model: NoiseModelKind = Field(
        "gmm",
        description="N-net output: 'gmm' (K-component Gaussian mixture, skewed noise), 'gaussian' "
        "(one sigma per signal level) or 'none' (plain L2 on masked pixels: the Noise2Self baseline)",
    )
    components: int = Field(3, ge=1, le=16, description="mixture components K when noise_model='gmm'")
    filters: int = Field(64, ge=1, le=512, description="D-net U-Net channels (the same at every level)")
    noise_net_width: int = Field(32, ge=1, le=512, description="hidden units of the per-pixel N-net")
    scale_floor: float = Field(
        1e-3, gt=0.0, description="smallest noise scale the N-net can predict, in normalised units"
    )
    learning_rate: float = Field(4e-4, gt=0.0, description="Adam learning rate (both networks)")
    lr_halving_steps: int | None = Field(
        None, ge=1, description="halve the learning rate every this many steps (None: constant)"
    )
    grid_spacing: tuple[int, int] = Field(
        (3, 5), description="masking grid spacing, drawn per batch and axis from this inclusive range (px)"
    )
    drop_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of grid points left unmasked")

    @model_validator(mode="after")
    def _spacing_valid(self) -> "DnnetConfig":
        low, high = self.grid_spacing
        if low < 2 or high < low:
            raise ValueError(
                f"grid_spacing {self.grid_spacing}: need 2 <= low <= high so that no masked pixel has a "
                "masked neighbour; the paper uses (3, 5)"
            )
        return self

    def size_step(self) -> int:
        return 2**DEPTH
