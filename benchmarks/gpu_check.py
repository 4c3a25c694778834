"""The GPU check: everything worth knowing about selfden on a GPU, measured in one short run.

Written to run on a lent GPU machine (``benchmarks/gpu_check.sh`` installs what is missing there
and calls this), and on any CPU with ``--device cpu --quick`` to check that it works:

(a) training: seconds per ``method.training_step`` for each method at its GPU defaults (config
    ``device_defaults("cuda")``, ``selfden train``'s crops), bf16 autocast and fp32, steps/s and
    peak GPU memory;
(b) inference: megapixels/s of every exported graph on 1024² tiles (batch 4) with onnxruntime's
    CUDA provider when this onnxruntime has it, else with torch on the GPU (fp32 and bf16; said
    in the table), and peak memory;
(c) COSDD sampling: 32 posterior samples of one 1024² tile by the split decoder, as one batch of
    32 and as 32 runs of one.

Untrained networks: speed does not depend on the weights. Writes one JSON record
(``--out``); ``--record FILE`` turns a fetched record into the RESULTS.md section.

    python benchmarks/gpu_check.py --out gpu_check.json           # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --quick --out x.json   # smoke test anywhere
    python benchmarks/gpu_check.py --record gpu_check.json        # here: RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("cae", "cosdd", "dnnet", "noise2atom")
TILE, TILE_BATCH, SAMPLES = 1024, 4, 32


def timed(run: Callable[[], object], seconds: float, sync: Callable[[], None], max_runs: int = 200) -> float:
    """Median seconds of ``run`` over about ``seconds`` (after two warm-up runs)."""
    for _ in range(2):
        run()
    sync()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline and len(times) < max_runs:
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


class Gpu:
    """The torch device, its synchronisation and its memory counters (no-ops on a CPU)."""

    def __init__(self, name: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_mb(self) -> float | str:
        return self.torch.cuda.max_memory_allocated() / 2**20 if self.cuda else "n/a (CPU)"

    def describe(self) -> str:
        if not self.cuda:
            return f"CPU ({platform.processor() or platform.machine()})"
        props = self.torch.cuda.get_device_properties(self.device)
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {self.torch.__version__}"


def build_method(name: str, gpu: Gpu, quick: bool) -> tuple[Any, int, int]:
    """(method at its defaults for this device, patch, batch)."""
    from selfden.methods import get_method
    from selfden.normalisation import Normalisation
    from selfden.runs.config import DataConfig

    cls = get_method(name)
    gpu.torch.manual_seed(0)
    defaults = cls.config_class().device_defaults(gpu.device.type)
    fields = DataConfig.model_fields  # selfden train's crops when the method sets none
    patch = 32 if quick else defaults.patch_size or fields["patch_size"].default
    batch = 2 if quick else defaults.batch_size or fields["batch_size"].default
    return cls(defaults.config, Normalisation(offset=0.0, scale=1.0), gpu.device), patch, batch


def training_table(gpu: Gpu, seconds: float, quick: bool) -> dict[str, Any]:
    from selfden.training.device import autocast_context

    rows = []
    for name in METHODS:
        method, patch, batch = build_method(name, gpu, quick)
        data = gpu.torch.rand(batch, 1, patch, patch, device=gpu.device)
        for bf16 in (True, False):
            gpu.reset_peak()

            def step() -> None:
                with autocast_context(gpu.device, bf16):
                    method.training_step(data)

            median = timed(step, seconds, gpu.sync)
            rows.append([name, method.parameter_count() / 1e6, patch, batch, "bf16" if bf16 else "fp32",
                         median, 1 / median, gpu.peak_mb()])  # fmt: skip
            print(f"(a) {name} {rows[-1][4]}: {1 / median:.1f} steps/s", flush=True)
    columns = ["method", "params (M)", "patch", "batch", "precision", "s / step", "steps / s", "peak memory MB"]
    note = "method.training_step at each method's defaults for this device (config and crops as selfden train), untrained networks; median of timed steps after two warm-ups."
    return {"title": "(a) training steps", "note": note, "columns": columns, "rows": rows}


def _onnx_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def inference_table(gpu: Gpu, seconds: float, quick: bool, work: Path, torch_only: bool = False) -> dict[str, Any]:
    tile, batch = (64, 2) if quick else (TILE, TILE_BATCH)
    use_onnx = not torch_only and (_onnx_cuda() or not gpu.cuda)
    rows = []
    for name in METHODS:
        method, _, _ = build_method(name, gpu, quick)
        for graph, module in method.export_graphs().items():
            inputs = _graph_inputs(module, batch, tile)
            if use_onnx:
                rows.append(_onnx_row(name, graph, module, inputs, gpu, seconds, work))
            else:
                rows += [_torch_row(name, graph, module, inputs, gpu, seconds, bf16) for bf16 in (False, True)]
            print(f"(b) {name} {graph}: {rows[-1][3]:.1f} Mpx/s", flush=True)
    backend = "onnxruntime " + ("CUDAExecutionProvider" if gpu.cuda else "CPUExecutionProvider") if use_onnx else \
        "torch on the GPU (this onnxruntime has no CUDA provider: its CUDA numbers need onnxruntime-gpu)"  # fmt: skip
    columns = ["graph", "backend", "tile", "Mpx/s", "peak memory MB"]
    note = f"{backend}; {batch} tiles of {tile}² per run; Mpx/s counts network input pixels; decoder: one sample per batch item."
    return {"title": "(b) inference per graph", "note": note, "columns": columns, "rows": rows}


def _graph_inputs(module: Any, batch: int, tile: int) -> tuple[Any, ...]:
    import torch

    if hasattr(module, "example_inputs"):
        return tuple(module.example_inputs(batch, tile, tile))
    return (torch.rand(batch, 1, tile, tile),)


def _torch_row(method: str, graph: str, module: Any, inputs: tuple[Any, ...], gpu: Gpu, seconds: float, bf16: bool) -> list[Any]:
    from selfden.training.device import autocast_context

    module = module.to(gpu.device)
    on_device = [x.to(gpu.device) for x in inputs]
    gpu.reset_peak()

    def run() -> None:
        with gpu.torch.no_grad(), autocast_context(gpu.device, bf16):
            module(*on_device)

    median = timed(run, seconds, gpu.sync)
    return [f"{method} / {graph}", f"torch {'bf16' if bf16 else 'fp32'}", _tiles(inputs), _pixels(inputs) / median / 1e6, gpu.peak_mb()]


def _pixels(inputs: tuple[Any, ...]) -> int:
    """Tile pixels of a run: the first input is the tile, or (decoder) the full-resolution level's latent."""
    batch, _, height, width = inputs[0].shape
    return int(batch * height * width)


def _tiles(inputs: tuple[Any, ...]) -> str:
    batch, _, height, width = inputs[0].shape
    return f"{batch}x{height}x{width}"


def _onnx_row(method: str, graph: str, module: Any, inputs: tuple[Any, ...], gpu: Gpu, seconds: float, work: Path) -> list[Any]:
    from selfden.export.onnx_graphs import export_graph
    from selfden.package.runtime import open_session

    path = work / f"{method}_{graph}.onnx"
    step = 2 ** 5
    export_graph(module.cpu(), path, sizes=((step * 2, step * 2), (step * 2, step * 3)))
    provider = "CUDAExecutionProvider" if gpu.cuda else "CPUExecutionProvider"
    session = open_session(path, providers=(provider,), quiet=True)
    names = [i.name for i in session.get_inputs()]
    feed = {n: x.numpy() for n, x in zip(names, inputs)}
    median = timed(lambda: session.run(None, feed), seconds, lambda: None)
    return [f"{method} / {graph}", f"onnxruntime {provider}", _tiles(inputs), _pixels(inputs) / median / 1e6, "n/a (onnxruntime)"]


def sampling_table(gpu: Gpu, seconds: float, quick: bool) -> dict[str, Any]:
    """Split decoder: SAMPLES samples as one batch vs one at a time (torch on the device, bf16)."""
    from selfden.training.device import autocast_context

    method, _, _ = build_method("cosdd", gpu, quick)
    tile, samples = (64, 4) if quick else (TILE, SAMPLES)
    graphs = method.export_graphs()
    encoder, decoder = (graphs[k].to(gpu.device) for k in ("sampler_encoder", "sampler_decoder"))
    x = gpu.torch.rand(1, 1, tile, tile, device=gpu.device)
    rows = []
    with gpu.torch.no_grad(), autocast_context(gpu.device, gpu.cuda):
        posts = encoder(x)
        eps = [gpu.torch.randn(p.shape[0], p.shape[1] // 2, *p.shape[2:], device=gpu.device) for p in posts]
        for batch in (samples, 1):
            feed = [p.expand(batch, *p.shape[1:]) for p in posts] + [e.expand(batch, *e.shape[1:]) for e in eps]
            gpu.reset_peak()
            median = timed(lambda: decoder(*feed), seconds, gpu.sync) * (samples // batch)
            rows.append([f"{samples} samples as {samples // batch} run(s) of {batch}", median, median / samples, gpu.peak_mb()])
            print(f"(c) {rows[-1][0]}: {median:.3f} s", flush=True)
    columns = ["decoder runs", f"s for {samples} samples", "s / sample", "peak memory MB"]
    note = f"COSDD split decoder (per-sample graph), one {tile}² tile, torch {'bf16 autocast' if gpu.cuda else 'fp32'} on the device."
    return {"title": "(c) COSDD sampling: batched vs sequential", "note": note, "columns": columns, "rows": rows}


def record_section(record_file: Path) -> None:
    """Add a fetched record to benchmarks/results/ and regenerate RESULTS.md."""
    import common

    record = json.loads(record_file.read_text())
    common.save_result(record, "gpu_check")
    common.render_results_md()
    print(f"recorded {record_file} in {common.RESULTS_MD}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke test)")
    parser.add_argument("--seconds", type=float, default=8.0, help="timing per measurement (default 8)")
    parser.add_argument("--quick", action="store_true", help="tiny crops and tiles: checks that everything runs")
    parser.add_argument("--torch-inference", action="store_true", help="time inference in torch even where onnxruntime could")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--record", type=Path, help="put a fetched record into RESULTS.md instead of measuring")
    args = parser.parse_args()
    if args.record:
        return record_section(args.record)
    import tempfile

    gpu = Gpu(args.device)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        tables = [training_table(gpu, args.seconds, args.quick), inference_table(gpu, args.seconds, args.quick, Path(work), args.torch_inference),
                  sampling_table(gpu, args.seconds, args.quick)]  # fmt: skip
    record = {
        "kind": "speed", "title": "GPU check" + (" (quick smoke test)" if args.quick else ""), "tables": tables,
        "command": "bash benchmarks/gpu_check.sh" if gpu.cuda else "python benchmarks/gpu_check.py " + " ".join(
            f"--{k} {v}" for k, v in (("device", args.device), ("seconds", args.seconds))),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{gpu.describe()}; measured in {time.perf_counter() - started:.0f} s",
    }  # fmt: skip
    args.out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
