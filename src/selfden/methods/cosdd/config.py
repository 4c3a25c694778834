"""COSDD's user-facing config and the architecture it resolves to.

Presets hold the only copy of the size defaults; any field set explicitly overrides its preset value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from selfden.geometry.orientations import DIHEDRAL
from selfden.methods.base import DeviceDefaults, MethodConfig
from selfden.methods.lr_schedule import LrSchedule

Direction = Literal["x", "y", "none"]
#: "auto": measured from the training images when a run is planned (``Cosdd.prepare``).
DirectionOption = Literal["x", "y", "none", "auto"]
SizePreset = Literal["auto", "tiny", "small", "large"]
#: What "auto" means per device: small/large are the reference's sizes (for a GPU); tiny keeps a
#: laptop CPU at ~1 step/s on 64² crops (small: 0.5; measured on 1 core, see the method docstring).
AUTO_SIZE = {"cpu": "tiny", "cuda": "small"}

#: levels L, features F (s_code channels), latent channels per level, mixture components K,
#: stride-2 downsamplings. "small"/"large" follow the reference code; "tiny" is the CPU-sized
#: model of the measured reference run (S=32, L=6, K=4).
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"levels": 6, "features": 32, "latent_channels": 16, "components": 4, "downsamplings": 3},
    "small": {"levels": 6, "features": 64, "latent_channels": 32, "components": 5, "downsamplings": 3},
    "large": {"levels": 14, "features": 64, "latent_channels": 32, "components": 5, "downsamplings": 5},
}

#: What a new run of each preset gets for the two options that decide how much of the sampler each
#: posterior sample repeats (``device_defaults`` fills them in, so saved runs are explicit; runs saved
#: before they existed have neither, which keeps their networks: a code as wide as the features, one
#: stem block). Tiny: a 24-channel code (0.75 of 32) and a second full-resolution stem block in the
#: encoder, which runs once per tile, make a sample cost 0.37 of a sampler pass instead of 0.52
#: (benchmarks/cosdd_code_width.py). From random weights it matched the old layout after 1200 steps but
#: learnt slower early (stripe suite, 555 steps: 21.80 / 22.00 dB direct / MMSE-8 against 22.96 / 23.37);
#: new tiny runs start from selfden's prior (``prior.py``), trained in this layout, and then score 25.37 /
#: 25.21 at 555 steps. small/large (GPU sizes) are not measured and keep the old layout.
SAMPLING_LAYOUT: dict[str, dict[str, float]] = {"tiny": {"code_share": 0.75, "stem_blocks": 2}}

#: AR decoder: 8 causal blocks; the first (kernel 5, current pixel masked) sees 4 pixels.
AR_BLOCKS = 8


@dataclass(frozen=True)
class CosddArch:
    """The resolved network sizes (preset + overrides)."""

    levels: int
    features: int
    code_features: int
    latent_channels: int
    components: int
    downsamplings: int
    direction: Direction
    ar_receptive_field: int
    decoder_kernel: int = 3
    stem_blocks: int = 1

    @property
    def size_step(self) -> int:
        return 2**self.downsamplings

    def downsample_at(self, level: int) -> bool:
        """Whether bottom-up level ``level`` halves the resolution: odd levels, bottom first."""
        return level % 2 == 1 and level // 2 < self.downsamplings


class CosddConfig(MethodConfig):
    """Hyper-parameters of COSDD (Salmon & Krull, WACV 2025)."""

    size: SizePreset = Field(
        "auto", description="network size preset: tiny (CPU), small, large; auto = tiny on CPU, small on a GPU"
    )
    levels: int | None = Field(None, ge=1, le=32, description="ladder VAE levels (preset when unset)")
    features: int | None = Field(None, ge=4, le=512, description="feature channels")
    # The two options below shape what each posterior sample repeats; SAMPLING_LAYOUT has what new runs get.
    code_features: int | None = Field(
        None, ge=4, le=512, description="channels of the full-resolution top-down level and of s_code, the part "
        "every posterior sample repeats (unset in a new run: the preset's share of features, see SAMPLING_LAYOUT; "
        "in a run saved without it: features)"
    )
    stem_blocks: int | None = Field(
        None, ge=1, le=8, description="residual blocks of the encoder's full-resolution stem, run once per tile "
        "however many posterior samples are drawn (unset in a new run: the preset's; in a run saved without it: 1)"
    )
    latent_channels: int | None = Field(None, ge=1, le=512, description="latent channels per level")
    components: int | None = Field(None, ge=1, le=16, description="Gaussian mixture components of the noise model")
    downsamplings: int | None = Field(None, ge=0, le=8, description="stride-2 levels; size step = 2**downsamplings")
    direction: DirectionOption = Field(
        "x",
        description="noise correlation axis: x (rows), y (columns) or none; auto (or unset, in a planned run): "
        "measured from the training images",
    )
    # selfden.value_grid: on photon counts the noise model fits the grid instead of the noise (atoms suite).
    value_step: float | None = Field(
        None, ge=0, description="step of the grid the raw values lie on (photon counts, integer levels); training "
        "adds uniform noise one step wide so the noise model cannot fit the grid. Unset in a new run: measured from "
        "the training images (none found: continuous data); 0: off"
    )
    ar_receptive_field: int = Field(
        40, ge=4, le=256, description="pixels before the current one that the noise model sees (multiple of 4)"
    )
    # Measured (benchmarks/cosdd_trajectory.py, stripe suite, 1200 steps, same seed): 1 makes each posterior
    # sample cost 0.35 of an encoder + decoder pass instead of 0.52 and a step 7 % faster, but scores 1.2 dB
    # (direct) / 1.3 dB (MMSE-8) lower: the full-resolution 3x3 context is where the signal's detail comes from.
    decoder_kernel: Literal[1, 3] = Field(
        3, description="kernel of the convolutions each posterior sample repeats at full resolution (the "
        "bottom top-down level's block, the signal decoder's hidden layers); 1: cheaper samples, lower quality",
    )
    # Measured for a 5-minute budget (benchmarks/cosdd_trajectory.py --steps 555, stripe suite, same seed; direct /
    # MMSE-8 dB on the first 8 frames): constant 2e-3 23.57 / 23.85, 4e-3 22.98 / 23.30, 1e-3 22.17 / 22.41, cosine
    # from 2e-3 21.65 / 21.92. Annealing starves the direct denoiser, whose target (a posterior sample) still moves.
    # From the prior (RESULTS.md "cosine ... from the prior") cosine ended -0.39 to +0.32 dB from constant over
    # two stripe seeds, atoms and one 30-minute peers run: no consistent sign, so constant stays.
    learning_rate: float = Field(2e-3, gt=0)
    lr_schedule: LrSchedule = Field(
        "constant", description="cosine: anneal all three learning rates to 0 at the end of the training budget; "
        "constant: keep them, cut x0.1 when the validation loss plateaus (plateau_patience)"
    )
    plateau_patience: int = Field(10, ge=1, description="validation rounds without improvement before LR x0.1")
    kl_warmup_steps: int = Field(0, ge=0, description="linear KL-weight warm-up from 0 to 1 over this many steps")
    # 0.03, near the KL a healthy stripe model settles at (the reference COSDD: 0.04-0.055). From random weights
    # the atoms suite collapsed without free bits (KL 0.02 in 200 steps), hence 0.1 until runs started from the
    # prior; from the prior 0.03 beat 0.1 per step on stripe (two seeds, up to +0.3 dB) and atoms (+3 to +4.6 dB,
    # no collapse), because latents beyond the signal's needs carry noise into the direct denoiser's targets.
    free_bits: float = Field(0.03, ge=0, description="KL in nats per pixel below which KL is not penalised")
    collapse_kl_threshold: float = Field(0.03, ge=0, description="posterior collapse: KL per pixel below this...")
    collapse_spread_threshold: float = Field(
        0.02, ge=0, description="...and two posterior samples closer than this (mean |diff|, normalised units)"
    )
    collapse_check_after_steps: int = Field(500, ge=0, description="collapse is judged after warm-up and this step")
    # 8: split packages draw samples in antithetic pairs, and on the stripe suite (first 8 frames) 8 paired
    # samples scored above 100 independent ones with both stripe models measured: the shipped split one
    # (+0.057 dB; 4 paired: +0.005) and the single-graph one before it (+0.035; 4: -0.017);
    # benchmarks/cosdd_antithetic.py. Independent samples needed 48-64 to come within 0.1 dB.
    samples: int = Field(8, ge=1, le=1000, description="posterior samples averaged at inference (MMSE), drawn "
                         "in antithetic pairs")
    halo: int | None = Field(None, ge=0, description="tile context in pixels (unset: chosen from the size step)")
    # selfden.methods.cosdd.prior: measured in its docstring and benchmarks/RESULTS.md.
    prior: bool = Field(
        True, description="start a new run from selfden's COSDD prior (pretrained on procedural scenes) when its "
        "networks fit (tiny preset, default layout, direction x or y); false: random weights"
    )

    @model_validator(mode="after")
    def _consistent(self) -> CosddConfig:
        arch = self.arch()
        if self.ar_receptive_field % 4:
            raise ValueError(
                f"ar_receptive_field {self.ar_receptive_field} must be a multiple of 4 (kernel-5 causal convs); "
                f"try {self.ar_receptive_field // 4 * 4 or 4}"
            )
        if arch.downsamplings > arch.levels // 2:
            raise ValueError(
                f"downsamplings {arch.downsamplings} needs at least {2 * arch.downsamplings} levels "
                f"(odd levels downsample), got levels={arch.levels}"
            )
        if self.halo is not None and (2 * self.halo) % arch.size_step:
            raise ValueError(f"halo {self.halo}: 2*halo must be a multiple of the size step {arch.size_step}")
        return self

    def size_step(self) -> int:
        return self.arch().size_step

    def training_orientations(self) -> tuple[str, ...]:
        """Flips that keep the noise axis and its scan direction: for row noise (x), reversing the
        order of the rows (flip_y), whose noise is independent; for column noise, flip_x; for
        pixel-independent noise, all eight orientations. A quarter turn would swap the axes, and
        reversing a row would reverse the scan, which changes asymmetric scan-line noise
        (detector lag) that the causal noise model learns."""
        if self.direction == "none":
            return DIHEDRAL
        return ("identity", "flip_y") if self.direction == "x" else ("identity", "flip_x")

    def device_defaults(self, device_type: str) -> DeviceDefaults:
        """Size "auto" replaced by the preset for ``device_type``. On a CPU, 64² crops in batches of 4:
        the tiny preset trains at ~1 step/s on them (1 core), ~6x the steps of 128² x 8 in the same
        time, and the noise model's 40-px reach fits in 64 px. Unset code_features and stem_blocks
        become the preset's (``SAMPLING_LAYOUT``)."""
        config = self
        if self.size == "auto":
            config = self.model_copy(update={"size": AUTO_SIZE.get(device_type, AUTO_SIZE["cpu"])})
        layout = SAMPLING_LAYOUT.get(config.size, {"code_share": 1.0, "stem_blocks": 1})
        if config.code_features is None:
            code = max(4, round(config.arch().features * layout["code_share"]))
            config = config.model_copy(update={"code_features": code})
        if config.stem_blocks is None:
            config = config.model_copy(update={"stem_blocks": int(layout["stem_blocks"])})
        return DeviceDefaults(config, 64, 4) if device_type == "cpu" else DeviceDefaults(config)

    def arch(self) -> CosddArch:
        """Preset values with explicit fields applied on top."""
        preset = PRESETS[AUTO_SIZE["cpu"] if self.size == "auto" else self.size]
        pick = {key: getattr(self, key) if getattr(self, key) is not None else value for key, value in preset.items()}
        code_features = self.code_features if self.code_features is not None else pick["features"]
        return CosddArch(direction=self.direction, ar_receptive_field=self.ar_receptive_field,
                         decoder_kernel=self.decoder_kernel, code_features=code_features,
                         stem_blocks=self.stem_blocks or 1, **pick)
