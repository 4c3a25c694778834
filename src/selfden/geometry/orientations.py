"""Test-time self-ensemble: average a model's outputs over the flips and rotations it was trained with.

A denoiser trained on randomly flipped and rotated crops should give the same answer for a
flipped image, flipped back; in practice each orientation makes slightly different errors,
and averaging the eight orientations of the dihedral group cancels part of them (the
"geometric self-ensemble" of Lim et al., EDSR, CVPR workshops 2017). Only transforms the
model saw during training are valid: a model trained on unrotated row-correlated noise
would see column-correlated noise after a 90° turn. Packages list theirs under
``config.selfden.orientations``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]

# Each entry: (forward, inverse) on arrays whose last two axes are (y, x).
_TRANSFORMS: dict[str, tuple[Transform, Transform]] = {
    "identity": (lambda a: a, lambda a: a),
    "flip_x": (lambda a: a[..., ::-1], lambda a: a[..., ::-1]),
    "flip_y": (lambda a: a[..., ::-1, :], lambda a: a[..., ::-1, :]),
    "rot180": (lambda a: a[..., ::-1, ::-1], lambda a: a[..., ::-1, ::-1]),
    "rot90": (lambda a: np.rot90(a, 1, axes=(-2, -1)), lambda a: np.rot90(a, -1, axes=(-2, -1))),
    "rot270": (lambda a: np.rot90(a, -1, axes=(-2, -1)), lambda a: np.rot90(a, 1, axes=(-2, -1))),
    "transpose": (lambda a: np.swapaxes(a, -2, -1), lambda a: np.swapaxes(a, -2, -1)),
    "antitranspose": (
        lambda a: np.swapaxes(a, -2, -1)[..., ::-1, ::-1],
        lambda a: np.swapaxes(a[..., ::-1, ::-1], -2, -1),
    ),
}

#: All eight orientations: what flips plus quarter turns in training make a model invariant to.
DIHEDRAL: tuple[str, ...] = tuple(_TRANSFORMS)
IDENTITY_ONLY: tuple[str, ...] = ("identity",)


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple; ValueError for a name that is not one of DIHEDRAL."""
    unknown = [n for n in names if n not in _TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown orientations {unknown}; known: {', '.join(DIHEDRAL)}")
    return tuple(names)


def transform(image: np.ndarray, name: str) -> np.ndarray:
    """``image`` (last two axes y, x) in orientation ``name``, as a contiguous array."""
    return np.ascontiguousarray(_TRANSFORMS[name][0](image))


def untransform(image: np.ndarray, name: str) -> np.ndarray:
    """Undo ``transform(., name)``."""
    return np.ascontiguousarray(_TRANSFORMS[name][1](image))


def self_ensemble(
    image: np.ndarray,
    predict: Callable[[np.ndarray], np.ndarray],
    names: Sequence[str],
    combine: Callable[[Iterable[np.ndarray]], np.ndarray],
) -> np.ndarray:
    """``combine`` of ``predict`` run on each orientation of ``image`` and turned back.

    ``predict`` maps (H, W) to (K, H, W); the image is transformed as a whole, so tiling,
    halos and blending happen in each orientation as they would without the ensemble.
    The outputs reach ``combine`` one at a time (a generator), so a running reduction
    keeps memory at one extra frame.
    """
    return combine(untransform(predict(transform(image, name)), name) for name in names)


def running_mean(outputs: Iterable[np.ndarray]) -> np.ndarray:
    """Average of the outputs, accumulated in float64."""
    total: np.ndarray | None = None
    count = 0
    for output in outputs:
        total = output.astype(np.float64) if total is None else total + output
        count += 1
    if total is None:
        raise ValueError("no outputs to average")
    return (total / count).astype(np.float32)
