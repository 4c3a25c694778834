"""dnnet on BSD68 with Gaussian noise (sigma 25 on the 0-255 scale), trained on the noisy test
images themselves (no clean image used), scored as the literature scores it.

The 68 test images of the Berkeley segmentation set (as used by DnCNN and Noise2Void) are not
shipped: give the folder, e.g. ``testsets/BSD68`` of the public cszn/DnCNN repository (the
images are for research use only; see the Berkeley set's licence). Noise is drawn once with
``--seed`` and not clipped; the denoised images are clipped to [0, 255] and scored by plain
PSNR with data range 255, averaged over the 68 images.

Quality against training time: every checkpoint the run writes (one a minute) is copied aside
while it trains, and after training each copy's D-net denoises the 68 images in torch (the
same network the package runs; it agrees with onnxruntime to 1e-4). The final number comes
from the exported package through ``selfden infer``, with and without ``--tta``.

    python benchmarks/bsd68.py IMAGES --minutes 30
    python benchmarks/bsd68.py IMAGES --minutes 10 --set lr_schedule=cosine --label cosine --threads 1
    python benchmarks/bsd68.py IMAGES --steps 20 --images 4 --no-tta --label smoke   # smoke test
    python benchmarks/bsd68.py IMAGES --resume WORK/run --minutes 0 --steps 5000 --label longer   # train on
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

import common
import quality
from snapshots import Snapshots, at_marks, load_snapshots

#: Published BSD68 sigma-25 numbers (PSNR, dB): the ones issue 20 names, from each method's paper.
PUBLISHED = (
    ("BM3D (Dabov et al. 2007; as reported by Krull et al. 2019)", 28.57),
    ("Noise2Void (Krull et al., CVPR 2019)", 27.71),
    ("Noise2Same (Xie et al., NeurIPS 2020)", 27.95),
    ("DnCNN, supervised (Zhang et al. 2017)", 29.23),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder of the 68 BSD68 PNG images")
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget (wall clock; 0: steps only)")
    parser.add_argument("--steps", type=int, default=None, help="step budget (with --minutes: whichever first)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="dnnet option (repeatable), e.g. noise_model=gaussian")
    parser.add_argument("--patch-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--images", type=int, default=None, help="only the first N images (smoke tests)")
    parser.add_argument("--seed", type=int, default=0, help="noise and training seed")
    parser.add_argument("--label", default="default", help="name of this variant in RESULTS.md")
    parser.add_argument("--resume", type=Path, default=None,
                        help="continue this earlier run folder to the new --minutes (its budget counts)")
    parser.add_argument("--no-tta", dest="tta", action="store_false",
                        help="skip the --tta score (8 orientations: 8x the inference time)")
    parser.add_argument("--untimed", action="store_true",
                        help="shared the CPU with other work: leave the seconds per image out of the record")
    parser.add_argument("--score", type=Path, default=None, metavar="WORK",
                        help="score an earlier finished run's folder (WORK/run, WORK/snapshots) without training")
    parser.add_argument("--marks", default="2,5,10,15,20,30,45,60,90,120",
                        help="minutes at which the curve scores the latest snapshot")
    parser.add_argument("--tta-marks", default="",
                        help="minutes at which the curve also scores the 8-orientation average (8x the time each)")
    parser.add_argument("--out", type=Path, default=common.BENCH_DIR / "_work" / "bsd68")
    return parser.parse_args(argv)


# --- data -----------------------------------------------------------------------------------------


def load_clean(folder: Path, limit: int | None) -> list[tuple[str, np.ndarray]]:
    from PIL import Image

    paths = sorted(folder.glob("*.png"))[:limit]
    if not paths:
        raise SystemExit(f"{folder}: no PNG images; give the BSD68 folder (e.g. cszn/DnCNN testsets/BSD68)")
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append((path.stem, np.asarray(image.convert("L"), dtype=np.float32)))
    return images


def write_noisy(clean: list[tuple[str, np.ndarray]], sigma: float, seed: int, folder: Path) -> list[Path]:
    """One float32 TIFF per image: clean + N(0, sigma^2), unclipped, the same draws for a given seed."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for name, image in clean:
        noisy = image + rng.normal(0.0, sigma, image.shape).astype(np.float32)
        path = folder / f"{name}.tif"
        tifffile.imwrite(path, noisy.astype(np.float32))
        paths.append(path)
    return paths


def psnr_255(estimate: np.ndarray, clean: np.ndarray) -> float:
    mse = float(np.mean((np.clip(estimate, 0.0, 255.0) - clean) ** 2))
    return 10.0 * np.log10(255.0**2 / mse)


# --- training with snapshots ------------------------------------------------------------------------


def train(paths: list[Path], args: argparse.Namespace, run_dir: Path) -> Any:
    from selfden.runs.config import load_run_config
    from selfden.runs.plan import new_run_config, plan_run
    from selfden.runs.train import train_run

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    trainer = {"device": "cpu", "max_minutes": args.minutes or None, "max_steps": args.steps}
    if args.resume is not None:
        config = load_run_config(run_dir)
        config = config.model_copy(update={"trainer": config.trainer.model_copy(update=trainer)})
    else:
        options = quality.method_options("dnnet", args.sets)
        data = {k: v for k, v in {"patch_size": args.patch_size, "batch_size": args.batch_size}.items() if v}
        # plan_run: the method's look at the images (noise correlation, clip levels), as `selfden train`
        config = plan_run(new_run_config("dnnet", paths, options, data, trainer, args.seed)).config
    watcher = Snapshots(run_dir, run_dir.parent / "snapshots")
    watcher.start()
    try:
        result = train_run(config, run_dir, resume=args.resume is not None)
    finally:
        watcher.done.set()
        watcher.join()
    return config, result


def denoise_torch(method: Any, image: np.ndarray, tta: bool) -> np.ndarray:
    """The D-net on one normalised image; with ``tta`` the mean over the 8 flips and quarter turns
    (``selfden infer --tta``'s own self-ensemble)."""
    import torch

    from selfden.geometry.orientations import DIHEDRAL, IDENTITY_ONLY, running_mean, self_ensemble

    def predict(view: np.ndarray) -> np.ndarray:
        return method.denoise(torch.from_numpy(view)[None, None].float())[0].numpy()

    return self_ensemble(image, predict, DIHEDRAL if tta else IDENTITY_ONLY, running_mean)[0]


def curve(run_dir: Path, config: Any, noisy: list[np.ndarray], clean: list[np.ndarray],
          marks: list[float], tta_marks: list[float]) -> list[list[Any]]:
    """(minutes, steps, PSNR, PSNR with tta or None) at each mark: the last checkpoint by then, its D-net in torch."""
    import torch

    from selfden.methods import get_method

    norm = config.normalisation
    saved = load_snapshots(run_dir.parent / "snapshots")
    tta_steps = {checkpoint["step"] for checkpoint in at_marks(saved, tta_marks)} if tta_marks else set()
    rows = []
    for checkpoint in at_marks(saved, marks + tta_marks):
        method = get_method("dnnet")(config.method_config, norm, torch.device("cpu"))
        method.load_state_dict(checkpoint["method"])
        scores: dict[bool, float | None] = {}
        for tta in (False, True):
            if tta and checkpoint["step"] not in tta_steps:
                scores[tta] = None
                continue
            scores[tta] = float(np.mean([
                psnr_255(denoise_torch(method, (image - norm.offset) / norm.scale, tta) * norm.scale + norm.offset, truth)
                for image, truth in zip(noisy, clean)]))
        rows.append([checkpoint["elapsed_seconds"] / 60, checkpoint["step"], scores[False], scores[True]])
        print(f"  {rows[-1][0]:6.1f} min, step {rows[-1][1]:6d}: {scores[False]:.2f} dB"
              + (f", --tta {scores[True]:.2f} dB" if scores[True] is not None else ""))
    return rows


def packaged(model_dir: Path, paths: list[Path], clean: list[np.ndarray], out: Path, tta: bool) -> tuple[float, float]:
    """Mean PSNR of the exported package through selfden infer, and its seconds per image."""
    from selfden.inference.running import denoise_files

    start = time.perf_counter()
    outputs = denoise_files(model_dir, paths, out, device="cpu", tta=tta)
    seconds = (time.perf_counter() - start) / len(paths)
    scores = [psnr_255(quality.read_stack(p)[0], truth) for p, truth in zip(outputs, clean)]
    return float(np.mean(scores)), seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    images = load_clean(args.folder.resolve(), args.images)
    clean = [image for _, image in images]
    folder = args.score or (args.resume.parent if args.resume else None)
    work = (folder or args.out / f"{args.label}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    paths = write_noisy(images, args.sigma, args.seed, work / "noisy")
    noisy = [quality.read_stack(p)[0] for p in paths]
    noisy_psnr = float(np.mean([psnr_255(n, c) for n, c in zip(noisy, clean)]))
    print(f"{len(paths)} images, sigma {args.sigma}: noisy {noisy_psnr:.2f} dB")
    if args.score is not None:
        config, result = quality.finished_run(work / "run")
    else:
        config, result = train(paths, args, work / "run")
    if result.model_dir is None:
        raise SystemExit(f"training in {work / 'run'} was interrupted; nothing to score")
    from selfden.runs.config import load_run_config

    config = load_run_config(work / "run")
    print("quality against training time (last checkpoints, torch):")
    marks = [float(m) for m in args.marks.split(",") if m]
    rows = curve(work / "run", config, noisy, clean, marks, [float(m) for m in args.tta_marks.split(",") if m])
    scored = work / f"scored-{time.strftime('%Y%m%d-%H%M%S')}"  # a new folder: selfden infer never replaces files
    plain, seconds = packaged(result.model_dir, paths, clean, scored / "denoised", tta=False)
    tta, tta_seconds = (packaged(result.model_dir, paths, clean, scored / "denoised_tta", tta=True) if args.tta
                        else (None, None))
    print(f"package ({result.steps} steps, {result.elapsed_seconds / 60:.1f} min): {plain:.2f} dB"
          + (f", --tta {tta:.2f} dB" if tta is not None else ""))
    settings = quality._settings("dnnet", config, quality.method_options("dnnet", args.sets), args.threads)
    tables = [
        {"title": f"{args.label}: the exported package through selfden infer", "note": (
            f"dnnet {settings}; {len(paths)} images, sigma {args.sigma:g}, noise seed {args.seed}; trained "
            f"{result.elapsed_seconds / 60:.1f} min, {result.steps} steps, cpu; plain PSNR on 0-255 (output "
            "clipped), mean over images. Published numbers from the papers, not rerun here."),
         "columns": ["denoiser", "PSNR dB", "s per image"],
         "rows": [["noisy input", noisy_psnr, None], ["selfden dnnet", plain, None if args.untimed else seconds],
                  *([["selfden dnnet --tta", tta, None if args.untimed else tta_seconds]] if tta is not None else []),
                  *([name, value, None] for name, value in PUBLISHED)]},
        {"title": f"{args.label}: quality against training time", "note": (
            "the last checkpoint by each mark, its D-net in torch; --tta: the mean over the 8 flips and quarter "
            "turns, at the marks asked for; minutes are wall clock (training's own, resumes included)"),
         "columns": ["minutes", "steps", "PSNR dB", "PSNR --tta dB"], "rows": rows},
    ]
    common.save_speed_record(f"bsd68__{args.label}", f"dnnet on BSD68, sigma 25 ({args.label})", tables, "bsd68.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
