"""The `selfden` command line: a thin shell that parses, calls one library function, reports.

Heavy imports (torch, bioimageio) happen inside the commands that need them, so
`selfden --help` is quick and `selfden infer` never imports torch.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.text import Text

from selfden import __version__
from selfden.errors import SelfdenError, os_error_message, require_suffix
from selfden.io.limits import DEFAULT_MAX_PIXELS

app = typer.Typer(
    name="selfden",
    help="Self-supervised denoising: train on noisy images alone, export bioimage.io packages, denoise anywhere.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    # Help text is printed as written: "selfden[scale]" must not be read as console markup.
    rich_markup_mode=None,
)
# markup=False: paths and messages hold user text ("[", "]", "[/]") that rich would parse;
# styled words go through say(), which builds a Text instead.
console = Console(stderr=True, markup=False)
out = Console(markup=False)


def _max_pixels_option() -> Any:
    """--max-pixels, shared by every command that reads images (see selfden.io.limits)."""
    return typer.Option(
        None, "--max-pixels", min=1, metavar="N",
        help=f"Refuse images whose frames declare more than N pixels, before decoding them "
        f"(default {DEFAULT_MAX_PIXELS} = 32768 x 32768, 4 GiB as float32); raise it for larger frames.",
    )


def require_training_extra(command: str) -> None:
    """SelfdenError unless PyTorch is installed: an inference-only install leaves it out."""
    import importlib.util

    try:
        found = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise SelfdenError(
            f"selfden {command} needs PyTorch, which this inference-only installation leaves out; "
            "install the training extra: pip install 'selfden[cpu,train]' (from a clone: pip install -e '.[cpu,train]')"
        )


def say(tag: str, style: str, message: object) -> None:
    """One line on stderr: a coloured tag, then ``message`` exactly as written."""
    flat = " ".join(str(message).split())
    console.print(Text.assemble((tag, style), ": ", flat), highlight=False, soft_wrap=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected failures into one line on stderr and exit code 1 (bugs keep their traceback)."""
    try:
        yield
    except SelfdenError as exc:
        say("error", "bold red", exc)
        raise typer.Exit(1) from None
    except OSError as exc:
        message = os_error_message(exc)
        if message is None:  # not something the user's disk or folders did: a bug, keep the traceback
            raise
        say("error", "bold red", message)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        say("interrupted", "yellow", "nothing partial was left behind")
        raise typer.Exit(130) from None


def _version(value: bool) -> None:
    if value:
        out.print(f"selfden {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log library messages."),
) -> None:
    """selfden: denoise images when no clean images exist."""
    import logging

    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
    )


# ---------------------------------------------------------------------------------- train
@app.command()
def train(
    method: str = typer.Argument(..., help="Method: cae, cosdd, dnnet or noise2atom (see `selfden methods`)."),
    inputs: Optional[list[Path]] = typer.Argument(None, help="Noisy images: TIFF (2-D or stacks), PNG or NPY."),
    output: Path = typer.Option(..., "--output", "-o", help="Run folder to create (or continue with --resume)."),
    minutes: Optional[float] = typer.Option(None, help="Training time budget in minutes."),
    steps: Optional[int] = typer.Option(None, help="Number of training steps (with --minutes: whichever ends first)."),
    patch_size: Optional[int] = typer.Option(None, help="Side of the square training crops."),
    batch_size: Optional[int] = typer.Option(None, help="Crops per training step."),
    augment: Optional[bool] = typer.Option(
        None, "--augment/--no-augment",
        help="Flip/turn training crops in the orientations the method's noise model allows (default: on; "
        "cae, dnnet: all 8; cosdd: flips that keep the noise axis and scan direction; noise2atom: none). "
        "Turn off for noise that runs along one direction, e.g. row streaks, with cae or dnnet.",
    ),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda."),
    devices: Optional[int] = typer.Option(
        None, min=1, help="Data-parallel processes (one GPU each); the batch is split over them. Default 1."
    ),
    seed: Optional[int] = typer.Option(None, help="Random seed (recorded in the run's config)."),
    resume: bool = typer.Option(
        False, "--resume",
        help="Continue the run in OUTPUT from its last checkpoint (best.pt if last.pt is unreadable; "
        "a run stopped before its first checkpoint starts over).",
    ),
    bottleneck: Optional[int] = typer.Option(None, help="cae: bottleneck channels (denoising strength: fewer = smoother)."),
    size: Optional[str] = typer.Option(None, help="cosdd: size preset tiny, small, large or auto (tiny on CPU, small on a GPU)."),
    direction: Optional[str] = typer.Option(None, help="cosdd: noise correlation direction x, y, none or auto."),
    noise_model: Optional[str] = typer.Option(None, help="dnnet: gaussian, gmm or none (none = Noise2Self L2)."),
    atom_spacing: Optional[float] = typer.Option(None, help="noise2atom: lattice spacing of the simulated atoms, px."),
    atom_sigma: Optional[float] = typer.Option(None, help="noise2atom: peak sigma of the simulated atoms, px."),
    set_: list[str] = typer.Option([], "--set", help="Method option KEY=VALUE (repeatable), e.g. --set lr=5e-4."),
    max_pixels: Optional[int] = _max_pixels_option(),
) -> None:
    """Train a denoiser on noisy images; ends by exporting RUN/model/ for `selfden infer` and Fiji."""
    with user_errors():
        require_training_extra("train")
        from selfden.runs.plan import plan_resume, plan_run

        default_budget = not resume and minutes is None and steps is None
        if resume:
            plan = plan_resume(output, method, minutes=minutes, steps=steps, devices=devices, max_pixels=max_pixels)
        else:
            if not inputs:
                raise SelfdenError("no input images given: selfden train METHOD IMAGE... -o RUN")
            method_options = _method_options(
                method, bottleneck=bottleneck, size=size, direction=direction, noise_model=noise_model,
                atom_spacing=atom_spacing, atom_sigma=atom_sigma, extra=set_,
            )
            data_options = {k: v for k, v in {"patch_size": patch_size, "batch_size": batch_size,
                                              "augment": augment, "max_pixels": max_pixels}.items() if v is not None}
            trainer_options = {"device": device, "max_minutes": 10.0 if default_budget else minutes,
                               "max_steps": steps, "devices": devices or 1}
            plan = plan_run(method, inputs, method_options, data_options, trainer_options, seed)
        _print_notes(plan.notes)
        if default_budget:
            console.print("no --minutes or --steps given: training for 10 minutes")
        result = _train_with_progress(plan.config, output, resume)
        if result is not None:  # None: a rank > 0 started by torchrun; rank 0 reports
            _report_training(result)


def _method_options(method: str, extra: list[str], **named: Any) -> dict[str, Any]:
    """Named CLI options and --set KEY=VALUE pairs as a dict for the method's config model."""
    import yaml

    options = {k: v for k, v in named.items() if v is not None}
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SelfdenError(f"--set expects KEY=VALUE, got {item!r}")
        options[key.strip().replace("-", "_")] = yaml.safe_load(value)
    from selfden.methods import get_method

    fields = get_method(method).config_class.model_fields
    for key in options:
        if key not in fields:
            raise SelfdenError(
                f"option {key!r} does not apply to method {method}; its options are: {', '.join(sorted(fields))}"
            )
    return options


def _print_notes(notes: Any) -> None:
    """The method's notes on the data: choices plain, doubts as warnings."""
    for note in notes:
        if note.level == "warning":
            say("warning", "yellow", note.text)
        else:
            console.print(note.text, highlight=False)


def _train_with_progress(config: Any, output: Path, resume: bool) -> Any:
    from selfden.runs.train import train_run
    from selfden.training.progress import RichProgress

    return train_run(config, output, resume=resume, progress=RichProgress(console=console))


def _report_training(result: Any) -> None:
    minutes = result.elapsed_seconds / 60
    out.print(
        f"trained {result.steps} steps in {minutes:.1f} min on {result.device} "
        f"({result.parameter_count / 1e6:.2f} M parameters); run folder: {result.run_dir}"
    )
    if result.interrupted:  # Ctrl-C or SIGTERM: the run is checkpointed; exit as interrupted programs do
        import shlex

        command = shlex.join(["selfden", "train", result.method or "METHOD", "--resume", "-o", str(result.run_dir)])
        out.print(f"stopped early; continue with:\n  {command}", soft_wrap=True)  # unbroken, to copy
        raise typer.Exit(130)
    out.print(f"report: {result.run_dir / 'report.png'}")
    out.print(f"model: {result.model_dir}\ndenoise with:\n  selfden infer {_q(result.model_dir)} IMAGE.tif -o DENOISED.tif")
    orientations = result.orientations
    if orientations > 1:
        out.print(
            f"  (add --tta to average the {orientations} orientations it was trained with: "
            f"{orientations}x the time, a little less noise)"
        )


# ---------------------------------------------------------------------------------- infer
@app.command()
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
    max_pixels: Optional[int] = _max_pixels_option(),
) -> None:
    """Denoise images with onnxruntime (no PyTorch needed); stacks of any length, resumable."""
    from selfden.io.resumable_writer import InferenceInterrupted

    with user_errors():
        from selfden.inference.predictor import denoise_files
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


# ---------------------------------------------------------------------------------- export
@app.command()
def export(
    run: Path = typer.Argument(..., help="Run folder made by `selfden train`."),
    output: Path = typer.Option(..., "--output", "-o", help="Package folder to write (or a .zip)."),
    validation: list[str] = typer.Option(
        [], "--validation", help="A measured result for the README's Validation section (repeatable)."
    ),
    author: list[str] = typer.Option([], "--author", help="An author's name (repeatable; a person, not software)."),
    github_user: list[str] = typer.Option(
        [], "--github-user", help="The GitHub user of the --author given just before (repeatable, in order)."
    ),
    maintainer: list[str] = typer.Option([], "--maintainer", metavar="GITHUB_USER", help="A maintainer's GitHub user (repeatable)."),
    git_repo: Optional[str] = typer.Option(None, "--git-repo", metavar="URL", help="https URL of the source repository."),
    name: Optional[str] = typer.Option(None, "--name", help="Package name: what the model is for."),
    description: Optional[str] = typer.Option(None, "--description", help="One or two sentences: modality, noise, sample."),
    tag: list[str] = typer.Option([], "--tag", help="An extra tag, e.g. the imaging modality (repeatable)."),
    training_data: Optional[str] = typer.Option(
        None, "--training-data", help="The README's 'Training data' section: what the frames are, their origin and licence."
    ),
    metadata: Optional[Path] = typer.Option(
        None, "--metadata", metavar="FILE.yaml", help="The same as YAML (name, description, authors, maintainers, "
        "git_repo, tags, training_data); options given here override it.",
    ),
) -> None:
    """Export a run as a bioimage.io package (ONNX weights) for selfden infer, Fiji and deepImageJ."""
    with user_errors():
        require_training_extra("export")
        from selfden.export.metadata import PackageMetadata, load_metadata, metadata_from_options
        from selfden.runs.export import export_run

        given = metadata_from_options(author, github_user, maintainer, git_repo, name, description, tag, training_data)
        described = (load_metadata(metadata) if metadata is not None else PackageMetadata()).merged(given)
        written = export_run(run, output, validation=validation, metadata=described)
        out.print(f"wrote {written}")


@app.command()
def validate(
    package: Path = typer.Argument(..., help="Package folder, its rdf.yaml or a .zip."),
    trust_code: bool = typer.Option(
        False, "--trust-code",
        help="Also run bioimageio.core's PyTorch test, which imports the package's architecture.py "
        "(its author's Python code). Only for packages you trust; off by default.",
    ),
) -> None:
    """Check a bioimage.io package: format, bioimageio.core's test, deepImageJ's limits, upload rules."""
    with user_errors():
        from selfden.export.validation import validate_package

        report = validate_package(package, trust_code=trust_code)
        out.print(report.format(), markup=False, highlight=False, soft_wrap=True)
        if not report.passed:
            raise typer.Exit(1)


# ---------------------------------------------------------------------------------- noise
@app.command()
def noise(
    inputs: list[Path] = typer.Argument(..., help="Noisy images to analyse."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the autocorrelation plot (PNG) here."),
    max_pixels: Optional[int] = _max_pixels_option(),
) -> None:
    """Measure the noise's spatial correlation along x and y and suggest COSDD's direction."""
    with user_errors():
        from selfden.io.images import open_image
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


@app.command("noise-model")
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


@app.command()
def css(
    stacks: list[Path] = typer.Argument(..., help="Time series (raw or denoised) to score."),
    max_pixels: Optional[int] = _max_pixels_option(),
) -> None:
    """Consecutive-frame similarity: mean SSIM between frames n and n+1 (higher = more consistent)."""
    with user_errors():
        import numpy as np

        from selfden.io.limits import check_stack
        from selfden.io.images import open_image
        from selfden.metrics import css as consecutive_similarity

        for path in stacks:
            stack = open_image(path, max_pixels)
            check_stack(path, stack.shape, max_pixels, "css holds the whole stack in memory")
            if len(stack) < 2:
                raise SelfdenError(f"{path}: CSS needs a time series of at least 2 frames, got {len(stack)}")
            frames = np.stack([np.asarray(stack.frame(i), np.float32) for i in range(len(stack))])
            out.print(f"{path}: CSS {consecutive_similarity(frames):.4f} over {len(stack)} frames")


# ---------------------------------------------------------------------------------- demo
@app.command()
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


@app.command()
def methods() -> None:
    """List the available denoising methods."""
    from selfden.methods import method_names

    for name in method_names():
        out.print(name)


def _q(path: Any) -> str:
    text = str(path)
    return f'"{text}"' if any(c in text for c in " '\"") else text


def _click_error(name: str) -> type[Exception]:
    """click's ``name`` exception class: typer vendors click in newer releases, so ask typer's own."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


def run(argv: Optional[list[str]] = None) -> None:
    """The ``selfden`` command: the app, with click's usage errors as one line (exit 2)."""
    usage_error, click_error = _click_error("UsageError"), _click_error("ClickException")
    try:
        code = app(args=argv, prog_name="selfden", standalone_mode=False)
    except usage_error as error:  # type: ignore[misc]
        context = getattr(error, "ctx", None)
        if type(error).__name__ == "NoArgsIsHelpError" and context is not None:
            out.print(context.get_help())  # `selfden` alone prints the help, as before
            sys.exit(2)
        command = context.command_path if context is not None else "selfden"
        say("error", "bold red", f"{error.format_message()} (see {command} --help)")  # type: ignore[attr-defined]
        sys.exit(2)
    except click_error as error:  # type: ignore[misc]
        say("error", "bold red", error.format_message())  # type: ignore[attr-defined]
        sys.exit(error.exit_code)  # type: ignore[attr-defined]
    except typer.Abort:
        say("interrupted", "yellow", "stopped")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    run()
