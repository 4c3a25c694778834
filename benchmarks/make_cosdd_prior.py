"""Build selfden's COSDD prior (src/selfden/methods/cosdd/prior_tiny.npz) from procedural scenes.

    python benchmarks/make_cosdd_prior.py --frames 1024 --steps 4000 --threads 2

1. ``selfden.scenes.procedural_stack`` draws the training frames (no benchmark image among them);
2. ``selfden train cosdd`` trains the tiny preset on them from random weights (``--set prior=false``),
   direction x, 64² crops in batches of 4, seed 0;
3. the run's final networks are written as numpy arrays with a JSON description (the arch they
   fit, steps, this command); the SHA-256 printed at the end is what ``prior.PRIOR_SHA256`` pins.

``--from-run RUN`` skips 1-2 and converts a finished run trained that way.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

import common

PRIOR_OPTIONS = ["--size", "tiny", "--direction", "x", "--device", "cpu", "--patch-size", "64", "--batch-size", "4",
                 "--seed", "0", "--set", "prior=false"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1024, help="procedural scenes, 128x128 each")
    parser.add_argument("--steps", type=int, default=4000, help="training steps")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of the training")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more cosdd options")
    parser.add_argument("--from-run", type=Path, default=None, help="convert this finished run instead of training")
    parser.add_argument("--trained-by", default=None, help="with --from-run: the command that trained it (recorded)")
    parser.add_argument("--work", type=Path, default=common.BENCH_DIR / "_work" / "cosdd-prior")
    parser.add_argument("--out", type=Path, default=common.BENCH_DIR.parent / "src" / "selfden" / "methods" / "cosdd" / "prior_tiny.npz")
    return parser.parse_args(argv)


def train(args: argparse.Namespace) -> Path:
    import tifffile

    from selfden.scenes import procedural_stack

    args.work.mkdir(parents=True, exist_ok=True)
    data, run = args.work / "scenes_noisy.tif", args.work / "run"
    noisy, _ = procedural_stack(args.frames)
    tifffile.imwrite(data, noisy)
    command = [sys.executable, "-m", "selfden", "train", "cosdd", str(data), "-o", str(run), "--steps", str(args.steps),
               *PRIOR_OPTIONS, *[part for option in args.set for part in ("--set", option)]]
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    return run


def main(argv: list[str] | None = None) -> int:
    import torch

    from selfden.runs.config import load_run_config
    from selfden.methods.cosdd.prior import save_prior

    args = parse_args(argv)
    run = args.from_run or train(args)
    config = load_run_config(run)
    checkpoint = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    command = "python benchmarks/make_cosdd_prior.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    sha = save_prior(
        args.out, checkpoint["method"]["networks"], config.method_config.arch(),
        steps=int(checkpoint["step"]), frames=args.frames, seed=config.seed, command=command,
        data="selfden.scenes.procedural_stack(frames, 128, seed=1234)",
        training=args.trained_by or f"selfden train cosdd SCENES --steps {args.steps} {shlex.join(PRIOR_OPTIONS)}",
    )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, step {checkpoint['step']}); sha256 {sha}")
    print("pin it: PRIOR_SHA256 in src/selfden/methods/cosdd/prior.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
