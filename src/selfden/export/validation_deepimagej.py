"""Validation rules from what deepImageJ runs: one input, axes b,c,y,x, its processing ops, an ONNX
graph its engine loads (onnxruntime Java 1.12/1.13, CPU: opset <= 17, IR <= 8, one file), and what
the zoo's deepImageJ check compares (sample = test input, a deterministic graph).

The facts behind these limits are in ``BIOIMAGEIO.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from selfden.export.bioimageio_bridge import error_line
from selfden.export.validation_package import OpenedPackage, onnx_entry
from selfden.export.validation_report import Check
from selfden.package.files import URL
from selfden.package.runtime import open_session

MAX_OPSET, MAX_IR_VERSION = 17, 8
DEEPIMAGEJ_OPS = (
    "fixed_zero_mean_unit_variance", "scale_linear", "scale_range", "zero_mean_unit_variance",
    "clip", "binarize", "sigmoid", "ensure_dtype",
)  # fmt: skip
DEEPIMAGEJ_AXES = "bcyx"
_RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
)
_ENGINE = "deepImageJ's engine (onnxruntime Java 1.12)"
_ZOO_CHECK = "the zoo's deepImageJ check compares one fresh run on the sample with the test output"


def deepimagej_checks(package: OpenedPackage) -> list[Check]:
    """Every deepImageJ rule; the graph's own checks are not run when the ONNX weights do not load."""
    model, problem = _load_onnx(package)
    checks = [Check("ONNX weights", model is not None, problem)]
    checks += [_check_one_input(package, model), _check_axes(package.rdf), _check_processing(package.rdf)]
    graph_checks: list[tuple[str, Callable[[OpenedPackage, Any], Check]]] = [
        ("ONNX opset <= 17", _check_opset),
        ("ONNX IR version <= 8", _check_ir),
        ("ONNX in one file", _check_one_file),
    ]
    checks += [check(package, model) if model is not None else Check.not_run(n, problem) for n, check in graph_checks]
    checks.append(_check_sample(package))
    determinism = _check_deterministic(package, model) if model is not None else Check.not_run("deterministic", problem)
    return [*checks, determinism]


def _load_onnx(package: OpenedPackage) -> tuple[Any | None, str]:
    """The main ONNX graph (external data not loaded), or None and why."""
    import onnx

    entry = onnx_entry(package.rdf)
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
        return None, f"{source} is not a readable ONNX model ({error_line(error)})"
    return model, f"{source} ({path.stat().st_size / 1e6:.2f} MB)"


def _graph_inputs(model: Any) -> list[str]:
    initialisers = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initialisers]


def _tensors(rdf: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    return [t for t in rdf.get(kind) or [] if isinstance(t, Mapping)]


def _tensor_id(tensor: Mapping[str, Any]) -> str:
    return str(tensor.get("id", tensor.get("name", "?")))


def _check_one_input(package: OpenedPackage, model: Any | None) -> Check:
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


def _check_opset(package: OpenedPackage, model: Any) -> Check:
    name = "ONNX opset <= 17"
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        return Check(name, False, "the graph imports no default-domain opset; it is not a standard ONNX model")
    opset = max(versions)
    said = (onnx_entry(package.rdf) or {}).get("opset_version")
    note = f" (the rdf says {said})" if said is not None and str(said) != str(opset) else ""
    if opset > MAX_OPSET:
        reason = f"{_ENGINE} cannot load it; re-export with selfden export (opset 17)"
        return Check(name, False, f"ONNX opset {opset} > {MAX_OPSET}{note}: {reason}")
    return Check(name, True, f"opset {opset}{note}")


def _check_ir(package: OpenedPackage, model: Any) -> Check:
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


def _check_one_file(package: OpenedPackage, model: Any) -> Check:
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
    from selfden.io.reading import open_image

    with open_image(path) as stack:
        return np.stack([stack.frame(i) for i in range(len(stack))]).reshape(stack.shape)


def _check_sample(package: OpenedPackage) -> Check:
    name = "sample = test input"
    test, sample = _first_input_files(package.rdf)
    if sample is None:
        return Check(name, False, f"no sample_tensor: {_ZOO_CHECK}; add the test input as a .tif", warning=True)
    if not sample.lower().endswith((".tif", ".tiff", ".png")):
        return Check(name, False, f"sample tensor '{sample}' is not an image (.tif/.png), which deepImageJ needs")
    try:
        expected, got = np.squeeze(np.load(package.root / str(test))), np.squeeze(_read_image(package.root / sample))
    except Exception as error:  # unreadable foreign files
        return Check(name, False, f"cannot compare '{sample}' with '{test}': {error_line(error)}")
    if expected.shape == got.shape and np.array_equal(expected, got):
        return Check(name, True, f"{sample} equals {test} ({'x'.join(map(str, expected.shape))})")
    if expected.shape == got.shape:
        diff = f"max |diff| {np.max(np.abs(expected.astype(np.float64) - got)):.3g}"
    else:
        diff = f"shapes {expected.shape} vs {got.shape}"
    return Check(name, False, f"{sample} differs from {test} ({diff}): {_ZOO_CHECK}; save the test input as the sample")


def _network_input(package: OpenedPackage, model: Any) -> tuple[dict[str, np.ndarray], str]:
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
        return {first.name: raw.astype(dtype)}, f" (raw test input: {error_line(error)})"
    return {first.name: np.asarray(apply_steps(raw.astype(np.float32), steps), dtype=dtype)}, ""


def _run_fresh(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return open_session(path, quiet=True).run(None, feed)


def _check_deterministic(package: OpenedPackage, model: Any) -> Check:
    """No unseeded random node, and two fresh sessions agree exactly on the test input."""
    name = "deterministic"
    random = [n for n in _all_nodes(model.graph) if n.op_type in _RANDOM_OPS]
    unseeded = sorted({n.op_type for n in random if not any(a.name == "seed" for a in n.attribute)})
    if unseeded:
        reason = "give each a seed attribute (selfden export does)"
        ops = ", ".join(unseeded)
        return Check(name, False, f"unseeded {ops} nodes draw anew in every process: {_ZOO_CHECK}; {reason}")
    weights = package.root / str((onnx_entry(package.rdf) or {}).get("source"))
    try:
        feed, note = _network_input(package, model)
        first, second = _run_fresh(weights, feed), _run_fresh(weights, feed)
    except Exception as error:  # the package's own graph and tensors: their failures are the package's
        return Check(name, False, f"cannot run the ONNX graph on the test input: {error_line(error)}")
    if all(np.array_equal(a, b, equal_nan=True) for a, b in zip(first, second)):
        return Check(name, True, f"two fresh onnxruntime sessions gave identical outputs{note}")
    diff = max(float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0)) for a, b in zip(first, second))
    return Check(name, False, f"two fresh onnxruntime sessions differ by up to {diff:.3g}: {_ZOO_CHECK}")
