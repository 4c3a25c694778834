"""Export graphs with several named inputs or outputs (COSDD's split sampler), checked against torch.

``export_onnx`` handles the one-input graphs deepImageJ runs; a module that names its inputs
(``input_names``, ``output_names`` and ``example_inputs(batch, height, width)``) goes through
``export_named`` instead: the same format (opset 17, IR 8, one file, dynamic batch/y/x on every
tensor) and the same parity rule (deterministic graphs match torch within ``atol``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from selfden.export.onnx import (
    DYNAMIC_AXES,
    OPSET,
    ExportError,
    ParityReport,
    _default_opset,
    _max_diff,
    _normalise_model,
    export_onnx,
    write_checked,
)
from selfden.package.runtime import open_session


def has_named_inputs(module: torch.nn.Module) -> bool:
    """Whether ``module`` describes its own inputs (and so needs ``export_named``)."""
    return all(hasattr(module, a) for a in ("input_names", "output_names", "example_inputs"))


def export_graph(module: torch.nn.Module, path: Path, sizes: Sequence[tuple[int, int]], atol: float = 1e-4) -> ParityReport:
    """``export_named`` for modules that name their inputs, else ``export_onnx``."""
    if has_named_inputs(module):
        return export_named(module, path, sizes, atol)
    return export_onnx(module, path, sizes=sizes, atol=atol)


def export_named(module: Any, path: Path, sizes: Sequence[tuple[int, int]], atol: float = 1e-4) -> ParityReport:
    """Write ``module`` to ``path`` and check onnxruntime against torch on ``example_inputs`` of each size."""

    def write_and_check(copy_: Any, tmp: Path) -> ParityReport:
        names = [*copy_.input_names, *copy_.output_names]
        with warnings.catch_warnings(record=True), torch.no_grad():
            warnings.simplefilter("always")  # the TorchScript exporter's tracer warnings are noise here
            torch.onnx.export(
                copy_, copy_.example_inputs(1, *sizes[0]), str(tmp), dynamo=False, opset_version=OPSET,
                input_names=copy_.input_names, output_names=copy_.output_names,
                dynamic_axes={n: DYNAMIC_AXES for n in names},
            )  # fmt: skip
        model = _normalise_model(tmp)
        return _named_parity(copy_, tmp, model.ir_version, _default_opset(model), sizes, atol)

    return write_checked(module, Path(path), write_and_check)


def _named_parity(
    module: Any, path: Path, ir_version: int, opset: int, sizes: Sequence[tuple[int, int]], atol: float
) -> ParityReport:
    session = open_session(path)
    torch.manual_seed(0)
    shapes, diffs = [], []
    for batch, (height, width) in zip([2, 1, 1, 1], sizes):
        inputs = module.example_inputs(batch, height, width)
        got = session.run(None, {n: t.numpy() for n, t in zip(module.input_names, inputs)})
        with torch.no_grad():
            expected = module(*inputs)
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        if [g.shape for g in got] != [tuple(e.shape) for e in expected]:
            raise ExportError(f"{path.name}: onnxruntime output shapes differ from torch's; this is a bug, please report it")
        diffs.append(_max_diff(got, [e.numpy() for e in expected]))
        shapes.append((batch, 1, height, width))
    return ParityReport(path, tuple(shapes), tuple(diffs), atol, ir_version, opset, False)
