"""The terminal side of the CLI: the two consoles, the one-line messages and error handling,
options and checks shared by several commands.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from selfden.errors import SelfdenError, os_error_message
from selfden.io.limits import DEFAULT_MAX_PIXELS

# markup=False: paths and messages hold user text ("[", "]", "[/]") that rich would parse;
# styled words go through say(), which builds a Text instead.
console = Console(stderr=True, markup=False)
out = Console(markup=False)


def max_pixels_option() -> Any:
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


def quote(path: Any) -> str:
    """``path`` as a shell word a user can copy (double-quoted when it holds a space or a quote)."""
    text = str(path)
    return f'"{text}"' if any(c in text for c in " '\"") else text
