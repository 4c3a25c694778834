"""COSDD end to end on a 1024² frame: `selfden infer` now against the version issue 16 measured.

Both run as a user runs them, ``python -m selfden infer PACKAGE frame.tif -o out.tif`` in a
fresh process (package loading, tiling, writing included), one after the other on the same frame:

- **then**: a checkout of the commit current when issue 16 was filed (``--then-tree``; 65e41b4:
  one 256² tile size for every image, Softplus in the graphs, one sampler graph run per sample)
  with its own ``bioimage_models/cosdd-stripe``;
- **now**: this checkout with ``bioimage_models/cosdd-stripe`` (the same architecture on the same
  suite, trained longer and exported as today's code does: split sampler, two-conv gates, 8
  antithetic samples by default) and ``bioimage_models/cosdd-stem-pt`` (the same architecture).

The direct denoiser runs once each. The MMSE with the default sample count of the time (32) runs in
full now, and so does the MMSE with each package's own default now (``config.selfden.default_samples``:
8 antithetic samples for split packages exported since they were measured to match 100 independent
ones); then, 32 samples took ~15 minutes, so it is timed at 1 and ``--then-samples`` samples and
extrapolated linearly to 32 (the per-sample cost is the slope). Timed: run it alone.

    git worktree add --detach benchmarks/_work/today 65e41b4
    python benchmarks/cosdd_end_to_end.py --then-tree benchmarks/_work/today
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common  # benchmarks/common.py (the script's folder is on sys.path)
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLES = 32


def infer_seconds(tree: Path, package: Path, frame: Path, samples: int | None) -> float:
    """Wall seconds of one ``selfden infer`` process of the code in ``tree``."""
    with tempfile.TemporaryDirectory() as temp:
        command = [sys.executable, "-m", "selfden", "infer", str(package), str(frame), "-o", f"{temp}/out.tif"]
        command += ["--samples", str(samples)] if samples else []
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, capture_output=True)
        return time.perf_counter() - start


def package_default_samples(package: Path) -> int:
    """The sample count ``selfden infer --std`` draws for ``package`` (its rdf's default_samples)."""
    import yaml

    rdf = yaml.safe_load((package / "rdf.yaml").read_text())
    return int(rdf["config"]["selfden"].get("default_samples", DEFAULT_SAMPLES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--then-tree", type=Path, required=True, help="checkout of the commit issue 16 measured (65e41b4)")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--then-samples", type=int, default=3, help="samples timed with the old code (default 3)")
    parser.add_argument("--also", type=Path, action="append", default=[],
                        help="another COSDD package to time now (e.g. a run's model/ of a newer layout)")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    import tifffile

    with tempfile.TemporaryDirectory() as temp:
        frame = Path(temp) / "frame.tif"
        rng = np.random.default_rng(0)
        tifffile.imwrite(frame, (1000 + 200 * rng.standard_normal((args.size, args.size))).astype(np.float32))
        then_package = args.then_tree / "bioimage_models" / "cosdd-stripe"
        now = {name: REPO / "bioimage_models" / name for name in ("cosdd-stripe", "cosdd-stem-pt")}
        now.update({str(path): path for path in args.also})
        megapixels = args.size**2 / 1e6
        then_direct = infer_seconds(args.then_tree, then_package, frame, None)
        print(f"then direct: {then_direct:.1f} s", flush=True)
        one = infer_seconds(args.then_tree, then_package, frame, 1)
        several = infer_seconds(args.then_tree, then_package, frame, args.then_samples)
        per_sample = (several - one) / (args.then_samples - 1)
        then_mmse = one + (DEFAULT_SAMPLES - 1) * per_sample
        print(f"then MMSE: 1 sample {one:.1f} s, {args.then_samples} samples {several:.1f} s -> {DEFAULT_SAMPLES}: {then_mmse:.0f} s", flush=True)
        rows: list[list[Any]] = [["then: cosdd-stripe @ issue 16", "direct", then_direct, megapixels / then_direct, 1.0],
                                 ["then: cosdd-stripe @ issue 16", f"MMSE-{DEFAULT_SAMPLES} (extrapolated)", then_mmse,
                                  megapixels / then_mmse, 1.0]]  # fmt: skip
        for name, package in now.items():
            direct = infer_seconds(REPO, package, frame, None)
            mmse = infer_seconds(REPO, package, frame, DEFAULT_SAMPLES)
            rows += [[f"now: {name}", "direct", direct, megapixels / direct, then_direct / direct],
                     [f"now: {name}", f"MMSE-{DEFAULT_SAMPLES}", mmse, megapixels / mmse, then_mmse / mmse]]  # fmt: skip
            print(f"now {name}: direct {direct:.1f} s, MMSE {mmse:.1f} s", flush=True)
            own = package_default_samples(package)
            if own != DEFAULT_SAMPLES:
                mmse = infer_seconds(REPO, package, frame, own)
                rows.append([f"now: {name}", f"MMSE-{own} (the package's default)", mmse, megapixels / mmse,
                             then_mmse / mmse])
                print(f"now {name}: MMSE-{own} {mmse:.1f} s", flush=True)
    columns = ["package and code", "estimate", f"s per {args.size}² frame", "Mpx/s", "speed-up over then"]
    note = (
        f"one {args.size}² float32 frame, `selfden infer` in a fresh process each (load, tile, run, write), "
        f"CPUExecutionProvider, default threads; then = commit 65e41b4 ({args.then_tree}); then's MMSE timed at 1 "
        f"and {args.then_samples} samples ({per_sample:.1f} s per extra sample) and extrapolated to {DEFAULT_SAMPLES}."
    )
    table = {"title": f"(a) COSDD per {args.size}² frame, now vs when issue 16 was filed", "note": note,
             "columns": columns, "rows": rows}  # fmt: skip
    for row in rows:
        print("  ", " | ".join(f"{c:.3g}" if isinstance(c, float) else str(c) for c in row))
    if not args.no_save:
        common.save_speed_record("cosdd_end_to_end", "COSDD end to end: now vs issue 16", [table], "cosdd_end_to_end.py")

if __name__ == "__main__":
    main()
