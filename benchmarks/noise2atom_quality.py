"""Noise2Atom quality: the atoms suite against ground truth, and real STEM frames by CSS.

1. Atoms suite (200 simulated frames, shot + scan-line noise, data seed 0): train noise2atom
   through ``benchmarks/quality.py`` (``selfden.runs`` training, ONNX package inference), score
   affine PSNR / SSIM, and compare with every classical baseline of ``baselines.py`` (cached).
2. Real HAADF STEM frames ``../shared/data/stem_pt_experimental.tif`` (skipped when absent):
   train on the stack, denoise it with the package, and report the consecutive-frame
   similarity (CSS, the paper's metric without ground truth) of the raw frames, the denoised
   frames and a 3-frame running mean; atom-option and failure-mode warnings from
   ``selfden.methods.noise2atom.atom_check``; a before/after figure ``figures/noise2atom_stem.png``.

    python benchmarks/noise2atom_quality.py --minutes 15
    python benchmarks/noise2atom_quality.py --minutes 1 --skip-atoms      # STEM part only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


import common
import quality
import stem_frames

METHOD = "noise2atom"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, required=True, help="training budget per data set (wall clock)")
    parser.add_argument("--stem-minutes", type=float, default=None, help="budget for the STEM frames (default: --minutes)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="noise2atom option (repeatable), e.g. --set adversarial_weight=5")
    parser.add_argument("--label", default=None, help="row name (default: noise2atom plus --set values)")
    parser.add_argument("--patch-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=None, help="frames of the atoms suite (default: its 200)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for training (default: torch's own)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--val-every-seconds", type=float, default=120.0,
                        help="validation cadence (the trainer's 30 s default costs a third of a CPU budget here)")
    parser.add_argument("--stem", type=Path, default=stem_frames.STEM_PATH, help="real STEM stack (TYX)")
    parser.add_argument("--skip-atoms", action="store_true", help="only the STEM part")
    parser.add_argument("--skip-stem", action="store_true", help="only the atoms suite")
    parser.add_argument("--baselines", default="gaussian,nlm,bm3d", help="comma-separated, or none")
    parser.add_argument("--out", type=Path, default=common.BENCH_DIR / "_work")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR)
    parser.add_argument("--results-md", type=Path, default=common.RESULTS_MD)
    parser.add_argument("--figures-dir", type=Path, default=common.FIGURES_DIR)
    return parser.parse_args(argv)


def _quality_args(args: argparse.Namespace) -> argparse.Namespace:
    """The same run expressed as ``quality.py`` arguments (so both scripts train identically)."""
    argv = ["--suite", "atoms", "--method", METHOD, "--minutes", str(args.minutes), "--seed", str(args.seed),
            "--device", args.device, "--baselines", args.baselines, "--out", str(args.out),
            "--results-dir", str(args.results_dir), "--results-md", str(args.results_md),
            "--figures-dir", str(args.figures_dir)]
    argv += [f"--set={item}" for item in args.sets]
    optional = (("--label", args.label), ("--patch-size", args.patch_size), ("--batch-size", args.batch_size),
                ("--frames", args.frames), ("--threads", args.threads))
    for flag, value in optional:
        if value is not None:
            argv += [flag, str(value)]
    return quality.parse_args(argv)


# --- atoms suite -----------------------------------------------------------------------------------


def run_atoms(args: argparse.Namespace) -> dict[str, Any]:
    """Train, denoise and score on the atoms suite; the baselines' rows next to it."""
    from selfden import synth

    qargs = _quality_args(args)
    suite = quality.make_suite("atoms", args.frames)
    key = quality.suite_key(suite)
    noisy_path, _ = synth.save_synth_set(suite, args.out / key / "data")
    common.save_result(quality.noisy_record(suite), f"{key}__noisy", args.results_dir)
    record = quality.method_record(METHOD, suite, noisy_path, qargs, 1)
    record["diagnostics"] = _suite_diagnostics(suite, record)
    common.save_result(record, f"{key}__{record['label']}", args.results_dir)
    names = [] if args.baselines.strip() in ("", "none") else [n.strip() for n in args.baselines.split(",")]
    base = quality.baseline_record(suite, names, qargs) if names else {"rows": []}
    if names:
        common.save_result(base, f"{key}__baselines", args.results_dir)
    common.render_results_md(args.results_dir, args.results_md)
    return {"method": record["rows"][0], "noisy": quality.noisy_record(suite)["rows"][0], "baselines": base["rows"]}


def _suite_diagnostics(suite: Any, record: dict[str, Any]) -> list[str]:
    from selfden.methods.noise2atom.atom_check import diagnose_run

    denoised = quality.read_stack(Path(record["run_dir"]).parent / "denoised.tif")
    return diagnose_run(suite.noisy[:16], denoised[:16])


def print_atoms(summary: dict[str, Any]) -> None:
    rows = [summary["noisy"], *summary["baselines"], summary["method"]]
    print("\natoms suite (200 frames): affine PSNR / SSIM over all frames")
    for row in rows:
        s = row["scores"]
        print(f"  {row['name']:<28} {s['affine_psnr']:6.2f} dB  {s['ssim']:.3f}")


# --- STEM frames -----------------------------------------------------------------------------------


def run_stem(args: argparse.Namespace) -> dict[str, Any] | None:
    """CSS of raw, denoised and 3-frame-mean STEM frames, with warnings and a figure."""
    from selfden.methods.noise2atom.atom_check import check_atom_options, diagnose_run
    from selfden.inference.running import denoise_files
    from selfden.metrics import css
    from selfden.runs.plan import new_run_config
    from selfden.runs.train import train_run

    if not args.stem.is_file():
        print(f"[stem] skipped: {args.stem} not found (real data lives beside the project, see shared/data/README.md)")
        return None
    raw = quality.read_stack(args.stem)
    options = quality.method_options(METHOD, args.sets)
    label = args.label or quality._label(METHOD, options, None, 1)
    work = args.out / "stem_pt" / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    minutes = args.stem_minutes or args.minutes
    data = {k: v for k, v in {"patch_size": args.patch_size, "batch_size": args.batch_size}.items() if v is not None}
    config = new_run_config(METHOD, [args.stem], options, data,
                            {"device": args.device, "max_minutes": minutes}, args.seed)
    print(f"[stem] {label}: training {minutes:g} min in {work / 'run'}")
    result = train_run(config, work / "run")
    if result.model_dir is None:
        raise RuntimeError(f"STEM training was interrupted; no model in {work / 'run'}")
    denoised = quality.read_stack(denoise_files(result.model_dir, [args.stem], work / "denoised.tif", device=args.device)[0])
    mean3 = stem_frames.running_mean(raw)
    method_config = config.method_config
    warnings = check_atom_options(raw, method_config.atom_spacing, tuple(method_config.atom_sigma))
    warnings += diagnose_run(raw, denoised)
    figure = stem_frames.before_after_figure(
        {"raw": raw, "3-frame running mean": mean3, f"{label} (onnxruntime)": denoised},
        args.figures_dir / "noise2atom_stem.png", "HAADF STEM, Pt on carbon (stem_pt_experimental.tif)",
        frames=(0, len(raw) // 2))
    record = {
        "kind": "css",
        "data": str(args.stem.name),
        "frames": len(raw),
        "method": METHOD,
        "label": label,
        # a running mean's neighbours share 2 of 3 frames, which inflates its CSS; the binned
        # mean (frames 0-2, 3-5, ...) shares none
        "css": {"raw": css(raw), "running_mean_3": css(mean3), "binned_mean_3": css(stem_frames.binned_mean(raw)),
                "denoised": css(denoised)},
        "warnings": warnings,
        "train_minutes": result.elapsed_seconds / 60,
        "steps": result.steps,
        "params": result.parameter_count,
        "method_config": config.model_dump(mode="json")["method_config"],
        "data_config": config.data.model_dump(mode="json", exclude={"inputs"}),
        "seed": config.seed,
        "run_dir": str(result.run_dir),
        "figure": str(figure.relative_to(common.BENCH_DIR)) if figure.is_relative_to(common.BENCH_DIR) else str(figure),
        "command": common.command_line("noise2atom_quality.py"),
        "date": common.today(),
        "machine": common.machine_description(),
    }
    common.save_result(record, f"stem_pt__{label}", args.results_dir)
    return record


def print_stem(record: dict[str, Any]) -> None:
    c = record["css"]
    print(f"\nSTEM frames ({record['frames']}): CSS raw {c['raw']:.3f}, 3-frame running mean {c['running_mean_3']:.3f} "
          f"(binned {c['binned_mean_3']:.3f}), {record['label']} {c['denoised']:.3f} "
          f"({record['steps']} steps, {record['train_minutes']:.1f} min)")
    for warning in record["warnings"]:
        print(f"  warning: {warning}")


def _trainer_options(args: argparse.Namespace) -> None:
    """quality.py hands the trainer only its budget; add this script's trainer options to every run."""
    from selfden.runs import plan

    extra = {"val_every_seconds": args.val_every_seconds}
    original = plan.new_run_config

    def with_options(method, inputs, method_options, data_options, trainer_options, seed):  # type: ignore[no-untyped-def]
        return original(method, inputs, method_options, data_options, {**extra, **trainer_options}, seed)

    plan.new_run_config = with_options


def _ensure_registered() -> None:
    """Make ``noise2atom`` resolvable even where the registry does not list it yet."""
    from selfden import methods

    if METHOD not in methods.method_names():
        methods._REGISTRY[METHOD] = "selfden.methods.noise2atom:Noise2Atom"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _ensure_registered()
    _trainer_options(args)
    args.out = args.out.resolve()
    if not args.skip_atoms:
        print_atoms(run_atoms(args))
    if not args.skip_stem and (record := run_stem(args)) is not None:
        print_stem(record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
