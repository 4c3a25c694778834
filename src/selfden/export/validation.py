"""Check a bioimage.io model package before it is shared: format, test run, deepImageJ, upload.

``validate_package`` takes a package folder, its rdf.yaml or a .zip, and returns a
``ValidationReport``: one ``Check`` per rule, each with a one-line detail. A broken package
is an expected outcome (a failed report), never an exception; only bugs raise.

A package is untrusted: its Python runs only with ``trust_code``; no file is read before every
file its rdf names is known to be inside it; a .zip is unpacked with limits (``package_files``).

The rules come from bioimageio.spec/core (the format and ``test_model``), from what
deepImageJ's engine (onnxruntime Java 1.12/1.13, CPU) loads, and from the bioimage.io
uploader; the facts behind them are in ``BIOIMAGEIO.md``.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from selfden.errors import ModelError, one_line
from selfden.package.files import URL, extract_zip, files_outside, outside_message, referenced_files
from selfden.package.files import sha256_of

logger = logging.getLogger(__name__)

MAX_OPSET, MAX_IR_VERSION = 17, 8
DEEPIMAGEJ_OPS = (
    "fixed_zero_mean_unit_variance", "scale_linear", "scale_range", "zero_mean_unit_variance",
    "clip", "binarize", "sigmoid", "ensure_dtype",
)  # fmt: skip
DEEPIMAGEJ_AXES = "bcyx"
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
_RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
)
_NOT_TRUSTED = "runs the package's architecture.py; pass --trust-code to run it"
_AFTER_INSIDE = ("bioimageio.spec", "bioimageio.core test_model", "bioimageio.core test_model (PyTorch)", "the rest")
_ENGINE = "deepImageJ's engine (onnxruntime Java 1.12)"
_ZOO_CHECK = "the zoo's deepImageJ check compares one fresh run on the sample with the test output"


@dataclass(frozen=True)
class Check:
    """One rule: whether the package follows it and why (one line).

    A failed ``warning`` is shown but does not fail the package.
    """

    name: str
    passed: bool
    detail: str
    warning: bool = False
    skipped: bool = False  # could not run because an earlier check failed (counts as failed)

    @classmethod
    def not_run(cls, name: str, reason: str) -> Check:
        return cls(name, False, f"not run: {reason}", skipped=True)

    @property
    def status(self) -> str:
        if self.passed:
            return "pass"
        return "warn" if self.warning else ("skip" if self.skipped else "FAIL")


@dataclass(frozen=True)
class ValidationReport:
    """All checks of one package; ``passed`` when no check that is not a warning failed."""

    package: Path
    checks: list[Check] = field(default_factory=list)
    passed: bool = False

    @classmethod
    def of(cls, package: Path, checks: list[Check]) -> ValidationReport:
        return cls(package, list(checks), all(c.passed or c.warning for c in checks))

    def check(self, name: str) -> Check:
        """The check called ``name`` (KeyError if there is none)."""
        found = [c for c in self.checks if c.name == name]
        if not found:
            raise KeyError(f"no check {name!r}; checks: {', '.join(c.name for c in self.checks)}")
        return found[0]

    def format(self) -> str:
        """A plain-text table: one row per check, then the verdict."""
        width = max([len(c.name) for c in self.checks] + [5])
        rows = [f"package: {self.package}", f"{'check':<{width}}  result  detail"]
        rows += [f"{c.name:<{width}}  {c.status:<6}  {c.detail}" for c in self.checks]
        counts = {s: sum(c.status == s for c in self.checks) for s in ("FAIL", "skip", "warn")}
        verdict = "PASSED" if self.passed else f"FAILED: {counts['FAIL']} of {len(self.checks)} checks failed"
        verdict += f", {counts['skip']} not run" * bool(counts["skip"])
        verdict += f", {counts['warn']} warning(s)" * bool(counts["warn"])
        return "\n".join([*rows, verdict])


@dataclass(frozen=True)
class _Package:
    """A package opened for checking (for a .zip, its unpacked copy: bioimageio never opens the zip)."""

    root: Path  # folder holding rdf.yaml (a temporary extraction for a .zip)
    rdf_path: Path
    rdf: Mapping[str, Any]


def validate_package(path: str | os.PathLike[str], trust_code: bool = False) -> ValidationReport:
    """Check the package at ``path`` (folder, rdf.yaml or .zip); see the module docstring.

    ``trust_code``: also run bioimageio.core's PyTorch test, which imports the package's own
    architecture.py; without it that check is a warning saying it was not run.
    """
    path = Path(path)
    ensure_bioimageio_cache()
    with ExitStack() as stack:
        located = _locate(path, stack)
        if isinstance(located, Check):
            return ValidationReport.of(path, [located])
        rdf_path, layout = located
        rdf, read_check = _read_rdf(rdf_path)
        checks = [*layout, read_check]
        if rdf is None:
            return ValidationReport.of(path, checks)
        package = _Package(rdf_path.parent, rdf_path, rdf)
        inside = _check_inside(package)
        if not inside.passed:  # bioimageio (and the checks below) would read and hash the outside file
            why = "the rdf names files outside the package; nothing it names was read"
            return ValidationReport.of(path, [*checks, inside, *(Check.not_run(n, why) for n in _AFTER_INSIDE)])
        sizes = _check_sizes(package)
        if not sizes.passed:  # bioimageio would load the file whole: an 18 GiB allocation from a header
            why = "a file the rdf names declares more data than selfden loads; nothing was loaded"
            return ValidationReport.of(
                path, [*checks, inside, sizes, *(Check.not_run(n, why) for n in _AFTER_INSIDE)]
            )
        spec = _check_spec(package)
        checks += [inside, sizes, spec, _check_test_model(package, spec.passed)]
        checks.append(_check_torch_weights(package, spec.passed, trust_code))
        checks += _deepimagej_checks(package)
        checks += _upload_checks(package)
        report = ValidationReport.of(path, checks)
    logger.info("validated %s: %s", path, "passed" if report.passed else "failed")
    return report


def ensure_bioimageio_cache() -> None:
    """Point bioimageio's cache to a temp folder unless set (its settings read it once, at import)."""
    os.environ.setdefault("BIOIMAGEIO_CACHE_PATH", str(Path(tempfile.gettempdir()) / "selfden-bioimageio-cache"))


# --- finding and reading the package --------------------------------------------------------


def _locate(path: Path, stack: ExitStack) -> tuple[Path, list[Check]] | Check:
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
        return Check("zip layout", False, _one_line(str(error)).replace(f"{path}: ", f"{path.name}: ", 1))
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


def _check_inside(package: _Package) -> Check:
    """Every file the rdf names stays inside the package: decided before any of them is read."""
    outside = files_outside(package.root, package.rdf_path.name, package.rdf)
    detail = outside_message(outside) if outside else "every file the rdf names is inside the package"
    return Check("files inside the package", not outside, detail)


def _check_sizes(package: _Package) -> Check:
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
            return Check(name, False, _shorten(_one_line(error), package.root))
    return Check(name, True, f"no file declares more than {describe(DEFAULT_MAX_PIXELS)}")


def _read_rdf(rdf_path: Path) -> tuple[Mapping[str, Any] | None, Check]:
    name = "rdf.yaml is YAML"
    try:
        rdf = yaml.safe_load(rdf_path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as error:
        line = error.problem_mark.line + 1 if error.problem_mark else "?"
        problem = error.problem or error.context
        return None, Check(name, False, f"{rdf_path.name} line {line}: {problem}; fix the YAML syntax")
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        return None, Check(name, False, f"cannot read {rdf_path.name}: {_one_line(error)}")
    if not isinstance(rdf, Mapping):
        return None, Check(name, False, f"{rdf_path.name} is not a YAML mapping; it is not a model description")
    return rdf, Check(name, True, f"{rdf_path.name}, type {rdf.get('type')}, format {rdf.get('format_version')}")


# --- bioimageio.spec and bioimageio.core ----------------------------------------------------


@contextmanager
def bioimageio_quietly() -> Iterator[None]:
    """bioimageio logs through loguru and warnings to stderr; the library stays quiet (the CLI prints)."""
    from loguru import logger as loguru_logger

    loguru_logger.disable("bioimageio")
    try:
        with warnings.catch_warnings():
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
        return None, _one_line(error)
    if isinstance(descr, InvalidDescr):
        return None, summarise_errors(descr.validation_summary, source)
    if getattr(descr, "type", None) != "model":
        return None, f"describes a {getattr(descr, 'type', '?')}, not a model"
    return descr, ""


def _field_path(loc: tuple[Any, ...]) -> str:
    """'weights.onnx.source' from a pydantic location, without the union-member type names."""
    return ".".join(str(p) for p in loc if isinstance(p, int) or re.fullmatch(r"[a-z_][a-z0-9_]*", str(p)))


def summarise_errors(summary: Any, source: Path) -> str:
    """One line from a bioimageio ValidationSummary: each failing field once, with its clearest message."""
    messages: dict[str, str] = {}
    for detail in summary.details:
        for error in detail.errors if detail.status == "failed" else []:
            where, message = _field_path(error.loc), _shorten(str(error.msg), source)
            if where not in messages or message.startswith("Value error, "):  # custom validators say most
                messages[where] = message
    parts = [f"{where or 'rdf'}: {message.removeprefix('Value error, ')}" for where, message in messages.items()]
    return _one_line("; ".join(parts) or str(summary.status), limit=400)


def _check_spec(package: _Package) -> Check:
    descr, problem = load_model_description(package.rdf_path)
    if descr is None:
        return Check("bioimageio.spec", False, problem)
    return Check("bioimageio.spec", True, f"valid (format {descr.format_version}); files and hashes checked")


def _check_test_model(package: _Package, spec_passed: bool) -> Check:
    name = "bioimageio.core test_model"
    if not spec_passed:
        return Check.not_run(name, "the description did not load with bioimageio.spec")
    if not _onnx_entry(package.rdf):
        return Check.not_run(name, "no ONNX weights to test")
    from bioimageio.core import test_model

    try:
        with bioimageio_quietly():
            summary = test_model(package.rdf_path, weight_format="onnx", devices=["CPUExecutionProvider"])
    except Exception as error:  # runs the package's own graph: its failures are the package's
        return Check(name, False, f"test_model stopped: {_one_line(error)}")
    if summary.status == "passed":
        return Check(name, True, f"ONNX, CPU: test output reproduced, valid sizes ran ({len(summary.details)} checks)")
    failed = [f"{d.name}: {'; '.join(str(e.msg) for e in d.errors)}" for d in summary.details if d.status == "failed"]
    text = _one_line(_shorten(" | ".join(failed) or str(summary.status), package.root), limit=400)
    if _github_users(package.rdf):
        text += " (an author's github_user makes test_model query GitHub, which fails offline)"
    return Check(name, False, text)


def _check_torch_weights(package: _Package, spec_passed: bool, trust_code: bool) -> Check:
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
        return Check(name, False, f"test_model stopped: {_one_line(error)}")
    if summary.status == "passed":
        return Check(name, True, f"state dict + architecture, CPU: test output reproduced ({len(summary.details)} checks)")
    failed = [f"{d.name}: {'; '.join(str(e.msg) for e in d.errors)}" for d in summary.details if d.status == "failed"]
    return Check(name, False, _one_line(_shorten(" | ".join(failed) or str(summary.status), package.root), limit=400))


# --- deepImageJ -------------------------------------------------------------------------


def _deepimagej_checks(package: _Package) -> list[Check]:
    model, problem = _load_onnx(package)
    checks = [Check("ONNX weights", model is not None, problem)]
    checks += [_check_one_input(package, model), _check_axes(package.rdf), _check_processing(package.rdf)]
    graph_checks: list[tuple[str, Callable[[_Package, Any], Check]]] = [
        ("ONNX opset <= 17", _check_opset),
        ("ONNX IR version <= 8", _check_ir),
        ("ONNX in one file", _check_one_file),
    ]
    checks += [check(package, model) if model is not None else Check.not_run(n, problem) for n, check in graph_checks]
    checks.append(_check_sample(package))
    determinism = _check_deterministic(package, model) if model is not None else Check.not_run("deterministic", problem)
    return [*checks, determinism]


def _onnx_entry(rdf: Mapping[str, Any]) -> Mapping[str, Any] | None:
    weights = rdf.get("weights")
    entry = weights.get("onnx") if isinstance(weights, Mapping) else None
    return entry if isinstance(entry, Mapping) else None


def _load_onnx(package: _Package) -> tuple[Any | None, str]:
    """The main ONNX graph (external data not loaded), or None and why."""
    import onnx

    entry = _onnx_entry(package.rdf)
    if entry is None:
        found = ", ".join(package.rdf.get("weights") or {}) or "none"
        return None, f"no ONNX weights (found: {found}); deepImageJ and selfden infer need ONNX: use selfden export"
    source = str(entry.get("source", ""))
    path = package.root / source
    if URL.match(source) or not path.is_file():
        return None, f"ONNX weights file '{source}' is not in the package"
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf decode errors have no common base
        return None, f"{source} is not a readable ONNX model ({_one_line(error)})"
    return model, f"{source} ({path.stat().st_size / 1e6:.2f} MB)"


def _graph_inputs(model: Any) -> list[str]:
    initialisers = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initialisers]


def _tensors(rdf: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    return [t for t in rdf.get(kind) or [] if isinstance(t, Mapping)]


def _tensor_id(tensor: Mapping[str, Any]) -> str:
    return str(tensor.get("id", tensor.get("name", "?")))


def _check_one_input(package: _Package, model: Any | None) -> Check:
    described = [_tensor_id(t) for t in _tensors(package.rdf, "inputs")]
    graph = _graph_inputs(model) if model is not None else described
    if len(described) == 1 and len(graph) == 1:
        return Check("one input", True, f"input '{described[0]}'")
    counts = f"{len(described)} described inputs ({', '.join(described)}), ONNX graph inputs ({', '.join(graph)})"
    return Check("one input", False, f"{counts}: deepImageJ feeds exactly one tensor; export a single-input graph")


def _axis_letters(axes: Any) -> str:
    """Axis letters as deepImageJ (JDLL) reads them: batch -> b, channel -> c, others by id."""
    if isinstance(axes, str):  # format 0.4
        return axes
    letters = []
    for axis in axes if isinstance(axes, list) else []:
        axis = axis if isinstance(axis, Mapping) else {}
        kind = str(axis.get("type"))
        letters.append({"batch": "b", "channel": "c"}.get(kind) or str(axis.get("id", kind)))
    return ",".join(letters) if any(len(x) > 1 for x in letters) else "".join(letters)


def _check_axes(rdf: Mapping[str, Any]) -> Check:
    name = "axes b,c,y,x"
    found = {
        f"{kind[:-1]} '{_tensor_id(t)}'": _axis_letters(t.get("axes"))
        for kind in ("inputs", "outputs") for t in _tensors(rdf, kind)
    }  # fmt: skip
    wrong = {k: v for k, v in found.items() if v != DEEPIMAGEJ_AXES}
    if found and not wrong:
        return Check(name, True, f"{len(found)} tensors with axes b, c, y, x")
    shown = "; ".join(f"{k} has axes '{v}'" for k, v in (wrong or {"rdf": "none"}).items())
    return Check(name, False, f"{shown}: deepImageJ reads axes as letters and needs b, c, y, x in this order")


def _check_processing(rdf: Mapping[str, Any]) -> Check:
    ops = [
        (f"{kind[:-1]} {key}", str(step.get("id", step.get("name", "?"))))
        for kind, key in (("inputs", "preprocessing"), ("outputs", "postprocessing"))
        for t in _tensors(rdf, kind)
        for step in t.get(key) or [] if isinstance(step, Mapping)
    ]  # fmt: skip
    bad = [f"{where} '{op}'" for where, op in ops if op not in DEEPIMAGEJ_OPS]
    if bad:
        known = ", ".join(DEEPIMAGEJ_OPS)
        reason = f"not among deepImageJ's ops ({known}); bake it into the graph"
        return Check("processing ops", False, f"{', '.join(bad)} {reason}")
    return Check("processing ops", True, ", ".join(dict.fromkeys(op for _, op in ops)) or "none")


def _check_opset(package: _Package, model: Any) -> Check:
    name = "ONNX opset <= 17"
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        return Check(name, False, "the graph imports no default-domain opset; it is not a standard ONNX model")
    opset = max(versions)
    said = (_onnx_entry(package.rdf) or {}).get("opset_version")
    note = f" (the rdf says {said})" if said is not None and str(said) != str(opset) else ""
    if opset > MAX_OPSET:
        reason = f"{_ENGINE} cannot load it; re-export with selfden export (opset 17)"
        return Check(name, False, f"ONNX opset {opset} > {MAX_OPSET}{note}: {reason}")
    return Check(name, True, f"opset {opset}{note}")


def _check_ir(package: _Package, model: Any) -> Check:
    name = "ONNX IR version <= 8"
    if model.ir_version > MAX_IR_VERSION:
        reason = f"{_ENGINE} refuses it ('max supported IR version: 8'); re-export with selfden export"
        return Check(name, False, f"ONNX IR version {model.ir_version} > {MAX_IR_VERSION}: {reason}")
    return Check(name, True, f"IR version {model.ir_version}")


def _subgraphs(node: Any) -> Iterator[Any]:
    for attribute in node.attribute:
        yield from [attribute.g] if attribute.HasField("g") else []
        yield from attribute.graphs


def _all_nodes(graph: Any) -> Iterator[Any]:
    for node in graph.node:
        yield node
        for sub in _subgraphs(node):
            yield from _all_nodes(sub)


def _all_tensors(graph: Any) -> Iterator[Any]:
    """Initialisers and constant attributes of ``graph`` and its subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            yield from [attribute.t] if attribute.HasField("t") else []
            yield from attribute.tensors
        for sub in _subgraphs(node):
            yield from _all_tensors(sub)


def _check_one_file(package: _Package, model: Any) -> Check:
    import onnx

    external = [t for t in _all_tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL]
    if not external:
        return Check("ONNX in one file", True, "no external data")
    files = ", ".join(sorted({e.value for t in external for e in t.external_data if e.key == "location"}))
    return Check(
        "ONNX in one file", False,
        f"{len(external)} tensors live in external data ({files}): deepImageJ loads one self-contained .onnx; "
        "re-export with selfden export or re-save with onnx.save_model(model, path, save_as_external_data=False)",
    )  # fmt: skip


def _tensor_source(tensor: Mapping[str, Any], key: str) -> str | None:
    value = tensor.get(key)
    if isinstance(value, Mapping):
        value = value.get("source")
    return str(value) if value else None


def _first_input_files(rdf: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(test input, sample input) file of the first input, format 0.5 or 0.4."""
    inputs = _tensors(rdf, "inputs")
    if inputs and ("test_tensor" in inputs[0] or "sample_tensor" in inputs[0]):
        return _tensor_source(inputs[0], "test_tensor"), _tensor_source(inputs[0], "sample_tensor")
    tests, samples = rdf.get("test_inputs") or [None], rdf.get("sample_inputs") or [None]
    return tests[0], samples[0]


def _read_image(path: Path) -> np.ndarray:
    """A sample image's pixels, through selfden's own readers (header limits, truncation checks)."""
    from selfden.io.images import open_image

    with open_image(path) as stack:
        return np.stack([stack.frame(i) for i in range(len(stack))]).reshape(stack.shape)


def _check_sample(package: _Package) -> Check:
    name = "sample = test input"
    test, sample = _first_input_files(package.rdf)
    if sample is None:
        return Check(name, False, f"no sample_tensor: {_ZOO_CHECK}; add the test input as a .tif", warning=True)
    if not sample.lower().endswith((".tif", ".tiff", ".png")):
        return Check(name, False, f"sample tensor '{sample}' is not an image (.tif/.png), which deepImageJ needs")
    try:
        expected, got = np.squeeze(np.load(package.root / str(test))), np.squeeze(_read_image(package.root / sample))
    except Exception as error:  # unreadable foreign files
        return Check(name, False, f"cannot compare '{sample}' with '{test}': {_one_line(error)}")
    if expected.shape == got.shape and np.array_equal(expected, got):
        return Check(name, True, f"{sample} equals {test} ({'x'.join(map(str, expected.shape))})")
    if expected.shape == got.shape:
        diff = f"max |diff| {np.max(np.abs(expected.astype(np.float64) - got)):.3g}"
    else:
        diff = f"shapes {expected.shape} vs {got.shape}"
    return Check(name, False, f"{sample} differs from {test} ({diff}): {_ZOO_CHECK}; save the test input as the sample")


def _network_input(package: _Package, model: Any) -> tuple[dict[str, np.ndarray], str]:
    """The preprocessed test input for the graph's first input, and a note when preprocessing was skipped."""
    from onnx.helper import tensor_dtype_to_np_dtype

    from selfden.errors import ModelError
    from selfden.package.processing import apply_steps
    from selfden.package.rdf import read_spec

    first = next(i for i in model.graph.input if i.name in _graph_inputs(model))
    raw = np.load(package.root / str(_first_input_files(package.rdf)[0]))
    dtype = tensor_dtype_to_np_dtype(first.type.tensor_type.elem_type)
    try:
        steps = read_spec(package.rdf_path).preprocessing
    except ModelError as error:
        return {first.name: raw.astype(dtype)}, f" (raw test input: {_one_line(error)})"
    return {first.name: np.asarray(apply_steps(raw.astype(np.float32), steps), dtype=dtype)}, ""


def _run_fresh(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    from selfden.package.runtime import open_session

    return open_session(path, quiet=True).run(None, feed)


def _check_deterministic(package: _Package, model: Any) -> Check:
    """No unseeded random node, and two fresh sessions agree exactly on the test input."""
    name = "deterministic"
    random = [n for n in _all_nodes(model.graph) if n.op_type in _RANDOM_OPS]
    unseeded = sorted({n.op_type for n in random if not any(a.name == "seed" for a in n.attribute)})
    if unseeded:
        reason = "give each a seed attribute (selfden export does)"
        ops = ", ".join(unseeded)
        return Check(name, False, f"unseeded {ops} nodes draw anew in every process: {_ZOO_CHECK}; {reason}")
    weights = package.root / str((_onnx_entry(package.rdf) or {}).get("source"))
    try:
        feed, note = _network_input(package, model)
        first, second = _run_fresh(weights, feed), _run_fresh(weights, feed)
    except Exception as error:  # the package's own graph and tensors: their failures are the package's
        return Check(name, False, f"cannot run the ONNX graph on the test input: {_one_line(error)}")
    if all(np.array_equal(a, b, equal_nan=True) for a, b in zip(first, second)):
        return Check(name, True, f"two fresh onnxruntime sessions gave identical outputs{note}")
    diff = max(float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0)) for a, b in zip(first, second))
    return Check(name, False, f"two fresh onnxruntime sessions differ by up to {diff:.3g}: {_ZOO_CHECK}")


# --- upload rules -----------------------------------------------------------------------


def _upload_checks(package: _Package) -> list[Check]:
    rdf = package.rdf
    if "id" in rdf:
        reason = "the bioimage.io uploader assigns ids; remove it before uploading"
        no_id = Check("no id field", False, f"the rdf has id '{rdf['id']}': {reason}")
    else:
        no_id = Check("no id field", True, "none (the zoo assigns one)")
    users = _github_users(rdf)
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


def _github_users(rdf: Mapping[str, Any]) -> list[str]:
    people = [p for key in ("authors", "maintainers") for p in rdf.get(key) or [] if isinstance(p, Mapping)]
    return [str(p["github_user"]) for p in people if p.get("github_user")]


def _file_checks(package: _Package) -> list[Check]:
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


# --- text --------------------------------------------------------------------------------


def _shorten(text: str, root: Path) -> str:
    """Paths relative to the package, SHA-256 digests cut to 12 characters, markdown escapes dropped."""
    folder = root.parent if root.is_file() else root
    for prefix in {str(folder.absolute()) + os.sep, str(folder.resolve()) + os.sep}:
        text = text.replace(prefix, "")
    text = text.replace("\\|", "|")
    return re.sub(r"\b([0-9a-f]{12})[0-9a-f]{52}\b\.?", r"\1...", text)


def _one_line(value: object, limit: int = 300) -> str:
    """One line, with the error's type name where its text does not say it (foreign errors are terse)."""
    text = one_line(value, limit=10**6)
    if isinstance(value, BaseException) and type(value).__name__ not in text:
        text = f"{type(value).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
