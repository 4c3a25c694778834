"""``selfden train``: parse the options, plan the run (one library call), print the method's
notes on the data, train, report what the run produced."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from selfden.cli.shell import console, max_pixels_option, out, quote, require_training_extra, say, user_errors
from selfden.errors import SelfdenError

if TYPE_CHECKING:  # torch: imported by the command, after it checked that the training extra is there
    from selfden.methods.base import Note
    from selfden.runs.config import RunConfig
    from selfden.runs.train import RunResult


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
    cpu_bf16: Optional[bool] = typer.Option(
        None, "--cpu-bf16/--no-cpu-bf16",
        help="Train on a CPU in bf16 autocast (default: where the CPU computes bf16 natively and the method "
        "trains faster in it, as dnnet does).",
    ),
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
    max_pixels: Optional[int] = max_pixels_option(),
    init_from: Optional[Path] = typer.Option(
        None, "--init-from", metavar="RUN",
        help="Start from the networks of a trained run of the same method and options (fine-tuning: new data, "
        "fresh optimiser), e.g. one on earlier frames of the same microscope, instead of random weights "
        "(cosdd: instead of selfden's prior).",
    ),
) -> None:
    """Train a denoiser on noisy images; ends by exporting RUN/model/ for `selfden infer` and Fiji."""
    with user_errors():
        require_training_extra("train")
        from selfden.runs.plan import new_run_config, plan_resume, plan_run

        default_budget = not resume and minutes is None and steps is None
        if resume and init_from is not None:
            raise SelfdenError("--init-from starts a new run; --resume continues OUTPUT from its own checkpoint: use one")
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
                               "max_steps": steps, "devices": devices or 1, "bf16_on_cpu": cpu_bf16}
            plan = plan_run(
                new_run_config(method, inputs, method_options, data_options, trainer_options, seed, init_from)
            )
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


def _print_notes(notes: Sequence[Note]) -> None:
    """The method's notes on the data: choices plain, doubts as warnings."""
    for note in notes:
        if note.level == "warning":
            say("warning", "yellow", note.text)
        else:
            console.print(note.text, highlight=False)


def _train_with_progress(config: RunConfig, output: Path, resume: bool) -> RunResult | None:
    from selfden.runs.train import train_run
    from selfden.training.progress import RichProgress

    return train_run(config, output, resume=resume, progress=RichProgress(console=console))


def _report_training(result: RunResult) -> None:
    """What the run produced, and the commands that continue from it."""
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
    _print_notes(result.outcome)
    out.print(f"report: {result.run_dir / 'report.png'}")
    out.print(f"model: {result.model_dir}\ndenoise with:\n  selfden infer {quote(result.model_dir)} IMAGE.tif -o DENOISED.tif")
    if result.orientations > 1:
        out.print(
            f"  (add --tta to average the {result.orientations} orientations it was trained with: "
            f"{result.orientations}x the time, a little less noise)"
        )
