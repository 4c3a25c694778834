"""What the width of COSDD's full-resolution code costs: MACs per posterior sample and training speed.

Every posterior sample repeats the bottom top-down level and the signal decoder at full
resolution, at ``code_features`` channels (the tiny preset's features, 32, until 2026-12-05).
For each width this measures, in one run:

- MACs per pixel of the split sampler graphs (``selfden.export.onnx_flops``, 256² tile): the
  encoder (once per tile) and the decoder (per sample), and the decoder's share of a full pass;
- training seconds per step at the CPU defaults (64² crops, batch 4), the widths alternating in
  rounds so a shared machine's load falls on all of them alike.

Quality per step comes from ``cosdd_trajectory.py --set code_features=W`` runs (pass their records
with ``--trajectory``; they are listed beside the cost, with their commands).

    python benchmarks/cosdd_code_width.py --widths 32,20,16 --threads 2 [--trajectory RECORD.json ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

import common
from selfden.export.onnx_flops import count_macs
from selfden.export.onnx_graphs import export_named
from selfden.methods.base import Normalisation
from selfden.methods.cosdd import Cosdd, CosddConfig


def _method(width: int) -> Cosdd:
    torch.manual_seed(0)
    config = CosddConfig(size="tiny", code_features=width, direction="x")
    return Cosdd(config, Normalisation(0.0, 1.0), torch.device("cpu"))


def sampler_macs(width: int, folder: Path, tile: int = 256) -> tuple[float, float]:
    """(encoder, decoder) kMAC per pixel of the split sampler graphs on a ``tile``² tile."""
    graphs = _method(width).export_graphs()
    result = []
    for name in ("sampler_encoder", "sampler_decoder"):
        module, path = graphs[name], folder / f"{name}-{width}.onnx"
        export_named(module, path, [(64, 64)])
        shapes = {i.name: tuple(t.shape) for i, t in zip(onnx.load(path).graph.input, module.example_inputs(1, tile, tile))}
        result.append(count_macs(onnx.load(path), shapes) / tile**2 / 1000)
    return result[0], result[1]


def step_seconds(widths: list[int], rounds: int, steps: int) -> dict[int, float]:
    """Median seconds per training step per width, the widths alternating in each round."""
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.normal(size=(4, 1, 64, 64)).astype(np.float32))
    methods = {w: _method(w) for w in widths}
    for method in methods.values():
        method.training_step(batch)  # warm-up: oneDNN primitive creation
    times: dict[int, list[float]] = {w: [] for w in widths}
    for _ in range(rounds):
        for width, method in methods.items():
            start = time.perf_counter()
            for _ in range(steps):
                method.training_step(batch)
            times[width].append((time.perf_counter() - start) / steps)
    return {w: float(np.median(t)) for w, t in times.items()}


def quality_rows(paths: list[Path]) -> list[list[object]]:
    """[label, step, minutes, direct dB, MMSE-8 dB, command] at the last step of each trajectory record."""
    rows = []
    for path in paths:
        record = json.loads(path.read_text())
        table = record["tables"][0]["rows"]
        last = [row for row in table if isinstance(row[0], int)][-1]
        mmse = next((row for row in table if str(row[0]).startswith("MMSE")), None)
        label = record["title"].rsplit("(", 1)[-1].rstrip(")")
        rows.append([label, last[0], round(last[1], 2), round(last[2], 2), round(mmse[2], 2) if mmse else "",
                     f"`{record['command']}`"])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="32,20,16", help="code_features values; the first is the reference")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per width per round")
    parser.add_argument("--trajectory", type=Path, action="append", default=[], help="cosdd_trajectory records")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    widths = [int(w) for w in args.widths.split(",")]
    with tempfile.TemporaryDirectory() as temp:
        macs = {w: sampler_macs(w, Path(temp)) for w in widths}
    seconds = step_seconds(widths, args.rounds, args.steps)
    reference = seconds[widths[0]]
    rows = [[w, round(macs[w][0], 2), round(macs[w][1], 2), round(macs[w][1] / sum(macs[w]), 3),
             round(seconds[w], 3), round(1 / seconds[w], 2), round(reference / seconds[w], 2)] for w in widths]
    tables = [{
        "title": "(a) cost per posterior sample and per training step, by code width",
        "note": (f"tiny preset, direction x. MACs: Conv/ConvTranspose/MatMul/Gemm per input pixel of the split sampler "
                 f"graphs on a 256² tile (deterministic). Training: Cosdd.training_step on 64² crops, batch 4, "
                 f"{args.threads} torch threads, fp32, median of {args.rounds} alternating rounds of {args.steps} "
                 f"steps after one warm-up step; speed-up against code_features {widths[0]}, same run."),
        "columns": ["code_features", "encoder kMAC/px (once per tile)", "decoder kMAC/px (per sample)",
                    "decoder / full pass", "s / training step", "steps / s", "training speed-up"],
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
    common.save_speed_record("cosdd_code_width", "COSDD: the width of the full-resolution code", tables,
                             "cosdd_code_width.py")


if __name__ == "__main__":
    sys.exit(main())
