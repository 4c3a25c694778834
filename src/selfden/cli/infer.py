"""``selfden infer``: denoise images with onnxruntime (never imports torch), with progress bars."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import typer

from selfden.cli.shell import console, max_pixels_option, out, say, user_errors


def infer(
    model: Path = typer.Argument(..., help="Model: a run folder, an exported model folder or a bioimage.io .zip."),
    inputs: list[Path] = typer.Argument(
        ..., help="Images to denoise: TIFF (2-D or stacks), PNG, NPY, Zarr/OME-Zarr, or folders of them."
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Output file (one input; .tif, .npy, .png or .zarr) or folder."
    ),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda."),
    tile_size: Optional[int] = typer.Option(None, help="Tile side in pixels (default: planned per image size within a 4 GiB working-memory budget)."),
    samples: Optional[str] = typer.Option(
        None, help="COSDD: posterior samples to average, or 'auto' (until the mean settles; default: direct denoiser).",
    ),
    std: bool = typer.Option(False, "--std", help="COSDD: also write the per-pixel standard deviation."),
    tta: bool = typer.Option(
        False, "--tta",
        help="Average over the flips/rotations the model was trained with (up to 8x the time; measured +0.1-0.3 dB).",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run; finished frames are checked and kept, finished files skipped."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite",
        help="Replace output files that already exist (default: refuse). Inputs are never replaced.",
    ),
    dask: bool = typer.Option(
        False, "--dask", help="Run frames as Dask tasks on a local cluster (one worker per core). Needs selfden[scale]."
    ),
    scheduler: Optional[str] = typer.Option(
        None, "--scheduler", metavar="ADDRESS",
        help="Run frames on an existing Dask cluster, e.g. tcp://host:8786 (implies --dask).",
    ),
    max_pixels: Optional[int] = max_pixels_option(),
) -> None:
    """Denoise images with onnxruntime (no PyTorch needed); stacks of any length, resumable."""
    from selfden.io.resumable_writer import InferenceInterrupted

    with user_errors():
        from selfden.inference.running import denoise_files
        from selfden.inference.sample_count import auto_sample_counts, parse_samples

        try:
            cluster = scheduler or ("local" if dask else None)
            with _frame_mapper(cluster, device) as mapper, _frame_progress() as on_progress, \
                    auto_sample_counts() as auto_counts:
                options: dict[str, Any] = {"device": device, "tile_size": tile_size, "on_progress": on_progress,
                                           "resume": resume, "mapper": mapper, "tta": tta, "overwrite": overwrite,
                                           "max_pixels": max_pixels}
                if samples is not None or std:
                    options.update(samples=parse_samples(samples), std=std)
                written = denoise_files(model, inputs, output, **options)
        except InferenceInterrupted as stop:
            say("interrupted", "yellow", stop)
            raise typer.Exit(130) from None
        for path in written:
            out.print(f"wrote {path}")
        if auto_counts:
            out.print(f"--samples auto: {sum(auto_counts) / len(auto_counts):.0f} posterior samples per tile on average "
                      f"({min(auto_counts)}-{max(auto_counts)} over {len(auto_counts)} batch(es) of tiles)")
        if not written:
            out.print("nothing left to do: every output was already finished (--resume)")


@contextlib.contextmanager
def _frame_mapper(dask: str | None, device: str) -> Iterator[Any]:
    """None (frames in this process) or a Dask FrameMapper for the cluster ``dask`` names."""
    if dask is None:
        yield None
        return
    from selfden.inference.dask_cluster import dask_frames

    console.print("starting a local Dask cluster" if dask == "local" else f"connecting to Dask at {dask}")
    with dask_frames(dask, device) as mapper:  # type: ignore[arg-type]
        yield mapper


@contextlib.contextmanager
def _frame_progress() -> Iterator[Any]:
    """A rich bar over the frames of each file, with frames/s and the time left."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn()]
    with Progress(*columns, console=console) as bar:
        tasks: dict[int, Any] = {}
        started: dict[int, float] = {}

        def on_progress(p: Any) -> None:
            if p.file_index not in tasks:
                if not tasks:
                    console.print(f"running on {p.provider}")
                name = f"[{p.file_index + 1}/{p.n_files}] {p.path.name}"
                tasks[p.file_index] = bar.add_task(name, total=p.n_frames, completed=p.frame, rate="")
                started[p.file_index] = time.perf_counter()
            elapsed = max(time.perf_counter() - started[p.file_index], 1e-9)
            fresh = p.frame - getattr(p, "resumed_from", 0)  # frames resumed from disk took no time now
            rate = f"{fresh / elapsed:.2f} frames/s" if fresh else ""
            bar.update(tasks[p.file_index], completed=p.frame, rate=rate)

        yield on_progress
