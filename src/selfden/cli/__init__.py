"""The `selfden` command line: a thin shell that parses, calls one library function, reports.

The app, its error handling and the commands' registration; the commands live in ``train``,
``infer``, ``packages`` (export, validate) and ``tools`` (noise, noise-model, css, demo,
methods), the terminal helpers in ``shell``. Heavy imports (torch, bioimageio) happen inside
the commands that need them, so `selfden --help` is quick and `selfden infer` never imports torch.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from selfden import __version__
from selfden.cli import infer, packages, tools, train
from selfden.cli.shell import console, out, say

app = typer.Typer(
    name="selfden",
    help="Self-supervised denoising: train on noisy images alone, export bioimage.io packages, denoise anywhere.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    # Help text is printed as written: "selfden[scale]" must not be read as console markup.
    rich_markup_mode=None,
)


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


app.command()(train.train)
app.command()(infer.infer)
app.command()(packages.export)
app.command()(packages.validate)
app.command()(tools.noise)
app.command("noise-model")(tools.noise_model)
app.command()(tools.css)
app.command()(tools.demo)
app.command()(tools.methods)


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
