"""Halo overhead of selfden infer's tiling: network pixels computed per output pixel.

For each shipped package (bioimage_models/) and image size, 'before' tiles with the package's
suggested tile size (the rule until issue 16: one tile size for every image, overlap an eighth
of the core), 'after' with ``tile_plan.plan_tiles`` under the memory budget. Deterministic:
counts pixels, runs nothing.

``--time`` also measures end-to-end ``selfden infer`` megapixels/s against the bare ONNX graph
run on the same pixels (the tiles ``selfden infer`` plans, through the same graph, in the same
batches); it loads the CPU, so run it on an idle machine.

    python benchmarks/tiling_overhead.py            # the table in RESULTS.md
    python benchmarks/tiling_overhead.py --time     # plus megapixels/s (slow)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import common  # benchmarks/common.py (the script's folder is on sys.path)
import numpy as np

from selfden.package.rdf import ModelSpec, read_spec
from selfden.geometry.tile_plan import fixed_plan, plan_tiles, run_pixel_budget

SHIPPED = Path(__file__).resolve().parents[1] / "bioimage_models"
SIZES = [128, 512, 1024, 4096]
OLD_BATCH = 4  # the predictor's tile batch before tile plans


def packages() -> list[Path]:
    return sorted(p.parent for p in SHIPPED.glob("*/rdf.yaml"))


def ratios(spec: ModelSpec, size: int) -> tuple[float, float, str]:
    """(before, after, the plan's description) for a size² image."""
    shape = (size, size)
    suggested = int(spec.config_selfden.get("tile_size", 256))
    before = fixed_plan(shape, suggested, spec.min_size, spec.size_step, spec.halo, None, OLD_BATCH)
    after = plan_tiles(shape, spec.min_size, spec.size_step, spec.halo, run_pixel_budget(spec.config_selfden))
    return before.overhead, after.overhead, after.describe()


def overhead_table() -> dict[str, Any]:
    rows = []
    for folder in packages():
        spec = read_spec(folder / "rdf.yaml")
        for size in SIZES:
            before, after, plan = ratios(spec, size)
            rows.append([folder.name, spec.halo[0], spec.config_selfden.get("tile_size"), f"{size}²", before, after, plan])
    note = ("Network pixels computed per output pixel (halo, blending overlap and valid-size rounding). before: the "
            "package's suggested tile for every image size (overlap an eighth of the core); after: "
            "inference/tile_plan.py per image size, 4 GiB per session run at the package's bytes per pixel "
            "(1600 B when it states none, as the shipped ones). The reflected border halo is part of the output's "
            "definition, so one tile over the whole image is the floor (cae at 1024²: 1.56). Tiles per session run as "
            "on a GPU (the memory budget); on a CPU a run holds at most 256² of input (tile_plan.CPU_RUN_PIXELS).")
    columns = ["package", "halo", "suggested tile (before)", "image", "before", "after", "after: plan"]
    return {"title": "(a) halo overhead: computed / output pixels", "note": note, "columns": columns, "rows": rows}


def _bare_graph_seconds(folder: Path, shape: tuple[int, int], frames: int) -> float:
    """The graph ``selfden infer`` runs (the package's core network), alone on the tiles it plans for
    ``frames`` frames of ``shape``: the same session runs, without reading, normalising, tiling,
    blending or writing."""
    import math

    from selfden.inference.loading import load_predictor

    predictor = load_predictor(folder, device="cpu")
    plan = predictor.plan(shape)
    tiles = frames * plan.n_tiles
    batch = np.random.default_rng(0).normal(size=(plan.batch, 1, *plan.input_shape)).astype(np.float32)
    start = time.perf_counter()
    for run in range(math.ceil(tiles / plan.batch)):
        count = min(plan.batch, tiles - run * plan.batch)
        predictor.runner.run(batch[:count])
    return time.perf_counter() - start


def _infer_seconds(folder: Path, stack: np.ndarray) -> float:
    from selfden.inference.running import denoise_files

    with tempfile.TemporaryDirectory() as temp:
        np.save(Path(temp) / "in.npy", stack)
        start = time.perf_counter()
        denoise_files(folder, [Path(temp) / "in.npy"], Path(temp) / "out.npy", device="cpu")
        return time.perf_counter() - start


def speed_table(sizes: list[int], frames_small: int = 32) -> dict[str, Any]:
    rows = []
    for folder in packages():
        for size in sizes:
            frames = frames_small if size <= 256 else 1
            stack = np.random.default_rng(0).normal(size=(frames, size, size)).astype(np.float32)
            megapixels = frames * size * size / 1e6
            rounds = 2 if size <= 1024 else 1  # best of two, alternating: one run is noisy on a shared machine
            infer = bare = 0.0
            for _ in range(rounds):
                infer = max(infer, megapixels / _infer_seconds(folder, stack))
                bare = max(bare, megapixels / _bare_graph_seconds(folder, (size, size), frames))
            rows.append([folder.name, f"{frames}x{size}²", infer, bare, infer / bare])
    columns = ["package", "image", "selfden infer Mpx/s", "bare graph Mpx/s", "ratio"]
    note = ("CPUExecutionProvider, default threads; selfden infer end to end (.npy in and out, normalisation, "
            "tiling, blending) vs the same graph alone on the same planned tiles (batch as planned); best of "
            "two alternating rounds up to 1024², one at 4096².")
    return {"title": "(b) selfden infer vs the bare graph", "note": note, "columns": columns, "rows": rows}


def markdown(table: dict[str, Any]) -> str:
    cells = [table["columns"], ["---"] * len(table["columns"])]
    cells += [[f"{c:.2f}" if isinstance(c, float) else str(c) for c in row] for row in table["rows"]]
    return "\n".join("| " + " | ".join(map(str, row)) + " |" for row in cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time", action="store_true", help="also measure megapixels/s (loads the CPU for minutes)")
    parser.add_argument("--time-sizes", type=int, nargs="+", default=[128, 1024], help="image sides for --time")
    parser.add_argument("--no-save", action="store_true", help="print only; leave results/ and RESULTS.md alone")
    args = parser.parse_args()
    tables = [overhead_table()] + ([speed_table(args.time_sizes)] if args.time else [])
    print("\n\n".join(markdown(t) for t in tables))
    if not args.no_save:
        common.save_speed_record("tiling_overhead", "Tiling: halo overhead per image size", tables, "tiling_overhead.py")

if __name__ == "__main__":
    main()
