"""Is the D-net better than a blur? The blind-spot score answers without a clean image.

For a predictor that never sees the pixel it predicts, and noise of mean zero independent
between pixels, mean((prediction - noisy)²) = mean((prediction - clean)²) + the noise variance
(Noise2Self: Batson & Royer, ICML 2019). Two such predictors on the same pixels therefore differ
in their blind-spot scores by exactly the difference of their true squared errors. The D-net
with its pixel hidden (the training masks) is one; a Gaussian blur with its centre weight set
to zero is the other, at the sigma with the lowest score: the best such blur for the data.
Clipped pixels are left out (their noise is not of mean zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Blur widths tried (px): from barely smoothing to far wider than the D-net's usual reach.
BLUR_SIGMAS = tuple(float(s) for s in np.geomspace(0.5, 6.0, 12))


@dataclass(frozen=True)
class BlindScores:
    """Blind-spot scores (normalised units²) of the D-net and of the best centre-less blur, over ``pixels``."""

    dnet: float
    blur: float
    blur_sigma: float
    pixels: int

    @property
    def gain(self) -> float:
        """How much closer (mean squared, normalised units) the D-net's blind predictions are to the clean image."""
        return self.blur - self.dnet


def donut_blur(batch: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``sigma`` px without its centre weight (each pixel from its neighbours only), reflecting."""
    radius = min(int(np.ceil(3 * sigma)), min(batch.shape[-2:]) - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    kernel[radius, radius] = 0.0
    kernel = (kernel / kernel.sum()).to(batch)
    padded = F.pad(batch, (radius,) * 4, mode="reflect")
    return F.conv2d(padded, kernel[None, None])


def blind_scores(batches: list[torch.Tensor], predictions: list[torch.Tensor], hidden: list[torch.Tensor]) -> BlindScores:
    """Scores over the ``hidden`` pixels (bool, like the batches) of the D-net's ``predictions`` (made with those
    pixels hidden) and of the best centre-less blur of the batches."""
    dnet = torch.cat([((p.float() - b.float())[h]) ** 2 for b, p, h in zip(batches, predictions, hidden)])
    blurs = {sigma: torch.cat([((donut_blur(b.float(), sigma) - b.float())[h]) ** 2 for b, h in zip(batches, hidden)])
             for sigma in BLUR_SIGMAS}  # fmt: skip
    sigma, blur = min(((s, float(e.mean())) for s, e in blurs.items()), key=lambda pair: pair[1])
    return BlindScores(float(dnet.mean()), blur, sigma, int(dnet.numel()))
