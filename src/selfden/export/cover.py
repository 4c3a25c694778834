"""The package's cover: noisy | denoised, labelled, from a square crop of a real frame.

The zoo wants covers as PNG under 500 KB with an aspect ratio of 2:1 or 1:1. A frame smaller
than the network's minimum tile is shown at its real size (upscaled by a whole factor, pixels
kept sharp), never mirror-padded into a kaleidoscope; the denoised half is what ``selfden
infer`` gives for that crop (reflect padding to a valid size, then cropped back).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

#: Largest crop shown; also the smallest height the cover is enlarged to (by a whole factor).
COVER_SIDE = 256
_MAX_BYTES = 500_000


def square_crop(frame: np.ndarray, side: int = COVER_SIDE) -> np.ndarray:
    """The centred square crop of ``frame`` of side min(height, width, side): real pixels only."""
    side = min(side, *frame.shape)
    top, left = ((n - side) // 2 for n in frame.shape)
    return np.ascontiguousarray(frame[top : top + side, left : left + side], dtype=np.float32)


def denoise_crop(crop: np.ndarray, valid: Callable[[int], int], run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``run`` (a raw-in, raw-out network) on ``crop`` reflect-padded to the valid size ``valid(n)``."""
    size = valid(max(crop.shape))
    padded = crop
    while padded.shape[0] < size:  # reflect needs a pad shorter than the image: repeat for tiny crops
        extra = min(size - padded.shape[0], padded.shape[0] - 1) or 1
        padded = np.pad(padded, ((0, extra), (0, extra)), mode="reflect" if padded.shape[0] > 1 else "edge")
    return run(padded)[: crop.shape[0], : crop.shape[1]]


def write_cover(path: Path, noisy: np.ndarray, denoised: np.ndarray, method: str) -> None:
    """Noisy | denoised side by side (2:1), both in the noisy crop's display range, each labelled."""
    from PIL import Image, ImageDraw

    low, high = np.percentile(noisy, (0.5, 99.5))
    pair = np.concatenate([noisy, denoised], axis=1)
    scaled = np.clip((pair - low) / max(float(high - low), 1e-12), 0.0, 1.0)
    image = Image.fromarray((scaled * 255).round().astype(np.uint8)).convert("RGB")
    factor = max(1, -(-COVER_SIDE // noisy.shape[0]))  # whole factor: small frames stay sharp
    image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    draw, half = ImageDraw.Draw(image), image.width // 2
    for x, label in ((0, "noisy"), (half, f"denoised: selfden {method}")):
        right = draw.textbbox((x + 4, 3), label)[2]
        draw.rectangle((x, 0, right + 4, 16), fill=(0, 0, 0))
        draw.text((x + 4, 3), label, fill=(255, 255, 255))
    image.save(path, optimize=True)
    if path.stat().st_size > _MAX_BYTES:  # noise compresses badly: halve until the zoo's limit holds
        while path.stat().st_size > _MAX_BYTES and image.height > 64:
            image = image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR)
            image.save(path, optimize=True)
