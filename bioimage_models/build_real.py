"""Build the one shipped package trained on real frames: COSDD on low-dose HAADF STEM of Pt on carbon.

The frames (``../shared/data/stem_pt_experimental.tif``: 100 frames of 128x128, uint16, from the
public repository fengwang/nn-denoising, AGPL-3.0) have no ground truth, so the package is scored
by the consecutive-frame similarity (CSS, ``selfden.metrics.css``) on frames held out of training:

1. the first frames train, the last ``--held-out`` frames (default 20) are kept for scoring;
2. ``selfden train cosdd TRAIN.tif -o run`` (direction measured from the data), or ``--from-run``;
3. ``selfden infer run HELD_OUT.tif``; CSS and the row-streak index of the raw, denoised and
   Gaussian-blurred held-out frames (a blur raises CSS too, at the cost of resolution: it is shown
   for scale, not as a target);
4. ``selfden export`` with the data's origin and licence, the scores as the README's Validation,
   then validation; the record goes into ``packages.json`` and ``build.py``'s README.

Usage (repository root)::

    python bioimage_models/build_real.py [--minutes 20] [--from-run RUN --trained-by "COMMAND"]
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from build import HERE, REPO, _parse_training, _run_progress, _selfden, _shown, export_and_validate, failed
from catalogue import load_records, render_readme, save_records

sys.path.insert(0, str(REPO / "benchmarks"))
from stem_frames import row_streak_index  # noqa: E402

NAME = "cosdd-stem-pt"
DATA = REPO.parent / "shared" / "data" / "stem_pt_experimental.tif"
TRAIN_OPTIONS = ("--size", "tiny", "--patch-size", "64", "--batch-size", "4")
BLUR_SIGMAS = (1.0, 2.0)
METADATA = {
    "name": "COSDD denoiser for low-dose HAADF STEM of Pt on carbon (real frames)",
    "description": "COSDD trained on 80 real high-frame-rate HAADF STEM frames of Pt atoms and clusters on "
    "carbon: strong shot noise and horizontal scan-line noise. Scored on 20 held-out frames by "
    "consecutive-frame similarity; retrain on your own frames for other samples or doses.",
    "tags": ["electron-microscopy", "stem", "haadf", "shot-noise", "row-correlated-noise", "real-data"],
}
TRAINING_DATA = (
    "Frames 0-{last} of `stem_pt_experimental.tif`: HAADF STEM of Pt atoms and clusters on a carbon film, "
    "recorded at a high frame rate (100 frames of 128x128, uint16): very low dose, strong shot noise and "
    "horizontal (row-correlated) scan-line noise; no clean reference exists. Frames {first_held}-99 were "
    "held out of training and score the model (Validation). Origin: the public repository "
    "fengwang/nn-denoising (electron microscopy group, Empa), licence AGPL-3.0; the test and sample tensors "
    "and the cover of this package are crops of those frames and stay under that licence."
)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.data.is_file():
        print(f"{args.data}: not found; give the STEM frames with --data (see shared/data/README.md)")
        return 1
    output = Path(args.output).resolve()
    records = load_records(output)
    with tempfile.TemporaryDirectory(prefix=f"selfden-build-{NAME}-") as temp:
        work = Path(args.work or temp) / NAME
        record = build(args, output / NAME, work)
    records[NAME] = record
    save_records(output, records)
    (output / "README.md").write_text(render_readme(records), encoding="utf-8")
    print(f"wrote {output / 'README.md'}", flush=True)
    return 0 if record["ok"] else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the STEM frames (default: ../shared/data/...)")
    parser.add_argument("--held-out", type=int, default=20, help="last frames kept out of training (default 20)")
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--output", default=str(HERE), help="where the package, packages.json and README.md go")
    parser.add_argument("--from-run", type=Path, help="package this finished run (trained on the same split)")
    parser.add_argument("--trained-by", help="with --from-run: the command that trained it (recorded)")
    parser.add_argument("--work", help="keep the split, run and denoised frames here (default: a temp folder)")
    return parser


def build(args: argparse.Namespace, package: Path, work: Path) -> dict[str, Any]:
    """Split, train, score on the held-out frames, export and validate; returns the package's record."""
    import tifffile

    work.mkdir(parents=True, exist_ok=True)
    frames = tifffile.imread(args.data)
    first_held = len(frames) - args.held_out
    train_file, held_file = work / f"stem_pt_frames_00-{first_held - 1}.tif", work / f"stem_pt_frames_{first_held}-99.tif"
    tifffile.imwrite(train_file, frames[:first_held], imagej=True)
    tifffile.imwrite(held_file, frames[first_held:], imagej=True)
    train = ["train", "cosdd", train_file.name, "-o", "run", "--minutes", f"{args.minutes:g}",
             "--seed", str(args.seed), "--device", args.device, *TRAIN_OPTIONS]  # fmt: skip
    infer = ["infer", "run", held_file.name, "-o", "denoised.tif", "--device", args.device]
    record: dict[str, Any] = {
        "name": NAME, "method": "cosdd", "real": True, "minutes": args.minutes, "ok": False,
        "data": f"{len(frames)} real HAADF STEM frames 128x128 of Pt on carbon ({args.data.name}); "
                f"frames 0-{first_held - 1} train, {first_held}-{len(frames) - 1} are held out for scoring",
        "commands": [_shown(train), _shown(infer)],
    }  # fmt: skip
    if args.from_run:
        (work / "run").symlink_to(args.from_run.resolve(), target_is_directory=True)
        record["commands"][0] = args.trained_by or f"(trained elsewhere: {args.from_run})"
    try:
        record.update(_run_progress(work / "run") if args.from_run else _parse_training(_selfden(train, work)))
        record["built"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        _selfden(infer, work)
        record.update(held_out_scores(frames[first_held:], tifffile.imread(work / "denoised.tif")))
        export = ["export", "run", "-o", package, "--validation", validation_text(record, args.held_out),
                  *_metadata_options(first_held)]  # fmt: skip
        export_and_validate(export, package, work, record)
    except subprocess.CalledProcessError as error:
        return failed(record, error)
    return record


def held_out_scores(raw: np.ndarray, denoised: np.ndarray) -> dict[str, float]:
    """CSS and row-streak index of the raw, denoised and blurred held-out frames."""
    from scipy.ndimage import gaussian_filter

    from selfden.metrics import css

    raw = np.asarray(raw, dtype=np.float32)
    estimates = {"raw": raw, "denoised": np.asarray(denoised, dtype=np.float32).reshape(raw.shape)}
    for sigma in BLUR_SIGMAS:
        estimates[f"blur{sigma:g}"] = np.stack([gaussian_filter(f, sigma) for f in raw])
    scores: dict[str, float] = {}
    for name, stack in estimates.items():
        scores[f"css_{name}"] = round(css(stack), 3)
        scores[f"streaks_{name}"] = round(row_streak_index(stack), 2)
    return scores


def validation_text(record: dict[str, Any], held_out: int) -> str:
    blurs = ", ".join(f"Gaussian blur sigma {s:g} px {record[f'css_blur{s:g}']:.3f}" for s in BLUR_SIGMAS)
    return (
        f"Consecutive-frame similarity (CSS: mean SSIM of consecutive frames; higher means more of what repeats "
        f"from frame to frame, i.e. structure, and less noise) on the {held_out} frames held out of training, "
        f"`selfden infer` on every frame: raw {record['css_raw']:.3f} -> denoised {record['css_denoised']:.3f} "
        f"(for scale: {blurs}; a blur raises CSS at the cost of resolution). Row-streak index (about 1 "
        f"without scan-line streaks): raw {record['streaks_raw']:.2f} -> denoised {record['streaks_denoised']:.2f}."
    )


def _metadata_options(first_held: int) -> list[str]:
    options = ["--name", METADATA["name"], "--description", METADATA["description"]]
    for tag in METADATA["tags"]:
        options += ["--tag", tag]
    return options + ["--training-data", TRAINING_DATA.format(last=first_held - 1, first_held=first_held)]


if __name__ == "__main__":
    sys.exit(main())
