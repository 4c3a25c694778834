"""FLOP rate of every shipped graph against the CPU's measured fp32 peak (onnxruntime, CPU).

- **Peak**: the best of 10 runs of one 2048x2048 float32 MatMul in onnxruntime (MLAS), for each
  thread count. For scale, the note also gives the best of 10 runs of a dense 3x3 convolution,
  128 -> 128 channels on 256²: onnxruntime's convolution kernels beat its MatMul by a few per
  cent, which is why the largest U-Net (dnnet) can exceed 100 % of this peak.
- **Graphs**: for each package (default: every one under bioimage_models/), each network that
  ``selfden infer`` runs: the plain core (``config.selfden.graphs.core``, the graph the tiler runs)
  and COSDD's sampler graphs, on one 1024² tile (batch 1; the split decoder gets the encoder's
  outputs and one sample's eps). FLOPs = 2 x the MACs of Conv/ConvTranspose/MatMul/Gemm
  (``selfden.export.onnx_flops``; elementwise ops are not counted); seconds: best of
  ``--repeats`` rounds, graphs alternating within each round; GFLOP/s = FLOPs / seconds.
- ``--before DIR``: the same packages from another copy (e.g. ``git archive`` of an older commit)
  measured in the same rounds, so the speed-up is a ratio from one run.

    python benchmarks/graph_speed.py --before benchmarks/_work/before/bioimage_models

Timed: run it alone on the machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common  # benchmarks/common.py (the script's folder is on sys.path)
import numpy as np
import onnx

from selfden.export.onnx_flops import count_macs
from selfden.package.runtime import open_session

SHIPPED = Path(__file__).resolve().parents[1] / "bioimage_models"
TILE = 1024
PEAK_SIZE = 2048


def matmul_peak(threads: int, size: int = PEAK_SIZE, runs: int = 10) -> float:
    """GFLOP/s of onnxruntime's best ``size``² float32 MatMul on ``threads`` threads."""
    from onnx import TensorProto, helper

    spec = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in "abc"]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "peak", spec[:2], spec[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    session.run(None, {"a": a, "b": a})
    best = min(_seconds(lambda: session.run(None, {"a": a, "b": a})) for _ in range(runs))
    return 2 * size**3 / best / 1e9


def conv_rate(threads: int, channels: int = 128, side: int = 256, runs: int = 10) -> float:
    """GFLOP/s of onnxruntime's best dense 3x3 convolution, ``channels`` -> ``channels`` on ``side``²."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).random((channels, channels, 3, 3), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[weight],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((1, channels, side, side), dtype=np.float32)
    session.run(None, {"x": x})
    best = min(_seconds(lambda: session.run(None, {"x": x})) for _ in range(runs))
    return 2 * channels * channels * 9 * side * side / best / 1e9


def _seconds(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


class Graph:
    """One graph in one session with its inputs at the benchmark tile, and its FLOPs there."""

    def __init__(self, label: str, path: Path, threads: int, feed: dict[str, np.ndarray]) -> None:
        self.label, self.path = label, path
        self.session = open_session(path, threads=threads, quiet=True)
        self.feed = feed
        self.flops = 2 * count_macs(onnx.load(str(path)), {k: v.shape for k, v in feed.items()})
        self.session.run(None, feed)  # warm-up: allocations and kernel choice
        self.best = float("inf")

    def time_once(self) -> None:
        self.best = min(self.best, _seconds(lambda: self.session.run(None, self.feed)))

    @property
    def gflops(self) -> float:
        return self.flops / self.best / 1e9


def _graph_files(folder: Path) -> dict[str, str]:
    import yaml

    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    return dict(rdf["config"]["selfden"].get("graphs") or {})


def graph_feeds(folder: Path, tile: int = TILE) -> list[tuple[str, str, dict[str, np.ndarray]]]:
    """(label, graph key, inputs at ``tile``²) for the core network and the sampler graphs of one package."""
    graphs = _graph_files(folder)
    x = np.random.default_rng(0).normal(size=(1, 1, tile, tile)).astype(np.float32)
    feeds = [(f"{folder.name} / {key}", key, {"input": x}) for key in ("core", "sampler", "sampler_encoder") if key in graphs]
    if "sampler_decoder" in graphs:
        posts = open_session(folder / graphs["sampler_encoder"], quiet=True).run(None, {"input": x})
        rng = np.random.default_rng(1)
        feed = {f"post{i}": p for i, p in enumerate(posts)}
        feed |= {f"eps{i}": rng.normal(size=(1, p.shape[1] // 2, *p.shape[2:])).astype(np.float32) for i, p in enumerate(posts)}
        feeds.append((f"{folder.name} / sampler_decoder (per sample)", "sampler_decoder", feed))
    return feeds


def measure(packages: list[Path], before: Path | None, threads: int, repeats: int) -> dict[str, Any]:
    """One graph (and its older copy) in memory at a time: two COSDD sessions at 1024² hold gigabytes."""
    peak, conv = matmul_peak(threads), conv_rate(threads)
    print(f"{threads} thread(s): MatMul peak {peak:.1f} GFLOP/s, 3x3 conv {conv:.1f}", flush=True)
    rows = []
    for package in packages:
        old_folder = before / package.name if before and (before / package.name).is_dir() else None
        old_files = _graph_files(old_folder) if old_folder else {}
        files = _graph_files(package)
        for label, key, feed in graph_feeds(package):
            new = Graph(label, package / files[key], threads, feed)
            old = Graph(label, old_folder / old_files[key], threads, feed) if old_folder and key in old_files else None
            for _ in range(repeats):
                for graph in (new, old) if old else (new,):
                    graph.time_once()
            row = [label, new.flops / 2 / TILE**2 / 1e3, new.best, new.gflops, 100 * new.gflops / peak]
            if before:
                row += [old.gflops, 100 * old.gflops / peak, old.best / new.best] if old else ["", "", ""]
            rows.append(row)
            print("  ", " | ".join(f"{c:.3g}" if isinstance(c, float) else str(c) for c in row), flush=True)
            del new, old
    columns = ["graph", "kMAC / pixel", "s / 1024² tile", "GFLOP/s", "% of peak"]
    if before:
        columns += ["before GFLOP/s", "before % of peak", "speed-up"]
    note = (
        f"{threads} onnxruntime thread(s); peak = {peak:.1f} GFLOP/s (best of 10 runs of a {PEAK_SIZE}² float32 "
        f"MatMul in onnxruntime on {threads} thread(s); a dense 3x3 convolution, 128 channels on 256², "
        f"reached {conv:.1f}); one {TILE}² tile, batch 1, best of {repeats} alternating "
        "rounds; FLOPs = 2 x Conv/ConvTranspose/MatMul/Gemm MACs (elementwise ops not counted)."
        + (f" before: the same packages from {before}." if before else "")
    )
    return {"title": f"(threads {threads}) graphs against the measured fp32 peak", "note": note,
            "columns": columns, "rows": rows, "peak_gflops": peak, "conv_gflops": conv}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", type=Path, nargs="+", help="package folders (default: bioimage_models/*)")
    parser.add_argument("--before", type=Path, help="folder holding older copies of the same packages, by name")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, common.cpu_count()])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-save", action="store_true", help="print only; leave results/ and RESULTS.md alone")
    args = parser.parse_args()
    packages = args.packages or sorted(p.parent for p in SHIPPED.glob("*/rdf.yaml"))
    tables = [measure(packages, args.before, t, args.repeats) for t in dict.fromkeys(args.threads)]
    for table in tables:
        print(table["title"], "\n", table["note"])
    if not args.no_save:
        common.save_speed_record("graph_speed", "Graphs: FLOP rate against the CPU's peak", tables, "graph_speed.py")

if __name__ == "__main__":
    main()
