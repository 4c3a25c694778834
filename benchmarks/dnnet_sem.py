"""dnnet on a real image without ground truth: the SEM frame in ``../shared/data`` (the Noise2Void
SEM example), judged by what it takes out.

Trains dnnet on the image (as ``selfden train dnnet``), denoises it with the exported package
(as ``selfden infer``) and compares with a Gaussian blur that removes exactly as much
(residual variance matched). A denoiser that keeps fine structure leaves a residual without
structure; a blur leaves edges in it. Two numbers say how much structure a residual holds:

- **structure ratio**: 25 * var(5x5 box mean of the residual) / var(residual): 1 for white
  noise, larger when the residual holds smooth parts of the image;
- **edge correlation**: correlation between the residual's local magnitude (5x5 mean of
  |residual|) and the gradient magnitude of the denoised image: near 0 when the residual does
  not follow edges.

Neither number says which output is closer to the unknown clean image; the **blind-spot score**
does (Noise2Self, Batson & Royer 2019): for a predictor that never sees the pixel it predicts,
with noise independent between pixels and of mean zero, mean((prediction - noisy)²) = mean((prediction
- clean)²) + the noise variance, so the difference of two such scores is the difference of their
true squared errors. Scored here: the trained D-net with each pixel hidden as in training (a grid
of spacing 4 at all 16 offsets: every pixel predicted once without itself) and the Gaussian blur
with its centre weight set to 0 (sigma chosen by the same score, i.e. the best such blur for this
image), over the unsaturated pixels, by ``selfden.methods.blind_score`` (what `selfden train
dnnet` reports on its validation crops after training).

Writes ``figures/dnnet_sem.png`` (noisy, dnnet, blur and both residuals, whole image and a
zoom), ``figures/dnnet_sem_noise_model.png`` and the table in RESULTS.md.

    python benchmarks/dnnet_sem.py --minutes 10
    python benchmarks/dnnet_sem.py --steps 10 --no-record          # smoke test
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

import common
import quality

SEM = common.BENCH_DIR.parent.parent / "shared" / "data" / "sem_validation.tif"
#: Zoomed window of the figure (y, x, side): membranes and round vesicles.
ZOOM = (40, 420, 220)
#: Pixels this close to a saturated one are left out of the residual statistics: where the detector
#: clipped, the data hold no noise to remove and any estimate differs from them by structure.
SATURATION_MARGIN = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--image", type=Path, default=SEM)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-run", type=Path, default=None, help="score this finished run instead of training")
    parser.add_argument("--trained-by", default=None, help="with --from-run: the command that trained the run (recorded)")
    parser.add_argument("--no-record", action="store_true", help="do not write results/ or RESULTS.md")
    parser.add_argument("--label", default="", help="a variant's name: its own figures and RESULTS.md section")
    parser.add_argument("--out", type=Path, default=common.BENCH_DIR / "_work" / "dnnet_sem")
    parser.add_argument("--figures-dir", type=Path, default=common.FIGURES_DIR)
    return parser.parse_args(argv)


def box_mean(image: np.ndarray, size: int = 5) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    return uniform_filter(image, size, mode="reflect")


def unsaturated(noisy: np.ndarray) -> np.ndarray:
    """Pixels at least SATURATION_MARGIN px from any pixel at the image's maximum or minimum."""
    from scipy.ndimage import binary_dilation

    clipped = (noisy >= noisy.max()) | (noisy <= noisy.min())
    return ~binary_dilation(clipped, iterations=SATURATION_MARGIN)


def structure_ratio(residual: np.ndarray, keep: np.ndarray, size: int = 5) -> float:
    """size² · var(box mean) / var over ``keep``: 1 for white noise, above 1 when the residual holds
    smooth parts of the image (below 1 for a high-passed residual such as a blur's)."""
    smooth = box_mean(residual, size)[keep]
    return float(size**2 * smooth.var() / residual[keep].var())


def edge_correlation(residual: np.ndarray, denoised: np.ndarray, keep: np.ndarray) -> float:
    """Correlation over ``keep`` between the residual's local magnitude and the output's gradient."""
    from scipy.ndimage import sobel

    gradient = np.hypot(sobel(denoised, 0), sobel(denoised, 1))
    return float(np.corrcoef(box_mean(np.abs(residual))[keep], gradient[keep])[0, 1])


#: Grid spacing of the blind-spot score: each of its SPACING² offsets hides one pixel in SPACING² (as training's 3-5).
SPACING = 4


def blind_dnnet(run_dir: Path, noisy: np.ndarray) -> np.ndarray:
    """Every pixel predicted by the run's D-net with that pixel hidden as in training (raw units)."""
    import torch

    from selfden.methods.dnnet.masking import apply_mask
    from selfden.methods.padding import pad_to_multiple
    from selfden.runs.weights import load_method

    method = load_method(run_dir)
    norm = method.normalisation
    image = torch.from_numpy(((noisy - norm.offset) / norm.scale).astype(np.float32))[None, None]
    height, width = image.shape[-2:]
    blind = torch.zeros_like(image)
    method.dnet.eval()
    with torch.no_grad():
        for dy in range(SPACING):
            for dx in range(SPACING):
                mask = torch.zeros_like(image, dtype=torch.bool)
                mask[..., dy::SPACING, dx::SPACING] = True
                predicted = method.dnet(pad_to_multiple(apply_mask(image, mask), method.size_step))
                blind[mask] = predicted[..., :height, :width][mask]
    return blind[0, 0].numpy().astype(np.float64) * norm.scale + norm.offset


def matched_blur(noisy: np.ndarray, variance: float, keep: np.ndarray) -> tuple[np.ndarray, float]:
    """The Gaussian blur whose residual variance over ``keep`` equals ``variance`` (bisection on sigma)."""
    from scipy.ndimage import gaussian_filter

    low, high = 0.05, 20.0
    for _ in range(40):
        sigma = 0.5 * (low + high)
        if (noisy - gaussian_filter(noisy, sigma))[keep].var() < variance:
            low = sigma
        else:
            high = sigma
    return gaussian_filter(noisy, sigma), sigma


def train(args: argparse.Namespace, work: Path) -> tuple[Path, Any]:
    from selfden.runs.plan import new_run_config, plan_run
    from selfden.runs.train import train_run

    if args.from_run is not None:
        config, result = quality.finished_run(args.from_run)
        return result.model_dir, result
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    trainer = {"device": "cpu", "max_minutes": args.minutes, "max_steps": args.steps}
    # plan_run: the method's look at the image (clip levels, noise correlation), as `selfden train`
    plan = plan_run(new_run_config("dnnet", [args.image], quality.method_options("dnnet", args.sets), {}, trainer,
                                   args.seed))
    for note in plan.notes:
        print(f"{note.level}: {note.text}")
    result = train_run(plan.config, work / "run")
    if result is None or result.model_dir is None:
        raise SystemExit(f"training in {work / 'run'} was interrupted")
    return result.model_dir, result


def figure(panels: list[tuple[np.ndarray, str]], path: Path) -> Path:
    """Two rows: the whole images, then the zoom window, each panel stretched on its own."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    y, x, side = ZOOM
    fig = Figure(figsize=(3.2 * len(panels), 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(panels), height_ratios=(471 / 1690 * 3.2, 3.2))
    for column, (image, title) in enumerate(panels):
        low, high = np.percentile(image, (0.5, 99.5))
        for row, view in enumerate((image, image[y : y + side, x : x + side])):
            axes[row, column].imshow(view, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            axes[row, column].axis("off")
        axes[0, column].set_title(title, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.image.is_file():
        print(f"{args.image}: not found; this benchmark needs the SEM frame of ../shared/data (skipped)")
        return 0
    from selfden.inference.running import denoise_files
    from selfden.runs.noise_model import noise_model_report

    work = (args.out / time.strftime("%Y%m%d-%H%M%S")).resolve()
    model_dir, result = train(args, work)
    start = time.perf_counter()
    denoised_path = denoise_files(model_dir, [args.image.resolve()], work / "denoised.tif", device="cpu")[0]
    seconds = time.perf_counter() - start
    noisy = quality.read_stack(args.image)[0].astype(np.float64)
    denoised = quality.read_stack(denoised_path)[0].astype(np.float64)
    residual = noisy - denoised
    keep = unsaturated(noisy)
    clipped = float(((noisy >= noisy.max()) | (noisy <= noisy.min())).mean())
    blurred, sigma = matched_blur(noisy, float(residual[keep].var()), keep)
    blur_residual = noisy - blurred
    rows = [
        ["selfden dnnet", float(residual[keep].std()), structure_ratio(residual, keep),
         edge_correlation(residual, denoised, keep)],
        [f"Gaussian blur, sigma {sigma:.2f} px (same residual variance)", float(blur_residual[keep].std()),
         structure_ratio(blur_residual, keep), edge_correlation(blur_residual, blurred, keep)],
    ]
    for row in rows:
        print(f"{row[0]:55} residual std {row[1]:9.1f}  structure ratio {row[2]:5.2f}  edge corr {row[3]:.3f}")
    import torch

    from selfden.methods.blind_score import blind_scores

    def as_batch(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array))[None, None]

    scores = blind_scores([as_batch(noisy)], [as_batch(blind_dnnet(result.run_dir, noisy))], [as_batch(keep)])
    dnnet_score, donut_sigma, donut_score = scores.denoiser, scores.blur_sigma, scores.blur
    blind_rows = [["selfden dnnet (D-net, pixel hidden)", dnnet_score, dnnet_score - donut_score],
                  [f"Gaussian blur without its centre, sigma {donut_sigma:.2f} px (the best)", donut_score, 0.0]]
    for row in blind_rows:
        print(f"{row[0]:55} blind-spot score {row[1]:.5g}  minus the blur's {row[2]:+.4g}")
    panels = [(noisy, "noisy (SEM)"), (denoised, f"dnnet, {result.steps} steps"), (residual, "noisy - dnnet"),
              (blurred, f"Gaussian blur {sigma:.2f} px"), (blur_residual, "noisy - blur")]
    suffix = f"-{args.label}" if args.label else ""
    picture = figure(panels, args.figures_dir / f"dnnet_sem{suffix}.png")
    noise_plot = noise_model_report(result.run_dir, args.figures_dir / f"dnnet_sem{suffix}_noise_model.png",
                                    title="SEM (../shared/data/sem_validation.tif)")
    print(f"figures: {picture}, {noise_plot}")
    if args.no_record:
        return 0
    from selfden.runs.config import load_run_config

    config = load_run_config(result.run_dir)
    note = (f"dnnet {quality._settings('dnnet', config, quality.method_options('dnnet', args.sets), args.threads)}; "
            f"trained {result.elapsed_seconds / 60:.1f} min, {result.steps} steps on the image itself"
            f"{f' (by `{args.trained_by}`)' if args.trained_by else ''}; denoised by "
            f"the package in {seconds:.1f} s. The detector clipped {100 * clipped:.0f}% of the pixels (at the "
            f"image's maximum or minimum); statistics over the {100 * keep.mean():.0f}% at least {SATURATION_MARGIN} px "
            "from any of them. Figures: "
            f"[{picture.name}](figures/{picture.name}), [{noise_plot.name}](figures/{noise_plot.name}).")
    table = {"title": "What the denoiser removes (no ground truth)", "note": note,
             "columns": ["output", "residual std", "structure ratio (1 = white)", "edge correlation"], "rows": rows}
    blind_note = (
        "Blind-spot score (Noise2Self): mean squared difference between each pixel and its prediction made without "
        "it, over the same pixels as above; for zero-mean noise independent between pixels it is the prediction's "
        "true mean squared error plus the noise variance, so the difference of two rows is the difference of their "
        f"true squared errors: here {100 * (dnnet_score - donut_score) / donut_score:+.2f}% of the blur's score "
        f"({'the D-net closer to the truth' if dnnet_score < donut_score else 'the D-net no closer to the truth'}). "
        "The exported D-net sees every pixel; how much that adds cannot be measured without the truth.")
    blind_table = {"title": "Closer to the truth than a blur? (blind-spot score, no ground truth)", "note": blind_note,
                   "columns": ["predictor", "blind-spot score (raw units²)", "minus the blur's"],
                   "rows": blind_rows}
    common.save_speed_record(f"dnnet_sem{suffix}", f"dnnet on a real SEM image{f' ({args.label})' if args.label else ''}",
                             [table, blind_table], "dnnet_sem.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
