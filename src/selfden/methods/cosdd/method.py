"""COSDD as a selfden Method: three networks trained side by side, each with its own optimiser.

1. ladder VAE + autoregressive noise model: the negative ELBO, KL/npix + NLL (nats/pixel);
2. signal decoder: MSE to the noisy input from a detached s_code;
3. direct denoiser: MSE to the signal decoder's output for one posterior sample (detached).

Augmentation keeps the noise axis and its scan direction (``CosddConfig.training_orientations``):
for row noise, crops are drawn upside down half the time (rows are independent, so their
order carries no noise statistics); column noise, likewise mirrored left-right. 90-degree
rotations would turn row noise into column noise, and a flip along the noise axis reverses
the scan, which changes asymmetric scan-line noise (detector lag, fly-back) that the causal
noise model can otherwise learn. The reference code augments not at all.

Measured (2 shared CPU cores, "tiny" preset, 64^2 crops, batch 4, fp32; affine PSNR on 16
held-out frames):

- Posterior collapse on the atoms suite (shot noise at dose 7 + per-row offsets; noisy 22.4 dB).
  No countermeasure: KL 0.047 -> 0.027 nats/pixel by step 200, samples identical (the
  reference collapsed the same way, 20.8 dB). Noise-model reach 8 instead of 40: the same
  (KL 0.026 at step 100). KL warm-up over 400 steps: no collapse by step 1000, but the KL kept
  falling (0.10 -> 0.05); direct 30.9 dB, MMSE-20 31.3 dB. Free bits 0.1 nats/pixel: KL held
  at ~0.1; direct 31.2 dB (SSIM 0.90), MMSE-20 31.3 dB after 800 steps -> the default until
  runs started from the prior (see 0.03 below).
  Uniform dequantisation of the count grid on top of that: 27.0 dB (the grid shows the noise
  model each row's offset; without it the latents spend their free nats on the offsets).
- On the stripe suite free bits do no harm: 600 steps gave direct 22.2 dB with free bits 0.1
  vs 21.8 dB without (noisy 19.6 dB). There a healthy model sits at KL 0.027 nats/pixel with
  samples differing by 0.35 std, so collapse is judged on KL *and* sample spread.
- The direct denoiser's learning rate follows the VAE's. With a plateau scheduler on its own
  MSE (the reference's), the 30-minute stripe run (1341 steps) had cut it to 2e-8: its target
  moves, and the collapsed VAE of the first validation gave an MSE of 0.001 that no later
  target reached. That run's direct output scored 22.84 dB against 25.04 for MMSE-32 (first
  8 frames); continuing it with the rate restored to 2e-3 gave 23.94 (50 steps), 24.45 (100),
  24.83 (200), 24.75-24.89 (250-300) against an MMSE-32 of 24.99.
- So does the signal decoder's (``_followers_take_vae_rate``): per step on stripe, seed 1 at 2400 steps
  26.38 / 26.45 dB direct / MMSE-8 against 26.12 / 26.01 with its own plateau scheduler (RESULTS.md).
- Upside-down crops (row noise) are neutral per step on the stripe suite: direct 25.19 dB on the
  first 8 frames after 1528 steps, against 24.95 / 25.22 at 1385 / 1628 steps without them;
  ``--tta`` over the two orientations adds 0.03 dB (all frames 24.32 -> 24.35). They stay on:
  they cost nothing and double the data a small stack offers.
- More time alone does not reach the issue's 2 dB over oracle NLM: the direct denoiser of one
  90-minute run (no flips; ``benchmarks/cosdd_trajectory.py``) scored 24.95 dB at 30 min (1385
  steps), 25.61 at 60 (2913) and 25.65 at 90 (4294) on the first 8 frames, against 25.10 for
  oracle NLM. The tiny preset on 64^2 crops saturates; the reference's sizes and crops need a GPU.
- A 5-minute budget (~555 steps on 2 threads; ``benchmarks/cosdd_compare.py``, first 8 stripe frames, direct
  / MMSE-8): the constant 2e-3 default 23.57 / 23.85 dB (blur oracle 23.87, NLM 25.10); neither a higher (4e-3:
  22.98) or lower rate (1e-3: 22.17), cosine annealing (21.65) nor a moving average of the direct denoiser's
  weights (22.66 at decay 0.99) did better: early on the model improves faster than an average of its past.
  Hence the verdict after training (``blind_check.py``), which on 15 snapshots of 4 runs had the sign of the
  true gain over the best blur right every time (``benchmarks/cosdd_verdict.py``).
- What each posterior sample repeats (``config.SAMPLING_LAYOUT``; ``benchmarks/cosdd_code_width.py``): a 24-channel
  code and a second full-resolution encoder block (run once per tile) make a sample 0.37 of a sampler pass, not
  0.52; from random weights they matched the old layout at 1200 steps (24.49 / 24.54 dB direct / MMSE-8 vs 24.51 /
  24.66, two seeds each) but not at 555 (21.80 / 22.00 vs 22.96 / 23.37).
- Starting from selfden's prior (``prior.py``: this layout pretrained on procedural scenes) instead of random
  weights: 25.37 / 25.21 dB after 555 steps (seed 3) against 23.06 / 23.38 for the old layout from random
  weights, above oracle NLM (25.10) in 5 minutes on 2 cores. Hence both are the default of new tiny runs.
- Free bits 0.1 cost quality once runs start from the prior: the latents then carry ~0.1 nats/pixel (the
  reference's KL on the stripe suite: 0.04-0.055) and the surplus is noise in the direct denoiser's targets.
  0.03, per step from the prior (RESULTS.md "free bits"): stripe seed 1 +0.3 dB at every snapshot to 2400 steps
  (26.12 against 25.81 direct), seed 2 level to 667 steps then +0.1 to +0.3 (25.28 against 25.16 at 1600);
  atoms 31.66 / 31.01 / 29.87 against 27.01 / 26.59 / 26.74 at 460 / 970 / 1200 steps, KL 0.04-0.05 and no
  collapse (at 0.1 the noise model's NLL fell to -1.77: spare latents fit the count grid). Hence the default.
- Photon counts (values on a grid, ``selfden.value_grid``, measured when a run is planned): training adds
  uniform noise one grid step wide, else the noise model fits the grid (NLL -2.5 nats/pixel). Atoms suite,
  2000 steps, same seed: direct 33.07 dB and still rising, against 31.20 without (``value_step=0``). All 200
  frames after 5 / 15 / 30 minutes on 2 cores (``benchmarks/peers.py``): 32.68 / 33.12 / 33.17, noise2atom 26.27 at 30.
- Halo: tile-vs-whole difference of the direct denoiser (max, relative to the output std) is
  0.3-0.7 % at 16 px, 0.05-0.5 % at 32 px, <= 0.01 % at 48 px (atoms, stripe). A direct denoiser
  that keeps learning (previous item) reaches further: 0.72 % beyond a 32-px halo after 30 minutes
  on the stripe suite (`selfden infer` vs the package's test output). Hence 6 size steps (48 px).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from selfden.data import StackLike
from selfden.errors import SelfdenError
from selfden.methods.blind_check import hidden_line_scores, hidden_unit, outcome_note
from selfden.methods.base import (
    Cite, Method, MethodConfig, Normalisation, NormalisationKind, Note, TorchArchitecture, reseed_for_rank,
)
from selfden.methods.cosdd.ar_decoder import ArNoiseDecoder, mixture_nll
from selfden.methods.cosdd import blocks, direct_denoiser
from selfden.methods.cosdd.config import CosddArch, CosddConfig
from selfden.methods.cosdd.direct_denoiser import DirectDenoiser
from selfden.methods.cosdd.ladder_vae import LadderVAE
from selfden.methods.cosdd.prior import fits_prior, prior_networks
from selfden.methods.cosdd.objective import collapse_message, is_collapsed, kl_weight, kl_with_free_bits
from selfden.methods.cosdd.split_sampler import SamplerDecoder, SamplerEncoder
from selfden.methods.cosdd.signal_decoder import SignalDecoder
from selfden.methods.lr_schedule import follow_budget
from selfden.noise_analysis import measure_noise_correlation
from selfden.value_grid import measure_value_step

logger = logging.getLogger(__name__)

#: Tile context per size step when ``halo`` is unset (measured: see the module docstring).
HALO_STEPS = 6


def direct_kwargs(arch: CosddArch) -> dict[str, Any]:
    """The direct denoiser's arguments: its width and which levels downsample."""
    return {"features": arch.features, "downsample": [arch.downsample_at(i) for i in range(arch.levels)]}


class Cosdd(Method):
    """Correlated and signal-dependent denoising (COSDD) with a direct denoiser."""

    name: ClassVar[str] = "cosdd"
    config_class: ClassVar[type[CosddConfig]] = CosddConfig
    normalisation_kind: ClassVar[NormalisationKind] = "standardise"
    summary: ClassVar[str] = (
        "Correlated and signal-dependent denoising (COSDD): a ladder VAE explains the image as a clean signal "
        "plus noise from an autoregressive noise model that sees up to 40 pixels along one axis, so noise "
        "correlated along rows or columns (scan lines, camera read-out) is modelled and removed. The main "
        "weights are the direct denoiser, trained to predict the mean of the posterior samples; the sampler "
        "graphs (attachments: an encoder run once per tile, a decoder run per sample) draw posterior samples "
        "for MMSE averaging and uncertainty in `selfden infer`."
    )
    limitations: ClassVar[tuple[str, ...]] = (
        "Noise correlated along both axes at once, or over more than 40 pixels, is not fully modelled.",
        "Structure that is itself correlated along the noise axis (thin lines parallel to it) can be taken for noise.",
        "The direct denoiser approximates the posterior mean; average sampler outputs for a better estimate.",
    )
    citations: ClassVar[tuple[Cite, ...]] = (
        Cite(
            text="Salmon, B. & Krull, A. Unsupervised Denoising for Signal-Dependent and Row-Correlated "
            "Imaging Noise. WACV 2025.",
            doi="10.48550/arXiv.2310.07887",
            url="https://arxiv.org/abs/2310.07887",
        ),
        Cite(
            text="Salmon, B. & Krull, A. Direct Unsupervised Denoising. ICCV Workshops 2023.",
            doi="10.48550/arXiv.2310.18116",
            url="https://arxiv.org/abs/2310.18116",
        ),
    )

    @classmethod
    def prepare(cls, config: MethodConfig, stacks: Sequence[StackLike]) -> tuple[MethodConfig, tuple[Note, ...]]:
        """The noise direction and the values' grid, measured from the training images unless the user set them."""
        assert isinstance(config, CosddConfig)
        notes: list[Note] = []
        if config.direction == "auto" or "direction" not in config.model_fields_set:
            result = measure_noise_correlation(stacks)
            notes.append(Note("note", f"noise direction: {result.direction} — {result.reason}"))
            config = config.model_copy(update={"direction": result.direction})
        if config.value_step is None:
            step = measure_value_step(stacks, "y" if config.direction == "y" else "x")
            if step:
                notes.append(Note("note", f"the values lie on a grid of step {step:.4g} (photon counts or integer "
                                  "levels): training spreads each over one step so the noise model fits the noise, "
                                  "not the grid (--set value_step=0: off)"))
            config = config.model_copy(update={"value_step": step or 0.0})
        return config, tuple(notes)

    @classmethod
    def start_note(cls, config: MethodConfig) -> Note | None:
        assert isinstance(config, CosddConfig)
        if not config.prior or config.direction == "auto":
            return None
        if fits_prior(config.arch()):
            return Note("note", "starting from selfden's COSDD prior, pretrained on procedural scenes (none of your "
                        "images); --set prior=false starts from random weights")
        return Note("note", "no COSDD prior fits these networks (it fits the tiny preset's defaults with noise along "
                    "x or y): starting from random weights")

    def __init__(self, config: CosddConfig, normalisation: Normalisation, device: torch.device) -> None:
        if config.direction == "auto":
            raise SelfdenError(
                "cosdd direction 'auto' is measured from the training images when a run is planned "
                "(selfden train does it); choose x, y or none to build the networks"
            )
        super().__init__(config, normalisation, device)
        self.config: CosddConfig = config
        arch = config.arch()
        # channels_last: measured ~1.3x faster convolutions on CPU (oneDNN) at these widths.
        fast = {"device": device, "memory_format": torch.channels_last}
        self.vae = LadderVAE(arch).to(**fast)
        self.ar_decoder = ArNoiseDecoder(arch).to(**fast)
        self.signal_decoder = SignalDecoder(arch.code_features, arch.decoder_kernel).to(**fast)
        self.direct = DirectDenoiser(**direct_kwargs(arch)).to(**fast)
        self._size_step = arch.size_step
        groups = {
            "vae": [*self.vae.parameters(), *self.ar_decoder.parameters()],
            "signal": list(self.signal_decoder.parameters()),
            "direct": list(self.direct.parameters()),
        }
        self.optimizers = {k: torch.optim.Adamax(p, lr=config.learning_rate) for k, p in groups.items()}
        # Only the VAE has a plateau scheduler: the signal decoder and the direct denoiser follow its
        # rate (see ``_followers_take_vae_rate``).
        self.schedulers = {
            "vae": torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizers["vae"], factor=0.1, patience=config.plateau_patience
            )
        }
        # Posterior noise comes from our own generator so a resumed run continues identically.
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(torch.randint(0, 2**62, ()).item()))
        self.step = 0
        self.collapse_reported = False
        # the values' grid step in normalised units (0: continuous data, or a run saved before it was measured)
        self._grid_width = (config.value_step or 0.0) / normalisation.scale

    # --- training -------------------------------------------------------------------------
    def on_budget_progress(self, fraction: float) -> None:
        for optimizer in self.optimizers.values():
            follow_budget(optimizer, self.config.lr_schedule, self.config.learning_rate, fraction)

    def training_step(self, batch: torch.Tensor) -> dict[str, float]:
        self._set_train(True)
        observed = self._spread_over_grid(batch)
        elbo = self._elbo(observed)
        beta = kl_weight(self.step, self.config.kl_warmup_steps)
        objective = beta * kl_with_free_bits(elbo["kl"], self.config.free_bits) + elbo["nll"]
        finite = self.optimise(self.optimizers["vae"], objective, skip_non_finite=True)
        signal = self.signal_decoder(elbo["s_code"].detach())
        signal_mse = F.mse_loss(signal.float(), observed.float())
        self.optimise(self.optimizers["signal"], signal_mse, skip_non_finite=True)
        direct_mse = F.mse_loss(self.direct(batch).float(), signal.detach().float())
        self.optimise(self.optimizers["direct"], direct_mse, skip_non_finite=True)
        self.step += 1
        if not finite:
            logger.warning("step %d: non-finite ELBO loss; the VAE update was skipped", self.step)
        return {
            "loss": _scalar(elbo["kl"] + elbo["nll"]),
            "kl_per_pixel": _scalar(elbo["kl"]),
            "nll": _scalar(elbo["nll"]),
            "kl_weight": beta,
            "signal_mse": _scalar(signal_mse),
            "direct_mse": _scalar(direct_mse),
        }

    def decorrelate_streams(self, rank: int) -> None:
        if rank:  # each data-parallel rank draws its own posterior noise
            reseed_for_rank(self.generator, rank)

    @torch.no_grad()
    def validation_step(self, batch: torch.Tensor) -> dict[str, float]:
        self._set_train(False)
        observed = self._spread_over_grid(batch)
        elbo = self._elbo(observed)
        signal = self.signal_decoder(elbo["s_code"])
        second = self.signal_decoder(self.vae(observed, generator=self.generator, compute_kl=False).s_code)
        kl = float(elbo["kl"])
        # Mean absolute difference of two posterior samples: ~0 when the posterior collapsed.
        spread = float((signal - second).abs().mean())
        return {
            "val_loss": kl + float(elbo["nll"]),
            "kl_per_pixel": kl,
            "nll": float(elbo["nll"]),
            "signal_mse": float(F.mse_loss(signal.float(), observed.float())),
            "direct_mse": float(F.mse_loss(self.direct(batch).float(), signal.float())),
            "sample_spread": spread,
            "collapsed": float(is_collapsed(kl, spread, self.step, self.config)),
        }

    def on_validation_end(self, metrics: dict[str, float]) -> None:
        if self.config.lr_schedule == "constant":  # a budget schedule sets the rates before every step
            if self.step >= self.config.kl_warmup_steps:
                self.schedulers["vae"].step(metrics["val_loss"])
            self._followers_take_vae_rate()
        kl, spread = metrics["kl_per_pixel"], metrics["sample_spread"]
        collapsed = is_collapsed(kl, spread, self.step, self.config)
        metrics["collapsed"] = float(collapsed)
        if collapsed and not self.collapse_reported:
            logger.warning(collapse_message(kl, spread, self.step, self.config.free_bits))
        self.collapse_reported = self.collapse_reported or collapsed

    def _followers_take_vae_rate(self) -> None:
        """Neither loss is a plateau signal. The signal decoder's MSE against the noisy input rises as
        the VAE removes noise (a scheduler on it had the rate at 2e-9 after 30 minutes); the direct
        denoiser's target moves until the VAE settles (a scheduler on it: 2e-8, 2 dB below the MMSE)."""
        rate = self.optimizers["vae"].param_groups[0]["lr"]
        for name in ("signal", "direct"):
            for group in self.optimizers[name].param_groups:
                group["lr"] = rate

    def _elbo(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """KL and NLL in nats per pixel for one posterior sample, and that sample's s_code."""
        self._check_size(batch)
        out = self.vae(batch, generator=self.generator)
        assert out.kl_levels is not None
        npix = batch.shape[0] * batch.shape[-2] * batch.shape[-1]
        nll = mixture_nll(self.ar_decoder(batch, out.s_code), batch).mean()
        return {"kl": out.kl_levels.sum() / npix, "nll": nll, "s_code": out.s_code}

    def _spread_over_grid(self, batch: torch.Tensor) -> torch.Tensor:
        """Grid-valued data plus uniform noise one grid step wide (``selfden.value_grid``); the direct
        denoiser keeps the data as they are, since that is what it sees at inference."""
        if not self._grid_width:
            return batch
        uniform = torch.rand(batch.shape, generator=self.generator, device=batch.device, dtype=batch.dtype)
        return batch + (uniform - 0.5) * self._grid_width

    def _set_train(self, mode: bool) -> None:
        for net in (self.vae, self.ar_decoder, self.signal_decoder, self.direct):
            net.train(mode)

    def _check_size(self, batch: torch.Tensor) -> None:
        height, width = batch.shape[-2:]
        if height % self.size_step or width % self.size_step:
            raise SelfdenError(
                f"cosdd received a {height}x{width} batch; height and width must be multiples of "
                f"{self.size_step} (the VAE halves them {self._size_step.bit_length() - 1} times): "
                f"choose a patch size such as {max(self.size_step, height // self.size_step * self.size_step)}"
            )

    def outcome_notes(self, val_batches: Sequence[torch.Tensor]) -> tuple[Note, ...]:
        """The direct denoiser's blind-line score against the best line-blind blur's (``blind_check.py``)."""
        unit = hidden_unit(self.config.direction)
        scores = hidden_line_scores(self.denoise, val_batches, unit)
        fix = "Train longer (selfden train cosdd --resume -o RUN --minutes M), or check the noise direction (--direction)"
        return (outcome_note("cosdd's direct denoiser", scores, unit, fix),) if scores.pixels else ()

    # --- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def denoise(self, batch: torch.Tensor) -> torch.Tensor:
        """Direct-denoiser estimate; any size (padded to the size step and cropped back)."""
        self._set_train(False)
        height, width = batch.shape[-2:]
        pad_h, pad_w = -height % self.size_step, -width % self.size_step
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        padded = F.pad(batch, (0, pad_w, 0, pad_h), mode=mode) if pad_h or pad_w else batch
        return self.direct(padded)[..., :height, :width]

    def torch_architecture(self) -> TorchArchitecture:
        return TorchArchitecture((blocks, direct_denoiser), "DirectDenoiser", direct_kwargs(self.config.arch()))

    def export_graphs(self) -> dict[str, nn.Module]:
        """Copies on CPU in eval mode: exporting never disturbs training."""
        # The sampler ships split: encoder once per tile, decoder per sample (split_sampler.py).
        graphs = {
            "denoiser": self.direct,
            "sampler_encoder": SamplerEncoder(self.vae),
            "sampler_decoder": SamplerDecoder(self.vae, self.signal_decoder),
        }
        plain = {"device": "cpu", "dtype": torch.float32, "memory_format": torch.contiguous_format}
        return {name: copy.deepcopy(net).to(**plain).eval() for name, net in graphs.items()}

    @property
    def size_step(self) -> int:
        return self._size_step

    @property
    def halo(self) -> int:
        return self.config.halo if self.config.halo is not None else HALO_STEPS * self.size_step

    def package_config(self) -> dict[str, Any]:
        return {"direction": self.config.direction, "default_samples": self.config.samples}

    # --- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "networks": {name: net.state_dict() for name, net in self._networks().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "generator": self.generator.get_state(),
            "step": self.step,
            "collapse_reported": self.collapse_reported,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, net in self._networks().items():
            net.load_state_dict(state["networks"][name])
        for key, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
        for key, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][key])
        self.generator.set_state(state["generator"].cpu())
        self.step = int(state["step"])
        self.collapse_reported = bool(state["collapse_reported"])
        if self.config.lr_schedule == "constant":  # runs saved before 2026-12-06 had cut the signal decoder's
            self._followers_take_vae_rate()

    def prior_weights(self) -> dict[str, Any] | None:
        networks = prior_networks(self.config.arch()) if self.config.prior else None
        return None if networks is None else {"networks": networks}

    def warm_start(self, state: dict[str, Any]) -> None:
        for name, net in self._networks().items():
            net.load_state_dict(state["networks"][name])

    def _networks(self) -> dict[str, nn.Module]:
        return {"vae": self.vae, "ar_decoder": self.ar_decoder, "signal_decoder": self.signal_decoder,
                "direct": self.direct}


def _scalar(value: torch.Tensor) -> float:
    return float(value.detach())

