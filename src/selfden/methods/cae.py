"""``cae``: compressive autoencoder for massive noisy data.

Wang, Henninen, Keller, Erni, "Self-supervised denoising for massive noisy images",
arXiv 2110.11911 (2021); multi-resolution heads from Wang et al., "Multi-resolution
convolutional neural networks for inverse problems", Sci. Rep. 10, 5730 (2020).

The network sees every pixel and is trained to reproduce its (noisy) input; it cannot
learn the identity because everything passes through a narrow code at 1/32 resolution
(``bottleneck`` channels, no skip connections). Structure shared across many frames fits
through the code, independent noise does not. ``bottleneck`` is the strength knob: fewer
channels give smoother output, more give finer detail and more noise.

Defaults were chosen by measurement (scratch sweep, not a test): 64 synthetic 128² frames of
blurred blobs and filaments with Poisson (15 photons) + Gaussian noise, batch 8 of 96² crops,
one torch thread on a shared 2-core CPU, PSNR against the clean frames of 16 held-out ones
(noisy 21.8 dB; best Gaussian blur 31.9 dB). "plateau" = the output is still the image mean.

| variant (bottleneck, residual blocks, norm, loss) | CPU s/step | PSNR / affine PSNR (steps)   |
|---------------------------------------------------|-----------:|------------------------------|
| 1, 4, 16, 64 · 4×64 · layer · L1                   | 0.30–0.35  | plateau 17.7 / 16.4 (250)    |
| 64 · 4×64 · layer · L1 (also: lr 3e-3; no norm)    | 0.33       | plateau 17.7 / 16.5 (800; 400; 800) |
| 64 · 4×64 · layer · MSE                            | 0.37       | 19.8 / 18.4 (400), 20.5 / 19.1 (600), 23.0 / 21.5 (1000) |
| 8 · 4×64 · layer · MSE                             | 0.37       | plateau 18.0 / 16.5 (1000)   |
| 64 · 16×128 · layer · MSE                          | 0.47       | plateau 18.0 / 16.5 (600)    |
| 64 · 4×64 · none · MSE                             | 0.36       | plateau 18.0 / 16.4 (600)    |
| **64 · 4×64 · batch · MSE** (default)              | 0.39       | 20.7 / 19.2 (400), 21.8 / 20.7 (600) |

So the autoencoder first sits on a long "predict the mean" plateau; the paper's L1 loss
(its median target is the background where signal is sparse) and narrow codes lengthen it
far beyond a CPU budget. Defaults: MSE loss, batch norm, 64 code channels, 4 residual blocks
of 64 (the paper's L1, per-sample layer norm and 16×128 remain options). Expect the cae to
need thousands of steps: it is meant for large stacks of similar frames, trained long.

Device presets and the weight average (measured on the atoms suite: 64² crops, batch 8, one
thread, affine PSNR of 8 held-out frames; noisy 22.35 dB, oracle Gaussian blur 26.02 dB):
the paper's depth (code at 1/32 resolution) never left the plateau in a 20-minute CPU run
(19.4 dB on the whole suite: a constant scores 19.4). Three downsamplings (code at 1/8, widths
8/16/32/64) leave it within 200 steps: bottleneck 4 peaked at 25.49 dB (step 800) and fell
to 24.65 by step 1800 as noise started to fit through; bottleneck 2 held 24.9-25.8 dB from step
400 to 2000 (learning rate 3e-4: the same band, 26.0 once, over 3000 steps). The swings are the
weights' (and batch-norm statistics') step-to-step noise: a moving average of the weights
(decay 0.99, bias-corrected; ``selfden.methods.weight_average``) used for validation,
``denoise`` and export gives 25.75 (500), 25.96 (750), 26.07 (1250), 26.16 (1500), 26.05 (2000).
On the whole suites (``benchmarks/quality.py``, 20 minutes, one shared core each) the preset
scored 25.86 dB on atoms (3290 steps) and 10.51 on CJK; bottleneck 1 on atoms 25.54, bottleneck 4
on CJK 10.34; a cosine learning-rate decay to 0 over the budget (``lr_schedule``) 25.55 and
10.50 (hence constant, the paper's).
Hence, when ``widths``/``bottleneck`` are unset: 1/8-resolution code of 2 channels on a CPU,
the paper's 1/32 code of 64 channels on a GPU (where the hours of training it needs exist).

Training length on structured noise. The atoms suite's per-row offsets are noise, but
compressible (one number per row), so the code learns them in the end. Measured (8 frames of
the suite, batch 8 of 64², one thread): affine PSNR 22.97 dB (250 steps), 26.22 (1000),
26.27 (2000), 26.27 (3000), 26.09 (4250), 25.86 (4750), 25.48 (5250). Neither the
reconstruction loss nor a Noise2Self estimate (the loss on grid-masked pixels replaced by their
neighbours' average) turned: both kept falling, as the offsets they see are predictable from the
row. On the whole suite 20 minutes gave 25.86 dB at 3290 steps but 25.00 at 5956 steps (a less
loaded machine). CJK glyphs under pixel-independent noise held 10.9-11.0 dB from 2000 to 4250
steps. Hence the benchmarks train 3000 steps (about 11 CPU-minutes), and ``selfden train`` warns
when the noise of the data is correlated along rows or columns.

- Heads output ``(1 + 2m)·sigmoid(z) - m`` with ``m = output_margin`` (0.25): a plain sigmoid
  (m = 0, the paper) cannot exceed [0, 1], but "range" normalisation maps the noisy data's
  0.1/99.9 percentiles to 0/1 and true bright peaks lie above that (clean maxima 1.5–2.0 on
  the synthetic blob and atom sets). The margin keeps outputs bounded yet allows overshoot.
- Tiling: the code at 1/32 resolution and the residual blocks give a receptive field of
  several hundred pixels, so tiles never equal the whole image exactly. On a 512² image, tile
  minus whole differed by 0.02 on average (max 0.2–0.4, in normalised units) for any halo from
  32 to 128; seams (gradient across tile borders ÷ elsewhere) fell from 2.5–3.7 (halo 32) to
  1.5 (halo 96) and 0.9–1.0 (halo 128 around 256² cores, i.e. 512² tiles): hence halo 128
  (the package's default 256² core gives those 512² tiles).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from selfden.data import StackLike
from selfden.errors import SelfdenError
from selfden.methods import cae_networks
from selfden.methods.blind_check import hidden_line_scores, measured_unit, outcome_note
from selfden.methods.base import Cite, DeviceDefaults, Method, MethodConfig, Normalisation, Note, TorchArchitecture
from selfden.methods.cae_networks import CaeNet, NormKind
from selfden.methods.independent_noise import correlated_noise_warnings
from selfden.methods.lr_schedule import LrSchedule, follow_budget
from selfden.methods.padding import pad_to_multiple
from selfden.methods.weight_average import WeightAverage

logger = logging.getLogger(__name__)

PAPER_WIDTHS = (8, 16, 32, 64, 64, 64)
#: What unset ``widths``/``bottleneck`` mean per device (measured, see the module docstring): the
#: paper's 1/32-resolution code on a GPU; a 1/8-resolution code of 2 channels on a CPU, which
#: leaves the predict-the-mean plateau within a few hundred steps.
DEVICE_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"widths": (8, 16, 32, 64), "bottleneck": 2},
    "cuda": {"widths": PAPER_WIDTHS, "bottleneck": 64},
}


class CaeConfig(MethodConfig):
    """Hyper-parameters of the compressive autoencoder."""

    bottleneck: int | None = Field(
        None, ge=1, le=1024,
        description="channels of the code at the coarsest resolution (strength knob); unset: the device preset",
    )
    widths: tuple[int, ...] | None = Field(
        None,
        description="encoder widths: full resolution, then after each stride-2 step; unset: the device preset",
    )
    residual_blocks: int = Field(4, ge=0, le=64, description="residual blocks after the squeeze")
    residual_width: int = Field(64, ge=1, le=1024)
    norm: NormKind = Field("batch", description="batch; layer (per sample over C,H,W, as in the paper); none")
    output_margin: float = Field(0.25, ge=0.0, le=1.0, description="heads output [-m, 1+m]; 0 = plain sigmoid")
    loss: Literal["l1", "mse"] = Field("mse", description="per-head distance to the pooled input; the paper uses l1")
    learning_rate: float = Field(1e-3, gt=0.0)
    lr_schedule: LrSchedule = Field(
        "constant", description="cosine: anneal the learning rate to 0 at the end of the training budget"
    )
    ema_decay: float = Field(
        0.99, ge=0.0, lt=1.0,
        description="validate, denoise and export a moving average of the weights with this decay per step (0 = off)",
    )
    halo: int = Field(128, ge=0, description="tile context in pixels; 2*halo must be a multiple of the size step")

    @field_validator("widths")
    @classmethod
    def _widths_valid(cls, widths: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if widths is not None and (len(widths) < 2 or min(widths) < 1):
            raise ValueError(f"widths {widths} need at least two positive entries (full resolution + one downsampling)")
        return widths

    def device_defaults(self, device_type: str) -> DeviceDefaults:
        """Unset ``widths``/``bottleneck`` from the preset for ``device_type``; on a CPU, 64² crops in
        batches of 8 (the CPU measurements above: 4x the steps of 128² crops per second)."""
        preset = DEVICE_PRESETS.get(device_type, DEVICE_PRESETS["cpu"])
        unset = {key: value for key, value in preset.items() if getattr(self, key) is None}
        config = self.model_copy(update=unset) if unset else self
        return DeviceDefaults(config, 64, 8) if device_type == "cpu" else DeviceDefaults(config)

    def size_step(self) -> int:
        return 2 ** (len(self.widths or PAPER_WIDTHS) - 1)

    def patch_size_problem(self, patch_size: int, batch_size: int) -> str | None:
        problem = super().patch_size_problem(patch_size, batch_size)
        step = self.size_step()
        if problem is None and self.norm == "batch" and batch_size * (patch_size // step) ** 2 < 2:
            return (
                f"patch size {patch_size} in batches of {batch_size} leaves one code pixel per channel, too few "
                f"for batch norm; use patches of {2 * step} or batches of 2"
            )
        return problem

    @model_validator(mode="after")
    def _halo_fits_step(self) -> "CaeConfig":
        step = 2 ** (len(self.widths or PAPER_WIDTHS) - 1)
        if (2 * self.halo) % step:
            unit = step // 2
            raise ValueError(
                f"halo {self.halo}: 2*halo must be a multiple of the size step {step}; try {max(unit, round(self.halo / unit) * unit)}"
            )
        return self


def network_kwargs(config: CaeConfig) -> dict[str, Any]:
    """CaeNet's arguments from a device-resolved config."""
    if config.widths is None or config.bottleneck is None:
        raise ValueError("CaeNet needs explicit widths and bottleneck: resolve the config with device_defaults first")
    return {
        "widths": list(config.widths), "bottleneck": config.bottleneck, "residual_blocks": config.residual_blocks,
        "residual_width": config.residual_width, "norm": config.norm, "output_margin": config.output_margin,
    }


def multiresolution_loss(heads: list[torch.Tensor], target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Sum over heads of the distance (L1 or MSE) to the target average-pooled to the head's resolution."""
    distance = F.l1_loss if kind == "l1" else F.mse_loss
    loss = distance(heads[0], target)
    for level, head in enumerate(heads[1:], start=1):
        loss = loss + distance(head, F.avg_pool2d(target, 2**level))
    return loss


class Cae(Method):
    """Compressive autoencoder (no masking, no skip connections; identity prevented by the bottleneck)."""

    name: ClassVar[str] = "cae"
    config_class: ClassVar[type[MethodConfig]] = CaeConfig
    normalisation_kind = "range"
    summary = (
        "Compressive autoencoder: the image is squeezed through a narrow bottleneck of a few channels at "
        "1/8 to 1/32 resolution; noise, being incompressible, does not fit through and is left out of the reconstruction."
    )
    limitations = (
        "The bottleneck removes fine detail along with the noise: a wider bottleneck keeps more of both.",
        "Its receptive field spans the whole tile, so tiled and whole-image outputs differ slightly.",
        "Trained with an L1/L2 reconstruction loss on the noisy images, it estimates the mean for pixel-independent noise only.",
    )
    citations = (
        Cite(
            text="Wang, Henninen, Keller, Erni: Self-supervised denoising for massive noisy images (2021)",
            doi="10.48550/arXiv.2110.11911",
            url="https://arxiv.org/abs/2110.11911",
        ),
        Cite(
            text="Wang, Henninen, Keller, Erni: Multi-resolution convolutional neural networks for inverse "
            "problems. Scientific Reports 10, 5730 (2020)",
            doi="10.1038/s41598-020-62484-z",
        ),
    )

    @classmethod
    def prepare(cls, config: MethodConfig, stacks: Sequence[StackLike]) -> tuple[MethodConfig, tuple[Note, ...]]:
        """Warn when the data's noise is correlated: the code would keep it (see the module docstring)."""
        return config, correlated_noise_warnings(cls.name, stacks)

    def __init__(self, config: CaeConfig, normalisation: Normalisation, device: torch.device) -> None:
        super().__init__(config, normalisation, device)
        self.config: CaeConfig = config
        self.net = CaeNet(**network_kwargs(config)).to(device)
        self.average = WeightAverage(self.net, config.ema_decay)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.learning_rate)

    def on_budget_progress(self, fraction: float) -> None:
        follow_budget(self.optimizer, self.config.lr_schedule, self.config.learning_rate, fraction)

    def training_step(self, batch: torch.Tensor) -> dict[str, float]:
        self._check_size(batch, training=True)
        self.net.train()
        loss = multiresolution_loss(self.net.heads(batch), batch, self.config.loss)
        self.optimise(self.optimizer, loss)
        self.average.update(self.net)
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def validation_step(self, batch: torch.Tensor) -> dict[str, float]:
        self._check_size(batch, training=False)
        heads = self._denoiser().heads(batch)
        return {
            "val_loss": float(multiresolution_loss(heads, batch, self.config.loss)),
            "val_l1_full": float(F.l1_loss(heads[0], batch)),
        }

    @torch.no_grad()
    def denoise(self, batch: torch.Tensor) -> torch.Tensor:
        """Full-resolution head; pads any size up to a multiple of the size step and crops back."""
        height, width = batch.shape[-2:]
        padded = pad_to_multiple(batch, self.size_step)
        return self._denoiser()(padded)[..., :height, :width]

    def outcome_notes(self, val_batches: Sequence[torch.Tensor]) -> tuple[Note, ...]:
        """Lines along the measured noise axis hidden (pixels if none), against the best blur (``blind_check.py``)."""
        unit = measured_unit(val_batches)
        scores = hidden_line_scores(self.denoise, val_batches, unit)
        fix = "Train longer (selfden train cae --resume -o RUN --minutes M)"
        return (outcome_note("cae", scores, unit, fix),) if scores.pixels else ()

    def _denoiser(self) -> CaeNet:
        """The weight average in eval mode (the network itself when ``ema_decay`` is 0)."""
        net = self.average.model(self.net)
        assert isinstance(net, CaeNet)
        return net

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "average": self.average.state_dict(), "optimizer": self.optimizer.state_dict()}

    def warm_start(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.average.load_state_dict({"updates": 0, "weights": self.net.state_dict()})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        # checkpoints from before the weight average: start it from the loaded network
        self.average.load_state_dict(state.get("average", {"updates": 0, "weights": self.net.state_dict()}))
        # Deep copy: torch reuses same-device tensors, so two methods would share Adam moments.
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))

    def export_graphs(self) -> dict[str, nn.Module]:
        """A CPU copy of the weight average in eval mode (exporting never disturbs training); full-resolution head only."""
        return {"denoiser": copy.deepcopy(self._denoiser()).cpu().eval()}

    def torch_architecture(self) -> TorchArchitecture:
        return TorchArchitecture((cae_networks,), "CaeNet", network_kwargs(self.config))

    @property
    def size_step(self) -> int:
        return 2 ** (len(self.net.down))

    @property
    def halo(self) -> int:
        return self.config.halo

    def package_config(self) -> dict[str, Any]:
        return {"bottleneck": self.config.bottleneck}

    def _check_size(self, batch: torch.Tensor, training: bool) -> None:
        codes = batch.shape[0] * (batch.shape[-2] // self.size_step) * (batch.shape[-1] // self.size_step)
        if self.config.norm == "batch" and training and codes < 2:
            raise SelfdenError(
                f"cae batch {tuple(batch.shape)} leaves one code pixel per channel, too few for batch norm; "
                f"use a batch size of at least 2 or patches of at least {2 * self.size_step}"
            )
        if batch.shape[-1] % self.size_step or batch.shape[-2] % self.size_step:
            raise SelfdenError(
                f"cae batch of size {tuple(batch.shape[-2:])}: height and width must be multiples of "
                f"{self.size_step} (the network halves them {len(self.net.down)} times); use e.g. a patch "
                f"size of {4 * self.size_step}"
            )
