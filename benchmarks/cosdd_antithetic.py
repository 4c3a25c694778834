"""COSDD MMSE with antithetic pairs of posterior samples against independent samples.

A posterior sample is the decoder's output for standard-normal latent draws eps; the sample
made from -eps is an equally exact posterior sample, and its error is strongly negatively
correlated with the first's where the decoder is close to linear in eps. Averaging such pairs
(``SplitSource.antithetic``) should need fewer samples for the same MMSE quality.

For one package on the stripe suite this draws, per tile (tiles as ``selfden infer`` plans
them), 100 independent samples and 100 samples in antithetic pairs, and scores the running
means at N = 1 ... 100 against the clean frames. The reference is the independent N = 100, as
for the default sample count (``cosdd_sampling.py``). Packages with the old single sampler
graph draw eps inside onnxruntime; for them the graph's RandomNormalLike nodes are replaced by
inputs here (benchmark only), so both kinds of package can be measured.

    python benchmarks/cosdd_antithetic.py --package bioimage_models/cosdd-stripe --suite-frames 64
"""

from __future__ import annotations

import argparse
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

import baselines
import common
import quality

from selfden.inference.loading import load_direct
from selfden.inference.posterior_draws import LatentDraws
from selfden.inference.sampling import SamplingPredictor
from selfden.package.processing import apply_steps
from selfden.package.runtime import open_session

CHECKPOINTS = (2, 4, 8, 12, 16, 24, 32, 48, 64, 100)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", type=Path, required=True, help="a COSDD package trained on the stripe suite")
    parser.add_argument("--suite", default="stripe")
    parser.add_argument("--frames", type=int, default=8, help="frames scored (the first N)")
    parser.add_argument("--suite-frames", type=int, default=64, help="frames of the suite built (as trained)")
    parser.add_argument("--label", default=None, help="record name (default: the package folder's name)")
    parser.add_argument("--frames-file", type=Path, default=None,
                        help="real frames without a truth (TIFF/.npy stack): judge the Monte Carlo error instead")
    return parser.parse_args()


# --- the old single sampler graph with its draws as inputs ------------------------------------------


def eps_graphs(sampler: Path, folder: Path) -> tuple[Path, Path, int]:
    """(graph with inputs eps0.. in place of its RandomNormalLike nodes, probe graph that outputs the shapes
    those nodes would draw, number of draws)."""
    model = onnx.load(str(sampler))
    randoms = [n for n in model.graph.node if n.op_type == "RandomNormalLike"]
    probe = onnx.load(str(sampler))
    for k, node in enumerate(randoms):
        probe.graph.output.append(helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, None))
        model.graph.input.append(helper.make_tensor_value_info(f"eps{k}", TensorProto.FLOAT, None))
        for other in model.graph.node:
            for i, name in enumerate(other.input):
                if name == node.output[0]:
                    other.input[i] = f"eps{k}"
        model.graph.node.remove(node)
    paths = folder / "sampler_eps.onnx", folder / "sampler_probe.onnx"
    onnx.save(model, str(paths[0]))
    onnx.save(probe, str(paths[1]))
    return paths[0], paths[1], len(randoms)


class EpsDraws:
    """SplitDraws' contract for the eps-input single graph, with the same LatentDraws."""

    def __init__(self, session: Any, shapes: list[tuple[int, ...]], tile: np.ndarray, latents: LatentDraws) -> None:
        self.session, self.shapes, self.tile, self.latents = session, shapes, tile, latents

    def draw(self, count: int) -> np.ndarray:
        eps = [self.latents.next(self.shapes) for _ in range(count)]
        feeds = {"input": np.ascontiguousarray(np.broadcast_to(self.tile, (count, 1, *self.tile.shape)), np.float32)}
        feeds.update({f"eps{k}": np.stack([sample[k] for sample in eps]) for k in range(len(self.shapes))})
        return self.session.run(None, feeds)[0][:, 0]


class PairedMeans(SamplingPredictor):
    """Per tile, running means at CHECKPOINTS of independent and of antithetic draws: (B, 2K, Py, Px); with
    ``reference`` also the mean of that many further independent draws of their own (B, 2K + 1, Py, Px)."""

    eps_graph: tuple[Any, Any, int] | None = None  # (eps-input session, probe session, draws): single graphs
    reference: int = 0

    def run_tiles(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([np.concatenate([self._running(tile, False), self._running(tile, True),
                                         *([self._running(tile, False, (self.reference,), 1)[-1:]]
                                           if self.reference else [])]) for tile in batch])

    def _draws(self, tile: np.ndarray, antithetic: bool, stream: int = 0) -> Any:
        # Stream 0: the same first draws in both modes; stream 1 (the reference) draws apart from them.
        rng = np.random.default_rng([zlib.crc32(tile.tobytes()), stream] if stream else zlib.crc32(tile.tobytes()))
        if self.source is not None:
            draws = self.source.start(tile)
            draws.latents = LatentDraws(rng, antithetic)
            return draws
        session, probe, count = self.eps_graph
        shapes = [o.shape[1:] for o in probe.run(None, {"input": tile[None, None].astype(np.float32)})[-count:]]
        return EpsDraws(session, shapes, tile, LatentDraws(rng, antithetic))

    def _running(self, tile: np.ndarray, antithetic: bool, checkpoints: tuple[int, ...] = CHECKPOINTS,
                 stream: int = 0) -> np.ndarray:
        draws, total, done, means = self._draws(tile, antithetic, stream), np.zeros(tile.shape), 0, []
        for target in checkpoints:
            while done < target:
                count = min(self.max_batch, target - done, max(2, self.batch_pixels // tile.size // 2 * 2))
                total += draws.draw(count).astype(np.float64).sum(axis=0)
                done += count
            means.append(total / done)
        return np.stack(means).astype(np.float32)


def open_predictor(package: Path, work: Path) -> PairedMeans:
    predictor = PairedMeans.from_predictor(load_direct(package), 100)
    if predictor.source is None:
        eps, probe, count = eps_graphs(predictor.runner.model_file, work)
        predictor.eps_graph = (open_session(eps), open_session(probe), count)
        print(f"{package.name}: single sampler graph; its {count} RandomNormalLike nodes became inputs")
    return predictor


def mmse_per_n(package: Path, noisy: np.ndarray, reference: int = 0) -> np.ndarray:
    """(2K [+ 1], frames, H, W): the MMSE at each checkpoint, independent then antithetic [then the reference]."""
    estimates = []
    with tempfile.TemporaryDirectory() as work, open_predictor(package, Path(work)) as predictor:
        predictor.reference = reference
        for frame in noisy:
            refs = {predictor.spec.input_id: frame}
            normalised = np.asarray(apply_steps(frame, predictor.spec.preprocessing, refs), np.float32)
            means = predictor.predict_tiled(normalised)
            estimates.append([apply_steps(m, predictor.spec.postprocessing, refs) for m in means])
    return np.asarray(estimates, np.float32).transpose(1, 0, 2, 3)


def truth_free(args: argparse.Namespace) -> int:
    """Monte Carlo error of each MMSE against the mean of 100 further independent samples.

    For any estimate E of the posterior mean mu, E|E - truth|^2 = |mu - truth|^2 + E|E - mu|^2 (E is
    unbiased given the data), so the estimate whose Monte Carlo error E|E - mu|^2 is smaller is the
    better one against the truth, whatever the truth is. Against a reference mean of 100 draws of its
    own, each squared distance carries the same extra term (the reference's error), so the
    distances compare the errors: antithetic N within the independent N=100's distance means at
    least as close to the truth as 100 independent samples, in expectation.
    """
    import tifffile

    frames = np.load(args.frames_file) if args.frames_file.suffix == ".npy" else tifffile.imread(args.frames_file)
    stack = np.asarray(frames[: args.frames], np.float32)
    per_n = mmse_per_n(args.package, stack, reference=100)
    k = len(CHECKPOINTS)
    reference = per_n[-1].astype(np.float64)
    scale = float(np.mean([f.var() for f in reference]))  # the signal's variance, per frame, averaged

    def distance(estimate: np.ndarray) -> float:
        return float(np.mean((estimate - reference) ** 2) / scale)

    independent = [distance(e) for e in per_n[:k]]
    paired = [distance(e) for e in per_n[k: 2 * k]]
    limit = independent[-1]
    rows = [[n, a, a / limit, b, b / limit] for n, a, b in zip(CHECKPOINTS, independent, paired)]
    for row in rows:
        print("N={:3d}  independent {:.2e} ({:.2f}x)  antithetic {:.2e} ({:.2f}x)".format(*row))
    enough = [n for n, row in zip(CHECKPOINTS, rows) if row[4] <= 1.0]
    note = (f"{args.package.name}; first {args.frames} frames of {args.frames_file.name} (no clean frames). Squared "
            f"distance of the MMSE of the first N samples per tile to the mean of 100 further independent samples, "
            f"over the reference's variance; equal extra terms, so a row at or below independent N=100 (ratio <= 1) "
            f"is at least as close to the truth in expectation (see `truth_free`). Antithetic pairs reach it from "
            f"N={enough[0] if enough else 'beyond 100'}.")
    table = {"title": "Monte Carlo error against N without a truth: independent samples vs antithetic pairs",
             "note": note, "columns": ["samples N", "independent distance", "x independent N=100",
                                       "antithetic distance", "x independent N=100"], "rows": rows}
    label = args.label or args.package.name
    common.save_speed_record(f"cosdd_antithetic_{label}", f"COSDD: antithetic posterior samples ({label})", [table],
                             Path(__file__).name, enough_antithetic=enough[0] if enough else None)
    return 0


def main() -> int:
    args = parse_args()
    if args.frames_file is not None:
        return truth_free(args)
    suite = quality.make_suite(args.suite, args.suite_frames)
    noisy, clean = suite.noisy[: args.frames].astype(np.float32), suite.clean[: args.frames]
    per_n = mmse_per_n(args.package, noisy)  # (2K, frames, H, W)
    k = len(CHECKPOINTS)
    independent = [baselines.score(est, clean).psnr for est in per_n[:k]]
    paired = [baselines.score(est, clean).psnr for est in per_n[k:]]
    reference = independent[-1]
    rows = [[n, a, a - reference, b, b - reference] for n, a, b in zip(CHECKPOINTS, independent, paired)]
    for row in rows:
        print("N={:3d}  independent {:.3f} ({:+.3f})  antithetic {:.3f} ({:+.3f})".format(*row))

    def needed(scores: list[float]) -> int:
        ok = [s >= reference - 0.1 for s in scores]
        return next(n for i, n in enumerate(CHECKPOINTS) if all(ok[i:]))

    note = (f"{args.package.name}; first {args.frames} frames of the {args.suite} suite ({args.suite_frames} frames "
            f"built); PSNR of the MMSE of the first N samples per tile against the clean frames, tiles as `selfden "
            f"infer` plans them. Within 0.1 dB of independent N=100 from N={needed(independent)} (independent) and "
            f"N={needed(paired)} (antithetic pairs). Both sequences start from the same draws.")
    table = {"title": "MMSE quality against N: independent samples vs antithetic pairs", "note": note,
             "columns": ["samples N", "independent PSNR dB", "vs independent N=100", "antithetic PSNR dB",
                         "vs independent N=100"], "rows": rows}
    label = args.label or args.package.name
    common.save_speed_record(f"cosdd_antithetic_{label}", f"COSDD: antithetic posterior samples ({label})", [table],
                             Path(__file__).name,
                             needed_independent=needed(independent), needed_antithetic=needed(paired))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
