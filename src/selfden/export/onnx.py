"""Export a network to ONNX that deepImageJ's engine loads, and prove it matches torch.

The file is opset 17, IR version 8 (onnxruntime-java 1.12 refuses IR 10), a single file
without external data, with dynamic batch/y/x axes. Random nodes get fixed seeds, so a
fresh onnxruntime session reproduces the same draws (see BIOIMAGEIO.md).
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from selfden.errors import SelfdenError
from selfden.export.onnx_random import RANDOM_OPS, seed_random_nodes
from selfden.export.onnx_rewrites import rewrite_for_speed
from selfden.package.runtime import open_session

logger = logging.getLogger(__name__)

OPSET = 17
IR_VERSION = 8
INPUT_NAME = "input"
DYNAMIC_AXES = {0: "b", 2: "y", 3: "x"}
DEFAULT_BASE_SEED = 1.0


class ExportError(SelfdenError):
    """An exported graph is unusable: it differs from torch or breaks the format deepImageJ needs."""


@dataclass(frozen=True)
class ParityReport:
    """Outcome of comparing onnxruntime with torch on random inputs."""

    path: Path
    shapes: tuple[tuple[int, int, int, int], ...]  # inputs tried, (B, 1, H, W)
    max_abs_diff: tuple[float, ...]  # per shape; for stochastic graphs: between two fresh sessions
    atol: float
    ir_version: int
    opset: int
    stochastic: bool
    compared: str = ""  # what was compared, when not torch (e.g. the reflect border against its core graph)

    @property
    def passed(self) -> bool:
        return max(self.max_abs_diff) <= self.atol

    def format(self) -> str:
        kind = self.compared or ("fresh-session reproducibility" if self.stochastic else "onnxruntime vs torch")
        diffs = ", ".join(f"{s[0]}x{s[2]}x{s[3]}: {d:.2e}" for s, d in zip(self.shapes, self.max_abs_diff))
        verdict = "passed" if self.passed else "FAILED"
        return f"{self.path.name} (IR {self.ir_version}, opset {self.opset}): {kind} max |diff| {diffs} (atol {self.atol:g}) {verdict}"


def export_onnx(
    module: torch.nn.Module,
    path: str | os.PathLike[str],
    sizes: Sequence[tuple[int, int]] = ((64, 64), (96, 160)),
    atol: float = 1e-4,
) -> ParityReport:
    """Write ``module`` (on normalised ``(B, 1, H, W)`` float32) to ``path`` and check it.

    ``sizes`` must be valid input sizes for the module (multiples of its size step). Raises
    ExportError, leaving nothing at ``path``, if onnxruntime differs from torch by more than
    ``atol``; graphs with random nodes are instead checked for identical draws in two fresh
    sessions, and for output shapes matching torch.
    """

    def write_and_check(copy_: torch.nn.Module, tmp: Path) -> ParityReport:
        _torch_export(copy_, tmp, sizes[0])
        return _parity(copy_, tmp, _normalise_model(tmp), sizes, atol)

    return write_checked(module, Path(path), write_and_check)


def write_checked(
    module: torch.nn.Module, path: Path, write_and_check: Callable[[Any, Path], ParityReport]
) -> ParityReport:
    """Export a CPU float32 eval copy of ``module`` to a temporary file beside ``path`` with
    ``write_and_check`` (which returns its parity report), and move it to ``path`` only if the
    check passed: a failed export leaves nothing behind."""
    copied = copy.deepcopy(module).cpu().float().eval()
    workdir = Path(tempfile.mkdtemp(prefix=f".{path.stem}-", dir=path.parent))
    try:
        tmp = workdir / path.name
        report = write_and_check(copied, tmp)
        if not report.passed:
            raise ExportError(f"ONNX export failed its parity check: {report.format()}; this is a bug, please report it")
        os.replace(tmp, path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    logger.info("%s", report.format())
    return replace(report, path=path)


def _torch_export(module: torch.nn.Module, path: Path, size: tuple[int, int]) -> None:
    """TorchScript-based exporter (IR 8, one file); its warnings are logged, not shown."""
    example = torch.zeros(1, 1, *size)
    with torch.no_grad():
        outputs = module(example)
    names = _output_names(outputs)
    dynamic = {INPUT_NAME: DYNAMIC_AXES, **{n: DYNAMIC_AXES for n in names}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(
            module, (example,), str(path), dynamo=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=names, dynamic_axes=dynamic,
        )  # fmt: skip
    for warning in caught:
        logger.debug("torch.onnx.export: %s: %s", warning.category.__name__, warning.message)


def _output_names(outputs: torch.Tensor | Sequence[torch.Tensor]) -> list[str]:
    if isinstance(outputs, torch.Tensor):
        return ["output"]
    return ["output"] + [f"output{i}" for i in range(1, len(outputs))]


def _normalise_model(path: Path) -> onnx.ModelProto:
    """Pin IR 8, rewrite slow ops (``onnx_rewrites``), seed random nodes, and check opset 17 and
    that everything is in one file."""
    files = sorted(p.name for p in path.parent.iterdir())
    if files != [path.name]:
        raise ExportError(f"ONNX export wrote {files}, expected one file {path.name}; this is a bug, please report it")
    model = onnx.load(str(path))
    model.ir_version = min(model.ir_version, IR_VERSION)
    rewrite_for_speed(model)
    _seed_random_nodes(model)
    opset = _default_opset(model)
    if opset != OPSET:
        raise ExportError(f"ONNX export produced opset {opset}, expected {OPSET}; this is a bug, please report it")
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path), save_as_external_data=False)
    return model


def _seed_random_nodes(model: onnx.ModelProto) -> None:
    """Seed random nodes (distinct seeds) unless all already carry one, so fresh sessions draw alike."""
    random_nodes = [n for n in model.graph.node if n.op_type in RANDOM_OPS]
    if any(not any(a.name == "seed" for a in n.attribute) for n in random_nodes):
        seed_random_nodes(model, DEFAULT_BASE_SEED)


def _default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def is_stochastic(model: onnx.ModelProto) -> bool:
    """Whether the graph draws random numbers (top-level nodes)."""
    return any(n.op_type in RANDOM_OPS or n.op_type in ("Multinomial", "Bernoulli") for n in model.graph.node)


def _parity(
    module: torch.nn.Module, path: Path, model: onnx.ModelProto, sizes: Sequence[tuple[int, int]], atol: float
) -> ParityReport:
    """Max |onnxruntime - torch| per size (batch 2 first, to exercise the dynamic batch axis)."""
    rng = np.random.default_rng(0)
    stochastic = is_stochastic(model)
    shapes, diffs = [], []
    for batch, (height, width) in zip([2, 1, 1, 1], sizes):
        x = rng.random((batch, 1, height, width), dtype=np.float32)
        got = _run_onnx(path, x)
        with torch.no_grad():
            expected = _as_arrays(module(torch.from_numpy(x)))
        _check_shapes(got, expected, path)
        if stochastic:
            diffs.append(_max_diff(got, _run_onnx(path, x)))
        else:
            diffs.append(_max_diff(got, expected))
        shapes.append((batch, 1, height, width))
    return ParityReport(path, tuple(shapes), tuple(diffs), atol, model.ir_version, _default_opset(model), stochastic)


def _run_onnx(path: Path, x: np.ndarray) -> list[np.ndarray]:
    """Outputs of a fresh CPU session (fresh: seeded random nodes restart their generators)."""
    session = open_session(path, threads=min(2, os.cpu_count() or 1), quiet=True)
    return session.run(None, {INPUT_NAME: x})


def _as_arrays(outputs: torch.Tensor | Sequence[torch.Tensor]) -> list[np.ndarray]:
    if isinstance(outputs, torch.Tensor):
        outputs = [outputs]
    return [o.detach().cpu().float().numpy() for o in outputs]


def _check_shapes(got: list[np.ndarray], expected: list[np.ndarray], path: Path) -> None:
    if [g.shape for g in got] != [e.shape for e in expected]:
        raise ExportError(
            f"{path.name}: onnxruntime output shapes {[g.shape for g in got]} differ from torch's "
            f"{[e.shape for e in expected]}; this is a bug, please report it"
        )


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(a, b))
