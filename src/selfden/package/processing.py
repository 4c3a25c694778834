"""bioimage.io pre/post-processing ops on one whole 2-D image (numpy only).

Statistics of ``zero_mean_unit_variance`` and ``scale_range`` are taken over the whole
image before tiling, so the tile size never changes the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from selfden.package.rdf import ProcessingStep


def _scale_range(image: np.ndarray, params: Mapping[str, object], references: Mapping[str, np.ndarray]) -> np.ndarray:
    source = references.get(str(params["reference"]), image) if params.get("reference") else image
    low, high = np.percentile(source, [float(params["low"]), float(params["high"])])  # type: ignore[arg-type]
    return (image - np.float32(low)) / np.float32(high - low + float(params["eps"]))  # type: ignore[arg-type]


def _zero_mean_unit_variance(image: np.ndarray, eps: float) -> np.ndarray:
    mean = image.mean(dtype=np.float64)
    std = image.std(dtype=np.float64)
    return (image - np.float32(mean)) / np.float32(std + eps)


def apply_step(image: np.ndarray, step: ProcessingStep, references: Mapping[str, np.ndarray]) -> np.ndarray:
    """One op; ``references`` maps tensor ids to images (for scale_range's reference_tensor)."""
    p = step.params
    if step.op == "scale_linear":
        return image * np.float32(p["gain"]) + np.float32(p["offset"])
    if step.op == "fixed_zero_mean_unit_variance":
        return (image - np.float32(p["mean"])) / np.float32(p["std"] + p["eps"])
    if step.op == "zero_mean_unit_variance":
        return _zero_mean_unit_variance(image, float(p["eps"]))
    if step.op == "scale_range":
        return _scale_range(image, p, references)
    if step.op == "clip":
        if p["min"] is None and p["max"] is None:
            return image
        return np.clip(image, p["min"], p["max"])
    if step.op == "sigmoid":
        return 1.0 / (1.0 + np.exp(-image))
    if step.op == "binarize":
        return (image > p["threshold"]).astype(np.float32)
    if step.op == "ensure_dtype":
        return image.astype(str(p["dtype"]))
    raise ValueError(f"unknown processing op {step.op}")


def apply_steps(
    image: np.ndarray,
    steps: Sequence[ProcessingStep],
    references: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Apply ``steps`` in order; statistics come from the image as it is at each step."""
    for step in steps:
        image = apply_step(image, step, references or {})
    return image
