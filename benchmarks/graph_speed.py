"""FLOP rate of every shipped graph against the CPU's measured fp32 peak (onnxruntime, CPU).

- **Peak**: the best of 5 runs of one 2048x2048 float32 MatMul in onnxruntime (MLAS, the GEMM
  kernels its convolutions use too), for each thread count.
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


def matmul_peak(threads: int, size: int = PEAK_SIZE, runs: int = 5) -> float:
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


def package_graphs(folder: Path, threads: int, tile: int = TILE) -> list[Graph]:
    """The core network and the sampler graphs of one package, fed at ``tile``²."""
    import yaml

    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    graphs = rdf["config"]["selfden"].get("graphs") or {}
    x = np.random.default_rng(0).normal(size=(1, 1, tile, tile)).astype(np.float32)
    found = [Graph(f"{folder.name} / {key}", folder / graphs[key], threads, {"input": x})
             for key in ("core", "sampler") if key in graphs]  # fmt: skip
    if "sampler_encoder" in graphs:
        encoder = Graph(f"{folder.name} / sampler_encoder", folder / graphs["sampler_encoder"], threads, {"input": x})
        posts = encoder.session.run(None, {"input": x})
        rng = np.random.default_rng(1)
        feed = {f"post{i}": p for i, p in enumerate(posts)}
        feed |= {f"eps{i}": rng.normal(size=(1, p.shape[1] // 2, *p.shape[2:])).astype(np.float32) for i, p in enumerate(posts)}
        decoder = Graph(f"{folder.name} / sampler_decoder (per sample)", folder / graphs["sampler_decoder"], threads, feed)
        found += [encoder, decoder]
    return found


def measure(packages: list[Path], before: Path | None, threads: int, repeats: int) -> dict[str, Any]:
    peak = matmul_peak(threads)
    after = [g for p in packages for g in package_graphs(p, threads)]
    earlier = {g.label: g for p in packages if before and (before / p.name).is_dir() for g in package_graphs(before / p.name, threads)}
    for _ in range(repeats):
        for graph in after:
            graph.time_once()
            if graph.label in earlier:
                earlier[graph.label].time_once()
    rows = []
    for graph in after:
        old = earlier.get(graph.label)
        row = [graph.label, graph.flops / 2 / TILE**2 / 1e3, graph.best, graph.gflops, 100 * graph.gflops / peak]
        if before:
            row += [old.gflops, 100 * old.gflops / peak, old.best / graph.best] if old else ["", "", ""]
        rows.append(row)
    columns = ["graph", "kMAC / pixel", "s / 1024² tile", "GFLOP/s", "% of peak"]
    if before:
        columns += ["before GFLOP/s", "before % of peak", "speed-up"]
    note = (
        f"{threads} onnxruntime thread(s); peak = {peak:.1f} GFLOP/s (best of 5 runs of a {PEAK_SIZE}² float32 "
        f"MatMul in onnxruntime on {threads} thread(s)); one {TILE}² tile, batch 1, best of {repeats} alternating "
        "rounds; FLOPs = 2 x Conv/ConvTranspose/MatMul/Gemm MACs (elementwise ops not counted)."
        + (f" before: the same packages from {before}." if before else "")
    )
    return {"title": f"(threads {threads}) graphs against the measured fp32 peak", "note": note,
            "columns": columns, "rows": rows, "peak_gflops": peak}  # fmt: skip


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
        for row in table["rows"]:
            print("  ", " | ".join(f"{c:.3g}" if isinstance(c, float) else str(c) for c in row))
    if not args.no_save:
        record = {"kind": "speed", "title": "Graphs: FLOP rate against the CPU's peak", "tables": tables,
                  "command": common.command_line("graph_speed.py"), "date": common.today(),
                  "machine": common.machine_description()}  # fmt: skip
        common.save_result(record, "graph_speed")
        common.render_results_md()


if __name__ == "__main__":
    main()
