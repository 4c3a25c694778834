"""Borders inside the graph: the package's main ONNX weights are Pad(reflect) → core network → Slice.

bioimageio.core, its ``test_model`` and deepImageJ feed an image to the weights as it is, so the
graph's own padding decides the border band. A plain network pads with zeros there, while
``selfden infer`` reflect-pads the image by the halo before tiling; the two disagreed by up to half
the value range near the edges. Wrapping the network (the "core" graph, which ``selfden infer``
keeps running tile by tile with its own reflect padding) in a reflect Pad and a crop makes every
tool compute selfden's borders. Graph surgery, not a re-export: it works on any single-input core
graph, including one taken from an already shipped package.

The pads match the tiler exactly: ``halo`` before, and after whatever rounds ``2·halo`` up to a
multiple of the size step, which is what ``tiling.axis_layout`` reads around an image of a valid
size that fits one tile. ONNX ``reflect``, numpy ``reflect`` (the tiler) and torch ``reflect``
(``reflect_border.ReflectBorder``) all mirror without repeating the edge pixel.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from selfden.export.onnx import INPUT_NAME, ExportError, ParityReport
from selfden.package.runtime import open_session

#: Metadata key on a bordered graph: "before,after" (so a rebuild never wraps a graph twice).
BORDER_KEY = "selfden.reflect_border"
#: ``config.selfden.graphs`` key of the plain network (no border) that ``selfden infer`` tiles.
CORE = "core"
_END = int(np.iinfo(np.int64).max)


def border_pads(halo: int, step: int) -> tuple[int, int]:
    """``(before, after)`` pixels of reflect padding per axis for a model with ``halo`` and size ``step``."""
    if step <= 0 or halo <= 0:
        return max(halo, 0), max(halo, 0)
    total = -(-2 * halo // step) * step  # 2·halo rounded up to a multiple of the step
    return halo, total - halo


def border_of(model: onnx.ModelProto) -> tuple[int, int] | None:
    """The pads of a graph made by ``add_reflect_border``, or None for a plain graph."""
    for prop in model.metadata_props:
        if prop.key == BORDER_KEY:
            before, after = (int(v) for v in prop.value.split(","))
            return before, after
    return None


def add_reflect_border(core: onnx.ModelProto, before: int, after: int) -> onnx.ModelProto:
    """A copy of the single-input graph ``core`` that reflect-pads its input by ``before``/``after``
    (y and x of a ``(B, C, Y, X)`` input), runs ``core`` and crops every output back."""
    if border_of(core) is not None:
        raise ExportError("the graph already has selfden's reflect border; wrap the core graph, not the bordered one")
    model = copy.deepcopy(core)
    graph = model.graph
    initialisers = {i.name for i in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initialisers]
    if len(inputs) != 1:
        raise ExportError(f"the core graph has inputs {inputs}; a reflect border needs exactly one")
    padded = f"{inputs[0]}__reflect_padded"
    _rename(graph, inputs[0], padded)
    nodes = [helper.make_node("Pad", [inputs[0], "selfden_border_pads"], [padded], mode="reflect", name="selfden_border_pad")]
    tensors = [numpy_helper.from_array(np.array([0, 0, before, before, 0, 0, after, after], np.int64), "selfden_border_pads")]
    tensors += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (
        ("selfden_border_starts", [before, before]), ("selfden_border_ends", [-after or _END] * 2),
        ("selfden_border_axes", [2, 3]),
    )]  # fmt: skip
    body = list(graph.node)
    for output in graph.output:
        inner = f"{output.name}__core"
        _rename(graph, output.name, inner, nodes=body)
        ends = ["selfden_border_starts", "selfden_border_ends", "selfden_border_axes"]
        nodes.append(helper.make_node("Slice", [inner, *ends], [output.name], name=f"selfden_border_crop_{output.name}"))
    del graph.node[:]
    graph.node.extend([nodes[0], *body, *nodes[1:]])
    graph.initializer.extend(tensors)
    model.metadata_props.append(onnx.StringStringEntryProto(key=BORDER_KEY, value=f"{before},{after}"))
    onnx.checker.check_model(model)
    return model


def _rename(graph: onnx.GraphProto, old: str, new: str, nodes: Sequence[onnx.NodeProto] | None = None) -> None:
    """Every use and definition of tensor ``old`` in ``nodes`` (default: the graph's), subgraphs included."""
    for node in _walk(list(graph.node) if nodes is None else nodes):
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]


def _walk(nodes: Sequence[onnx.NodeProto]) -> Iterator[onnx.NodeProto]:
    for node in nodes:
        yield node
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from _walk(list(sub.node))


def write_bordered(
    core_path: Path, out_path: Path, halo: int, step: int, sizes: Sequence[tuple[int, int]], atol: float = 1e-4
) -> ParityReport:
    """Write the bordered graph of ``core_path`` to ``out_path`` and check it on ``sizes`` (valid
    package sizes) against the core run on numpy-reflect-padded inputs; ExportError if they differ."""
    before, after = border_pads(halo, step)
    model = add_reflect_border(onnx.load(str(core_path)), before, after)
    onnx.save_model(model, str(out_path), save_as_external_data=False)
    report = border_parity(core_path, out_path, before, after, sizes, atol)
    if not report.passed:
        os.remove(out_path)
        raise ExportError(f"the bordered graph differs from its core graph: {report.format()}; this is a bug, please report it")
    return report


def border_parity(
    core_path: Path, bordered_path: Path, before: int, after: int, sizes: Sequence[tuple[int, int]], atol: float
) -> ParityReport:
    """Max |bordered(x) - crop(core(reflect_pad(x)))| per size (batch 2 first)."""
    rng = np.random.default_rng(0)
    core, bordered = _session(core_path), _session(bordered_path)
    shapes, diffs = [], []
    for batch, (height, width) in zip([2, 1, 1, 1], sizes):
        x = rng.random((batch, 1, height, width), dtype=np.float32)
        padded = np.pad(x, ((0, 0), (0, 0), (before, after), (before, after)), mode="reflect")
        expected = core.run(None, {INPUT_NAME: padded})[0][..., before : before + height, before : before + width]
        got = bordered.run(None, {INPUT_NAME: x})[0]
        if got.shape != expected.shape:
            raise ExportError(f"{bordered_path.name}: output shape {got.shape}, expected {expected.shape}; this is a bug")
        diffs.append(float(np.max(np.abs(got - expected))))
        shapes.append((batch, 1, height, width))
    model = onnx.load(str(bordered_path))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return ParityReport(bordered_path, tuple(shapes), tuple(diffs), atol, model.ir_version, opset, False,
                        compared="reflect border vs core graph on reflect-padded input")


def _session(path: Path) -> Any:
    return open_session(path, quiet=True)
