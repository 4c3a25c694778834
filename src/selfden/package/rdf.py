"""Read a bioimage.io model description (rdf.yaml, format 0.5 or 0.4) with plain yaml.

Only what single-image ONNX inference needs: tensor axes (b, c, y, x with one channel),
valid input sizes (min + n * step), the output halo, pre/post-processing ops and the ONNX
weights file. Anything else a package may hold is ignored; anything we cannot honour is a
ModelError naming the file. No bioimageio import: ``selfden infer`` stays light.

A package is untrusted: every file its rdf names must stay inside its folder (no absolute
path, no '..', no symlink out; see ``package.files``), and the ONNX weights and the graphs in
``config.selfden.graphs`` must match the sha256 the rdf gives them. A file without a sha256 is
used as it is (only logged): the format makes hashes optional and hand-written packages omit
them, and since the rdf travels with the files a hash guards against damage, not against the
package's author. ``selfden export`` gives every file a sha256 (folder and zip alike).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from selfden.errors import ModelError
from selfden.package.files import (
    REMOTE,
    FileRef,
    files_outside,
    leaves_package,
    outside_message,
    referenced_files,
    selfden_graphs,
    sha256_of,
    shown,
)

log = logging.getLogger(__name__)

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
SUPPORTED_OPS = (
    "scale_linear", "fixed_zero_mean_unit_variance", "zero_mean_unit_variance", "scale_range",
    "clip", "sigmoid", "binarize", "ensure_dtype",
)
_AXIS_LETTERS = {"batch": "b", "channel": "c"}


@dataclass(frozen=True)
class ProcessingStep:
    """One pre/post-processing op with scalar parameters (per-channel lists already resolved)."""

    op: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """What inference needs from a model package. Sizes and halos are ``(y, x)``."""

    root: Path
    rdf_path: Path
    name: str
    format_version: str
    input_id: str
    output_id: str
    input_axes: str  # letters from "bcyx" in the model's order, e.g. "bcyx", "cyx", "byxc"
    output_axes: str
    batch_size: int | None  # None: any batch size
    min_size: tuple[int, int]
    size_step: tuple[int, int]  # 0: fixed size
    halo: tuple[int, int]
    preprocessing: tuple[ProcessingStep, ...]
    postprocessing: tuple[ProcessingStep, ...]
    weights: Path
    config_selfden: Mapping[str, Any]


class _Reader:
    """Parses one rdf dict; every error names the rdf file."""

    def __init__(self, rdf_path: Path, rdf: Mapping[str, Any]) -> None:
        self.path = rdf_path
        self.rdf = rdf

    def fail(self, message: str) -> ModelError:
        return ModelError(f"{self.path}: {message}")

    # --- tensors ---------------------------------------------------------------------
    def tensor(self, key: str) -> Mapping[str, Any]:
        tensors = self.rdf.get(key)
        if not isinstance(tensors, list) or not tensors:
            raise self.fail(f"no '{key}' tensors described; the package is incomplete")
        if key == "inputs" and len(tensors) != 1:
            raise self.fail(f"model has {len(tensors)} inputs; selfden runs single-input models")
        if len(tensors) > 1:
            log.warning("%s: %d outputs; using the first", self.path, len(tensors))
        if not isinstance(tensors[0], Mapping):
            raise self.fail(f"'{key}[0]' is not a mapping")
        return tensors[0]

    def tensor_id(self, tensor: Mapping[str, Any]) -> str:
        return str(tensor.get("id", tensor.get("name", "")))

    def axes(self, tensor: Mapping[str, Any], v05: bool) -> list[dict[str, Any]]:
        """Axes as dicts ``{letter, size, halo}`` in the tensor's order, for either format."""
        axes = tensor.get("axes")
        parsed = self._axes_v05(axes) if v05 else self._axes_v04(tensor)
        letters = "".join(a["letter"] for a in parsed)
        if sorted(letters) != sorted(set(letters)) or not {"y", "x"} <= set(letters):
            raise self.fail(f"unsupported axes '{letters}'; expected y and x plus optional b and c")
        return parsed

    def _axes_v05(self, axes: Any) -> list[dict[str, Any]]:
        if not isinstance(axes, list):
            raise self.fail("tensor axes are not a list (format 0.5)")
        parsed = []
        for axis in axes:
            if not isinstance(axis, Mapping):
                raise self.fail(f"axis {axis!r} is not a mapping (format 0.5)")
            kind = axis.get("type")
            if kind == "channel":
                names = axis.get("channel_names") or []
                if len(names) != 1:
                    raise self.fail(f"model expects {len(names)} channels; selfden denoises single-channel images")
            letter = _AXIS_LETTERS.get(kind) or (str(axis.get("id")) if kind == "space" else "")
            if letter not in ("b", "c", "y", "x"):
                raise self.fail(f"unsupported {kind} axis '{axis.get('id', '')}'; expected b, c, y, x")
            if float(axis.get("scale", 1.0)) != 1.0:
                raise self.fail(f"axis {letter} has scale {axis['scale']}; expected 1 (same size in and out)")
            parsed.append({"letter": letter, "size": axis.get("size"), "halo": int(axis.get("halo", 0) or 0)})
        return parsed

    def _axes_v04(self, tensor: Mapping[str, Any]) -> list[dict[str, Any]]:
        axes, shape, halo = str(tensor.get("axes", "")), tensor.get("shape"), tensor.get("halo")
        halo = halo or [0] * len(axes)
        if len(halo) != len(axes):
            raise self.fail(f"halo {halo} does not match axes '{axes}'")
        if bad := set(axes) - set("bcyx"):
            raise self.fail(f"unsupported axes '{axes}' ({''.join(sorted(bad))}); expected b, c, y, x")
        parsed = []
        for index, letter in enumerate(axes):
            size = self._size_v04(shape, index)
            referenced = isinstance(size, Mapping) and "tensor_id" in size
            if letter == "c" and size not in (1, {"min": 1, "step": 0}) and not referenced:
                raise self.fail(f"channel axis of size {size}; selfden denoises single-channel images")
            parsed.append({"letter": letter, "size": size, "halo": int(halo[index])})
        return parsed

    def _size_v04(self, shape: Any, index: int) -> Any:
        if isinstance(shape, list):
            return int(shape[index])
        if isinstance(shape, Mapping) and "min" in shape:
            return {"min": int(shape["min"][index]), "step": int(shape["step"][index])}
        if isinstance(shape, Mapping) and "reference_tensor" in shape:
            scale = float(shape.get("scale", [1] * (index + 1))[index])
            offset = float(shape.get("offset", [0] * (index + 1))[index])
            return {"tensor_id": shape["reference_tensor"], "scale": scale, "offset": offset}
        raise self.fail(f"cannot read tensor shape {shape!r}")

    # --- sizes -------------------------------------------------------------------------
    def input_sizes(self, axes: list[dict[str, Any]], letter: str) -> tuple[int, int]:
        """``(min, step)`` of a space axis; step 0 for a fixed size."""
        size = next(a["size"] for a in axes if a["letter"] == letter)
        if isinstance(size, int):
            return size, 0
        if isinstance(size, Mapping) and "min" in size:
            return int(size["min"]), int(size.get("step", 0) or 0)
        raise self.fail(f"input axis {letter} has size {size!r}; expected a number or {{min, step}}")

    def check_output_size(self, axes: list[dict[str, Any]], letter: str, input_id: str, fixed: int | None) -> None:
        size = next(a["size"] for a in axes if a["letter"] == letter)
        if isinstance(size, int) and size == fixed:
            return
        if isinstance(size, Mapping) and "tensor_id" in size:
            same_axis = str(size.get("axis_id", letter)) == letter
            plain = float(size.get("offset", 0) or 0) == 0 and float(size.get("scale", 1) or 1) == 1
            if str(size["tensor_id"]) == input_id and same_axis and plain:
                return
        raise self.fail(f"output axis {letter} has size {size!r}; expected the input's size (same y and x)")

    def batch_size(self, axes: list[dict[str, Any]]) -> int | None:
        batch = [a["size"] for a in axes if a["letter"] == "b"]
        if not batch:
            return 1
        if isinstance(batch[0], int):
            return batch[0]
        if isinstance(batch[0], Mapping) and batch[0].get("step", 1) == 0:
            return int(batch[0]["min"])
        return None

    # --- processing and weights --------------------------------------------------------
    def steps(self, tensor: Mapping[str, Any], key: str, ids: Sequence[str]) -> tuple[ProcessingStep, ...]:
        return tuple(self._step(entry, ids) for entry in tensor.get(key) or [])

    def _step(self, entry: Mapping[str, Any], ids: Sequence[str]) -> ProcessingStep:
        op = str(entry.get("id", entry.get("name", "")))
        kwargs = dict(entry.get("kwargs") or {})
        if op == "zero_mean_unit_variance" and kwargs.get("mode") == "fixed":  # format 0.4
            op = "fixed_zero_mean_unit_variance"
        if op not in SUPPORTED_OPS:
            raise self.fail(f"processing op '{op}' is not supported; selfden runs {', '.join(SUPPORTED_OPS)}")
        if kwargs.get("mode") == "per_dataset":
            log.warning("%s: %s per_dataset is computed per image here", self.path, op)
        return ProcessingStep(op, self._params(op, kwargs, ids))

    def _params(self, op: str, kwargs: Mapping[str, Any], ids: Sequence[str]) -> dict[str, Any]:
        eps = float(kwargs.get("eps", 1e-6))
        if op == "scale_linear":
            return {"gain": self.scalar(kwargs.get("gain", 1.0)), "offset": self.scalar(kwargs.get("offset", 0.0))}
        if op == "fixed_zero_mean_unit_variance":
            return {"mean": self.scalar(kwargs["mean"]), "std": self.scalar(kwargs["std"]), "eps": eps}
        if op == "zero_mean_unit_variance":
            return {"eps": eps}
        if op == "scale_range":
            reference = kwargs.get("reference_tensor")
            if reference is not None and str(reference) not in ids:
                raise self.fail(f"scale_range refers to unknown tensor '{reference}'")
            low, high = float(kwargs.get("min_percentile", 0.0)), float(kwargs.get("max_percentile", 100.0))
            return {"low": low, "high": high, "eps": eps, "reference": reference}
        if op == "clip":
            return {"min": kwargs.get("min"), "max": kwargs.get("max")}
        if op == "binarize":
            return {"threshold": self.scalar(kwargs["threshold"])}
        if op == "ensure_dtype":
            return {"dtype": str(kwargs["dtype"])}
        return {}

    def scalar(self, value: Any) -> float:
        """A number, or a one-element per-channel list (we run single-channel models)."""
        if isinstance(value, list):
            if len(value) != 1:
                raise self.fail(f"per-channel parameters {value} for {len(value)} channels; expected 1")
            value = value[0]
        return float(value)

    def weights(self, root: Path) -> Path:
        weights = self.rdf.get("weights") or {}
        onnx = weights.get("onnx") if isinstance(weights, Mapping) else None
        if not onnx:
            found = ", ".join(weights) or "none"
            raise self.fail(f"no ONNX weights (found: {found}); selfden infer runs ONNX weights only")
        source = str(onnx.get("source", ""))
        if REMOTE.match(source):
            raise self.fail(f"ONNX weights are a URL ({source}); download the package as a .zip instead")
        ref = FileRef("weights.onnx.source", source, str(onnx["sha256"]) if onnx.get("sha256") else None)
        return self.package_file(root, ref, "ONNX weights")

    def package_file(self, root: Path, ref: FileRef, what: str) -> Path:
        """``ref`` inside the package, present, and matching its sha256 when the rdf gives one."""
        if leaves_package(root, ref.source):
            raise self.fail(outside_message([ref]))
        path = root / ref.source
        if not ref.source or not path.is_file():
            raise self.fail(f"{what} file {shown(ref.source)} is missing from {root}")
        if ref.sha256 is None:
            log.info("%s: %s %s has no sha256 to check", self.path, ref.field, ref.source)
        elif sha256_of(path) != ref.sha256.lower():
            raise self.fail(
                f"{ref.field} {shown(ref.source)} does not match its sha256 in the rdf (damaged or changed): "
                "re-download the package, or re-export it with selfden export"
            )
        return path

    def check_files(self, root: Path) -> None:
        """Every file the rdf names stays inside the package; selfden's own graphs match their sha256."""
        outside = files_outside(root, self.path.name, self.rdf)
        if outside:
            raise self.fail(outside_message(outside))
        described = referenced_files(self.rdf)
        hashes = {ref.source: ref.sha256 for ref in described if ref.sha256}
        onnx = next((ref.source for ref in described if ref.field == "weights.onnx.source"), None)
        for graph in [g for g in selfden_graphs(self.rdf) if g.source != onnx]:  # the weights: checked there
            self.package_file(root, FileRef(graph.field, graph.source, hashes.get(graph.source)), "graph")


def find_rdf(folder: Path) -> Path | None:
    """The rdf.yaml (or bioimageio.yaml) in ``folder``, if any."""
    return next((folder / n for n in RDF_NAMES if (folder / n).is_file()), None)


def _load_yaml(rdf_path: Path) -> Mapping[str, Any]:
    try:
        rdf = yaml.safe_load(rdf_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        message = " ".join(str(error).split())[:200]
        raise ModelError(f"{rdf_path}: cannot read the model description ({message})") from error
    if not isinstance(rdf, Mapping):
        raise ModelError(f"{rdf_path}: not a bioimage.io model description (expected a YAML mapping)")
    if rdf.get("type", "model") != "model":
        raise ModelError(f"{rdf_path}: describes a '{rdf.get('type')}', expected a model")
    return rdf


def read_spec(rdf_path: Path) -> ModelSpec:
    """Parse ``rdf_path`` (format 0.4 or 0.5) into a ModelSpec; ModelError on anything unsupported."""
    rdf = _load_yaml(rdf_path)
    try:
        return _parse(_Reader(rdf_path, rdf))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError) as error:
        message = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        raise ModelError(f"{rdf_path}: malformed model description ({message})") from error


def _parse(reader: _Reader) -> ModelSpec:
    rdf_path, rdf = reader.path, reader.rdf
    version = str(rdf.get("format_version", ""))
    if not re.match(r"^0\.[45]\.", version):
        raise reader.fail(f"format_version '{version}' is not supported; expected 0.4.x or 0.5.x")
    v05 = version.startswith("0.5.")
    reader.check_files(rdf_path.parent)
    inp, out = reader.tensor("inputs"), reader.tensor("outputs")
    input_id, output_id = reader.tensor_id(inp), reader.tensor_id(out)
    in_axes, out_axes = reader.axes(inp, v05), reader.axes(out, v05)
    if ("b" in "".join(a["letter"] for a in in_axes)) != ("b" in "".join(a["letter"] for a in out_axes)):
        raise reader.fail("input and output disagree on having a batch axis")
    sizes = [reader.input_sizes(in_axes, letter) for letter in "yx"]
    for letter, (low, step) in zip("yx", sizes):
        reader.check_output_size(out_axes, letter, input_id, low if step == 0 else None)
    halo = tuple(next(a["halo"] for a in out_axes if a["letter"] == letter) for letter in "yx")
    for (low, step), h in zip(sizes, halo):
        if step == 0 and low <= 2 * h:
            raise reader.fail(f"fixed input size {low} leaves nothing inside the halo {h}")
    config = rdf.get("config") or {}
    selfden = config.get("selfden") if isinstance(config, Mapping) else None
    ids = (input_id, output_id)
    return ModelSpec(
        root=rdf_path.parent,
        rdf_path=rdf_path,
        name=str(rdf.get("name", rdf_path.parent.name)),
        format_version=version,
        input_id=input_id,
        output_id=output_id,
        input_axes="".join(a["letter"] for a in in_axes),
        output_axes="".join(a["letter"] for a in out_axes),
        batch_size=reader.batch_size(in_axes),
        min_size=(sizes[0][0], sizes[1][0]),
        size_step=(sizes[0][1], sizes[1][1]),
        halo=(int(halo[0]), int(halo[1])),
        preprocessing=reader.steps(inp, "preprocessing", ids),
        postprocessing=reader.steps(out, "postprocessing", ids),
        weights=reader.weights(rdf_path.parent),
        config_selfden=dict(selfden) if isinstance(selfden, Mapping) else {},
    )
