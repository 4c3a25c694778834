"""Does COSDD's after-training verdict tell the truth? The blind-row estimate against the clean image.

After training, ``selfden train cosdd`` compares its direct denoiser with the best Gaussian blur
without a clean image: whole rows hidden, each predicted from the other rows
(``selfden.methods.cosdd.blind_check``). This scores that estimate against the truth on the
stripe suite: for every snapshot of a trajectory run (``cosdd_trajectory.py`` keeps them) and
its final weights, the estimated gain (blur's blind-row error minus the denoiser's) beside the
true gain (best blur's squared error against the clean crops minus the direct denoiser's; the
blur's sigma chosen on the truth, so the true gain is the harder bar).

    python benchmarks/cosdd_verdict.py --trajectory benchmarks/_work/stripe-64f/trajectory-LABEL-DATE
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import common

#: Crops scored: 64² from the stripe frames at fixed places (the trainer's validation crops are 64² too).
CROPS, CROP = 32, 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trajectory", type=Path, action="append", default=[],
                        help="a cosdd_trajectory.py folder (run/ and snapshots/; the suite's data/ beside it)")
    parser.add_argument("--real", nargs=2, type=Path, action="append", default=[], metavar=("RUN", "STACK"),
                        help="also: the verdict alone (no truth exists) of a trained run on frames of a real stack")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not args.trajectory:
        parser.error("give at least one --trajectory")
    return args


def crops(stack: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    frames = rng.integers(0, stack.shape[0], CROPS)
    ys = rng.integers(0, stack.shape[1] - CROP + 1, CROPS)
    xs = rng.integers(0, stack.shape[2] - CROP + 1, CROPS)
    return np.stack([stack[f, y : y + CROP, x : x + CROP] for f, y, x in zip(frames, ys, xs)])


def score(trajectory: Path) -> list[list[object]]:
    import tifffile
    import torch
    from scipy.ndimage import gaussian_filter

    from selfden.methods.blind_check import hidden_line_scores, hidden_unit
    from selfden.runs.weights import load_method

    data = trajectory.parent / "data"
    noisy = crops(tifffile.imread(data / "stripe_noisy.tif").astype(np.float32), np.random.default_rng(0))
    clean = crops(tifffile.imread(data / "stripe_clean.tif").astype(np.float32), np.random.default_rng(0))
    method = load_method(trajectory / "run")
    norm = method.normalisation
    x = torch.from_numpy((noisy - norm.offset) / norm.scale)[:, None]
    truth = torch.from_numpy((clean - norm.offset) / norm.scale)[:, None]
    best_blur = min(float(((torch.from_numpy(gaussian_filter(x.numpy(), (0, 0, s, s))) - truth) ** 2).mean())
                    for s in np.geomspace(0.3, 6.0, 24))  # fmt: skip
    states = sorted((trajectory / "snapshots").glob("snapshot-*.pt")) + [trajectory / "run" / "checkpoints" / "last.pt"]
    rows, seen = [], set()
    for path in states:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["step"] in seen:  # the last snapshot is often last.pt itself
            continue
        seen.add(state["step"])
        method.load_state_dict(state["method"])
        estimate = hidden_line_scores(method.denoise, [x[:16], x[16:]], hidden_unit(method.config.direction))
        with torch.no_grad():
            true_mse = float(((method.denoise(x) - truth) ** 2).mean())
        true_gain = best_blur - true_mse
        rows.append([trajectory.name, int(state["step"]), f"{estimate.gain:.4f}", f"{true_gain:.4f}",
                     "yes" if (estimate.gain > 0) == (true_gain > 0) else "NO"])
    return rows


def real_rows(run: Path, stack: Path) -> list[list[object]]:
    """The verdict on crops of a real stack (no clean image): estimated gain only."""
    import tifffile
    import torch

    from selfden.methods.blind_check import hidden_line_scores, hidden_unit
    from selfden.runs.weights import load_method

    method = load_method(run)
    norm = method.normalisation
    x = torch.from_numpy((crops(tifffile.imread(stack).astype(np.float32), np.random.default_rng(0)) - norm.offset)
                         / norm.scale)[:, None]
    estimate = hidden_line_scores(method.denoise, [x[:16], x[16:]], hidden_unit(method.config.direction))
    return [[f"{run} on {stack.name}", method_step(run), f"{estimate.gain:.4f}", "(no clean image)",
             "warns" if estimate.gain <= 0 else "beats the blur"]]


def method_step(run: Path) -> int:
    import torch

    return int(torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["step"])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = [row for trajectory in args.trajectory for row in score(trajectory)]
    rows += [row for run, stack in args.real for row in real_rows(run, stack)]
    for row in rows:
        print(*row, sep="\t", flush=True)
    note = (f"{CROPS} crops {CROP}x{CROP} of the stripe suite (fixed places), normalised units. Estimated gain: the "
            "best row-blind blur's blind-row error minus the direct denoiser's (no clean image; the verdict "
            "selfden train prints). True gain: the best blur's squared error against the clean crops (sigma chosen "
            "on the truth) minus the direct denoiser's. Verdict right: both gains have the same sign. Rows for real "
            "stacks (--real) have no truth: the verdict alone, on the same kind of crops.")
    table = {"title": "blind-row estimate against the truth", "note": note,
             "columns": ["run", "step", "estimated gain", "true gain", "verdict right"], "rows": rows}
    common.save_speed_record("cosdd_verdict", "COSDD: the after-training verdict against the truth", [table],
                             "cosdd_verdict.py")


if __name__ == "__main__":
    sys.exit(main())
