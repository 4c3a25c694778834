"""The files of an untrusted model package: which ones an rdf names, containment, sha256, zips.

A downloaded package is a stranger's data. Everything here keeps it inside its own folder:

- ``referenced_files`` lists every local file an rdf names (format 0.4 and 0.5), with where
  in the rdf it is named, so callers can refuse the ones that ``leaves_package``: absolute
  paths, ``..``, backslashes, and symlinks whose target (resolved) is outside the package root.
  Messages about such a path say only that it leaves the package (nothing about the outside).
- ``sha256_of`` hashes a file in blocks, for the checks against the rdf's ``sha256``.
- ``extract_zip`` unpacks a package .zip with limits (total size, entry count, compression
  ratio, counted on the bytes actually written) and never writes a symlink or outside the
  target; entries that try are skipped and returned, so ``validate`` can fail on them.

Torch-free and bioimageio-free: ``selfden infer`` and ``selfden validate`` both use it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from selfden.errors import ModelError, one_line

URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
#: URLs a package may name (bioimageio downloads them); any other scheme (file://) is a local path.
REMOTE = re.compile(r"^https?://", re.IGNORECASE)
#: rdf keys whose plain-string values are file names (format 0.4 lists, 0.5 single files).
FILE_FIELDS = frozenset({
    "documentation", "covers", "test_inputs", "test_outputs", "sample_inputs", "sample_outputs",
    "test_tensor", "sample_tensor", "files",
})  # fmt: skip
_DRIVE = re.compile(r"^[a-zA-Z]:")
_CHUNK = 1 << 16
# Errors of the machine, not of the zip: they keep their type so the CLI can say "disk full" etc.
_HOST_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EMFILE})
# What zipfile raises on a damaged or hostile archive (it has no common base class).
_ZIP_ERRORS = (
    zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError,
    ValueError, struct.error, OverflowError,
)  # fmt: skip
OUTSIDE_FIX = (
    "a package may only name files inside its own folder (relative paths, no '..', no symlink out): "
    "fix the rdf or get the package again from its author"
)


@dataclass(frozen=True)
class FileRef:
    """One file an rdf names: where (``weights.onnx.source``), the path as written, its sha256 if given."""

    field: str
    source: str
    sha256: str | None = None


def referenced_files(rdf: Mapping[str, Any]) -> list[FileRef]:
    """Every local file the rdf describes (http(s) URLs skipped; ``config`` is free-form and not walked)."""
    found: list[FileRef] = []

    def visit(value: Any, where: str, key: str) -> None:
        if isinstance(value, Mapping):
            if isinstance(value.get("source"), str):
                sha = value.get("sha256")
                found.append(FileRef(_join(where, "source"), value["source"], str(sha) if sha else None))
            for k, v in value.items():
                if k not in ("config", "source"):
                    visit(v, _join(where, str(k)), str(k))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                visit(item, f"{where}[{index}]", key)
        elif isinstance(value, str) and key in FILE_FIELDS:
            found.append(FileRef(where, value))
        elif isinstance(value, str) and key in ("architecture", "dependencies"):  # format 0.4 strings
            found.extend(_v04_reference(where, key, value))

    visit(rdf, "", "")
    return [ref for ref in found if not REMOTE.match(ref.source)]


def source_entries(rdf: Any) -> Iterator[dict[str, Any]]:
    """The rdf's file entries (mappings with a ``source``; ``config`` not walked), to read or update in place."""
    if isinstance(rdf, dict):
        if isinstance(rdf.get("source"), str):
            yield rdf
        for key, item in rdf.items():
            if key != "config":
                yield from source_entries(item)
    elif isinstance(rdf, list):
        for item in rdf:
            yield from source_entries(item)


def selfden_graphs(rdf: Mapping[str, Any]) -> list[FileRef]:
    """The graphs selfden itself runs, from ``config.selfden.graphs`` (the sampler of a COSDD package)."""
    config = rdf.get("config")
    selfden = config.get("selfden") if isinstance(config, Mapping) else None
    graphs = selfden.get("graphs") if isinstance(selfden, Mapping) else None
    if not isinstance(graphs, Mapping):
        return []
    return [FileRef(f"config.selfden.graphs.{k}", str(v)) for k, v in graphs.items() if v and not REMOTE.match(str(v))]


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _v04_reference(where: str, key: str, value: str) -> list[FileRef]:
    """'architecture.py:Net' and 'conda:environment.yaml' (format 0.4) name files too."""
    if key == "architecture" and ".py:" in value:
        return [FileRef(where, value.rsplit(":", 1)[0])]
    if key == "dependencies" and ":" in value:
        return [FileRef(where, value.split(":", 1)[1])]
    return []


def leaves_package(root: Path, source: str) -> bool:
    """Whether ``source`` (as an rdf writes it) names something outside the package folder ``root``.

    Decided from the text, then by resolving symlinks (``realpath``, which opens nothing and
    does not care whether the target exists) and checking the result is under ``root``.
    """
    if not source:
        return False  # nothing named: missing, not outside
    if "\x00" in source or "\\" in source or _DRIVE.match(source) or URL.match(source):
        return True  # backslashes and drive letters are separators or roots on Windows; file:// is a root
    if source.startswith("/") or ".." in PurePosixPath(source).parts:
        return True
    base = os.path.realpath(root)
    target = os.path.realpath(os.path.join(base, source))
    return os.path.commonpath([base, target]) != base


def files_outside(root: Path, rdf_name: str, rdf: Mapping[str, Any]) -> list[FileRef]:
    """The files the rdf ``rdf_name`` in ``root`` names (itself and selfden's graphs included) that leave it."""
    refs = [FileRef("rdf", rdf_name), *referenced_files(rdf), *selfden_graphs(rdf)]
    return [ref for ref in refs if leaves_package(root, ref.source)]


def outside_message(refs: list[FileRef]) -> str:
    """The one thing said about paths that leave the package: that they do, and the fix."""
    named = ", ".join(f"{r.field} {shown(r.source)}" for r in refs[:4])
    named += f" and {len(refs) - 4} more" if len(refs) > 4 else ""
    return f"{named} {'leaves' if len(refs) == 1 else 'leave'} the package; {OUTSIDE_FIX}"


def shown(source: str, limit: int = 80) -> str:
    """A path from a foreign rdf, quoted, on one line and short."""
    text = repr(source)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def sha256_of(path: Path) -> str:
    """The hex sha256 of ``path``'s contents, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- zips ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZipLimits:
    """What a model package zip may unpack to; a model package is a few MB, so these are generous."""

    max_total_bytes: int = 1 << 30
    max_files: int = 10_000
    max_ratio: int = 200  # per entry, once it has written more than ratio_floor_bytes
    ratio_floor_bytes: int = 1 << 20  # small entries (an all-zero test tensor) may compress any amount


@dataclass(frozen=True)
class Extracted:
    """What ``extract_zip`` wrote (names relative to the target) and the entries it refused, with why."""

    names: tuple[str, ...]
    skipped: tuple[str, ...]  # "'../x' (leaves the package)", "'link' (a symlink)"


def extract_zip(path: Path, target: Path, limits: ZipLimits | None = None) -> Extracted:
    """Unpack the package zip ``path`` into the new folder ``target`` (which must not exist).

    Entries that would land outside ``target`` or are symlinks are skipped (listed in the
    result). ModelError (one line, naming the zip) for an unreadable zip or one over the
    limits; on any failure ``target`` is removed, so nothing is left behind.
    """
    limits = limits or ZipLimits()
    target.mkdir()
    try:
        try:
            with zipfile.ZipFile(path) as archive:
                return _extract(archive, path, target, limits)
        except _ZIP_ERRORS as error:
            raise ModelError(f"{path}: not a readable .zip package ({one_line(error)}); download it again") from None
        except OSError as error:
            if error.errno in _HOST_ERRNOS:
                raise  # the disk or a permission here, not the zip's content: the CLI says which
            raise ModelError(f"{path}: cannot unpack the .zip package ({one_line(error)})") from None
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def _extract(archive: zipfile.ZipFile, path: Path, target: Path, limits: ZipLimits) -> Extracted:
    members = archive.infolist()
    advice = "it is not a model package (a zip bomb?); if you trust it, unzip it yourself and give the folder"
    if len(members) > limits.max_files:
        raise ModelError(f"{path}: holds {len(members)} entries, more than {limits.max_files}; {advice}")
    if sum(m.file_size for m in members) > limits.max_total_bytes:
        raise ModelError(f"{path}: unpacks to more than {_size(limits.max_total_bytes)}; {advice}")
    names: list[str] = []
    skipped: list[str] = []
    budget = limits.max_total_bytes
    for member in members:
        reason = unsafe_entry(member)
        if reason is not None:
            skipped.append(f"{shown(member.filename)} ({reason})")
            continue
        parts = [p for p in member.filename.split("/") if p not in ("", ".")]
        destination = target.joinpath(*parts)
        try:
            if member.is_dir() or not parts:
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            budget -= _copy_member(archive, member, destination, budget, limits, path, advice)
        except OSError as error:
            if error.errno in _HOST_ERRNOS:
                raise
            message = f"entry {shown(member.filename)} cannot be written ({one_line(error)})"
            raise ModelError(f"{path}: {message}; the zip is malformed, download it again") from None
        names.append("/".join(parts))
    return Extracted(tuple(names), tuple(skipped))


def unsafe_entry(member: zipfile.ZipInfo) -> str | None:
    """Why a zip entry must not be extracted (None if it is a plain file or folder inside)."""
    name = member.filename
    if stat.S_ISLNK(member.external_attr >> 16):
        return "a symlink"
    if "\\" in name or _DRIVE.match(name) or name.startswith("/") or ".." in name.split("/"):
        return "leaves the package"
    return None


def _copy_member(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo, destination: Path, budget: int, limits: ZipLimits,
    path: Path, advice: str,
) -> int:  # fmt: skip
    """Copy one entry, counting the bytes really written (a header's sizes can lie); returns them."""
    written = 0
    compressed = max(min(member.compress_size, path.stat().st_size), 1)  # a header may claim more than the zip holds
    with archive.open(member) as source, destination.open("xb") as sink:  # "x": a repeated name is an error
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > budget:
                raise ModelError(f"{path}: unpacks to more than {_size(limits.max_total_bytes)}; {advice}")
            if written > limits.ratio_floor_bytes and written > limits.max_ratio * compressed:
                ratio = f"expands more than {limits.max_ratio} times"
                raise ModelError(f"{path}: entry {shown(member.filename)} {ratio}; {advice}")
            sink.write(chunk)
    return written


def _size(count: int) -> str:
    return f"{count / (1 << 30):g} GiB" if count >= 1 << 30 else f"{count / (1 << 20):g} MiB"


