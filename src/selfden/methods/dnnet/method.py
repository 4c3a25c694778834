"""dnnet as a selfden Method: D-net and N-net trained jointly by one Adam on grid-masked pixels.

Loss per step, over the masked pixels only: the negative log-likelihood of the residual
``noisy - D(masked input)`` under the N-net's noise distribution at the predicted signal
(fp32, outside any autocast), or the plain squared residual when ``noise_model="none"``
(the Noise2Self baseline). The N-net sees the predicted signal detached: the D-net learns
only through the residual, so it cannot move its estimate towards signal levels where the
noise model happens to be wide. Clipped (saturated) target pixels enter the likelihood as the
probability of their censored interval instead (``clipping.py``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from selfden.data import StackLike
from selfden.errors import SelfdenError
from selfden.methods.base import (
    Cite, Method, MethodConfig, Normalisation, NormalisationKind, Note, TorchArchitecture, reseed_for_rank,
)
from selfden.methods.blind_score import blind_scores
from selfden.methods.dnnet.clipping import find_clip_levels
from selfden.methods.dnnet.config import DnnetConfig
from selfden.methods.dnnet.masking import apply_mask, draw_grid_mask
from selfden.methods.dnnet import networks
from selfden.methods.dnnet.networks import DEPTH, DNet, NoiseNet
from selfden.methods.dnnet.noise_model import NoiseCurve, empirical_noise, noise_model_curve
from selfden.methods.dnnet.noise_model_plot import plot_noise_model
from selfden.methods.independent_noise import correlated_noise_warnings
from selfden.methods.lr_schedule import follow_budget
from selfden.methods.padding import pad_to_multiple

logger = logging.getLogger(__name__)

#: Tile context (px): the D-net's receptive field reaches 23-26 px from a pixel (depending on its
#: place in the pooling grid), so 28 (a multiple of the size step) makes tiled equal whole-image
#: output exactly, for any weights. Measured max |tile - whole| / output std, random weights:
#: halo 8: 1e-2, 16: 5e-4, 24: 1.4e-5, 28: 0.
HALO = 28
#: Seed of the validation masks: every validation sees the same masks, so val_loss curves compare.
_VAL_MASK_SEED = 20210216
#: Weight of the newest batch in the running estimate of the signal range (for the package's table).
_RANGE_EMA = 0.05
#: Quantiles of the predicted signal that define that range.
_RANGE_QUANTILES = (0.01, 0.99)
#: Signal levels in the package's noise-model table.
_TABLE_POINTS = 9


class Dnnet(Method):
    """Joint blind denoising and noise estimation (D-net + N-net), or Noise2Self with ``noise_model="none"``."""

    name: ClassVar[str] = "dnnet"
    config_class: ClassVar[type[DnnetConfig]] = DnnetConfig
    #: Standardised data put the N-net's input and the noise scales near 1 whatever the camera's units.
    normalisation_kind: ClassVar[NormalisationKind] = "standardise"
    summary: ClassVar[str] = (
        "D-net + N-net: a U-Net denoiser trained on grid-masked pixels (Noise2Self-style blind spots) together "
        "with a per-pixel noise model (Gaussian or Gaussian mixture, conditioned on the signal) whose likelihood "
        "replaces the L2 loss. With no noise model it is the Noise2Self/Noise2Void baseline."
    )
    limitations: ClassVar[tuple[str, ...]] = (
        "Assumes noise independent from pixel to pixel: streaks and row or column offsets are kept as signal (use COSDD).",
        "Structures one pixel wide that cannot be predicted from their neighbours can be smoothed away.",
    )
    citations: ClassVar[tuple[Cite, ...]] = (
        Cite(
            text="Ollion, J., Ollion, C., Gassiat, E., Lehéricy, L., Le Corff, S.: Joint self-supervised "
            "blind denoising and noise estimation (2021)",
            doi="10.48550/arXiv.2102.08023",
            url="https://arxiv.org/abs/2102.08023",
        ),
        Cite(
            text="Batson, J., Royer, L.: Noise2Self: Blind Denoising by Self-Supervision. ICML 2019",
            doi="10.48550/arXiv.1901.11365",
            url="https://arxiv.org/abs/1901.11365",
        ),
    )

    @classmethod
    def prepare(cls, config: MethodConfig, stacks: Sequence[StackLike]) -> tuple[MethodConfig, tuple[Note, ...]]:
        """Warn when the data's noise is correlated (the blind spot would keep it as signal); find
        clipped pixels unless the user gave their levels."""
        assert isinstance(config, DnnetConfig)
        notes = correlated_noise_warnings(cls.name, stacks)
        chosen = {"clip_low", "clip_high"} & config.model_fields_set
        if not config.clip_detection or chosen or config.noise_model == "none":  # plain L2 has no likelihood to censor
            return config, notes
        found = find_clip_levels(stacks)
        if found.low is None and found.high is None:
            return config, notes
        ends = [f"{share:.1%} of the pixels sit at the {end} {level:g}"
                for end, level, share in (("minimum", found.low, found.low_fraction),
                                          ("maximum", found.high, found.high_fraction)) if level is not None]
        note = Note("note", f"clipped pixels: {' and '.join(ends)}; the noise likelihood counts them as beyond "
                            "that level, not as noise (--set clip_detection=false to treat them as measurements)")
        return config.model_copy(update={"clip_low": found.low, "clip_high": found.high}), (*notes, note)

    def __init__(self, config: DnnetConfig, normalisation: Normalisation, device: torch.device) -> None:
        super().__init__(config, normalisation, device)
        self.config: DnnetConfig = config
        # channels_last: measured 1.3-1.5x faster training steps on CPU (oneDNN) at these widths.
        self.dnet = DNet(config.filters).to(device=device, memory_format=torch.channels_last)
        self.nnet = _noise_net(config)
        if self.nnet is not None:
            self.nnet.to(device)
        self.optimizer = torch.optim.Adam(self.trainable_parameters(), lr=config.learning_rate)
        self.scheduler = (
            torch.optim.lr_scheduler.StepLR(self.optimizer, config.lr_halving_steps, gamma=0.5)
            if config.lr_halving_steps
            else None
        )
        # Masks come from our own generator (seeded from torch's, which the trainer seeds) so a
        # resumed run draws the masks an uninterrupted one would have.
        self.generator = torch.Generator()
        self.generator.manual_seed(int(torch.randint(0, 2**62, ()).item()))
        #: Running (low, high) of the predicted signal in normalised units: the range the N-net was trained on.
        self.signal_range = torch.tensor([float("nan"), float("nan")])
        #: Clip levels in normalised units (None: not clipped at that end).
        self.clip_levels = tuple(
            None if level is None else (level - normalisation.offset) / normalisation.scale
            for level in (config.clip_low, config.clip_high)
        )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        nets = [self.dnet] if self.nnet is None else [self.dnet, self.nnet]
        return [p for net in nets for p in net.parameters()]

    # --- training -------------------------------------------------------------------------
    def on_budget_progress(self, fraction: float) -> None:
        follow_budget(self.optimizer, self.config.lr_schedule, self.config.learning_rate, fraction)

    def training_step(self, batch: torch.Tensor) -> dict[str, float]:
        self._check_size(batch)
        self._set_train(True)
        mask = self._draw_mask(batch, self.generator)
        loss, metrics, signal = self._masked_loss(batch, mask)
        self.optimise(self.optimizer, loss)
        if self.scheduler is not None:
            self.scheduler.step()
        self._track_signal_range(signal)
        return metrics

    def decorrelate_streams(self, rank: int) -> None:
        if rank:  # each data-parallel rank masks its own crops with its own draws
            reseed_for_rank(self.generator, rank)

    @torch.no_grad()
    def validation_step(self, batch: torch.Tensor) -> dict[str, float]:
        self._check_size(batch)
        self._set_train(False)
        generator = torch.Generator().manual_seed(_VAL_MASK_SEED)
        _, metrics, _ = self._masked_loss(batch, self._draw_mask(batch, generator))
        return {"val_loss" if k == "loss" else k: v for k, v in metrics.items()}

    def _draw_mask(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        shape = (batch.shape[0], batch.shape[-2], batch.shape[-1])
        grid = draw_grid_mask(shape, generator, self.config.grid_spacing, self.config.drop_fraction)
        return grid.mask.to(batch.device)

    def _masked_loss(
        self, batch: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """Loss over the masked pixels, its metrics, and the predicted signal there (detached)."""
        prediction = self.dnet(apply_mask(batch, mask))
        with torch.autocast(device_type=batch.device.type, enabled=False):
            signal = prediction.float()[mask]
            residual = batch.float()[mask] - signal
            mse = (residual**2).mean()
            if self.nnet is None:
                return mse, {"loss": float(mse.detach()), "masked_mse": float(mse.detach())}, signal.detach()
            mixture = self.nnet(signal.detach())
            loss = self._censored_nll(mixture, batch.float()[mask], signal).mean()
            metrics = {
                "loss": float(loss.detach()),
                "masked_mse": float(mse.detach()),
                "noise_std": float(mixture.std().mean().detach()),
            }
        return loss, metrics, signal.detach()

    def _censored_nll(self, mixture: networks.Mixture, target: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        """Per masked pixel: -log density of its residual, or -log P(beyond the clip level) where it was clipped."""
        nll = mixture.nll(target - signal)
        low, high = self.clip_levels
        at_low, at_high = self._at_clip(target, low, below=True), self._at_clip(target, high, below=False)
        if at_high is not None:
            nll = torch.where(at_high, -mixture.log_survival(high - signal), nll)
        if at_low is not None:
            nll = torch.where(at_low, -mixture.log_cdf(low - signal), nll)
        return nll

    @staticmethod
    def _at_clip(values: torch.Tensor, level: float | None, below: bool) -> torch.Tensor | None:
        """Values at or beyond the clip ``level`` (below it for the low end); None when that end is not clipped."""
        if level is None:
            return None
        # A relative tolerance: float32 normalisation may move a clipped value by an ulp.
        margin = 1e-5 * max(1.0, abs(level))
        return values <= level + margin if below else values >= level - margin

    def _track_signal_range(self, signal: torch.Tensor) -> None:
        if signal.numel() < 2:
            return
        quantiles = torch.quantile(signal.float().cpu(), torch.tensor(_RANGE_QUANTILES))
        if torch.isnan(self.signal_range).any():
            self.signal_range = quantiles
        else:
            self.signal_range = self.signal_range + _RANGE_EMA * (quantiles - self.signal_range)

    def _set_train(self, mode: bool) -> None:
        self.dnet.train(mode)
        if self.nnet is not None:
            self.nnet.train(mode)

    # --- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def denoise(self, batch: torch.Tensor) -> torch.Tensor:
        """D-net on the unmasked batch; any size is padded up to a multiple of the size step and cropped back."""
        self._set_train(False)
        height, width = batch.shape[-2:]
        return self.dnet(pad_to_multiple(batch, self.size_step))[..., :height, :width]

    def export_graphs(self) -> dict[str, torch.nn.Module]:
        return {"denoiser": self.dnet.eval()}

    def torch_architecture(self) -> TorchArchitecture:
        return TorchArchitecture((networks,), "DNet", {"filters": self.config.filters})

    @property
    def size_step(self) -> int:
        return 2**DEPTH

    @property
    def halo(self) -> int:
        return HALO

    # --- the noise model for users ------------------------------------------------------------
    def raw_signal_range(self) -> tuple[float, float]:
        """The predicted-signal range seen in training (1%-99% quantiles, running), in raw units."""
        low, high = (float(v) for v in self.signal_range)
        if low != low or high != high or high <= low:  # NaN: never trained; fall back to ±2 data std
            low, high = -2.0, 2.0
        norm = self.normalisation
        return low * norm.scale + norm.offset, high * norm.scale + norm.offset

    def noise_curve(self, signal_range: tuple[float, float] | None = None, points: int = 64) -> NoiseCurve:
        """The N-net's noise std and skewness against the signal, raw units (see ``noise_model_curve``)."""
        return noise_model_curve(self, signal_range, points)

    def package_config(self) -> dict[str, Any]:
        """The noise model as a small table (signal -> std, skewness, raw units) for users of the package."""
        if self.nnet is None:
            return {"noise_model": {"kind": "none"}}
        curve = self.noise_curve(points=_TABLE_POINTS)
        return {
            "noise_model": {
                "kind": self.config.noise_model,
                "components": self.config.components if self.config.noise_model == "gmm" else 1,
                "units": "raw intensities (the package's input units)",
                "signal": [_round(v) for v in curve.signal],
                "std": [_round(v) for v in curve.std],
                "skewness": [_round(v) for v in curve.skew],
            }
        }

    def diagnostic_figures(self, val_batches: Sequence[torch.Tensor], out_dir: Path) -> list[Path]:
        """Report hook: write ``noise_model.png`` (model curve + binned validation residuals) into ``out_dir``.

        A trainer may call this after training with its validation batches (normalised tensors).
        """
        curve = self.noise_curve() if self.nnet is not None else None
        empirical = empirical_noise(self, val_batches)
        title = f"dnnet noise model ({self.config.noise_model})"
        return [plot_noise_model(curve, empirical, Path(out_dir) / "noise_model.png", title=title)]

    @torch.no_grad()
    def outcome_notes(self, val_batches: Sequence[torch.Tensor]) -> tuple[Note, ...]:
        """The D-net's blind-spot score against the best centre-less Gaussian blur's (``blind_score.py``)."""
        self._set_train(False)
        generator = torch.Generator().manual_seed(_VAL_MASK_SEED)
        batches, predictions, hidden = [], [], []
        for batch in val_batches:
            mask = self._draw_mask(batch, generator)
            predictions.append(self.dnet(apply_mask(batch, mask)))
            batches.append(batch)
            hidden.append(mask & ~self._clipped(batch.float()))
        scores = blind_scores(batches, predictions, hidden)
        if scores.pixels == 0:
            return ()
        compared = (f"predicting hidden validation pixels from their neighbours, its error is {scores.denoiser:.4g} against "
                    f"{scores.blur:.4g} for the best Gaussian blur (sigma {scores.blur_sigma:.2g} px, its centre left "
                    "out; normalised units, both include the noise variance)")
        if scores.gain <= 0:
            return (Note("warning", f"dnnet is likely no better than a Gaussian blur on these data: {compared}. Train "
                                    "longer (selfden train dnnet --resume -o RUN --minutes M), or check that the noise "
                                    "is independent between pixels"),)
        return (Note("note", f"dnnet beats a Gaussian blur by {scores.gain:.3g} in mean squared error (normalised "
                             f"units, no clean image needed): {compared}"),)

    def _clipped(self, batch: torch.Tensor) -> torch.Tensor:
        """Pixels at or beyond a clip level (as the censored likelihood sees them)."""
        clipped = torch.zeros_like(batch, dtype=torch.bool)
        for level, below in zip(self.clip_levels, (True, False)):
            hit = self._at_clip(batch, level, below)
            if hit is not None:
                clipped |= hit
        return clipped

    # --- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "dnet": self.dnet.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "signal_range": self.signal_range.clone(),
        }
        if self.nnet is not None:
            state["nnet"] = self.nnet.state_dict()
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dnet.load_state_dict(state["dnet"])
        if self.nnet is not None:
            if "nnet" not in state:
                raise SelfdenError(
                    f"dnnet checkpoint has no noise network but the config asks for noise_model="
                    f"{self.config.noise_model!r}; load it with the run's own config"
                )
            self.nnet.load_state_dict(state["nnet"])
        # Deep copy: torch reuses same-device tensors, so two methods would share Adam moments.
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"].clone().cpu())  # checkpoints may be mapped to CUDA
        self.signal_range = state["signal_range"].clone().float().cpu()

    def warm_start(self, state: dict[str, Any]) -> None:
        self.dnet.load_state_dict(state["dnet"])
        if self.nnet is not None and "nnet" in state:  # else this run's noise network learns from scratch
            self.nnet.load_state_dict(state["nnet"])

    def _check_size(self, batch: torch.Tensor) -> None:
        if batch.shape[-1] % self.size_step or batch.shape[-2] % self.size_step:
            raise SelfdenError(
                f"dnnet batch of size {tuple(batch.shape[-2:])}: height and width must be multiples of "
                f"{self.size_step} (the D-net halves them {DEPTH} times); use e.g. a patch size of 64 or 96"
            )


def _noise_net(config: DnnetConfig) -> NoiseNet | None:
    if config.noise_model == "none":
        return None
    components = config.components if config.noise_model == "gmm" else 1
    return NoiseNet(components, config.noise_net_width, config.scale_floor)


def _round(value: float) -> float:
    return float(f"{float(value):.4g}")
