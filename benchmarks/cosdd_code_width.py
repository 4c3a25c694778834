"""What COSDD's sampling layout costs: MACs and seconds per posterior sample, and training speed.

Every posterior sample repeats the bottom top-down level and the signal decoder at full
resolution, at ``code_features`` channels; the encoder, whose full-resolution stem has
``stem_blocks`` residual blocks, runs once per tile. For each layout ("code_features:stem_blocks";
32:1 is the tiny preset until 2026-12-05) this measures, in one run:

- MACs per pixel of the split sampler graphs (``selfden.export.onnx_flops``, 256² tile): the
  encoder (once per tile) and the decoder (per sample), and the decoder's share of a full pass;
- seconds of the two graphs in onnxruntime (CPU, 1 thread, one 512² tile, best of alternating rounds);
- training seconds per step at the CPU defaults (64² crops, batch 4), the layouts alternating in
  rounds so a shared machine's load falls on all of them alike.

Quality per step comes from ``cosdd_trajectory.py --set code_features=W --set stem_blocks=B`` runs
(pass their records with ``--trajectory``; they are listed beside the cost, with their commands).

    python benchmarks/cosdd_code_width.py --layouts 32:1,24:2,20:1,16:1 --threads 2 [--trajectory RECORD.json ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

import common
from cosdd_compare import end_point
from selfden.export.onnx_flops import count_macs
from selfden.export.onnx_graphs import export_named
from selfden.methods.base import Normalisation
from selfden.methods.cosdd import Cosdd, CosddConfig


GRAPHS = ("sampler_encoder", "sampler_decoder")


def _method(layout: str) -> Cosdd:
    torch.manual_seed(0)
    code, stem = (int(part) for part in layout.split(":"))
    config = CosddConfig(size="tiny", code_features=code, stem_blocks=stem, direction="x")
    return Cosdd(config, Normalisation(0.0, 1.0), torch.device("cpu"))


def export_sampler(layout: str, folder: Path) -> dict[str, tuple[Path, Any]]:
    """The split sampler graphs of an untrained model of ``layout`` (cost does not depend on the weights)."""
    graphs = _method(layout).export_graphs()
    paths = {}
    for name in GRAPHS:
        path = folder / f"{name}-{layout.replace(':', '_')}.onnx"
        export_named(graphs[name], path, [(64, 64)])
        paths[name] = (path, graphs[name])
    return paths


def sampler_macs(paths: dict[str, tuple[Path, Any]], tile: int = 256) -> list[float]:
    """[encoder, decoder] kMAC per pixel of the split sampler graphs on a ``tile``² tile."""
    result = []
    for path, module in paths.values():
        names = [i.name for i in onnx.load(path).graph.input]
        shapes = {n: tuple(t.shape) for n, t in zip(names, module.example_inputs(1, tile, tile))}
        result.append(count_macs(onnx.load(path), shapes) / tile**2 / 1000)
    return result


def graph_seconds(exported: dict[str, dict[str, tuple[Path, Any]]], rounds: int, tile: int = 512) -> dict[str, list[float]]:
    """[encoder, decoder] best seconds per layout for one ``tile``² tile, 1 onnxruntime thread, layouts alternating."""
    from selfden.package.runtime import open_session

    runs = {}
    for layout, paths in exported.items():
        for name, (path, module) in paths.items():
            session = open_session(path, ["CPUExecutionProvider"], threads=1, quiet=True, optimise_all=True)
            feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), module.example_inputs(1, tile, tile))}
            session.run(None, feeds)  # warm-up
            runs[layout, name] = (session, feeds)
    best: dict[str, list[float]] = {layout: [float("inf")] * len(GRAPHS) for layout in exported}
    for _ in range(rounds):
        for (layout, name), (session, feeds) in runs.items():
            start = time.perf_counter()
            session.run(None, feeds)
            index = GRAPHS.index(name)
            best[layout][index] = min(best[layout][index], time.perf_counter() - start)
    return best


def step_seconds(layouts: list[str], rounds: int, steps: int) -> dict[str, float]:
    """Median seconds per training step per layout, the layouts alternating in each round."""
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.normal(size=(4, 1, 64, 64)).astype(np.float32))
    methods = {layout: _method(layout) for layout in layouts}
    for method in methods.values():
        method.training_step(batch)  # warm-up: oneDNN primitive creation
    times: dict[str, list[float]] = {layout: [] for layout in layouts}
    for _ in range(rounds):
        for layout, method in methods.items():
            start = time.perf_counter()
            for _ in range(steps):
                method.training_step(batch)
            times[layout].append((time.perf_counter() - start) / steps)
    return {layout: float(np.median(t)) for layout, t in times.items()}


def quality_rows(paths: list[Path]) -> list[list[object]]:
    """[label, step, minutes, direct dB, MMSE-8 dB, command] at the last step of each trajectory record."""
    rows = []
    for path in paths:
        record = json.loads(path.read_text())
        label, step, direct, mmse, command = end_point(record)
        minutes = next(row[1] for row in record["tables"][0]["rows"] if row[0] == step)
        rows.append([label, step, round(minutes, 2), direct, mmse, command])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layouts", default="32:1,24:2,20:1,16:1",
                        help="code_features:stem_blocks per layout; the first is the reference")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per width per round")
    parser.add_argument("--trajectory", type=Path, action="append", default=[], help="cosdd_trajectory records")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    layouts = args.layouts.split(",")
    with tempfile.TemporaryDirectory() as temp:
        exported = {layout: export_sampler(layout, Path(temp)) for layout in layouts}
        macs = {layout: sampler_macs(paths) for layout, paths in exported.items()}
        graph = graph_seconds(exported, args.rounds)
    seconds = step_seconds(layouts, args.rounds, args.steps)
    reference = seconds[layouts[0]]
    rows = [[layout, round(macs[layout][0], 2), round(macs[layout][1], 2), round(macs[layout][1] / sum(macs[layout]), 3),
             round(graph[layout][0], 3), round(graph[layout][1], 3), round(graph[layout][1] / sum(graph[layout]), 3),
             round(seconds[layout], 3), round(1 / seconds[layout], 2), round(reference / seconds[layout], 2)]
            for layout in layouts]
    tables = [{
        "title": "(a) cost per posterior sample and per training step, by layout",
        "note": (f"tiny preset, direction x; layout = code_features:stem_blocks. MACs: Conv/ConvTranspose/MatMul/Gemm "
                 f"per input pixel of the split sampler graphs on a 256² tile (deterministic). Seconds: the same graphs "
                 f"in onnxruntime, CPU, 1 thread, one 512² tile, best of {args.rounds} alternating rounds. Training: "
                 f"Cosdd.training_step on 64² crops, batch 4, {args.threads} torch threads, fp32, median of "
                 f"{args.rounds} alternating rounds of {args.steps} steps after one warm-up step; speed-up against "
                 f"{layouts[0]}, same run."),
        "columns": ["layout", "encoder kMAC/px (once per tile)", "decoder kMAC/px (per sample)", "decoder / full pass",
                    "encoder s (512²)", "decoder s (512²)", "decoder / full pass (time)", "s / training step",
                    "steps / s", "training speed-up"],
        "rows": rows,
    }]
    if args.trajectory:
        tables.append({
            "title": "(b) quality at equal steps (stripe suite, first 8 frames)",
            "note": "Each row one cosdd_trajectory.py run (same data; seed 1 where the command says --seed 1, else "
                    "drawn by selfden train; 1 thread, two runs side by side on the 2 cores); minutes are that "
                    "run's, so compare them only within a pair that ran together (the two seed-1 runs did).",
            "columns": ["run", "step", "minutes", "direct affine PSNR", "MMSE-8 affine PSNR", "command"],
            "rows": quality_rows(args.trajectory),
        })
    common.save_speed_record("cosdd_code_width", "COSDD: what each posterior sample repeats (sampling layout)", tables,
                             "cosdd_code_width.py")


if __name__ == "__main__":
    sys.exit(main())
