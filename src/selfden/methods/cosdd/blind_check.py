"""Does COSDD's direct denoiser beat a blur? A blind-spot score for noise correlated along lines.

COSDD's noise is correlated along rows (direction x) or columns (y) and independent between
them, so a pixel's row neighbours carry its noise and the usual one-pixel blind spot does not
hide it. Hiding whole lines does: every ``SPACING``-th row is replaced by the mean of its two
neighbours, the denoiser runs on the result, and its output on those rows, which now depends on
other rows' noise only, is scored against the noisy rows (``selfden.methods.blind_score``). The
best Gaussian blur without its centre row is scored on the same pixels. Both lose the hidden
row's own information, so the comparison is between two row-blind predictors; it judges the
direct denoiser, not the MMSE of posterior samples (which is better still).
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
def direct_blind_scores(denoise: Denoise, batches: Sequence[torch.Tensor], direction: str) -> BlindScores:
    """Blind-line scores of ``denoise`` and of the best blur on ``batches`` (normalised crops)."""
    unit = hidden_unit(direction)
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
    return blind_scores(originals, predictions, masks, unit)


def outcome_note(scores: BlindScores, direction: str) -> Note:
    """The verdict a user reads after training: a note when the denoiser wins, a warning when it does not."""
    unit = hidden_unit(direction)
    what = {"row": "rows from the other rows (row noise is independent between rows)",
            "column": "columns from the other columns (column noise is independent between columns)",
            "pixel": "pixels from their neighbours"}[unit]  # fmt: skip
    compared = (f"predicting hidden validation {what}, its error is {scores.denoiser:.4g} against {scores.blur:.4g} "
                f"for the best Gaussian blur (sigma {scores.blur_sigma:.2g} px, its centre {unit} left out; normalised "
                "units, both include the noise variance)")
    if scores.gain <= 0:
        return Note("warning", f"cosdd's direct denoiser is likely no better than a Gaussian blur on these data: "
                               f"{compared}. Train longer (selfden train cosdd --resume -o RUN --minutes M), or check "
                               "the noise direction (--direction)")
    return Note("note", f"cosdd's direct denoiser beats a Gaussian blur by {scores.gain:.3g} in mean squared error "
                        f"(normalised units, no clean image needed): {compared}")
