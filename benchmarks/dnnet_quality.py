"""dnnet on the synthetic suites: Gaussian vs Gaussian-mixture noise model vs none (Noise2Self),
against the classical baselines, and what a pixel-independent noise model does with streaks.

1. poisson_gaussian suite (white Poisson-Gaussian noise, peak 20, read sigma 0.03): trains each
   ``--noise-models`` variant through ``benchmarks/quality.py``'s path (``selfden.runs`` training,
   ONNX package, ``selfden infer`` denoising), scores it, and compares the learned noise std
   with the true one, sqrt(x / peak + read^2) (figure per variant);
2. stripe suite (the same plus noise correlated along x): trains ``--stripe-model`` and measures
   how much of the stripe component is still in its output (the suite is replayed from its seed to
   recover the stripes), with the figure ``figures/dnnet_vs_stripes.png``;
3. the tile-vs-whole difference of the trained D-net for several halos.

Records go to ``results/`` in quality.py's format (RESULTS.md is regenerated), plus
``results/dnnet__summary.json`` with the noise-model fits, the streak measurement and the halo check.

    python benchmarks/dnnet_quality.py --minutes 20
    python benchmarks/dnnet_quality.py --minutes 1 --noise-models gmm --baselines gaussian   # smoke test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

import common
import quality

NOISE_MODELS = ("gaussian", "gmm", "none")
#: poisson_gaussian suite's noise (synth.poisson_gaussian_suite defaults, the brief's values).
PEAK, READ_SIGMA = 20.0, 0.03
HALOS = (8, 12, 16, 20, 24, 28)
WHEN_TO_PICK = (
    "dnnet models noise that is independent from pixel to pixel (shot + read noise): it removes that and "
    "keeps anything correlated, such as scan streaks, as if it were signal. For streaks or row offsets use "
    "cosdd; for white or signal-dependent noise dnnet (gmm for skewed noise) is the fast choice."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per variant (wall clock)")
    parser.add_argument("--steps", type=int, default=None, help="step budget instead (smoke tests)")
    parser.add_argument("--noise-models", default=",".join(NOISE_MODELS), help="variants on poisson_gaussian")
    parser.add_argument("--stripe-model", default="gmm", help="variant trained on the stripe suite, or none-skip")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="dnnet option for every variant (repeatable), e.g. filters=32")
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 is far faster on a busy shared machine")
    parser.add_argument("--baselines", default="gaussian,nlm,bm3d", help="on poisson_gaussian; comma-separated or none")
    parser.add_argument("--rerun-baselines", action="store_true")
    parser.add_argument("--out", type=Path, default=common.BENCH_DIR / "_work")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR)
    parser.add_argument("--results-md", type=Path, default=common.RESULTS_MD)
    parser.add_argument("--figures-dir", type=Path, default=common.FIGURES_DIR)
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    if args.steps is not None:
        args.minutes = None
    return args


def _variant_args(args: argparse.Namespace, noise_model: str) -> argparse.Namespace:
    """The namespace quality.method_record expects, for one dnnet variant."""
    extra = quality.method_options("dnnet", args.sets)
    label = f"dnnet-{noise_model}" + "".join(f"-{k}{v}" for k, v in extra.items())
    if args.seed:  # a repeat with another training seed gets its own row beside seed 0's
        label += f"-seed{args.seed}"
    return argparse.Namespace(**{**vars(args), "sets": [f"noise_model={noise_model}", *args.sets], "label": label})


def _prepare(name: str, args: argparse.Namespace) -> tuple[Any, Path]:
    from selfden import synth

    synth_set = quality.make_suite(name, args.frames)
    noisy_path, _ = synth.save_synth_set(synth_set, args.out / quality.suite_key(synth_set) / "data")
    noisy = _own_command(quality.noisy_record(synth_set))
    common.save_result(noisy, f"{quality.suite_key(synth_set)}__noisy", args.results_dir)
    return synth_set, noisy_path


def _own_command(record: dict[str, Any]) -> dict[str, Any]:
    """quality.py's records name quality.py as their command; ours must name this script."""
    if record.get("command") == common.command_line("quality.py"):
        record["command"] = common.command_line("dnnet_quality.py")
    return record


def _train_variant(synth_set: Any, noisy_path: Path, noise_model: str, args: argparse.Namespace) -> dict[str, Any]:
    variant = _variant_args(args, noise_model)
    return _own_command(quality.method_record("dnnet", synth_set, noisy_path, variant, 1))


def _save(record: dict[str, Any], args: argparse.Namespace) -> None:
    common.save_result(record, f"{record['suite_key']}__{record['label']}", args.results_dir)
    common.render_results_md(args.results_dir, args.results_md)


# --- noise model against the truth ------------------------------------------------------------------


def true_noise(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """std and skewness of poisson(x * peak) / peak + N(0, read^2): cumulants x/peak, x/peak^2."""
    variance = signal / PEAK + READ_SIGMA**2
    return signal, np.sqrt(variance), (signal / PEAK**2) / variance**1.5


def noise_fit(record: dict[str, Any], synth_set: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Learned vs true noise std over the central 90% of the clean signal, and the figure."""
    from selfden.methods.dnnet import noise_model_curve
    from selfden.runs.noise_model import noise_model_report
    from selfden.runs.weights import load_method

    run_dir = Path(record["run_dir"])
    method = load_method(run_dir)
    low, high = (float(v) for v in np.quantile(synth_set.clean, [0.05, 0.95]))
    curve = noise_model_curve(method, (low, high), points=50)
    relative = curve.std / true_noise(curve.signal)[1] - 1
    figure = args.figures_dir / f"dnnet_noise_model_{record['label']}.png"
    grid = np.linspace(max(low, 1e-3), high, 100)
    noise_model_report(run_dir, figure, truth=true_noise(grid), title=f"{synth_set.name}, {record['label']}")
    return {
        "signal_range": [low, high],
        "max_abs_relative_std_error": float(np.abs(relative).max()),
        "median_abs_relative_std_error": float(np.median(np.abs(relative))),
        "learned_std": [float(v) for v in curve.std[::7]],
        "true_std": [float(v) for v in true_noise(curve.signal)[1][::7]],
        "signal": [float(v) for v in curve.signal[::7]],
        "learned_skew": [float(v) for v in curve.skew[::7]],
        "true_skew": [float(v) for v in true_noise(curve.signal)[2][::7]],
        "figure": quality._relative(figure),
    }


# --- streaks ------------------------------------------------------------------------------------------


def stripe_component(noisy: np.ndarray) -> np.ndarray:
    """Replay synth.stripe_suite's generator (data seed, default recipe) to recover its correlated noise."""
    from selfden import synth

    rng = np.random.default_rng(quality.DATA_SEED)
    clean = synth.natural_crops(noisy.shape[0], noisy.shape[1], rng)
    white_noisy = synth.add_poisson_gaussian_noise(clean, rng, 30.0, 0.04)
    stripes = synth.correlated_noise(clean.shape, rng, 0.08, 6.0)
    if not np.allclose(white_noisy + stripes, noisy, atol=1e-5):
        raise RuntimeError("replaying the stripe suite did not reproduce it; was its recipe changed?")
    return stripes


def streaks_left(noisy: np.ndarray, clean: np.ndarray, denoised: np.ndarray) -> dict[str, float]:
    """Share of the stripe and of the white noise still in the output (least-squares coefficients)."""
    stripes = stripe_component(noisy)
    white = noisy - clean - stripes
    error = denoised - clean

    def share(component: np.ndarray) -> float:
        return float(np.sum(error * component) / np.sum(component * component))

    return {
        "stripe_share_left": share(stripes),
        "white_share_left": share(white),
        "stripe_std": float(stripes.std()),
        "white_std": float(white.std()),
        "error_std": float(error.std()),
    }


def stripe_figure(noisy: np.ndarray, denoised: np.ndarray, label: str, streaks: dict[str, float], folder: Path) -> Path:
    """noisy | dnnet | residual (noisy - dnnet) for frame 0, with the advice underneath."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.9), layout="constrained")
    FigureCanvasAgg(fig)
    panels = (
        (noisy, "noisy (stripe suite)"),
        (denoised, f"{label} (onnxruntime)"),
        (noisy - denoised, "residual: noisy - dnnet"),
    )
    for ax, (image, title) in zip(fig.subplots(1, 3), panels):
        low, high = np.percentile(image, (0.5, 99.5))
        ax.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    summary = (
        f"Stripe noise left in the output: {100 * streaks['stripe_share_left']:.0f}%; "
        f"white noise left: {100 * streaks['white_share_left']:.0f}%. " + WHEN_TO_PICK
    )
    fig.suptitle("\n".join(textwrap.wrap(summary, 120)), fontsize=8, y=0.02, va="bottom")
    fig.get_layout_engine().set(rect=(0, 0.12, 1, 0.88))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "dnnet_vs_stripes.png"
    fig.savefig(path, dpi=110)
    return path


# --- halo -----------------------------------------------------------------------------------------------


def halo_check(run_dir: Path, frame: np.ndarray, halos: tuple[int, ...] = HALOS, core: int = 32) -> dict[str, float]:
    """max |tile centre - whole image| / std(whole) of the trained D-net, for each halo."""
    import torch

    from selfden.runs.weights import load_method

    method = load_method(run_dir)
    norm = method.normalisation
    image = torch.from_numpy(((frame - norm.offset) / norm.scale)[None, None].astype(np.float32))
    whole = method.denoise(image)
    step, size = method.size_step, image.shape[-1]
    result = {}
    for halo in halos:
        worst = 0.0
        for y in range(32, size - 32 - core + 1, 28):
            for x in range(32, size - 32 - core + 1, 28):
                y0, x0 = y // step * step, x // step * step
                if min(y0, x0) < halo or max(y0, x0) + core + halo > size:
                    continue
                tile = image[..., y0 - halo : y0 + core + halo, x0 - halo : x0 + core + halo]
                centre = method.denoise(tile)[..., halo : halo + core, halo : halo + core]
                worst = max(worst, float((centre - whole[..., y0 : y0 + core, x0 : x0 + core]).abs().max()))
        result[str(halo)] = worst / float(whole.std())
    return result


# --- main -----------------------------------------------------------------------------------------------


def _table(records: list[dict[str, Any]]) -> str:
    lines = [f"{'suite':18} {'method':34} {'steps':>6} {'aff.PSNR':>9} {'SSIM':>6}  noise std error (max)"]
    for record in records:
        for row in record["rows"]:
            scores = row.get("scores") or {}
            fit = record.get("noise_fit", {}).get("max_abs_relative_std_error")
            lines.append(
                f"{record['suite']:18} {row['name'][:34]:34} {str(row.get('steps', '-')):>6} "
                f"{scores.get('affine_psnr', float('nan')):9.2f} {scores.get('ssim', float('nan')):6.3f}  "
                + ("" if fit is None else f"{100 * fit:.1f}%")
            )
    return "\n".join(lines)


def _merged_summary(summary: dict[str, Any], results_dir: Path) -> dict[str, Any]:
    """This run's summary over the earlier one: variants accumulate, stripe/halo results are replaced
    only when this run measured them (a gmm-only rerun keeps the stripe measurement)."""
    import json

    path = results_dir / "dnnet__summary.json"
    if not path.is_file():
        return {**summary, "commands": [summary["command"]]}
    earlier = json.loads(path.read_text())
    merged = {**earlier, **{k: v for k, v in summary.items() if k != "variants"}}
    merged["variants"] = {**earlier.get("variants", {}), **summary["variants"]}
    merged["commands"] = [*earlier.get("commands", [earlier.get("command")]), summary["command"]]
    return merged


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    summary: dict[str, Any] = {"kind": "dnnet_summary", "command": common.command_line("dnnet_quality.py"),
                               "date": common.today(), "threads": args.threads, "variants": {}}
    printed: list[dict[str, Any]] = []
    synth_set, noisy_path = _prepare("poisson_gaussian", args)
    printed.append(quality.noisy_record(synth_set))
    for noise_model in [m.strip() for m in args.noise_models.split(",") if m.strip()]:
        record = _train_variant(synth_set, noisy_path, noise_model, args)
        if noise_model != "none":
            record["noise_fit"] = noise_fit(record, synth_set, args)
        if noise_model == "gmm":
            record["halo_check"] = halo_check(Path(record["run_dir"]), synth_set.noisy[0])
        _save(record, args)
        summary["variants"][record["label"]] = {
            key: record[key] for key in ("rows", "noise_fit", "halo_check") if key in record
        }
        printed.append(record)
    names = [] if args.baselines.strip() in ("", "none") else [n.strip() for n in args.baselines.split(",")]
    if names:
        baselines = _own_command(quality.baseline_record(synth_set, names, args))
        common.save_result(baselines, f"{quality.suite_key(synth_set)}__baselines", args.results_dir)
        printed.append(baselines)
    if args.stripe_model != "none-skip":
        stripes, stripe_path = _prepare("stripe", args)
        record = _train_variant(stripes, stripe_path, args.stripe_model, args)
        denoised = quality.read_stack(Path(record["run_dir"]).parent / "denoised.tif")
        record["streaks"] = streaks_left(stripes.noisy, stripes.clean, denoised)
        figure = stripe_figure(stripes.noisy[0], denoised[0], record["label"], record["streaks"], args.figures_dir)
        record["streak_figure"] = quality._relative(figure)
        _save(record, args)
        summary["stripe"] = {"label": record["label"], "rows": record["rows"], **record["streaks"],
                             "figure": record["streak_figure"], "advice": WHEN_TO_PICK}
        printed += [quality.noisy_record(stripes), record]
    summary["machine"] = common.machine_description()
    common.save_result(_merged_summary(summary, args.results_dir), "dnnet__summary", args.results_dir)
    common.render_results_md(args.results_dir, args.results_md)
    print(_table(printed))
    if "stripe" in summary:
        s = summary["stripe"]
        print(f"stripe suite: {100 * s['stripe_share_left']:.0f}% of the stripe noise and "
              f"{100 * s['white_share_left']:.0f}% of the white noise left in the output")
    for label, variant in summary["variants"].items():
        if "halo_check" in variant:
            print(f"{label}: max |tile - whole| / output std by halo:",
                  ", ".join(f"{h}: {v:.1e}" for h, v in variant["halo_check"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
