"""COSDD sampling that shares work: per-sample cost of the split decoder, and how many samples the MMSE needs.

1. MACs per pixel (Conv/ConvTranspose/MatMul/Gemm, shapes from shape inference; deterministic) of
   the split encoder (once per tile), the split decoder (per sample) and the old single sampler
   graph (per sample) on a 256² tile;
2. on the stripe suite: PSNR against the clean frames of the MMSE of N posterior samples
   (running means of one 100-sample draw per tile, through ``selfden infer``'s tiling), the
   smallest N within 0.1 dB of N=100, and what ``--samples auto`` draws;
3. last and briefly: seconds per sample of the decoder vs the whole sampler on one thread.

Needs a split package and the single-graph package of the same run (``selfden train`` of this
version writes the split one; an older export, or ``--single``, the other):

    python benchmarks/cosdd_sampling.py --split PKG_SPLIT --single PKG_SINGLE --frames 8 \\
        --trained-by "selfden train cosdd ... --steps 400"
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import baselines
import common
import numpy as np
import onnx
import quality

from selfden.export.onnx_flops import count_macs
from selfden.inference.loading import load_direct
from selfden.inference.posterior_draws import SingleGraphDraws
from selfden.package.processing import apply_steps
from selfden.package.runtime import create_session
from selfden.inference.sampling import SamplingPredictor

CHECKPOINTS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 100)
TILE = 256


class RunningMeans(SamplingPredictor):
    """Each tile's MMSE after every count in CHECKPOINTS, from one sequence of draws: (B, K, Py, Px)."""

    def run_tiles(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self._running(tile) for tile in batch])

    def _running(self, tile: np.ndarray) -> np.ndarray:
        draws = self.source.start(tile) if self.source else SingleGraphDraws(self.runner, tile)
        total, done, means = np.zeros(tile.shape), 0, []
        for target in CHECKPOINTS:
            while done < target:
                count = min(self.max_batch, target - done, max(1, self.max_pixels // tile.size))
                total += draws.draw(count).astype(np.float64).sum(axis=0)
                done += count
            means.append(total / done)
        return np.stack(means).astype(np.float32)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", type=Path, required=True, help="package with sampler_encoder/sampler_decoder")
    parser.add_argument("--single", type=Path, help="package of the same run with one sampler graph")
    parser.add_argument("--curve-only", action="store_true",
                        help="only (b), for the --split package (split or single-graph): how many samples it needs")
    parser.add_argument("--suite", default="stripe", help="benchmark suite the package was trained on")
    parser.add_argument("--frames", type=int, default=8, help="stripe-suite frames scored (the first N of 16)")
    parser.add_argument("--suite-frames", type=int, default=16, help="frames of the stripe suite built (and trained on)")
    parser.add_argument("--trained-by", default="", help="the command that trained the packages (recorded)")
    return parser.parse_args()


def mac_table(split: Path, single: Path) -> tuple[dict[str, Any], float]:
    graphs = {name: onnx.load(str(split / f"sampler_{name}.onnx")) for name in ("encoder", "decoder")}
    full = onnx.load(str(single / "sampler.onnx"))
    encoder = count_macs(graphs["encoder"], {"input": (1, 1, TILE, TILE)})
    decoder = count_macs(graphs["decoder"], _decoder_inputs(graphs["encoder"], graphs["decoder"]))
    whole = count_macs(full, {"input": (1, 1, TILE, TILE)})
    px = TILE * TILE
    rows = [["encoder (once per tile)", encoder / px / 1e3, encoder / whole],
            ["decoder (per sample)", decoder / px / 1e3, decoder / whole],
            ["single sampler graph (per sample, old)", whole / px / 1e3, 1.0]]
    note = (f"MACs of Conv/ConvTranspose/MatMul/Gemm nodes per input pixel on a {TILE}x{TILE} tile, shapes from "
            "onnxruntime's symbolic shape inference (`selfden.export.onnx_flops`); deterministic. Encoder + decoder = "
            f"{(encoder + decoder) / whole:.3f} x the single graph (the split adds no work).")
    return {"title": "(a) cost per posterior sample, by MAC count", "note": note,
            "columns": ["graph", "kMAC / pixel", "x single sampler pass"], "rows": rows}, decoder / whole


def _decoder_inputs(encoder: onnx.ModelProto, decoder: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Decoder input shapes for a TILE² tile: post_i as the encoder makes it, eps_i with the latent channels."""
    import onnxruntime as ort

    session = ort.InferenceSession(encoder.SerializeToString(), providers=["CPUExecutionProvider"])
    posts = session.run(None, {"input": np.zeros((1, 1, TILE, TILE), np.float32)})
    latent = {i.name: i.type.tensor_type.shape.dim[1].dim_value for i in decoder.graph.input}
    shapes: dict[str, tuple[int, ...]] = {}
    for i, post in enumerate(posts):
        shapes[f"post{i}"] = post.shape
        shapes[f"eps{i}"] = (1, latent[f"eps{i}"], *post.shape[2:])
    return shapes


def curve_table(split: Path, noisy: np.ndarray, clean: np.ndarray) -> tuple[dict[str, Any], int, dict[str, Any]]:
    estimates = []
    with RunningMeans.from_predictor(load_direct(split), 100) as predictor:
        for frame in noisy:
            refs = {predictor.spec.input_id: frame}
            normalised = np.asarray(apply_steps(frame, predictor.spec.preprocessing, refs), np.float32)
            means = predictor.predict_tiled(normalised)
            estimates.append([apply_steps(m, predictor.spec.postprocessing, refs) for m in means])
    per_n = np.asarray(estimates, np.float32).transpose(1, 0, 2, 3)  # (K, frames, H, W)
    scores = [baselines.score(est, clean) for est in per_n]
    reference = scores[-1].psnr
    within = [n for n, s in zip(CHECKPOINTS, scores) if s.psnr >= reference - 0.1]
    needed = next(n for i, n in enumerate(CHECKPOINTS) if all(c in within for c in CHECKPOINTS[i:]))
    rows = [[n, s.psnr, s.psnr - reference, s.affine_psnr] for n, s in zip(CHECKPOINTS, scores)]
    auto = auto_row(split, noisy, clean, reference)
    noisy_psnr = baselines.score(noisy, clean).psnr
    note = (f"MMSE of the first N of 100 posterior samples per tile (split graphs, tiles as `selfden infer` plans "
            f"them), first {len(noisy)} stripe-suite frames (noisy input: {noisy_psnr:.2f} dB PSNR); within 0.1 dB of "
            f"N=100 from N={needed} on. The model is a short training run (the --trained-by command above), so "
            "its absolute PSNR is low; a longer-trained posterior may need a different count. auto: "
            "`--samples auto` (inference/sample_count.py), samples per tile as drawn.")
    table = {"title": "(b) MMSE quality against the number of samples (stripe suite)", "note": note,
             "columns": ["samples N", "PSNR dB", "vs N=100 dB", "affine PSNR dB"], "rows": rows + [auto["row"]]}
    return table, needed, auto


def auto_row(split: Path, noisy: np.ndarray, clean: np.ndarray, reference: float) -> dict[str, Any]:
    with SamplingPredictor.from_predictor(load_direct(split), "auto") as predictor:
        counts, estimates = [], []
        for frame in noisy:
            estimates.append(predictor.predict(frame).image)
            counts.extend(predictor.tile_counts)
    score = baselines.score(np.asarray(estimates), clean)
    label = f"auto ({np.mean(counts):.0f} per tile, {min(counts)}-{max(counts)})"
    return {"row": [label, score.psnr, score.psnr - reference, score.affine_psnr], "counts": counts}


def timing_table(split: Path, single: Path) -> dict[str, Any]:
    """Seconds per sample on one thread, best of 3 runs of 4 samples of a TILE² tile."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 1, TILE, TILE)).astype(np.float32)
    full, _ = create_session(single / "sampler.onnx", "cpu", threads=1)
    enc, _ = create_session(split / "sampler_encoder.onnx", "cpu", threads=1)
    dec, _ = create_session(split / "sampler_decoder.onnx", "cpu", threads=1)
    posts = enc.run(None, {"input": x[:1]})
    latent = {i.name: i.shape[1] for i in dec.get_inputs()}
    feeds = {f"post{i}": np.repeat(p, 4, axis=0) for i, p in enumerate(posts)}
    feeds.update({f"eps{i}": rng.standard_normal((4, latent[f"eps{i}"], *p.shape[2:]), dtype=np.float32)
                  for i, p in enumerate(posts)})
    t_full = _best(lambda: full.run(None, {"input": x})) / 4
    t_dec = _best(lambda: dec.run(None, feeds)) / 4
    t_enc = _best(lambda: enc.run(None, {"input": x[:1]}))
    rows = [["encoder, once per tile", t_enc, t_enc / t_full], ["decoder, per sample", t_dec, t_dec / t_full],
            ["single sampler graph, per sample", t_full, 1.0]]
    note = (f"Measured on a shared 2-core machine, 1 onnxruntime thread, best of 3 runs of 4 samples of one "
            f"{TILE}x{TILE} tile, run once at the end of this benchmark: indicative only.")
    return {"title": "(c) measured seconds per sample (1 thread)", "note": note,
            "columns": ["graph", "seconds", "x single sampler pass"], "rows": rows}


def _best(run: Any) -> float:
    run()  # warm-up
    times = []
    for _ in range(3):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    args = parse_args()
    suite = quality.make_suite(args.suite, args.suite_frames)
    noisy, clean = suite.noisy[: args.frames].astype(np.float32), suite.clean[: args.frames]
    if args.curve_only:
        return curve_only(args, noisy, clean)
    if args.single is None:
        raise SystemExit("--single is needed unless --curve-only")
    macs, ratio = mac_table(args.split, args.single)
    print(f"decoder / single sampler MACs: {ratio:.3f}")
    curve, needed, auto = curve_table(args.split, noisy, clean)
    print(f"MMSE within 0.1 dB of 100 samples from N={needed}; auto drew {np.mean(auto['counts']):.0f} per tile")
    timing = timing_table(args.split, args.single)
    record = {"kind": "speed", "title": "COSDD: sampling that shares work (split sampler)",
              "command": common.command_line(Path(__file__).name),
              "date": common.today(), "machine": common.machine_description(),
              "tables": [macs, curve, timing], "samples_needed": needed, "mac_ratio": ratio}
    common.save_result(record, "cosdd_sampling")
    common.render_results_md()
    print(f"threads: {os.cpu_count()}; wrote results/cosdd_sampling.json and RESULTS.md")
    return 0


def curve_only(args: argparse.Namespace, noisy: np.ndarray, clean: np.ndarray) -> int:
    """The samples-needed curve of one package, recorded as its own RESULTS.md section."""
    curve, needed, auto = curve_table(args.split, noisy, clean)
    curve["note"] = curve["note"].replace("(split graphs, ", f"({args.split.name}, ").replace(
        "The model is a short training run (the --trained-by command above), so its absolute PSNR is low; a "
        "longer-trained posterior may need a different count. ", "")
    print(f"{args.split.name}: MMSE within 0.1 dB of 100 samples from N={needed}; auto drew {np.mean(auto['counts']):.0f} per tile")
    common.save_speed_record(f"cosdd_sampling_curve_{args.split.name}", f"COSDD: samples the MMSE needs ({args.split.name})",
                             [curve], Path(__file__).name, samples_needed=needed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
