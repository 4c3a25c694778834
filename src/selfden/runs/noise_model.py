"""``selfden noise-model``: the noise model a trained dnnet run learned, over its validation residuals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfden.errors import InputError
from selfden.runs.config import load_run_config
from selfden.runs.crops import validation_crops
from selfden.runs.weights import load_method


def noise_model_report(
    run_dir: Path, out_png: Path | None = None, truth: Any | None = None, title: str | None = None
) -> Path:
    """Load a trained dnnet run and draw its noise model over its validation residuals.

    ``out_png`` defaults to ``RUN/noise_model.png``; ``truth`` (signal, std, skew), when known
    (synthetic data), is drawn dashed; ``title`` names the run (default: its folder's name).
    Raises InputError for runs of other methods.
    """
    from selfden.io.reading import open_image
    from selfden.methods.dnnet import Dnnet, empirical_noise
    from selfden.methods.dnnet.noise_model_plot import plot_noise_model

    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if config.method != "dnnet":
        raise InputError(
            f"{run_dir}: a {config.method!r} run; the noise-model figure needs a run trained with --method dnnet"
        )
    method = load_method(run_dir, config)
    assert isinstance(method, Dnnet)
    stacks = [open_image(Path(p), config.data.max_pixels) for p in config.data.inputs]  # the run's own image limit
    empirical = empirical_noise(method, validation_crops(config, stacks, method.normalisation))
    curve = method.noise_curve() if method.nnet is not None else None
    name = title or run_dir.resolve().name
    title = f"{name}: dnnet noise model ({method.config.noise_model})" if curve is not None else (
        f"{name}: dnnet without noise model (Noise2Self); residual statistics only")
    return plot_noise_model(curve, empirical, out_png or run_dir / "noise_model.png", truth=truth, title=title)
