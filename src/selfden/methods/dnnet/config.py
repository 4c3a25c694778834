"""``DnnetConfig``: the user-facing hyper-parameters of dnnet (the one place their defaults live)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from selfden.methods.base import DeviceDefaults, MethodConfig
from selfden.methods.dnnet.networks import DEPTH
from selfden.methods.lr_schedule import LrSchedule

NoiseModelKind = Literal["gmm", "gaussian", "none"]
#: D-net width on a CPU unless the user sets one: 3.5x the steps of 64 per minute (bf16: 12.97 against 3.69 per
#: second at batch 16) and ahead at equal minutes on Poisson-Gaussian noise (RESULTS.md, peers.py).
CPU_FILTERS = 32


class DnnetConfig(MethodConfig):
    """D-net (denoiser) + N-net (noise model) trained jointly on grid-masked pixels."""

    # "none" by measurement: the N-net's likelihood did not pay on CPU budgets. Poisson-Gaussian suite, 10 min
    # each, gmm minus none: +0.26, -0.11 dB (two seeds), -0.13 dB at filters=32 (dnnet_quality.py); the real
    # SEM frame, 15 min each: none's blind-spot error 0.13 % lower (dnnet_sem.py); none also runs ~10 % more
    # steps per minute. gmm stays one option away for a learned, plotted noise model and clipped data.
    noise_model: NoiseModelKind = Field(
        "none",
        description="N-net output: 'none' (plain L2 on masked pixels: Noise2Self; as good on CPU budgets, "
        "faster), 'gmm' (K-component Gaussian mixture: learns skewed, signal-dependent noise and plots it) or "
        "'gaussian' (one sigma per signal level)",
    )
    components: int = Field(3, ge=1, le=16, description="mixture components K when noise_model='gmm'")
    filters: int = Field(
        64, ge=1, le=512, description="D-net U-Net channels (the same at every level); a CPU run left at the "
        f"default trains {CPU_FILTERS}"
    )
    noise_net_width: int = Field(32, ge=1, le=512, description="hidden units of the per-pixel N-net")
    scale_floor: float = Field(
        1e-3, gt=0.0, description="smallest noise scale the N-net can predict, in normalised units"
    )
    learning_rate: float = Field(4e-4, gt=0.0, description="Adam learning rate (both networks)")
    lr_halving_steps: int | None = Field(
        None, ge=1, description="halve the learning rate every this many steps (None: constant)"
    )
    lr_schedule: LrSchedule = Field(
        "cosine", description="cosine: anneal the learning rate to 0 at the end of the training budget "
        "(its last weights are its best; constant leaves them fluctuating); constant: keep it"
    )
    grid_spacing: tuple[int, int] = Field(
        (3, 5), description="masking grid spacing, drawn per batch and axis from this inclusive range (px)"
    )
    drop_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of grid points left unmasked")
    clip_detection: bool = Field(
        True, description="look for clipped pixels (a pile-up at the data's minimum or maximum) before training "
        "and fill clip_low/clip_high with their levels"
    )
    clip_low: float | None = Field(
        None, description="raw value at or below which pixels were clipped: the noise likelihood counts them as "
        "'at most this' (None: not clipped)"
    )
    clip_high: float | None = Field(
        None, description="raw value at or above which pixels were clipped (saturated): counted as 'at least "
        "this' (None: not clipped)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> "DnnetConfig":
        low, high = self.grid_spacing
        if low < 2 or high < low:
            raise ValueError(
                f"grid_spacing {self.grid_spacing}: need 2 <= low <= high so that no masked pixel has a "
                "masked neighbour; the paper uses (3, 5)"
            )
        if self.lr_schedule != "constant" and self.lr_halving_steps is not None:
            if "lr_schedule" in self.model_fields_set:
                raise ValueError("lr_schedule and lr_halving_steps both set the learning rate: choose one")
            self.lr_schedule = "constant"  # halving steps asked for replace the default annealing
        return self

    def cpu_bf16_pays(self) -> bool:
        """Yes: a training step at patch 64, batch 16 took 568 ms in float32 and 271 ms in bf16 autocast (2 threads,
        AMD EPYC with AVX512-BF16; 32 channels: 163 and 77 ms); the loss is computed in float32 either way."""
        return True

    def device_defaults(self, device_type: str) -> DeviceDefaults:
        """On a CPU, 64² crops in batches of 8: on BSD68 (benchmarks/bsd68.py) they made 4.4x the steps of
        128² crops in the same minutes and ended ahead (RESULTS.md "dnnet on BSD68"); and CPU_FILTERS
        channels unless the user chose a width."""
        if device_type != "cpu":
            return DeviceDefaults(self)
        narrow = self if "filters" in self.model_fields_set else self.model_copy(update={"filters": CPU_FILTERS})
        return DeviceDefaults(narrow, 64, 8)

    def size_step(self) -> int:
        return 2**DEPTH
