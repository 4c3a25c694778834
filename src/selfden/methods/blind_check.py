"""Does a trained denoiser beat a blur? A blind-spot score for noise independent between lines.

Noise correlated along rows (row offsets, scan-line noise; COSDD's direction x) lives in a
pixel's row neighbours, so the usual one-pixel blind spot does not hide it. Hiding whole lines
does: every ``SPACING``-th row is replaced by the mean of its two neighbours, the denoiser runs
on the result, and its output on those rows, which now depends on other rows' noise only, is
scored against the noisy rows (``selfden.methods.blind_score``). The best Gaussian blur without
its centre row is scored on the same pixels. Both lose the hidden row's own information, so the
comparison is between two row-blind predictors; the hidden pixels hide pixel-independent noise
as well. Measured on the stripe suite (``benchmarks/cosdd_verdict.py``): the estimated gain over
the blur was within ~10 % of the true one and had its sign right on 15 COSDD snapshots of 4 runs.

Methods that do not know the noise axis (cae, noise2atom) measure it on the validation crops
(``selfden.noise_analysis``, as COSDD's direction "auto" does) and hide the lines it runs along.
Hiding the wrong axis is not a safe default: with row offsets, a blur that fills a hidden column
from the same rows carries the hidden pixel's offset, which flatters it against a denoiser that
removed the offsets (measured: noise2atom on the atoms suite wrongly warned with columns hidden).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from selfden.methods.base import Note
from selfden.methods.blind_score import BlindScores, Hidden, blind_scores, hide_lines

#: Every this-many-th line is hidden in one pass; SPACING passes hide each line once.
SPACING = 4

Denoise = Callable[[torch.Tensor], torch.Tensor]

_WHAT = {"row": "rows from the other rows (noise independent between rows)",
         "column": "columns from the other columns (noise independent between columns)",
         "pixel": "pixels from their neighbours"}  # fmt: skip


def hidden_unit(direction: str) -> Hidden:
    """What carries independent noise: rows for row noise (x), columns for column noise (y), else pixels."""
    return {"x": "row", "y": "column"}.get(direction, "pixel")


def hide_pixels(batch: torch.Tensor, spacing: int, phase: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``spacing``-th pixel in both axes (offset by ``phase``) replaced by its 4 neighbours' mean."""
    padded = F.pad(batch, (1, 1, 1, 1), mode="reflect")
    mean = 0.25 * (padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:])
    rows = torch.arange(batch.shape[-2], device=batch.device)[:, None]
    cols = torch.arange(batch.shape[-1], device=batch.device)[None, :]
    mask = ((rows % spacing) == phase) & ((cols % spacing) == (2 * phase) % spacing)
    mask = mask.expand_as(batch)
    return torch.where(mask, mean, batch), mask


@torch.no_grad()
def hidden_line_scores(denoise: Denoise, batches: Sequence[torch.Tensor], unit: Hidden,
                       affine: bool = False) -> BlindScores:
    """Blind scores of ``denoise`` and of the best blur on ``batches`` (normalised crops), ``unit`` hidden."""
    originals, predictions, masks = [], [], []
    for batch in batches:
        for phase in range(SPACING):
            if unit == "pixel":
                hidden, mask = hide_pixels(batch, SPACING, phase)
            else:
                hidden, mask = hide_lines(batch, unit, SPACING, phase)
            originals.append(batch)
            predictions.append(denoise(hidden))
            masks.append(mask)
    return blind_scores(originals, predictions, masks, unit, affine=affine)


def measured_unit(batches: Sequence[torch.Tensor]) -> Hidden:
    """The unit to hide for noise of unknown structure: rows or columns when the crops' noise is measurably
    correlated along them, else single pixels (rows when the crops are too small to measure)."""
    from selfden.errors import SelfdenError
    from selfden.noise_analysis import measure_noise_correlation

    frames = _Crops([crop for batch in batches for crop in batch[:, 0].detach().cpu().float().numpy()])
    try:
        return hidden_unit(measure_noise_correlation([frames]).direction)
    except SelfdenError:
        return "row"


class _Crops:
    """Validation crops as the stack ``measure_noise_correlation`` reads."""

    def __init__(self, crops: list) -> None:
        self.crops = crops

    def __len__(self) -> int:
        return len(self.crops)

    def frame(self, index: int):  # noqa: ANN201 - a numpy array
        return self.crops[index]


def outcome_note(name: str, scores: BlindScores, unit: Hidden, fix: str) -> Note:
    """The verdict a user reads after training: a note when ``name`` wins, a warning (with ``fix``) when not."""
    fitted = " after a fitted gain and offset (as the benchmarks score)" if scores.affine else ""
    compared = (f"predicting hidden validation {_WHAT[unit]}, its error{fitted} is {scores.denoiser:.4g} against "
                f"{scores.blur:.4g} for the best Gaussian blur (sigma {scores.blur_sigma:.2g} px, its centre {unit} "
                "left out; normalised units, both include the noise variance)")
    if scores.gain <= 0:
        return Note("warning", f"{name} is likely no better than a Gaussian blur on these data: {compared}. {fix}")
    return Note("note", f"{name} beats a Gaussian blur by {scores.gain:.3g} in mean squared error (normalised units, "
                        f"no clean image needed): {compared}")
