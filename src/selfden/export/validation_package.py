"""Validation rules on a package as untrusted files: finding it, unpacking it, reading its rdf,
keeping every file it names inside it and within size limits, and the bioimage.io uploader's rules.

Nothing here runs the package's code or graphs: these checks decide whether the rest may read it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from selfden.errors import ModelError, one_line
from selfden.export.bioimageio_bridge import DETAIL_LIMIT, RDF_NAMES, error_line, shorten
from selfden.export.validation_report import Check
from selfden.package.files import extract_zip, files_outside, outside_message, referenced_files, sha256_of


@dataclass(frozen=True)
class OpenedPackage:
    """A package opened for checking (for a .zip, its unpacked copy: bioimageio never opens the zip)."""

    root: Path  # folder holding rdf.yaml (a temporary extraction for a .zip)
    rdf_path: Path
    rdf: Mapping[str, Any]


def locate(path: Path, stack: ExitStack) -> tuple[Path, list[Check]] | Check:
    """(rdf.yaml to read, layout checks), or the failed check saying why not."""
    if not path.exists():
        return Check("package", False, f"{path} does not exist; give a package folder, its rdf.yaml or a .zip")
    if path.is_dir():
        rdf = next((path / n for n in RDF_NAMES if (path / n).is_file()), None)
        if rdf is None:
            return Check("package", False, f"{path} holds no rdf.yaml; give a model folder (e.g. RUN/model)")
        return rdf, []
    if path.suffix.lower() == ".zip":
        return _open_zip(path, stack)
    if path.name in RDF_NAMES:
        return path, []
    return Check("package", False, f"{path} is neither a folder, an rdf.yaml nor a .zip package")


def _open_zip(path: Path, stack: ExitStack) -> tuple[Path, list[Check]] | Check:
    """Unpack ``path`` (with limits) into a temporary folder removed with ``stack``; rdf.yaml must be at its root."""
    temp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="selfden-validate-")))
    try:
        extracted = extract_zip(path, temp / "package")
    except ModelError as error:
        detail = one_line(str(error), limit=DETAIL_LIMIT).replace(f"{path}: ", f"{path.name}: ", 1)
        return Check("zip layout", False, detail)
    if extracted.skipped:  # made to reach outside: hostile, so nothing in it is checked further
        reason = "not unpacked, nothing else checked; a package zip holds plain files under relative paths"
        return Check("zip entries", False, f"{', '.join(extracted.skipped)}: {reason}")
    names = extracted.names
    rdf = next((temp / "package" / n for n in RDF_NAMES if n in names), None)
    if rdf is not None:
        return rdf, [Check("zip layout", True, f"{rdf.name} at the root, {len(names)} files, none outside")]
    nested = [n for n in names if n.rsplit("/", 1)[-1] in RDF_NAMES]
    where = f"found {nested[0]}" if nested else "none found"
    return Check(
        "zip layout", False,
        f"no rdf.yaml at the zip's root ({where}); the uploader expects it there: zip with selfden export -o X.zip",
    )  # fmt: skip


def read_rdf(rdf_path: Path) -> tuple[Mapping[str, Any] | None, Check]:
    """The rdf as a mapping (None when it is not one) and the check saying so."""
    name = "rdf.yaml is YAML"
    try:
        rdf = yaml.safe_load(rdf_path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as error:
        line = error.problem_mark.line + 1 if error.problem_mark else "?"
        problem = error.problem or error.context
        return None, Check(name, False, f"{rdf_path.name} line {line}: {problem}; fix the YAML syntax")
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        return None, Check(name, False, f"cannot read {rdf_path.name}: {error_line(error)}")
    if not isinstance(rdf, Mapping):
        return None, Check(name, False, f"{rdf_path.name} is not a YAML mapping; it is not a model description")
    return rdf, Check(name, True, f"{rdf_path.name}, type {rdf.get('type')}, format {rdf.get('format_version')}")


def check_inside(package: OpenedPackage) -> Check:
    """Every file the rdf names stays inside the package: decided before any of them is read."""
    outside = files_outside(package.root, package.rdf_path.name, package.rdf)
    detail = outside_message(outside) if outside else "every file the rdf names is inside the package"
    return Check("files inside the package", not outside, detail)


def check_sizes(package: OpenedPackage) -> Check:
    """Every tensor and image file the rdf names declares at most DEFAULT_MAX_PIXELS values."""
    from selfden.errors import InputError
    from selfden.io.limits import DEFAULT_MAX_PIXELS, check_declared_size, describe

    name = "file sizes within limits"
    for ref in referenced_files(package.rdf):
        path = package.root / ref.source
        if not path.is_file():
            continue  # a missing file is the files-and-hashes check's finding
        try:
            check_declared_size(path, DEFAULT_MAX_PIXELS)
        except InputError as error:
            return Check(name, False, shorten(error_line(error), package.root))
    return Check(name, True, f"no file declares more than {describe(DEFAULT_MAX_PIXELS)}")


def onnx_entry(rdf: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """``weights.onnx`` of the rdf, None when it has none (or it is not a mapping)."""
    weights = rdf.get("weights")
    entry = weights.get("onnx") if isinstance(weights, Mapping) else None
    return entry if isinstance(entry, Mapping) else None


def github_users(rdf: Mapping[str, Any]) -> list[str]:
    """Every github_user of the rdf's authors and maintainers."""
    people = [p for key in ("authors", "maintainers") for p in rdf.get(key) or [] if isinstance(p, Mapping)]
    return [str(p["github_user"]) for p in people if p.get("github_user")]


# --- upload rules -----------------------------------------------------------------------


def upload_checks(package: OpenedPackage) -> list[Check]:
    """What the bioimage.io uploader and its reviewers ask of a package: no id, people, files and hashes."""
    rdf = package.rdf
    if "id" in rdf:
        reason = "the bioimage.io uploader assigns ids; remove it before uploading"
        no_id = Check("no id field", False, f"the rdf has id '{rdf['id']}': {reason}")
    else:
        no_id = Check("no id field", True, "none (the zoo assigns one)")
    users = github_users(rdf)
    offline = "fine on upload, but bioimageio.core's test_model then queries GitHub and fails offline"
    detail = f"github_user {', '.join(users)}: {offline}" if users else "none"
    github = Check("no github_user", not users, detail, warning=True)
    return [no_id, github, _check_authors(rdf), *_file_checks(package)]


def _check_authors(rdf: Mapping[str, Any]) -> Check:
    """People, not software or placeholders, as authors: the zoo's reviewers ask who to credit."""
    names = [str(p.get("name", "")) for p in rdf.get("authors") or [] if isinstance(p, Mapping)]
    stand_ins = [n for n in names if n.startswith("Unknown author") or n.lower() in ("selfden", "selfden user", "")]
    if not names or stand_ins:
        fix = "export again with selfden export --author 'Your Name' (and --maintainer GITHUB_USER) before uploading"
        return Check("authors named", False, f"author {', '.join(map(repr, stand_ins)) or 'missing'}: {fix}", warning=True)
    return Check("authors named", True, ", ".join(names))


def _file_checks(package: OpenedPackage) -> list[Check]:
    files = list(dict.fromkeys((r.source, r.sha256) for r in referenced_files(package.rdf)))
    missing = [s for s, _ in files if not (package.root / s).is_file()]
    wrong = [s for s, h in files if h and s not in missing and sha256_of(package.root / s) != h.lower()]
    problems = [f"missing: {', '.join(missing)}"] * bool(missing)
    problems += [f"sha256 differs: {', '.join(wrong)}"] * bool(wrong)
    hashed = [s for s, h in files if h]
    if problems:
        present = Check("files and hashes", False, f"{'; '.join(problems)}: restore the files or re-export the package")
    else:
        matched = f", {len(hashed)} sha256 match" if hashed else " (none has a sha256)"
        present = Check("files and hashes", True, f"{len(files)} files present{matched}")
    unhashed = [s for s, h in files if not h]
    adds = "zipping (selfden export -o X.zip) adds them"
    detail = f"no sha256 for {', '.join(unhashed)}: {adds}" if unhashed else "every file has a sha256"
    return [present, Check("all files hashed", not unhashed, detail, warning=True)]
