"""Grid-valued data (photon counts, integer levels) are told from continuous data by the data alone."""

from __future__ import annotations

import numpy as np
import pytest

from frames import Frames
from selfden.value_grid import measure_value_step


def counts_with_row_offsets(rng: np.random.Generator, gain: float = 7.0) -> np.ndarray:
    """Photon counts at ``gain`` counts per unit intensity, plus an offset shared by each row (row noise)."""
    signal = 0.3 + np.sin(np.linspace(0, 6, 64))[None, None, :] ** 2 * np.ones((4, 64, 1))
    counts = rng.poisson(signal * gain) / gain
    return counts + rng.normal(0.0, 0.1, (4, 64, 1))


def test_photon_counts_are_found_on_their_grid_along_rows_despite_row_offsets() -> None:
    data = counts_with_row_offsets(np.random.default_rng(0)).astype(np.float32)
    assert measure_value_step([Frames(data)], "x") == pytest.approx(1 / 7, rel=1e-4)
    # across rows the offsets differ, so the differences leave the grid
    assert measure_value_step([Frames(data)], "y") is None


def test_integer_levels_give_a_step_of_one() -> None:
    data = np.random.default_rng(1).poisson(5.0, (4, 48, 48)).astype(np.uint16)
    assert measure_value_step([Frames(data)]) == pytest.approx(1.0)


@pytest.mark.parametrize("case", ["gaussian", "constant", "fine integer levels"])
def test_continuous_constant_and_finely_gridded_data_have_no_grid(case: str) -> None:
    rng = np.random.default_rng(2)
    data = {
        "gaussian": rng.normal(10.0, 1.0, (4, 48, 48)).astype(np.float32),
        "constant": np.full((2, 32, 32), 3.0, np.float32),
        # a 16-bit camera whose noise spans thousands of levels: the grid is far finer than the noise
        "fine integer levels": rng.poisson(2e6, (4, 48, 48)).astype(np.float64),
    }[case]
    assert measure_value_step([Frames(data)]) is None
