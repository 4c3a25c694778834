"""Procedural scenes: varied clean images drawn from shapes and textures, with camera-like noise.

What selfden's COSDD prior is pretrained on (``benchmarks/make_cosdd_prior.py``). They come from
random numbers only, never from the benchmark suites' photographs (scikit-image's camera, moon,
coins and cell), so a model that starts from the prior has seen none of the images it is scored on.
A scene: a tilted, smoothly varying background, 3-24 objects (ellipses, polygons, thick lines,
thresholded blob textures) of random signed contrast, sometimes fine texture, a slight blur,
then a stretch to [0, 1]. The noise varies per frame: Poisson at 10-80 counts, white Gaussian
read noise, and in 80 % of frames noise correlated along rows (x) of random length and strength.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def procedural_scene(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """One clean ``size`` x ``size`` float32 scene in [0, 1]."""
    from skimage import draw

    image = np.zeros((size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image += rng.uniform(0, 0.4) + rng.uniform(-0.3, 0.3) * yy + rng.uniform(-0.3, 0.3) * xx
    image += ndimage.gaussian_filter(rng.standard_normal((size, size)), rng.uniform(8, 30)) * rng.uniform(0, 4)
    for _ in range(int(rng.integers(3, 25))):
        kind, contrast = rng.integers(4), rng.uniform(-0.6, 0.6)
        if kind == 0:
            rows, cols = draw.ellipse(
                rng.uniform(0, size), rng.uniform(0, size), rng.uniform(2, 30), rng.uniform(2, 30),
                shape=image.shape, rotation=rng.uniform(0, np.pi),
            )
        elif kind == 1:
            corners = rng.uniform(0, size, (int(rng.integers(3, 7)), 2))
            rows, cols = draw.polygon(corners[:, 0], corners[:, 1], shape=image.shape)
        elif kind == 2:
            r0, c0, r1, c1 = (int(v) for v in rng.uniform(0, size, 4))
            rows, cols = draw.line(r0, c0, min(r1, size - 1), min(c1, size - 1))
            mask = np.zeros(image.shape, bool)
            mask[rows, cols] = True
            rows, cols = np.nonzero(ndimage.binary_dilation(mask, iterations=int(rng.integers(1, 4))))
        else:  # a blob texture: smoothed noise above a threshold, at half the contrast
            texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), rng.uniform(1, 4))
            image[texture > rng.uniform(0.0, 0.3) * texture.std() * 3] += contrast * 0.5
            continue
        image[rows, cols] += contrast
    if rng.random() < 0.5:
        image += ndimage.gaussian_filter(rng.standard_normal((size, size)), rng.uniform(0.7, 2)) * rng.uniform(0, 0.3)
    image = ndimage.gaussian_filter(image, rng.uniform(0.3, 1.5))
    low, high = np.percentile(image, [0.5, 99.5])
    return np.clip((image - low) / max(high - low, 1e-6), 0, 1).astype(np.float32)


def camera_noise(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``clean`` with noise of random strength: Poisson, white Gaussian and (mostly) row-correlated."""
    peak = np.exp(rng.uniform(np.log(10), np.log(80)))
    noisy = rng.poisson(clean * peak) / peak + rng.normal(0, rng.uniform(0.01, 0.06), clean.shape)
    if rng.random() < 0.8:
        rows = ndimage.gaussian_filter1d(rng.standard_normal(clean.shape), rng.uniform(2, 10), axis=-1)
        noisy += rows * rng.uniform(0.02, 0.12) / rows.std()
    return noisy.astype(np.float32)


def procedural_stack(n_frames: int, size: int = 128, seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) stacks of ``n_frames`` scenes: every scene is drawn first, then every frame's noise."""
    rng = np.random.default_rng(seed)
    clean = np.stack([procedural_scene(rng, size) for _ in range(n_frames)])
    return np.stack([camera_noise(frame, rng) for frame in clean]), clean
