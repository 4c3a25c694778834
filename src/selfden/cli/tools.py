"""The smaller commands: noise analysis, a dnnet run's noise model, frame consistency, the demo,
the list of methods."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from selfden.cli.shell import console, max_pixels_option, out, require_training_extra, user_errors
from selfden.errors import SelfdenError, require_suffix


def noise(
    inputs: list[Path] = typer.Argument(..., help="Noisy images to analyse."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the autocorrelation plot (PNG) here."),
    max_pixels: Optional[int] = max_pixels_option(),
) -> None:
    """Measure the noise's spatial correlation along x and y and suggest COSDD's direction."""
    with user_errors():
        from selfden.io.reading import open_image
        from selfden.noise_analysis import measure_noise_correlation

        if plot is not None:
            require_suffix(plot, (".png",), "the autocorrelation plot")
        result = measure_noise_correlation([open_image(p, max_pixels) for p in inputs])
        out.print("lag   " + " ".join(f"{int(lag):>6d}" for lag in result.lags[:9]))
        out.print("acf x " + " ".join(f"{v:6.3f}" for v in result.acf_x[:9]))
        out.print("acf y " + " ".join(f"{v:6.3f}" for v in result.acf_y[:9]))
        out.print(f"direction: {result.direction} — {result.reason}")
        if plot is not None:
            from selfden.noise_analysis_plot import plot_noise_correlation

            plot_noise_correlation(result, plot)
            out.print(f"plot: {plot}")


def noise_model(
    run: Path = typer.Argument(..., help="Run folder of a dnnet training."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="PNG to write (default RUN/noise_model.png)."),
) -> None:
    """Plot the noise model a dnnet run learned: noise std and skewness against the signal."""
    with user_errors():
        require_training_extra("noise-model")
        from selfden.runs.noise_model import noise_model_report

        if output is not None:
            require_suffix(output, (".png",), "the noise-model plot")
        written = noise_model_report(run, output or run / "noise_model.png")
        out.print(f"wrote {written}")


def css(
    stacks: list[Path] = typer.Argument(..., help="Time series (raw or denoised) to score."),
    max_pixels: Optional[int] = max_pixels_option(),
) -> None:
    """Consecutive-frame similarity: mean SSIM between frames n and n+1 (higher = more consistent)."""
    with user_errors():
        import numpy as np

        from selfden.io.limits import check_stack
        from selfden.io.reading import open_image
        from selfden.metrics import css as consecutive_similarity

        for path in stacks:
            stack = open_image(path, max_pixels)
            check_stack(path, stack.shape, max_pixels, "css holds the whole stack in memory")
            if len(stack) < 2:
                raise SelfdenError(f"{path}: CSS needs a time series of at least 2 frames, got {len(stack)}")
            frames = np.stack([np.asarray(stack.frame(i), np.float32) for i in range(len(stack))])
            out.print(f"{path}: CSS {consecutive_similarity(frames):.4f} over {len(stack)} frames")


def demo(
    output: Path = typer.Option(Path("selfden-demo"), "--output", "-o", help="Folder for the demo's data, run and results."),
    minutes: float = typer.Option(2.5, help="Training time budget in minutes."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Make noisy data with known ground truth, train, export, denoise with onnxruntime, score."""
    with user_errors():
        require_training_extra("demo")
        from selfden.demo import run_demo
        from selfden.training.progress import RichProgress

        console.print(f"selfden demo: synthetic data, {minutes:g} min of training, then denoising with onnxruntime")
        result = run_demo(output, minutes=minutes, device=device, progress=RichProgress(console=console))
        out.print(result.summary())


def methods() -> None:
    """List the available denoising methods."""
    from selfden.methods import method_names

    for name in method_names():
        out.print(name)
