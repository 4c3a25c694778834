"""Speed: onnxruntime vs torch for the cae network, tiling overhead, training steps per second.

    python benchmarks/speed.py            # about 15 min on 2 shared CPU cores
    python benchmarks/speed.py --quick    # smaller images, shorter timings, fp32 only (about 8 min)

(a) inference megapixels/s of the cae network (untrained weights: speed does not depend on
    them), onnxruntime on the CPU vs torch eager (``torch.no_grad``, same weights, same thread
    count), on a whole 2048² image and on a batch of the tiles the Predictor really runs;
(b) a 4096² image through ``selfden.inference.predictors.Predictor`` (tiling, stitching, processing) vs
    the same number of tiles pushed through the session without stitching;
(c) training steps/s of every registered method at its default config and the default
    patch/batch of ``selfden train``, fp32 and bf16 autocast.

The machine may be shared: timings alternate between the compared variants and report medians;
read the ratios, and absolute numbers only from an otherwise idle machine or a GPU. torch is
used here only to measure it; ``selfden.inference`` never imports it.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1024² and 2048² images, short timings")
    parser.add_argument("--tables", default="inference,tiling,training",
                        help="which tables to measure (comma-separated: inference, tiling, training)")
    parser.add_argument("--methods", default=None, help="comma-separated methods for (c) (default: all registered)")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR)
    parser.add_argument("--results-md", type=Path, default=common.RESULTS_MD)
    return parser.parse_args(argv)


def timed_rounds(
    variants: dict[str, Callable[[], object]], min_seconds: float, max_rounds: int = 20, warm_up: bool = True
) -> dict[str, float]:
    """Median seconds per call of each variant; variants alternate so load drift hits all alike.

    One untimed warm-up call each (unless ``warm_up`` is False); then rounds until
    ``min_seconds`` have passed (at least 2 rounds unless ``max_rounds`` is 1).
    """
    for run in variants.values() if warm_up else ():
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    start = time.perf_counter()
    while len(next(iter(times.values()))) < max_rounds:
        for name, run in variants.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
        if len(times[next(iter(times))]) >= min(2, max_rounds) and time.perf_counter() - start > min_seconds:
            break
    return {name: statistics.median(values) for name, values in times.items()}


# --- the network and its package -------------------------------------------------------------------


def build_cae(folder: Path) -> tuple[Any, Path]:
    """An untrained default cae (seeded) and its exported package folder."""
    import torch

    from selfden.export.package import export_package
    from selfden.methods import get_method
    from selfden.normalisation import Normalisation

    torch.manual_seed(0)
    cls = get_method("cae")
    # Not the identity: bioimage.io rejects a "redundant" scale_linear (gain 1, offset 0).
    config = cls.config_class().device_defaults("cpu").config
    method = cls(config, Normalisation(offset=0.01, scale=0.98), torch.device("cpu"))
    sample = np.random.default_rng(0).random((256, 256), dtype=np.float32)
    package = export_package(method, folder / "cae-package", sample, {"name": "speed benchmark (untrained)"})
    return method, package


def inference_table(method: Any, package: Path, whole: int, tile_shape: tuple[int, int], batch: int,
                    seconds: float) -> dict[str, Any]:
    """(a): onnxruntime vs torch eager on one whole image and on a batch of tiles."""
    import torch

    from selfden.package.runtime import create_session

    threads = common.cpu_count()
    torch.set_num_threads(threads)
    session, provider = create_session(package / "denoiser.onnx", "cpu")
    net = method.export_graphs()["denoiser"]
    name = session.get_inputs()[0].name
    rows = []
    rng = np.random.default_rng(1)
    for label, shape in ((f"whole image {whole}²", (1, 1, whole, whole)),
                         (f"tiles {tile_shape[0]}x{tile_shape[1]}, batch {batch}", (batch, 1, *tile_shape))):
        x = rng.random(shape, dtype=np.float32)
        xt = torch.from_numpy(x)

        def run_torch() -> object:
            with torch.no_grad():
                return net(xt)

        med = timed_rounds({"ort": lambda: session.run(None, {name: x}), "torch": run_torch}, seconds)
        megapixels = math.prod(shape) / 1e6
        rows.append([label, megapixels / med["ort"], megapixels / med["torch"], med["torch"] / med["ort"]])
        print(f"(a) {label}: onnxruntime {rows[-1][1]:.2f} MP/s, torch {rows[-1][2]:.2f} MP/s")
    return {
        "title": "(a) cae inference: onnxruntime vs torch eager (CPU)",
        "note": f"{provider}, {threads} threads for both (torch.set_num_threads, onnxruntime intra-op); "
        f"megapixels of network input per second, median of alternating runs; default cae config.",
        "columns": ["input", "onnxruntime MP/s", "torch MP/s", "onnxruntime / torch speed"],
        "rows": rows,
    }


def tiling_table(
    package: Path, size: int, seconds: float, rounds: int
) -> tuple[dict[str, Any], tuple[int, int], int]:
    """(b): the Predictor on a ``size``² image vs its tiles run through the session alone."""
    from selfden.inference.loading import load_predictor
    from selfden.geometry.tiles import tile_image

    predictor = load_predictor(package, "cpu")
    spec = predictor.spec
    image = np.random.default_rng(2).random((size, size), dtype=np.float32)
    tiles = tile_image(image.shape, predictor.tile_size, spec.min_size, spec.size_step, spec.halo, predictor.overlap)
    batch = predictor.tile_batch
    batch_input = np.random.default_rng(3).random((batch, *tiles[0].shape), dtype=np.float32)
    predictor.run_tiles(batch_input)  # warms the session; a whole extra 4096² run would cost minutes on a CPU
    batches = math.ceil(len(tiles) / batch)

    def tiles_alone() -> None:  # as many session runs as the Predictor makes, so both span the same load
        for _ in range(batches):
            predictor.run_tiles(batch_input)

    med = timed_rounds({"predictor": lambda: predictor.predict(image), "tiles": tiles_alone},
                       seconds, max_rounds=rounds, warm_up=False)
    ideal = med["tiles"]
    network_pixels = len(tiles) * math.prod(tiles[0].shape)
    row = [
        f"{size}²",
        f"{len(tiles)} × {tiles[0].shape[0]}x{tiles[0].shape[1]} (halo {spec.halo[0]}, batch {batch})",
        network_pixels / size**2,
        med["predictor"],
        ideal,
        med["predictor"] / ideal,
        size**2 / 1e6 / med["predictor"],
    ]
    print(f"(b) {size}²: Predictor {row[3]:.1f} s, tiles alone {row[4]:.1f} s, ratio {row[5]:.2f}")
    table = {
        "title": "(b) tiled inference: Predictor vs its tiles alone",
        "note": "Predictor.predict (pre/post-processing, tiling, reflect padding, batching, blending) "
        "vs ceil(tiles/batch) batches through the same session, alternating, median of the rounds; ratio 1.00 = no overhead beyond the "
        "network. 'network px / image px' is the extra work that halo and overlap cost.",
        "columns": ["image", "tiles", "network px / image px", "Predictor s", "tiles alone s",
                    "Predictor / tiles alone", "image MP/s"],
        "rows": [row],
    }
    return table, tiles[0].shape, batch


# --- training ---------------------------------------------------------------------------------------


def training_batch(patch: int, batch: int) -> np.ndarray:
    """Normalised noisy crops from the atoms suite (realistic statistics, values about 0-1)."""
    from selfden import synth

    frames = synth.atoms_suite(n_frames=batch, size=patch, rng=np.random.default_rng(0)).noisy
    low, high = np.percentile(frames, (0.1, 99.9))
    return ((frames - low) / (high - low))[:, None].astype(np.float32)


def training_rows(
    name: str, patch: int, batch: int, seconds: float, precisions: tuple[str, ...], options: dict[str, Any] | None = None
) -> list[list[Any]]:
    """(c) for one method: seconds per training step at each precision (alternating).

    ``options``: method config values other than the defaults (e.g. COSDD's size preset)."""
    import torch

    from selfden.methods import get_method
    from selfden.normalisation import Normalisation
    from selfden.training.device import autocast_context

    cls = get_method(name)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    config = cls.config_class(**(options or {})).device_defaults(device.type).config
    method = cls(config, Normalisation(offset=0.0, scale=1.0), device)
    data = torch.from_numpy(training_batch(patch, batch)).to(device)

    def step(bf16: bool) -> Callable[[], object]:
        def run() -> object:
            with autocast_context(device, bf16):
                out = method.training_step(data)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return out

        return run

    med = timed_rounds({p: step(p == "bf16") for p in precisions}, seconds, max_rounds=30)
    rows = []
    for precision in precisions:
        speedup = med["fp32"] / med[precision] if "fp32" in med else None
        rows.append([name, method.parameter_count() / 1e6, patch, batch, f"{precision} ({device.type})",
                     med[precision], 1.0 / med[precision], speedup])
        print(f"(c) {name} {precision}: {med[precision]:.2f} s/step")
    return rows


def training_table(methods: list[str], seconds: float, precisions: tuple[str, ...]) -> dict[str, Any]:
    from selfden.runs.config import DataConfig

    patch = DataConfig.model_fields["patch_size"].default
    batch = DataConfig.model_fields["batch_size"].default
    rows = []
    for name in methods:
        try:
            rows += training_rows(name, patch, batch, seconds, precisions)
        except Exception as error:  # a method under construction must not stop the other numbers
            print(f"(c) {name}: failed: {type(error).__name__}: {error}")
            rows.append([name, None, patch, batch, f"failed: {type(error).__name__}: {str(error)[:120]}",
                         None, None, None])
    return {
        "title": "(c) training speed (method.training_step, default config)",
        "note": f"default `selfden train` crops: patch {patch}, batch {batch}; atoms-suite data; median of "
        "alternating timed steps after one warm-up step; trainer overhead (validation, checkpoints) excluded. "
        "bf16 = torch.autocast(bfloat16), the trainer's bf16 (on CPU: trainer option bf16_on_cpu).",
        "columns": ["method", "params (M)", "patch", "batch", "precision", "s / step", "steps / s",
                    "speed-up vs fp32"],
        "rows": rows,
    }


def _merged(previous: dict[str, Any], fresh: dict[str, Any], tables: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The earlier record with the re-measured tables replaced; each of those names its own run."""
    for table in tables.values():
        table["note"] += f" Re-measured by `{fresh['command']}` — {fresh['date']}; {fresh['machine']}."
    kept = [t for t in previous["tables"] if t["title"][:3] not in tables]
    return {**previous, "tables": sorted([*kept, *tables.values()], key=lambda t: t["title"])}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import onnxruntime  # noqa: F401  (imported first so the machine description names both versions)
    import torch  # noqa: F401

    from selfden.methods import method_names

    whole, tiled, seconds, train_seconds = (1024, 2048, 3.0, 15.0) if args.quick else (2048, 4096, 10.0, 45.0)
    methods = method_names() if args.methods is None else [m.strip() for m in args.methods.split(",")]
    precisions = ("fp32",) if args.quick else ("fp32", "bf16")
    wanted = {t.strip() for t in args.tables.split(",") if t.strip()}
    rounds = 2 if args.quick or wanted == {"tiling"} else 1
    tables = {}
    with tempfile.TemporaryDirectory(prefix="selfden-speed-") as tmp:
        if wanted & {"inference", "tiling"}:
            method, package = build_cae(Path(tmp))
            tiling, tile_shape, batch = tiling_table(package, tiled, seconds, rounds=rounds)
            if "tiling" in wanted:
                tables["(b)"] = tiling
            if "inference" in wanted:
                tables["(a)"] = inference_table(method, package, whole, tile_shape, batch, seconds)
    if "training" in wanted:
        tables["(c)"] = training_table(methods, train_seconds, precisions)
    name = "speed-quick" if args.quick else "speed"
    record = {
        "kind": "speed",
        "quick": args.quick,
        "command": common.command_line("speed.py"),
        "date": common.today(),
        "machine": common.machine_description(),
        "tables": [tables[k] for k in sorted(tables)],
    }
    previous = args.results_dir / f"{name}.json"
    if wanted != {"inference", "tiling", "training"} and previous.is_file():
        record = _merged(json.loads(previous.read_text()), record, tables)
    common.save_result(record, name, args.results_dir)
    common.render_results_md(args.results_dir, args.results_md)
    print(f"wrote {args.results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
