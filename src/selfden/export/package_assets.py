"""The example files of a package: test tensors, sample images and the cover, and the sizes they use.

The test input is a centred crop of a real frame at a valid package size; the test output is
what a package user gets for it (``predict_raw``: the ONNX weights with the rdf's scale_linear
steps). The same crop, as .tif, is the sample deepImageJ's zoo check runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from selfden.export.onnx import INPUT_NAME, ExportError
from selfden.methods.base import Method
from selfden.package.runtime import open_session

logger = logging.getLogger(__name__)

DENOISER = "denoiser"
TEST_INPUT, TEST_OUTPUT, SAMPLE_INPUT, SAMPLE_OUTPUT, COVER, README = (
    "test_input.npy", "test_output.npy", "sample_input.tif", "sample_output.tif", "cover.png", "README.md",
)  # fmt: skip
TORCH_WEIGHTS = "denoiser.pt"  # the denoiser's state dict; architecture: architecture.py
TEST_SIZE = 256  # preferred test-tensor height/width (smaller when the sample is smaller)


def package_min_size(method: Method) -> int:
    """Smallest tile of the package: the network's minimum, raised in steps until it exceeds 2·halo.

    bioimage.io requires ``min - 2·halo >= 1`` for an output with a halo.
    """
    size = method.min_size
    while size <= 2 * method.halo:
        size += method.size_step
    return size


def valid_size_at_most(limit: int, min_size: int, step: int) -> int:
    """Largest ``min_size + n·step`` that is not above ``limit`` (requires ``limit >= min_size``)."""
    return min_size + (limit - min_size) // step * step


def crop_for_test_tensor(method: Method, sample_raw: np.ndarray) -> np.ndarray:
    """Centred crop of ``sample_raw`` with a valid package size (TEST_SIZE when the image allows)."""
    image = np.asarray(sample_raw)
    if image.ndim != 2:
        raise ExportError(f"sample image for the package has shape {image.shape}, expected a 2-D (H, W) frame")
    min_size, step = package_min_size(method), method.size_step
    if image.size == 0 or not np.isfinite(image).all():
        raise ExportError(f"sample image for the package ({image.shape}) is empty or has NaN/Inf pixels; pass a finite frame")
    if min(image.shape) < min_size:
        logger.info("sample %s is smaller than the minimum tile %d: mirror-padding it for the test tensor", image.shape, min_size)
        image = _mirror_pad_to(image, min_size)
    size = [valid_size_at_most(min(n, max(TEST_SIZE, min_size)), min_size, step) for n in image.shape]
    top, left = ((n - s) // 2 for n, s in zip(image.shape, size))
    return np.ascontiguousarray(image[top : top + size[0], left : left + size[1]], dtype=np.float32)


def _mirror_pad_to(image: np.ndarray, size: int) -> np.ndarray:
    """Pad symmetrically (mirrored, repeated as needed) to at least ``size`` in both dimensions."""
    while min(image.shape) < size:
        pad = [(0, min(size - n, n)) if n < size else (0, 0) for n in image.shape]
        image = np.pad(image, pad, mode="symmetric")
    return image


def predict_raw(onnx_path: Path, raw: np.ndarray, method: Method) -> np.ndarray:
    """What a package user gets for a 2-D raw image: scale_linear → network → scale_linear back."""
    norm = method.normalisation
    gain, offset = np.float32(1.0 / norm.scale), np.float32(-norm.offset / norm.scale)
    x = (raw.astype(np.float32) * gain + offset)[None, None]
    session = open_session(onnx_path)
    y = session.run(None, {INPUT_NAME: x})[0][0, 0]
    return (y * np.float32(norm.scale) + np.float32(norm.offset)).astype(np.float32)


def write_examples(
    staging: Path, onnx_path: Path, method: Method, sample_raw: np.ndarray, test_input: np.ndarray
) -> np.ndarray:
    """Test tensors, sample images and cover into ``staging``; returns the test output."""
    test_output = predict_raw(onnx_path, test_input, method)
    np.save(staging / TEST_INPUT, test_input[None, None])
    np.save(staging / TEST_OUTPUT, test_output[None, None])
    _write_tif(staging / SAMPLE_INPUT, test_input[None, None])
    _write_tif(staging / SAMPLE_OUTPUT, test_output[None, None])
    _write_cover(staging / COVER, onnx_path, sample_raw, method)
    return test_output


def _write_tif(path: Path, array: np.ndarray) -> None:
    import tifffile

    tifffile.imwrite(path, array)


def _write_cover(path: Path, onnx_path: Path, sample_raw: np.ndarray, method: Method) -> None:
    """Noisy | denoised from a square crop of the real sample frame (no mirror padding shown)."""
    from selfden.export.cover import denoise_crop, square_crop, write_cover
    from selfden.geometry.tiles import valid_size

    crop = square_crop(np.asarray(sample_raw, dtype=np.float32))
    min_size, step = package_min_size(method), method.size_step
    denoised = denoise_crop(crop, lambda n: valid_size(max(n, min_size), min_size, step),
                            lambda x: predict_raw(onnx_path, x, method))
    write_cover(path, crop, denoised, method.name)
