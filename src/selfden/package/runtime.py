"""onnxruntime sessions: CUDA when present, CPU always; says which provider runs.

``open_session`` is the one place a session is opened (inference here, parity checks and
test tensors in export/), each caller asking for only the options it needs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from selfden.errors import ModelError, SelfdenError

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
}


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def requested_providers(device: Device) -> list[str]:
    """Providers to ask onnxruntime for, best first; raises when CUDA is demanded but absent."""
    import onnxruntime as ort

    if device not in ("auto", "cpu", "cuda"):
        raise SelfdenError(f"device '{device}' is not one of auto, cpu, cuda")
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if device == "cuda" and CUDA not in available:
        raise SelfdenError(
            f"--device cuda: this onnxruntime has no CUDA support (available: {', '.join(available)}); "
            "install selfden[gpu] (onnxruntime-gpu, not onnxruntime) or use --device auto/cpu"
        )
    return [CUDA, CPU] if CUDA in available else [CPU]


def open_session(
    model_file: Path,
    providers: Sequence[str] = (CPU,),
    *,
    threads: int | None = None,
    quiet: bool = False,
    optimise_all: bool = False,
) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model_file`` on ``providers`` (CPU by default).

    ``threads``: intra-op CPU threads; ``quiet``: errors only from onnxruntime's own log (its
    warnings would bypass our logging); ``optimise_all``: every graph optimisation. With none of
    them the session gets onnxruntime's default options.
    """
    import onnxruntime as ort

    options = None
    if threads or quiet or optimise_all:
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if optimise_all:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if quiet:
            options.log_severity_level = 3
    return ort.InferenceSession(str(model_file), sess_options=options, providers=list(providers))


@dataclass(frozen=True)
class OnnxRunner:
    """One ONNX graph in one session; ``run`` maps a single input array to the first output."""

    session: Any  # onnxruntime.InferenceSession (imported lazily: `selfden --help` stays fast)
    model_file: Path
    input_name: str
    output_name: str
    input_dtype: np.dtype
    input_rank: int
    provider: str

    def run(self, array: np.ndarray) -> np.ndarray:
        feed = {self.input_name: np.ascontiguousarray(array, dtype=self.input_dtype)}
        try:
            return self.session.run([self.output_name], feed)[0]
        except Exception as error:  # onnxruntime raises its own Fail/InvalidArgument/RuntimeException
            message = " ".join(str(error).split())[:200]
            raise ModelError(
                f"{self.model_file}: running the graph on a {'x'.join(map(str, array.shape))} input "
                f"failed on {self.provider} ({message}); if memory ran out, try a smaller --tile-size"
            ) from error


def create_session(model_file: Path, device: Device = "auto", threads: int | None = None) -> tuple[Any, str]:
    """An ``onnxruntime.InferenceSession`` for ``model_file`` and the provider it really uses.

    ``threads``: CPU threads of the session (default: all cores this process may use).

    Raises ModelError for a missing or unloadable graph, SelfdenError when ``device="cuda"``
    cannot be honoured (onnxruntime silently falls back to CPU; we do not).
    """
    import onnxruntime as ort

    if not model_file.is_file():
        raise ModelError(f"{model_file}: ONNX weights file not found; the model folder is incomplete")
    providers = requested_providers(device)
    try:
        session = open_session(
            model_file, providers, threads=threads if threads else _cpu_count(), quiet=True, optimise_all=True
        )
    except Exception as error:
        message = " ".join(str(error).split())[:200]
        raise ModelError(f"{model_file}: onnxruntime cannot load this graph ({message})") from error
    used = session.get_providers()[0]
    if device == "cuda" and used != CUDA:
        raise SelfdenError(
            f"--device cuda: onnxruntime fell back to {used} (CUDA libraries missing or no GPU); "
            "check the CUDA/cuDNN install or use --device auto/cpu"
        )
    log.info("onnxruntime %s runs %s on %s", ort.__version__, model_file.name, used)
    return session, used


def create_runner(
    model_file: Path, device: Device = "auto", output_name: str | None = None, threads: int | None = None
) -> OnnxRunner:
    """A single-input session wrapped as an OnnxRunner (see ``create_session``)."""
    session, used = create_session(model_file, device, threads)
    return _runner(session, model_file, used, output_name)


def _runner(session: Any, model_file: Path, provider: str, output_name: str | None) -> OnnxRunner:
    inputs = session.get_inputs()
    outputs = session.get_outputs()
    if len(inputs) != 1:
        raise ModelError(f"{model_file}: graph has {len(inputs)} inputs; selfden runs single-input models")
    names = [o.name for o in outputs]
    chosen = output_name if output_name in names else names[0]
    dtype = _ONNX_TYPES.get(inputs[0].type)
    if dtype is None:
        raise ModelError(f"{model_file}: input type {inputs[0].type} is not supported; expected float32")
    rank = len(inputs[0].shape)
    return OnnxRunner(session, model_file, inputs[0].name, chosen, np.dtype(dtype), rank, provider)
