"""The learned noise model in raw units, and the empirical residual statistics to check it against.

- :func:`noise_model_curve`: the N-net's std and skewness as functions of the signal.
- :func:`empirical_noise`: noisy minus *blind* prediction (each pixel predicted while masked, as in
  training), binned by the predicted signal. Blind, because the unmasked D-net sees the pixel it
  predicts and partly keeps its noise, which would shrink the residual. The blind residual's
  variance is the noise variance plus the D-net's error variance, so these points sit slightly
  above the true noise std where the denoiser is poor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np
import torch

from selfden.errors import SelfdenError
from selfden.methods.dnnet.config import DnnetConfig
from selfden.methods.dnnet.masking import apply_mask, draw_grid_mask
from selfden.methods.dnnet.networks import NoiseNet
from selfden.normalisation import Normalisation

#: Seed of the masks used for the empirical statistics (repeatable figures).
_EMPIRICAL_SEED = 7


class NoiseModelled(Protocol):
    """What these functions read from a trained dnnet (``selfden.methods.dnnet.Dnnet`` is one)."""

    @property
    def config(self) -> DnnetConfig: ...

    @property
    def normalisation(self) -> Normalisation: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dnet(self) -> torch.nn.Module: ...

    @property
    def nnet(self) -> NoiseNet | None: ...

    def raw_signal_range(self) -> tuple[float, float]: ...


class NoiseCurve(NamedTuple):
    """Noise std and skewness at each signal value, raw units (skewness has none)."""

    signal: np.ndarray
    std: np.ndarray
    skew: np.ndarray


class EmpiricalNoise(NamedTuple):
    """Binned residual statistics: per bin the median predicted signal, residual std, skewness, pixel count."""

    signal: np.ndarray
    std: np.ndarray
    skew: np.ndarray
    count: np.ndarray


def noise_model_curve(
    method: NoiseModelled, signal_range: tuple[float, float] | None = None, points: int = 64
) -> NoiseCurve:
    """The N-net's noise std and skewness at ``points`` signal levels in ``signal_range`` (raw units).

    ``signal_range`` defaults to the range of predicted signal seen in training.
    """
    if method.nnet is None:
        raise SelfdenError(
            "this dnnet model was trained with noise_model='none' (Noise2Self): it has no noise model; "
            "train with noise_model 'gmm' or 'gaussian' to get one"
        )
    low, high = method.raw_signal_range() if signal_range is None else signal_range
    norm = method.normalisation
    signal = np.linspace(low, high, points)
    normalised = torch.as_tensor((signal - norm.offset) / norm.scale, dtype=torch.float32)
    method.nnet.eval()
    with torch.no_grad():
        mixture = method.nnet(normalised.to(method.device))
        std, skew = mixture.std().cpu().double().numpy(), mixture.skewness().cpu().double().numpy()
    return NoiseCurve(signal, std * abs(norm.scale), skew * np.sign(norm.scale))


def blind_residuals(
    method: NoiseModelled, batches: Sequence[torch.Tensor | np.ndarray], passes: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted signal and noisy-minus-prediction at masked pixels, ``passes`` masks per batch, raw units."""
    generator = torch.Generator().manual_seed(_EMPIRICAL_SEED)
    config, norm = method.config, method.normalisation
    signals, residuals = [], []
    method.dnet.eval()
    with torch.no_grad():
        for batch in batches:
            x = torch.as_tensor(batch, dtype=torch.float32).to(method.device)
            for _ in range(passes):
                grid = draw_grid_mask((x.shape[0], *x.shape[-2:]), generator, config.grid_spacing, config.drop_fraction)
                mask = grid.mask.to(x.device)
                prediction = method.dnet(apply_mask(x, mask)).float()
                signals.append(prediction[mask].cpu().numpy())
                residuals.append((x - prediction)[mask].cpu().numpy())
    signal = np.concatenate(signals).astype(np.float64) * norm.scale + norm.offset
    return signal, np.concatenate(residuals).astype(np.float64) * norm.scale


def binned_stats(signal: np.ndarray, residual: np.ndarray, bins: int = 16, min_count: int = 100) -> EmpiricalNoise:
    """Std and skewness of ``residual`` in equal-count bins of ``signal`` (bins under ``min_count`` dropped)."""
    edges = np.unique(np.quantile(signal, np.linspace(0.0, 1.0, bins + 1)))
    index = np.clip(np.searchsorted(edges, signal, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        r = residual[index == b]
        if r.size < min_count:
            continue
        centred = r - r.mean()
        std = float(np.sqrt(np.mean(centred**2)))
        skew = float(np.mean(centred**3) / std**3) if std > 0 else 0.0
        rows.append((float(np.median(signal[index == b])), std, skew, r.size))
    columns = np.array(rows, dtype=np.float64).reshape(-1, 4).T
    return EmpiricalNoise(columns[0], columns[1], columns[2], columns[3].astype(np.int64))


def empirical_noise(
    method: NoiseModelled, batches: Sequence[torch.Tensor | np.ndarray], bins: int = 16, passes: int = 4
) -> EmpiricalNoise:
    """Binned blind-residual statistics of normalised ``batches`` (e.g. the validation crops), raw units."""
    signal, residual = blind_residuals(method, batches, passes)
    return binned_stats(signal, residual, bins=bins)
