"""Is a denoiser better than a blur? The blind-spot score answers without a clean image.

For a predictor that never sees the noise of the pixel it predicts, and noise of mean zero,
mean((prediction - noisy)²) = mean((prediction - clean)²) + the noise variance (Noise2Self:
Batson & Royer, ICML 2019). Two such predictors on the same pixels therefore differ in their
blind-spot scores by exactly the difference of their true squared errors. The denoiser with the
predicted pixels hidden is one; a Gaussian blur with its centre weight(s) set to zero is the
other, at the sigma with the lowest score: the best such blur for the data.

What must be hidden depends on the noise: a single pixel when it is independent between pixels
(dnnet), a whole row when it is correlated along rows but independent between them (COSDD with
row noise; columns likewise). Clipped pixels are left out (their noise is not of mean zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

Hidden = Literal["pixel", "row", "column"]

#: Blur widths tried (px): from barely smoothing to far wider than the D-net's usual reach.
BLUR_SIGMAS = tuple(float(s) for s in np.geomspace(0.5, 6.0, 12))


@dataclass(frozen=True)
class BlindScores:
    """Blind-spot scores (normalised units²) of the D-net and of the best centre-less blur, over ``pixels``."""

    denoiser: float
    blur: float
    blur_sigma: float
    pixels: int
    affine: bool = False  # both predictors' errors after the least-squares gain and offset onto the noisy pixels

    @property
    def gain(self) -> float:
        """How much closer (mean squared, normalised units) the denoiser's blind predictions are to the clean image."""
        return self.blur - self.denoiser


def donut_blur(batch: torch.Tensor, sigma: float, hide: Hidden = "pixel") -> torch.Tensor:
    """Gaussian blur of ``sigma`` px without its centre weight, or without its centre row or column
    (each pixel predicted from the pixels, rows or columns around it only), reflecting."""
    radius = min(int(np.ceil(3 * sigma)), min(batch.shape[-2:]) - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    if hide == "row":
        kernel[radius, :] = 0.0
    elif hide == "column":
        kernel[:, radius] = 0.0
    else:
        kernel[radius, radius] = 0.0
    kernel = (kernel / kernel.sum()).to(batch)
    padded = F.pad(batch, (radius,) * 4, mode="reflect")
    return F.conv2d(padded, kernel[None, None])


def blind_scores(
    batches: list[torch.Tensor], predictions: list[torch.Tensor], hidden: list[torch.Tensor], hide: Hidden = "pixel",
    affine: bool = False,
) -> BlindScores:
    """Scores over the ``hidden`` pixels (bool, like the batches) of the denoiser's ``predictions`` (made with
    those pixels', rows' or columns' noise hidden) and of the best blur of the batches without them. ``affine``:
    each predictor's error after its least-squares gain and offset (for outputs in other units; the noise,
    independent of a blind prediction, does not bias the fit)."""
    targets = torch.cat([b.float()[h] for b, h in zip(batches, hidden)])
    denoiser = _error(torch.cat([p.float()[h] for p, h in zip(predictions, hidden)]), targets, affine)
    blurs = {sigma: _error(torch.cat([donut_blur(b.float(), sigma, hide)[h] for b, h in zip(batches, hidden)]),
                           targets, affine)
             for sigma in BLUR_SIGMAS}  # fmt: skip
    sigma, blur = min(blurs.items(), key=lambda pair: pair[1])
    return BlindScores(denoiser, blur, sigma, int(targets.numel()), affine)


def _error(prediction: torch.Tensor, target: torch.Tensor, affine: bool) -> float:
    """Mean squared error, after the least-squares ``a * prediction + b`` when ``affine``."""
    if affine:
        centred = prediction - prediction.mean()
        gain = float((centred * (target - target.mean())).sum() / centred.square().sum().clamp_min(1e-12))
        prediction = gain * centred + target.mean()
    return float((prediction - target).square().mean())


def hide_lines(batch: torch.Tensor, hide: Literal["row", "column"], spacing: int, phase: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` with every ``spacing``-th row (or column) from ``phase`` replaced by the mean of its two
    neighbours (one at the border), and the bool mask of the replaced pixels. A denoiser's output on the
    result depends on those lines' own noise not at all: a blind-spot predictor for line-correlated noise."""
    axis = -2 if hide == "row" else -1
    length = batch.shape[axis]
    index = torch.arange(phase, length, spacing)
    before = (index - 1).abs()  # reflect at the first line
    after = torch.where(index + 1 < length, index + 1, index - 1)
    filled = 0.5 * (batch.index_select(axis, before) + batch.index_select(axis, after))
    hidden = batch.clone()
    hidden.index_copy_(axis, index, filled)
    mask = torch.zeros(batch.shape[axis], dtype=torch.bool, device=batch.device)
    mask[index] = True
    shape = [1] * batch.dim()
    shape[axis] = length
    return hidden, mask.view(shape).expand_as(batch)
