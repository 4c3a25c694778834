"""Noise2Atom's user-facing config: network sizes, the WGAN-GP schedule and the atom simulator."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from selfden.geometry.orientations import IDENTITY_ONLY
from selfden.methods.base import DeviceDefaults, MethodConfig

#: Inputs must be multiples of this: the generators downsample three times by 2.
SIZE_STEP = 8
#: The paper's simulator (Wang et al. 2020): 75-150 atoms on the 32x32 sites of an 8-px lattice
#: on a 256-px canvas, i.e. 7-15 % of the sites occupied; peak variance 1-10 px^2.
PAPER_OCCUPANCY = (75 / 1024, 150 / 1024)
PAPER_SIGMA = (1.0, 10.0**0.5)

Pair = tuple[float, float]


def _as_range(value: object) -> object:
    """One number means a fixed value: ``2.0`` -> ``(2.0, 2.0)``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value), float(value))
    return value


def _check_range(name: str, value: Pair, low: float, high: float) -> Pair:
    if not (low <= value[0] <= value[1] <= high):
        raise ValueError(f"{name} {value}: expected (min, max) with {low} <= min <= max <= {high}")
    return value


class Noise2AtomConfig(MethodConfig):
    """Hyper-parameters of Noise2Atom (Wang, Henninen, Keller, Erni, Applied Microscopy 50:23, 2020).

    Defaults are CPU-sized (the paper: widths 64-128, 16 residual blocks of 192 channels,
    critic 64/64/128/128); the loss weights and learning rate were chosen by measurement
    (see ``selfden.methods.noise2atom`` docstring).
    """

    widths: tuple[int, int, int, int] = Field(
        (8, 16, 16, 32), description="generator widths at full, 1/2, 1/4 and 1/8 resolution (paper: 64, 64, 64, 128)"
    )
    residual_blocks: int = Field(2, ge=0, le=64, description="residual blocks at 1/8 resolution (paper: 16)")
    residual_width: int = Field(32, ge=1, le=1024, description="channels of the residual blocks (paper: 192)")
    generator_norm: Literal["none", "instance"] = Field(
        "none", description="normalisation in the generators; 'instance' (paper) breaks exact tiling"
    )
    input_skip: bool = Field(
        True, description="add the input before the output tanh: generators start near the identity"
    )
    saturation_guard: float = Field(
        2.0, ge=0.0, description="penalise Ms2c's pre-tanh output beyond +-this (0 = off): tanh saturation stalls training"
    )
    critic_widths: tuple[int, int, int, int] = Field(
        (8, 16, 16, 32), description="critic widths of its 4 stride-2 blocks (paper: 64, 64, 128, 128)"
    )
    critic_dropout: float = Field(0.25, ge=0.0, lt=1.0)
    critic_grid: int = Field(8, ge=1, le=64, description="critic features are average-pooled to this grid")
    critic_steps: int = Field(5, ge=1, le=50, description="critic updates per training step")
    gp_weight: float = Field(10.0, ge=0.0, description="gradient-penalty weight lambda (WGAN-GP)")
    adversarial_weight: float = Field(1.0, ge=0.0, description="weight of the generator's adversarial step")
    cycle_weight: float = Field(1.0, ge=0.0, description="weight of |c - Ms2c(Mc2s(c))|")
    lpf_cycle_weight: float = Field(1.0, ge=0.0, description="weight of |LPF(s) - LPF(Mc2s(Ms2c(s)))|")
    lpf_fidelity_weight: float = Field(
        1.0, ge=0.0,
        description="weight of the low-pass infidelity of Ms2c's output to its input (best affine fit; 0 = off)",
    )
    clean_amplitude: float = Field(
        0.9, gt=0.0, le=1.0, description="clean images span [-a, a]: tanh reaches the background without saturating"
    )
    ema_decay: float = Field(
        0.99, ge=0.0, lt=1.0,
        description="validate and export a moving average of Ms2c's weights with this decay per step (0 = off)",
    )
    learning_rate: float = Field(
        2e-4, gt=0.0, description="the generators' RMSprop learning rate (paper: 5e-5, for ~65k steps)"
    )
    critic_learning_rate: float | None = Field(
        8e-4, gt=0.0,
        description="the critic's RMSprop learning rate (None = learning_rate); faster than the generators' (TTUR)",
    )
    lpf_size: int = Field(33, ge=3, le=129, description="side of the Gaussian low-pass kernel (odd)")
    lpf_variance: float = Field(15.0, gt=0.0, description="variance of the low-pass Gaussian, px^2")
    atom_spacing: float = Field(8.0, gt=1.0, le=256.0, description="lattice spacing of simulated atoms, px")
    atom_sigma: Pair = Field(PAPER_SIGMA, description="peak sigma of simulated atoms, px: (min, max) or one value")
    atom_occupancy: Pair = Field(PAPER_OCCUPANCY, description="fraction of lattice sites holding an atom (min, max)")
    atom_intensity: Pair = Field((1.0, 4.0), description="relative atom intensities (min, max)")
    simulation_seed: int = Field(0, ge=0, description="seed of the simulated clean atoms")
    # Measured on the default networks after 30 min of training (atoms, 64-px tile cores): tile vs
    # whole image differed by 8 % of the output's std at halo 32, 0.8 % at 48, 0.01 % at 64.
    halo: int = Field(64, ge=0, description="tile context in pixels; 2*halo must be a multiple of 8")

    @field_validator("atom_sigma", "atom_occupancy", "atom_intensity", mode="before")
    @classmethod
    def _one_number_is_a_fixed_value(cls, value: object) -> object:
        return _as_range(value)

    @field_validator("atom_sigma")
    @classmethod
    def _sigma_valid(cls, value: Pair) -> Pair:
        return _check_range("atom_sigma", value, 0.3, 64.0)

    @field_validator("atom_occupancy")
    @classmethod
    def _occupancy_valid(cls, value: Pair) -> Pair:
        return _check_range("atom_occupancy", value, 0.0, 1.0)

    @field_validator("atom_intensity")
    @classmethod
    def _intensity_valid(cls, value: Pair) -> Pair:
        return _check_range("atom_intensity", value, 1e-6, 1e6)

    @field_validator("widths", "critic_widths")
    @classmethod
    def _widths_positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if min(value) < 1 or max(value) > 1024:
            raise ValueError(f"widths {value}: every entry must be between 1 and 1024")
        return value

    @field_validator("lpf_size")
    @classmethod
    def _lpf_odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"lpf_size {value} must be odd (the kernel is centred); try {value + 1}")
        return value

    @model_validator(mode="after")
    def _halo_fits_step(self) -> "Noise2AtomConfig":
        if (2 * self.halo) % 8:
            raise ValueError(f"halo {self.halo}: 2*halo must be a multiple of the size step 8; try {self.halo // 4 * 4}")
        return self

    def size_step(self) -> int:
        return SIZE_STEP

    def device_defaults(self, device_type: str) -> DeviceDefaults:
        """On a CPU, 64² crops in batches of 4: every CPU measurement in the method's docstring used them."""
        return DeviceDefaults(self, 64, 4) if device_type == "cpu" else DeviceDefaults(self)

    def training_orientations(self) -> tuple[str, ...]:
        # rot90 would turn the horizontal scan-line noise Mc2s learns into vertical noise; the
        # benchmarked defaults train on crops as recorded.
        return IDENTITY_ONLY
