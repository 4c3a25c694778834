"""The one door to bioimageio.spec/core: its cache, its quieting, loading a description, its messages.

bioimageio logs through loguru and warns on stderr, reads its cache path once at import and
writes long multi-line messages with absolute paths and full digests; export, zipping and
validation all go through here so they treat it the same way.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from selfden.errors import one_line

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
DETAIL_LIMIT = 300  # characters of a validation check's detail (summaries of many fields: 400)


def ensure_bioimageio_cache() -> None:
    """Point bioimageio's cache to a temp folder unless set (its settings read it once, at import)."""
    os.environ.setdefault("BIOIMAGEIO_CACHE_PATH", str(Path(tempfile.gettempdir()) / "selfden-bioimageio-cache"))


@contextmanager
def bioimageio_quietly(warnings_too: bool = True) -> Iterator[None]:
    """bioimageio's loguru output off, and with ``warnings_too`` Python warnings as well.

    The library stays quiet (the CLI prints). Validation and zipping hide warnings too (the
    report and the errors say what matters); export keeps them, as it always has.
    """
    from loguru import logger as loguru_logger

    loguru_logger.disable("bioimageio")
    try:
        with warnings.catch_warnings() if warnings_too else nullcontext():
            if warnings_too:
                warnings.simplefilter("ignore")
            yield
    finally:
        loguru_logger.enable("bioimageio")


def load_model_description(source: Path) -> tuple[Any | None, str]:
    """(ModelDescr, "") if ``source`` loads with bioimageio.spec (files and hashes checked), else (None, why)."""
    from bioimageio.spec import InvalidDescr, load_description

    try:
        with bioimageio_quietly():
            descr = load_description(source, perform_io_checks=True)
    except Exception as error:  # a foreign file: any parser error is the package's problem
        return None, error_line(error)
    if isinstance(descr, InvalidDescr):
        return None, summarise_errors(descr.validation_summary, source)
    if getattr(descr, "type", None) != "model":
        return None, f"describes a {getattr(descr, 'type', '?')}, not a model"
    return descr, ""


def summarise_errors(summary: Any, source: Path) -> str:
    """One line from a bioimageio ValidationSummary: each failing field once, with its clearest message."""
    messages: dict[str, str] = {}
    for detail in summary.details:
        for error in detail.errors if detail.status == "failed" else []:
            where, message = _field_path(error.loc), shorten(str(error.msg), source)
            if where not in messages or message.startswith("Value error, "):  # custom validators say most
                messages[where] = message
    parts = [f"{where or 'rdf'}: {message.removeprefix('Value error, ')}" for where, message in messages.items()]
    return one_line("; ".join(parts) or str(summary.status), limit=400)


def failed_tests(summary: Any) -> str:
    """The failed checks of a ``test_model`` summary, ``name: messages`` joined by ' | ' (else its status)."""
    failed = [f"{d.name}: {'; '.join(str(e.msg) for e in d.errors)}" for d in summary.details if d.status == "failed"]
    return " | ".join(failed) or str(summary.status)


def _field_path(loc: tuple[Any, ...]) -> str:
    """'weights.onnx.source' from a pydantic location, without the union-member type names."""
    return ".".join(str(p) for p in loc if isinstance(p, int) or re.fullmatch(r"[a-z_][a-z0-9_]*", str(p)))


def shorten(text: str, root: Path) -> str:
    """Paths relative to the package, SHA-256 digests cut to 12 characters, markdown escapes dropped."""
    folder = root.parent if root.is_file() else root
    for prefix in {str(folder.absolute()) + os.sep, str(folder.resolve()) + os.sep}:
        text = text.replace(prefix, "")
    text = text.replace("\\|", "|")
    return re.sub(r"\b([0-9a-f]{12})[0-9a-f]{52}\b\.?", r"\1...", text)


def error_line(error: BaseException, limit: int = DETAIL_LIMIT) -> str:
    """``one_line`` of a foreign error, led by its type name where its text does not say it (they are terse)."""
    text = one_line(error, limit=10**6)
    return one_line(text if type(error).__name__ in text else f"{type(error).__name__}: {text}", limit=limit)
