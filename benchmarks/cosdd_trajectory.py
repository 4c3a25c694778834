"""COSDD's quality against training steps on a suite (stripe by default): how far off is the 2 dB goal?

Trains COSDD with ``selfden train`` (a subprocess, so its CPU threads are its own) for
``--minutes``, copies a periodic checkpoint every 5 minutes of wall time (the trainer rewrites ``last.pt`` every minute)
as it appears, then scores the direct denoiser of every copy on the first ``--frames`` frames
(torch, the run's normalisation; affine PSNR as in quality.py) beside the oracle baselines
tuned on the same frames. Each ``--label`` is one table in RESULTS.md.

    python benchmarks/cosdd_trajectory.py --minutes 60 --threads 1
    python benchmarks/cosdd_trajectory.py --minutes 60 --threads 1 --set free_bits=0 --label free-bits-0
    python benchmarks/cosdd_trajectory.py --run RUN --snapshots DIR --trained-by "COMMAND"  # copies made earlier
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import common
import cosdd_quality
import quality

#: How often to look for a new last.pt (the trainer rewrites it every minute by default).
POLL_SECONDS = 10.0
#: Wall time between kept copies: the trajectory's resolution (the runs in RESULTS.md used 5 minutes).
SNAPSHOT_SECONDS = 300.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="stripe", choices=("stripe", "atoms", "poisson_gaussian"),
                        help="quality.py suite trained on and scored")
    parser.add_argument("--direction", default="x", choices=("x", "y", "none"),
                        help="direction of the correlated noise (none: poisson_gaussian)")
    parser.add_argument("--minutes", type=float, default=60.0, help="training budget")
    parser.add_argument("--steps", type=int, default=None,
                        help="step budget (with --minutes: whichever comes first); equal steps compare quality per step")
    parser.add_argument("--size", default="tiny", help="COSDD size preset")
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="cosdd option")
    parser.add_argument("--augment", choices=("default", "off"), default="default",
                        help="training crops in the method's orientations (default) or as recorded (off)")
    parser.add_argument("--init-from", type=Path, default=None, metavar="RUN",
                        help="start from this cosdd run's networks (selfden train --init-from)")
    parser.add_argument("--seed", type=int, default=None, help="training seed (unset: selfden train draws one)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the training process")
    parser.add_argument("--frames", type=int, default=8, help="frames scored (the first N)")
    parser.add_argument("--label", default="default", help="names this trajectory's table")
    parser.add_argument("--run", type=Path, default=None, help="score a finished run's snapshots instead of training")
    parser.add_argument("--snapshots", type=Path, default=None, help="with --run: folder of its checkpoint copies")
    parser.add_argument("--trained-by", default=None, help="with --run: the command that trained it (recorded)")
    parser.add_argument("--out", type=Path, default=common.BENCH_DIR / "_work")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR)
    parser.add_argument("--results-md", type=Path, default=common.RESULTS_MD)
    args = parser.parse_args(argv)
    if (args.run is None) != (args.snapshots is None) or (args.run is not None and not args.trained_by):
        parser.error("--run, --snapshots and --trained-by go together")
    return args


def train_with_snapshots(noisy_path: Path, folder: Path, args: argparse.Namespace) -> str:
    """Run ``selfden train`` and copy every new ``last.pt`` into ``folder/snapshots``; return the command."""
    run, snapshots = folder / "run", folder / "snapshots"
    snapshots.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "selfden", "train", "cosdd", str(noisy_path), "-o", str(run),
        "--minutes", f"{args.minutes:g}", *(["--steps", str(args.steps)] if args.steps else []),
        *(["--seed", str(args.seed)] if args.seed is not None else []), "--size", args.size, "--direction", args.direction, "--device", "cpu",
        "--patch-size", str(args.patch_size), "--batch-size", str(args.batch_size),
        *(["--no-augment"] if args.augment == "off" else []),
        *(["--init-from", str(args.init_from)] if args.init_from else []),
        *[part for option in args.set for part in ("--set", option)],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.pt"
    seen: float | None = None
    next_copy = time.monotonic() + SNAPSHOT_SECONDS
    while True:
        finished = process.poll() is not None
        due = finished or time.monotonic() >= next_copy
        if due and last.is_file() and last.stat().st_mtime != seen:
            seen, next_copy = last.stat().st_mtime, time.monotonic() + SNAPSHOT_SECONDS
            # last.pt is replaced atomically, so a copy is always a whole checkpoint.
            shutil.copy2(last, snapshots / f"snapshot-{len(list(snapshots.iterdir())):03d}.pt")
        if finished:
            break
        time.sleep(POLL_SECONDS)
    if process.returncode != 0:
        raise SystemExit(f"selfden train failed with exit code {process.returncode}: {' '.join(command)}")
    return " ".join(["OMP_NUM_THREADS=" + str(args.threads), "selfden", *command[3:]])


def score_snapshots(run: Path, snapshots: Path, noisy: np.ndarray, clean: np.ndarray) -> list[list[Any]]:
    """(step, minutes, affine PSNR of the direct denoiser) per snapshot, in training order."""
    import torch

    from selfden.metrics import affine_psnr
    from selfden.runs.config import load_run_config
    from selfden.runs.weights import load_method

    run_config = load_run_config(run)
    method = load_method(run, run_config)
    norm = run_config.normalisation
    batch = torch.from_numpy(((noisy - norm.offset) / norm.scale).astype(np.float32))[:, None]
    rows = []
    for path in sorted(snapshots.glob("*.pt")):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        method.load_state_dict(checkpoint["method"])
        estimate = method.denoise(batch)[:, 0].double().numpy()
        rows.append([int(checkpoint["step"]), checkpoint["elapsed_seconds"] / 60, affine_psnr(estimate, clean)])
        print(f"step {rows[-1][0]:5d} ({rows[-1][1]:.1f} min): direct {rows[-1][2]:.2f} dB")
    return sorted(rows)


def score_package(model: Path, noisy: np.ndarray, clean: np.ndarray, folder: Path) -> tuple[str, float] | None:
    """(what ran, affine PSNR) of the run's exported package through selfden infer with its default samples."""
    import tifffile
    import yaml

    from selfden.inference.running import denoise_files
    from selfden.metrics import affine_psnr

    if not (model / "rdf.yaml").is_file():
        return None
    source, output = folder / "scored_noisy.tif", folder / f"scored_denoised-{time.strftime('%H%M%S')}.tif"
    tifffile.imwrite(source, noisy.astype(np.float32))
    denoise_files(model, [source], output, device="cpu")
    estimate = quality.read_stack(output).astype(np.float64)
    rdf = yaml.safe_load((model / "rdf.yaml").read_text())
    label = f"MMSE-{rdf['config']['selfden'].get('default_samples', '?')}"
    print(f"exported package ({label}): {affine_psnr(estimate, clean):.2f} dB")
    return label, affine_psnr(estimate, clean)


def main(argv: list[str] | None = None) -> int:
    from selfden import synth

    args = parse_args(argv)
    suite = quality.make_suite(args.suite, None)
    if suite is None:
        return 1
    key = quality.suite_key(suite)
    noisy_path, _ = synth.save_synth_set(suite, (args.out / key / "data").resolve())
    if args.run is None:
        folder = (args.out / key / f"trajectory-{args.label}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
        trained_by = train_with_snapshots(noisy_path, folder, args)
        run, snapshots = folder / "run", folder / "snapshots"
        command = common.command_line("cosdd_trajectory.py")
    else:
        run, snapshots, trained_by = args.run, args.snapshots, args.trained_by
        command = f"{common.command_line('cosdd_trajectory.py')}; trained by {trained_by}"
    n = min(args.frames, len(suite.noisy))
    rows = score_snapshots(run, snapshots, suite.noisy[:n], suite.clean[:n])
    mmse = score_package(run / "model", suite.noisy[:n], suite.clean[:n], folder=run.parent)
    subset = type(suite)(name=suite.name, noisy=suite.noisy[:n], clean=suite.clean[:n], description=suite.description)
    references = [[r["name"], r["scores"]["affine_psnr"]] for r in cosdd_quality.subset_baseline_rows(subset)]
    best = max(score for name, score in references if "oracle" in name)
    table = {
        "title": f"COSDD direct denoiser against training steps ({args.label})",
        "note": f"{args.suite} suite, first {n} frames; affine PSNR of the direct denoiser (torch) at each 5-minute "
        f"checkpoint; best oracle baseline on these frames {best:.2f} dB, so the 2 dB goal is "
        f"{best + 2:.2f} dB. Trained by `{trained_by}`.",
        "columns": ["step", "minutes", "direct affine PSNR", "minus best oracle"],
        "rows": [[step, minutes, score, score - best] for step, minutes, score in rows]
        + ([[f"{mmse[0]} (exported package, selfden infer)", rows[-1][1], mmse[1], mmse[1] - best]] if mmse else [])
        + [[name, "", score, score - best] for name, score in references],
    }
    common.save_result({"kind": "speed", "title": f"COSDD: quality against training steps ({args.label})",
                        "command": command, "date": common.today(), "machine": common.machine_description(),
                        "tables": [table]}, f"cosdd__trajectory-{args.label}", args.results_dir)
    common.render_results_md(args.results_dir, args.results_md)
    print(f"wrote {args.results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
