"""Check a bioimage.io model package before it is shared: format, test run, deepImageJ, upload.

``validate_package`` takes a package folder, its rdf.yaml or a .zip, and returns a
``ValidationReport`` (``validation_report``): one ``Check`` per rule, each with a one-line
detail. A broken package is an expected outcome (a failed report), never an exception; only
bugs raise.

A package is untrusted: its Python runs only with ``trust_code``; no file is read before every
file its rdf names is known to be inside it; a .zip is unpacked with limits (``package.files``).

The rules come from bioimageio.spec/core (the format and ``test_model``, run here through
``bioimageio_bridge``), from what deepImageJ's engine (onnxruntime Java 1.12/1.13, CPU) loads
(``validation_deepimagej``), and from the bioimage.io uploader (``validation_package``); the
facts behind them are in ``BIOIMAGEIO.md``.
"""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from pathlib import Path

from selfden.errors import one_line
from selfden.export.bioimageio_bridge import (
    bioimageio_quietly,
    ensure_bioimageio_cache,
    error_line,
    failed_tests,
    load_model_description,
    shorten,
)
from selfden.export.validation_deepimagej import deepimagej_checks
from selfden.export.validation_package import (
    OpenedPackage,
    check_inside,
    check_sizes,
    github_users,
    locate,
    onnx_entry,
    read_rdf,
    upload_checks,
)
from selfden.export.validation_report import Check, ValidationReport

logger = logging.getLogger(__name__)

_NOT_TRUSTED = "runs the package's architecture.py; pass --trust-code to run it"
_AFTER_INSIDE = ("bioimageio.spec", "bioimageio.core test_model", "bioimageio.core test_model (PyTorch)", "the rest")


def validate_package(path: str | os.PathLike[str], trust_code: bool = False) -> ValidationReport:
    """Check the package at ``path`` (folder, rdf.yaml or .zip); see the module docstring.

    ``trust_code``: also run bioimageio.core's PyTorch test, which imports the package's own
    architecture.py; without it that check is a warning saying it was not run.
    """
    path = Path(path)
    ensure_bioimageio_cache()
    with ExitStack() as stack:
        located = locate(path, stack)
        if isinstance(located, Check):
            return ValidationReport.of(path, [located])
        rdf_path, layout = located
        rdf, read_check = read_rdf(rdf_path)
        checks = [*layout, read_check]
        if rdf is None:
            return ValidationReport.of(path, checks)
        package = OpenedPackage(rdf_path.parent, rdf_path, rdf)
        inside = check_inside(package)
        if not inside.passed:  # bioimageio (and the checks below) would read and hash the outside file
            why = "the rdf names files outside the package; nothing it names was read"
            return ValidationReport.of(path, [*checks, inside, *(Check.not_run(n, why) for n in _AFTER_INSIDE)])
        sizes = check_sizes(package)
        if not sizes.passed:  # bioimageio would load the file whole: an 18 GiB allocation from a header
            why = "a file the rdf names declares more data than selfden loads; nothing was loaded"
            return ValidationReport.of(
                path, [*checks, inside, sizes, *(Check.not_run(n, why) for n in _AFTER_INSIDE)]
            )
        spec = _check_spec(package)
        checks += [inside, sizes, spec, _check_test_model(package, spec.passed)]
        checks.append(_check_torch_weights(package, spec.passed, trust_code))
        checks += deepimagej_checks(package)
        checks += upload_checks(package)
        report = ValidationReport.of(path, checks)
    logger.info("validated %s: %s", path, "passed" if report.passed else "failed")
    return report


# --- bioimageio.spec and bioimageio.core ----------------------------------------------------


def _check_spec(package: OpenedPackage) -> Check:
    descr, problem = load_model_description(package.rdf_path)
    if descr is None:
        return Check("bioimageio.spec", False, problem)
    return Check("bioimageio.spec", True, f"valid (format {descr.format_version}); files and hashes checked")


def _check_test_model(package: OpenedPackage, spec_passed: bool) -> Check:
    name = "bioimageio.core test_model"
    if not spec_passed:
        return Check.not_run(name, "the description did not load with bioimageio.spec")
    if not onnx_entry(package.rdf):
        return Check.not_run(name, "no ONNX weights to test")
    from bioimageio.core import test_model

    try:
        with bioimageio_quietly():
            summary = test_model(package.rdf_path, weight_format="onnx", devices=["CPUExecutionProvider"])
    except Exception as error:  # runs the package's own graph: its failures are the package's
        return Check(name, False, f"test_model stopped: {error_line(error)}")
    if summary.status == "passed":
        return Check(name, True, f"ONNX, CPU: test output reproduced, valid sizes ran ({len(summary.details)} checks)")
    text = one_line(shorten(failed_tests(summary), package.root), limit=400)
    if github_users(package.rdf):
        text += " (an author's github_user makes test_model query GitHub, which fails offline)"
    return Check(name, False, text)


def _check_torch_weights(package: OpenedPackage, spec_passed: bool, trust_code: bool) -> Check:
    """test_model for PyTorch state-dict weights, when the package has them (selfden's do) and its code is trusted."""
    name = "bioimageio.core test_model (PyTorch)"
    if "pytorch_state_dict" not in (package.rdf.get("weights") or {}):
        return Check(name, True, "not applicable: the package has no pytorch_state_dict weights")
    if not trust_code:  # importing architecture.py runs whatever its author wrote
        return Check(name, False, f"not run: {_NOT_TRUSTED}", warning=True)
    if not spec_passed:
        return Check.not_run(name, "the description did not load with bioimageio.spec")
    try:
        import torch  # noqa: F401
    except ImportError:
        return Check(name, False, "not run: torch is not installed here (the ONNX weights were tested)", warning=True)
    from bioimageio.core import test_model

    try:
        with bioimageio_quietly():
            summary = test_model(package.rdf_path, weight_format="pytorch_state_dict", devices=["cpu"])
    except Exception as error:
        return Check(name, False, f"test_model stopped: {error_line(error)}")
    if summary.status == "passed":
        return Check(name, True, f"state dict + architecture, CPU: test output reproduced ({len(summary.details)} checks)")
    return Check(name, False, one_line(shorten(failed_tests(summary), package.root), limit=400))
