"""COSDD on the stripe suite and on the real STEM frames: direct denoiser vs posterior-mean (MMSE)
estimates, against the classical baselines, plus the speed of sampling.

1. stripe suite (shot + white + row-correlated noise): trains COSDD through ``quality.py``'s
   path (``selfden.runs`` training, ONNX package, ``selfden infer``) or reuses a finished
   ``quality.py`` run (``--reuse LABEL``), then scores the direct denoiser and the MMSE of
   ``--samples`` posterior samples (each count a row of the suite's table in RESULTS.md);
2. sampling speed on one frame with onnxruntime: N samples in batches vs N one-sample runs
   (what the reference code does), and the direct denoiser vs the N-sample MMSE;
3. training steps/s of the ``small`` preset (128² crops, batch 4), fp32 and bf16, with its
   parameter count;
4. STEM frames (``../shared/data/stem_pt_experimental.tif``; skipped when absent): trains on
   them with ``--direction auto``, then CSS and the row-streak index of raw frames, 3-frame
   means and both COSDD estimates, and a before/after figure.

    python benchmarks/quality.py --suite stripe --method cosdd --minutes 30 --set cosdd.size=tiny \\
        --patch-size 64 --batch-size 4 --threads 1
    python benchmarks/cosdd_quality.py --reuse cosdd-sizetiny --stem-minutes 15 --threads 1
    python benchmarks/cosdd_quality.py --minutes 1 --samples 4 --skip-stem   # smoke test, trains itself
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import common
import quality
import speed
import stem_frames


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--reuse", default=None, metavar="LABEL",
                        help="score the run of results/stripe-64f__LABEL.json instead of training")
    parser.add_argument("--run", type=Path, default=None,
                        help="score this finished stripe-suite run folder (exported here if it has no model)")
    parser.add_argument("--trained-by", default=None, help="with --run: the command that trained it (recorded)")
    parser.add_argument("--minutes", type=float, default=30.0, help="stripe training budget when not --reuse")
    parser.add_argument("--size", default="tiny", help="COSDD preset for the trained runs")
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--samples", default="1,10,100", help="posterior sample counts to score (comma-separated)")
    parser.add_argument("--mmse-frames", type=int, default=8,
                        help="score the MMSE rows (and a direct row to compare) on the first N frames: "
                        "100 samples cost 100 network passes per tile")
    parser.add_argument("--speed-samples", type=int, default=100, help="N of the sampling-speed comparison")
    parser.add_argument("--train-speed-seconds", type=float, default=40.0, help="timing budget per precision")
    parser.add_argument("--stem-minutes", type=float, default=15.0)
    parser.add_argument("--stem-samples", type=int, default=32)
    parser.add_argument("--skip-stem", action="store_true")
    parser.add_argument("--train-speed-only", action="store_true",
                        help="only re-measure the training-speed table of results/cosdd__summary.json")
    parser.add_argument("--add-subset-baselines", metavar="LABEL", default=None,
                        help="only add the baselines on the first --mmse-frames frames to results/stripe-64f__LABEL.json")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for training")
    parser.add_argument("--out", type=Path, default=common.BENCH_DIR / "_work")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR)
    parser.add_argument("--results-md", type=Path, default=common.RESULTS_MD)
    parser.add_argument("--figures-dir", type=Path, default=common.FIGURES_DIR)
    parser.add_argument("--stem", type=Path, default=stem_frames.STEM_PATH)
    return parser.parse_args(argv)


def _quality_args(args: argparse.Namespace, label: str | None = None) -> argparse.Namespace:
    argv = ["--suite", "stripe", "--method", "cosdd", "--minutes", str(args.minutes), "--seed", str(args.seed),
            "--device", args.device, "--set", f"cosdd.size={args.size}", "--patch-size", str(args.patch_size),
            "--batch-size", str(args.batch_size), "--out", str(args.out), "--results-dir", str(args.results_dir),
            "--figures-dir", str(args.figures_dir)]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    if label:
        argv += ["--label", label]
    return quality.parse_args(argv)


def _sample_counts(text: str) -> list[int]:
    return [int(n) for n in text.split(",") if n.strip()]


# --- 1. stripe suite ---------------------------------------------------------------------------------


def stripe_record(args: argparse.Namespace) -> tuple[dict[str, Any], Any, Path]:
    """The stripe suite's COSDD record (trained here or reused) and the suite with its noisy file."""
    from selfden import synth

    suite = quality.make_suite("stripe", None)
    key = quality.suite_key(suite)
    noisy_path, _ = synth.save_synth_set(suite, args.out / key / "data")
    if args.reuse:
        record = json.loads((args.results_dir / f"{key}__{args.reuse}.json").read_text())
    elif args.run:
        record = record_from_run(args.run.resolve(), suite, noisy_path, args)
    else:
        record = quality.method_record("cosdd", suite, noisy_path, _quality_args(args), 1)
        record["command"] = common.command_line("cosdd_quality.py")
    return record, suite, noisy_path


def record_from_run(run: Path, suite: Any, noisy_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """quality.py's record for a run trained elsewhere: export if needed, denoise directly, score."""
    from selfden.inference.running import denoise_files
    from selfden.runs.config import MODEL_DIR, load_run_config
    from selfden.runs.export import export_run, training_progress
    from selfden.runs.weights import load_method

    config = load_run_config(run)
    if not (run / MODEL_DIR / "rdf.yaml").is_file():
        export_run(run)
    progress = training_progress(run)
    start = time.perf_counter()
    denoised = denoise_files(run / MODEL_DIR, [noisy_path], run.parent / "denoised.tif", device=args.device)[0]
    seconds = time.perf_counter() - start
    denoised_stack = quality.read_stack(denoised)
    label = quality._label("cosdd", {"size": config.method_config.size}, None, 1)
    figure = quality.save_figure(suite, denoised_stack, label, args.figures_dir)
    settings = (f"size={config.method_config.size}, direction={config.method_config.direction}, "
                f"patch {config.data.patch_size}, batch {config.data.batch_size}")
    row = {"name": label, "settings": settings, "train_minutes": progress.get("minutes"),
           "steps": progress.get("steps"), "params": load_method(run, config).parameter_count(),
           "scores": quality._scores(denoised_stack, suite.clean), "seconds": seconds}
    record = {**quality._base_record("method", suite), "method": "cosdd", "label": label,
              "method_config": config.model_dump(mode="json")["method_config"],
              "data_config": config.data.model_dump(mode="json", exclude={"inputs"}),
              "trainer": config.model_dump(mode="json")["trainer"], "seed": config.seed, "best_val_loss": progress.get("best_val_loss"),
              "run_dir": str(run), "figure": quality._relative(figure), "rows": [row]}
    if args.trained_by:
        record["command"] = f"{args.trained_by}; scored by {common.command_line('cosdd_quality.py')}"
    return record


def add_mmse_rows(record: dict[str, Any], suite: Any, noisy_path: Path, args: argparse.Namespace) -> None:
    """Direct denoiser vs the MMSE of each sample count on the first ``--mmse-frames`` frames; rows
    appended to the record after the all-frames direct row."""
    from selfden import synth
    from selfden.inference.running import denoise_files

    model = Path(record["run_dir"]) / "model"
    work = Path(record["run_dir"]).parent
    direct, *others = (r for r in record["rows"] if " frames" not in r["name"])  # all-frames rows: direct, --tta
    direct["name"] = f"{record['label']} direct"
    rows = [direct, *others]
    n = min(args.mmse_frames, len(suite.noisy))
    subset = type(suite)(name=suite.name, noisy=suite.noisy[:n], clean=suite.clean[:n], description=suite.description)
    subset_path, _ = synth.save_synth_set(subset, work / f"first{n}")
    estimates = [("direct", None), *((f"MMSE-{count}", count) for count in _sample_counts(args.samples))]
    for name, count in estimates:
        start = time.perf_counter()
        out = denoise_files(model, [subset_path], work / f"first{n}_{name}.tif", device=args.device, samples=count)[0]
        seconds = time.perf_counter() - start
        scores = quality._scores(quality.read_stack(out), subset.clean)
        print(f"[stripe] first {n} frames, {name}: affine PSNR {scores['affine_psnr']:.2f} dB ({seconds:.0f} s)")
        rows.append({**direct, "name": f"{record['label']} {name}, first {n} frames", "scores": scores,
                     "seconds": seconds})
    rows += subset_baseline_rows(subset)
    record["rows"] = rows
    record["mmse_command"] = common.command_line("cosdd_quality.py")


def remeasure_training_speed(args: argparse.Namespace) -> int:
    """Replace table (b) of the summary record with a fresh measurement."""
    path = args.results_dir / "cosdd__summary.json"
    record = json.loads(path.read_text())
    fresh = training_speed(128, 4, args.train_speed_seconds)
    fresh["note"] += f" Re-measured by `{common.command_line('cosdd_quality.py')}` — {common.today()}; {common.machine_description()}."
    record["tables"] = [fresh if t["title"].startswith("(b)") else t for t in record["tables"]]
    record["train_speed_command"] = common.command_line("cosdd_quality.py")
    record["train_speed_machine"] = common.machine_description()
    common.save_result(record, path.stem, args.results_dir)
    common.render_results_md(args.results_dir, args.results_md)
    return 0


def add_subset_baselines(args: argparse.Namespace) -> int:
    """Baselines on the MMSE rows' frames, added to a record scored before they existed."""
    suite = quality.make_suite("stripe", None)
    path = args.results_dir / f"{quality.suite_key(suite)}__{args.add_subset_baselines}.json"
    record = json.loads(path.read_text())
    n = min(args.mmse_frames, len(suite.noisy))
    subset = type(suite)(name=suite.name, noisy=suite.noisy[:n], clean=suite.clean[:n], description=suite.description)
    record["rows"] = [r for r in record["rows"] if not r.get("reference")] + subset_baseline_rows(subset)
    common.save_result(record, path.stem, args.results_dir)
    common.render_results_md(args.results_dir, args.results_md)
    return 0


def subset_baseline_rows(subset: Any) -> list[dict[str, Any]]:
    """The oracle baselines tuned and scored on the same frames as the MMSE rows."""
    import baselines

    n = len(subset.noisy)
    rows = [{"name": f"noisy input, first {n} frames", "reference": True,
             "scores": quality._scores(subset.noisy, subset.clean)}]
    for result in baselines.run_baselines(subset.noisy, subset.clean, ["gaussian", "nlm", "bm3d"]):
        if isinstance(result, baselines.Skipped):
            continue
        s = result.scores
        print(f"[{subset.name}] first {len(subset.noisy)} frames, {result.name}: affine PSNR {s.affine_psnr:.2f} dB")
        rows.append({"name": f"{result.name} (oracle), first {n} frames", "reference": True, "settings": result.settings,
                     "scores": {"psnr": s.psnr, "affine_psnr": s.affine_psnr, "ssim": s.ssim},
                     "seconds": result.seconds})
    return rows


# --- 2. sampling speed -------------------------------------------------------------------------------


def sampling_speed(model: Path, frame: np.ndarray, n: int, device: str) -> dict[str, Any]:
    """Seconds to denoise one frame: direct; N samples batched; N one-sample predictions."""
    from selfden.inference.loading import load_predictor

    with load_predictor(model, device) as direct, load_predictor(model, device, samples=n) as batched, \
            load_predictor(model, device, samples=1) as single:
        def run_direct() -> object:
            return direct.predict(frame).image

        def run_batched() -> object:
            return batched.predict(frame).image

        def run_singles() -> object:
            return [single.predict(frame).image for _ in range(n)]

        med = speed.timed_rounds({"direct": run_direct, "batched": run_batched, "singles": run_singles},
                                 min_seconds=60.0, max_rounds=5)
        provider = direct.provider
    rows = [
        ["direct denoiser (1 deterministic pass)", med["direct"], med["batched"] / med["direct"]],
        [f"MMSE of {n} samples, {min(n, 32)} per session run", med["batched"], 1.0],
        [f"MMSE of {n} one-sample runs (as the reference)", med["singles"], med["batched"] / med["singles"]],
    ]
    print(f"(speed) batched {med['batched']:.2f} s vs {n} singles {med['singles']:.2f} s "
          f"({med['singles'] / med['batched']:.1f}x); direct {med['direct'] * 1e3:.1f} ms "
          f"({med['batched'] / med['direct']:.0f}x faster than MMSE)")
    return {
        "title": f"(a) COSDD inference on one {frame.shape[0]}x{frame.shape[1]} frame ({provider})",
        "note": "seconds per frame with selfden.inference (tiling, processing, onnxruntime), median of alternating "
        "rounds; last column: the batched N-sample MMSE's time divided by this row's (>1: this row is faster).",
        "columns": ["estimate", "s / frame", "speed-up over batched MMSE"],
        "rows": rows,
        "ratios": {"batched_over_singles": med["singles"] / med["batched"],
                   "direct_over_mmse": med["batched"] / med["direct"]},
    }


def training_speed(patch: int, batch: int, seconds: float) -> dict[str, Any]:
    rows = speed.training_rows("cosdd", patch, batch, seconds, ("fp32", "bf16"), {"size": "small"})
    return {
        "title": "(b) COSDD training speed, small preset (method.training_step)",
        "note": f"crops {patch}², batch {batch}, atoms-suite data, CosddConfig(size='small'), the reference's small model; median of "
        "alternating timed steps; bf16 = torch.autocast(bfloat16).",
        "columns": ["method", "params (M)", "patch", "batch", "precision", "s / step", "steps / s",
                    "speed-up vs fp32"],
        "rows": rows,
    }


# --- 4. STEM frames ----------------------------------------------------------------------------------


def run_stem(args: argparse.Namespace) -> dict[str, Any] | None:
    """Train on the real frames (direction auto), then CSS and streak index of every estimate."""
    from selfden.inference.running import denoise_files
    from selfden.metrics import css
    from selfden.runs.plan import new_run_config, plan_run
    from selfden.runs.train import train_run

    if not args.stem.is_file():
        print(f"[stem] skipped: {args.stem} not found (see shared/data/README.md)")
        return None
    raw = quality.read_stack(args.stem)
    work = args.out / "stem_pt" / f"cosdd-{time.strftime('%Y%m%d-%H%M%S')}"
    data = {"patch_size": args.patch_size, "batch_size": args.batch_size}
    plan = plan_run(new_run_config("cosdd", [args.stem], {"size": args.size, "direction": "auto"}, data,
                                   {"device": args.device, "max_minutes": args.stem_minutes}, args.seed))
    for note in plan.notes:
        print(f"[stem] {note.text}")
    config = plan.config
    reason = " ".join(note.text.partition(" — ")[2] for note in plan.notes)
    print(f"[stem] cosdd: training {args.stem_minutes:g} min in {work / 'run'}")
    result = train_run(config, work / "run")
    if result.model_dir is None:
        raise RuntimeError(f"STEM training was interrupted; no model in {work / 'run'}")
    direct = quality.read_stack(denoise_files(result.model_dir, [args.stem], work / "direct.tif", device=args.device)[0])
    mmse = quality.read_stack(denoise_files(result.model_dir, [args.stem], work / "mmse.tif", device=args.device,
                                            samples=args.stem_samples)[0])
    stacks = {"raw": raw, "3-frame running mean": stem_frames.running_mean(raw),
              "3-frame binned mean": stem_frames.binned_mean(raw), "COSDD direct": direct,
              f"COSDD MMSE-{args.stem_samples}": mmse}
    rows = [[name, css(stack), stem_frames.row_streak_index(stack)] for name, stack in stacks.items()]
    for name, value, streaks in rows:
        print(f"[stem] {name}: CSS {value:.3f}, row-streak index {streaks:.2f}")
    figure = stem_frames.before_after_figure(
        {"raw": raw, "3-frame running mean": stacks["3-frame running mean"], "COSDD direct": direct,
         f"COSDD MMSE-{args.stem_samples}": mmse},
        args.figures_dir / "cosdd_stem.png", "HAADF STEM, Pt on carbon (stem_pt_experimental.tif)")
    return {
        "title": f"(c) COSDD on the real STEM frames ({len(raw)} frames, {raw.shape[1]}x{raw.shape[2]})",
        "note": f"trained {result.elapsed_seconds / 60:.1f} min ({result.steps} steps, preset {args.size}, "
        f"direction auto -> {config.method_config.direction}: {reason}); CSS = mean SSIM of consecutive frames (higher: more of what repeats "
        "from frame to frame, i.e. structure, and less noise); row-streak index = roughness of the row-mean "
        "profile over that of the column-mean profile (about 1 without row streaks). A running mean's "
        f"neighbours share 2 of 3 frames, which inflates its CSS. Figure: [{figure.name}](figures/{figure.name})",
        "columns": ["frames", "CSS", "row-streak index"],
        "rows": rows,
    }


# --- main --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.add_subset_baselines:
        return add_subset_baselines(args)
    if args.train_speed_only:
        return remeasure_training_speed(args)
    record, suite, noisy_path = stripe_record(args)
    add_mmse_rows(record, suite, noisy_path, args)
    common.save_result(record, f"{record['suite_key']}__{record['label']}", args.results_dir)
    tables = []
    if not args.skip_speed:
        frame = suite.noisy[0]
        tables.append(sampling_speed(Path(record["run_dir"]) / "model", frame, args.speed_samples, args.device))
        tables.append(training_speed(128, 4, args.train_speed_seconds))
    if not args.skip_stem and (stem := run_stem(args)) is not None:
        tables.append(stem)
    if tables:
        common.save_result({"kind": "speed", "title": "COSDD: sampling, training speed and real STEM frames",
                            "command": common.command_line("cosdd_quality.py"), "date": common.today(),
                            "machine": common.machine_description(), "tables": tables},
                           "cosdd__summary", args.results_dir)
    common.render_results_md(args.results_dir, args.results_md)
    print(f"wrote {args.results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
