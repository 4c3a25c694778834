"""The pre-training check of methods that assume pixel-independent noise (cae, dnnet).

Such a method keeps noise that is correlated along rows or columns as signal; cosdd models it.
The data's noise is measured as for cosdd's ``--direction auto``.
"""

from __future__ import annotations

from collections.abc import Sequence

from selfden.data import StackLike
from selfden.errors import SelfdenError
from selfden.methods.base import Note
from selfden.noise_analysis import measure_noise_correlation


def correlated_noise_warnings(method: str, stacks: Sequence[StackLike]) -> tuple[Note, ...]:
    """A warning when the noise of ``stacks`` is correlated along rows or columns; none otherwise."""
    try:
        result = measure_noise_correlation(stacks)
    except SelfdenError:  # frames too small to measure (bad files fail training with their own error)
        return ()
    if result.direction == "none":
        return ()
    return (
        Note(
            "warning",
            f"{result.reason}. {method} assumes pixel-independent noise and may keep the correlated part "
            "as signal; cosdd models noise correlated along rows or columns (selfden train cosdd)",
        ),
    )
