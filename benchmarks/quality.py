"""Denoising quality against ground truth on the synthetic suites, through the user's own path.

For each suite: generate it with ``selfden.synth`` (data seed 0), save the noisy stack, train
each method with ``selfden.runs`` (``new_run_config`` + ``train_run``: what ``selfden train``
does), denoise the stack with the exported ONNX package via
``selfden.inference.running.denoise_files`` (what ``selfden infer`` does), score all frames
against the truth, run the classical baselines (cached per suite), write one JSON record per
(suite, method) under ``benchmarks/results/`` and regenerate ``benchmarks/RESULTS.md``.

    python benchmarks/quality.py --suite atoms --method cae --minutes 20
    python benchmarks/quality.py --suite all --method cae,cosdd --minutes 15 --set cosdd.size=tiny
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import baselines
import common

SUITES = ("atoms", "stripe", "poisson_gaussian", "cjk")
DATA_SEED = 0
#: Options shown in the table's settings column even at their defaults (the strength knobs).
KNOBS = {"cae": ("bottleneck",), "cosdd": ("size", "direction"), "dnnet": ("noise_model", "lr_schedule")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--suite", required=True, help=f"one of {', '.join(SUITES)}, or all")
    parser.add_argument("--method", default="", help="comma-separated methods (e.g. cae,cosdd); empty: baselines only")
    parser.add_argument("--minutes", type=float, default=None, help="training budget per method (wall clock)")
    parser.add_argument("--steps", type=int, default=None, help="training step budget (smoke tests)")
    parser.add_argument("--frames", type=int, default=None, help="frames in the suite (default: the suite's own)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="[METHOD.]KEY=VALUE",
                        help="method option for every method, or for one with METHOD. (repeatable)")
    parser.add_argument("--patch-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0, help="training seed (the data seed is fixed at 0)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for training (default: torch's own, as selfden train)")
    parser.add_argument("--label", default=None, help="row name (default: method plus --set values)")
    parser.add_argument("--from-run", type=Path, default=None,
                        help="score this finished run of --method on --suite instead of training (exported if needed)")
    parser.add_argument("--trained-by", default=None, help="with --from-run: the command that trained the run (recorded)")
    parser.add_argument("--tta", action="store_true",
                        help="also score `selfden infer --tta` (average over the orientations trained with)")
    parser.add_argument("--baselines", default="gaussian,nlm,bm3d", help="comma-separated, or none")
    parser.add_argument("--rerun-baselines", action="store_true", help="ignore cached baseline results")
    parser.add_argument("--out", type=Path, default=common.BENCH_DIR / "_work", help="work folder (data, runs)")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR)
    parser.add_argument("--results-md", type=Path, default=common.RESULTS_MD)
    parser.add_argument("--figures-dir", type=Path, default=common.FIGURES_DIR)
    args = parser.parse_args(argv)
    if args.suite != "all" and args.suite not in SUITES:
        parser.error(f"--suite {args.suite!r}: choose one of {', '.join(SUITES)} or all")
    if args.from_run is not None and (args.suite == "all" or "," in args.method or not args.method):
        parser.error("--from-run scores one run: give one --suite and one --method")
    if args.method and args.minutes is None and args.steps is None and args.from_run is None:
        parser.error("training needs a budget: --minutes M (or --steps N for a smoke test)")
    return args


# --- data ------------------------------------------------------------------------------------------


def make_suite(name: str, frames: int | None) -> Any:
    """The suite as a SynthSet, or None (with the reason printed) when it cannot be made here."""
    from selfden import synth

    maker = getattr(synth, f"{name}_suite")
    options = {} if frames is None else {"n_frames": frames}
    try:
        return maker(rng=np.random.default_rng(DATA_SEED), **options)
    except synth.FontMissing as error:
        print(f"[{name}] skipped: {error}")
        return None


def suite_key(synth_set: Any) -> str:
    return f"{synth_set.name}-{len(synth_set.noisy)}f"


def _base_record(kind: str, synth_set: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "suite": synth_set.name,
        "suite_key": suite_key(synth_set),
        "frames": len(synth_set.noisy),
        "data_seed": DATA_SEED,
        "suite_description": synth_set.description,
        # The entry script, which may be another benchmark built on these functions.
        "command": common.command_line(Path(sys.argv[0]).name),
        "date": common.today(),
        "machine": common.machine_description(),
    }


def _scores(estimate: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    s = baselines.score(estimate, clean)
    return {"psnr": s.psnr, "affine_psnr": s.affine_psnr, "ssim": s.ssim}


def noisy_record(synth_set: Any) -> dict[str, Any]:
    row = {"name": "noisy input", "settings": "", "scores": _scores(synth_set.noisy, synth_set.clean)}
    return {**_base_record("noisy", synth_set), "rows": [row]}


# --- baselines -------------------------------------------------------------------------------------


def baseline_record(synth_set: Any, names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Baseline rows for the suite, from the cache when it holds the same baselines."""
    cached = args.results_dir / f"{suite_key(synth_set)}__baselines.json"
    if cached.is_file() and not args.rerun_baselines:
        import json

        record = json.loads(cached.read_text())
        if record.get("baselines") == names and not record.get("skipped"):
            print(f"[{synth_set.name}] baselines: cached in {cached} (--rerun-baselines to recompute)")
            return record
    rows, skipped = [], []
    for result in baselines.run_baselines(synth_set.noisy, synth_set.clean, names):
        if isinstance(result, baselines.Skipped):
            print(f"[{synth_set.name}] {result.name} skipped: {result.reason}")
            skipped.append({"name": result.name, "reason": result.reason})
            continue
        s = result.scores
        scores = f"affine PSNR {s.affine_psnr:.2f} dB, SSIM {s.ssim:.3f}"
        print(f"[{synth_set.name}] {result.name}: {scores} ({result.settings})")
        rows.append(
            {
                "name": f"{result.name} (oracle)",
                "settings": result.settings,
                "scores": {"psnr": s.psnr, "affine_psnr": s.affine_psnr, "ssim": s.ssim},
                "seconds": result.seconds,
                "tuning": result.tuning,
            }
        )
    return {**_base_record("baselines", synth_set), "baselines": names, "rows": rows, "skipped": skipped}


# --- methods ---------------------------------------------------------------------------------------


def method_options(method: str, sets: list[str]) -> dict[str, Any]:
    """``--set`` values that apply to ``method`` (``KEY=VALUE`` for all, ``METHOD.KEY=VALUE`` for one)."""
    import yaml

    options: dict[str, Any] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects [METHOD.]KEY=VALUE, got {item!r}")
        target, dot, name = key.rpartition(".")
        if dot and target != method:
            continue
        options[name.strip().replace("-", "_")] = yaml.safe_load(value)
    return options


def _label(method: str, options: dict[str, Any], given: str | None, n_methods: int) -> str:
    if given:
        return given if n_methods == 1 else f"{given}-{method}"
    return method + "".join(f"-{k}{v}" for k, v in options.items())


def _settings(method: str, config: Any, options: dict[str, Any], threads: int | None) -> str:
    saved = config.model_dump(mode="json")["method_config"]
    shown = {k: saved.get(k) for k in KNOBS.get(method, ()) if k in saved}
    shown.update(options)
    parts = [f"{k}={v}" for k, v in shown.items()]
    parts.append(f"patch {config.data.patch_size}, batch {config.data.batch_size}")
    if threads is not None:
        parts.append(f"{threads} torch threads")
    return ", ".join(parts)


def data_options(args: argparse.Namespace, frame_side: int) -> dict[str, int]:
    """--patch-size/--batch-size; without --patch-size, frames smaller than the default crop
    (cjk: 64²) train on whole frames, as a user would have to ask for with --patch-size."""
    from selfden.runs.config import DataConfig

    patch = args.patch_size
    if patch is None and frame_side < DataConfig.model_fields["patch_size"].default:
        patch = frame_side
    return {k: v for k, v in {"patch_size": patch, "batch_size": args.batch_size}.items() if v is not None}


def train_and_denoise(
    method: str, noisy_path: Path, frame_side: int, work: Path, args: argparse.Namespace
) -> tuple[Any, Any, Path, float, float | None]:
    """Train with selfden.runs (as `selfden train`), denoise with onnxruntime (as `selfden infer`).

    Returns config, run result, denoised file, denoising seconds and the CPU cores training got.
    """
    from selfden.inference.running import denoise_files
    from selfden.runs.plan import new_run_config
    from selfden.runs.train import train_run

    options = method_options(method, args.sets)
    data = data_options(args, frame_side)
    trainer = {"device": args.device, "max_minutes": args.minutes, "max_steps": args.steps}
    if getattr(args, "from_run", None) is not None:
        config, result = finished_run(args.from_run)
        start = time.perf_counter()
        denoised = denoise_files(result.model_dir, [noisy_path], work / "denoised.tif", device=args.device)[0]
        return config, result, denoised, time.perf_counter() - start, None
    config = new_run_config(method, [noisy_path], options, data, trainer, args.seed)
    threads = getattr(args, "threads", None)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    cpu_start, wall_start = _cpu_seconds(), time.perf_counter()
    result = train_run(config, work / "run")
    cores = (_cpu_seconds() - cpu_start) / (time.perf_counter() - wall_start)
    if result.model_dir is None:
        raise RuntimeError(f"training of {method} was interrupted; no model exported in {work / 'run'}")
    start = time.perf_counter()
    denoised = denoise_files(result.model_dir, [noisy_path], work / "denoised.tif", device=args.device)[0]
    return config, result, denoised, time.perf_counter() - start, cores


def finished_run(run_dir: Path) -> tuple[Any, Any]:
    """The config and a RunResult of a run trained earlier, its model exported if it is missing."""
    from selfden.runs.config import MODEL_DIR, load_run_config
    from selfden.runs.export import export_run, training_progress
    from selfden.runs.train import RunResult
    from selfden.runs.weights import load_method

    run_dir = run_dir.resolve()
    config = load_run_config(run_dir)
    model_dir = run_dir / MODEL_DIR
    method = load_method(run_dir, config)
    if not (model_dir / "rdf.yaml").is_file():
        print(f"exporting {run_dir} (its model folder is missing)")
        export_run(run_dir, method=method)
    progress = training_progress(run_dir)
    result = RunResult(
        run_dir=run_dir, model_dir=model_dir, steps=progress.get("steps", 0),
        elapsed_seconds=60 * progress.get("minutes", 0.0), best_val_loss=progress.get("best_val_loss"),
        interrupted=False, parameter_count=method.parameter_count(), device=config.trainer.device,
    )
    return config, result


def _cpu_seconds() -> float:
    """CPU time of this process and its threads: over wall time, the cores training really got."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def read_stack(path: Path) -> np.ndarray:
    from selfden.io.reading import open_image

    with open_image(path) as stack:
        return np.stack([np.asarray(stack.frame(i), dtype=np.float32) for i in range(len(stack))])


def method_record(
    method: str, synth_set: Any, noisy_path: Path, args: argparse.Namespace, n_methods: int
) -> dict[str, Any]:
    options = method_options(method, args.sets)
    label = _label(method, options, args.label, n_methods)
    work = args.out / suite_key(synth_set) / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    doing = f"scoring {args.from_run}" if getattr(args, "from_run", None) else f"training in {work / 'run'}"
    print(f"[{synth_set.name}] {label}: {doing}")
    side = min(synth_set.noisy.shape[1:])
    config, result, denoised_path, infer_seconds, cores = train_and_denoise(method, noisy_path, side, work, args)
    denoised = read_stack(denoised_path)
    row = {
        "name": label,
        "settings": _settings(method, config, options, getattr(args, "threads", None)) + f", {result.device}",
        "train_minutes": result.elapsed_seconds / 60,
        "steps": result.steps,
        "params": result.parameter_count,
        "scores": _scores(denoised, synth_set.clean),
        "seconds": infer_seconds,
    }
    rows = [row]
    if getattr(args, "tta", False):
        from selfden.inference.loading import trained_orientations
        from selfden.inference.running import denoise_files

        start = time.perf_counter()
        tta_path = denoise_files(result.model_dir, [noisy_path], work / "denoised_tta.tif", device=args.device, tta=True)[0]
        denoised = read_stack(tta_path)
        averaged = f", {len(trained_orientations(result.model_dir))} orientations averaged"
        rows.append({**row, "name": f"{label} --tta", "settings": row["settings"] + averaged,
                     "scores": _scores(denoised, synth_set.clean), "seconds": time.perf_counter() - start})
    figure = save_figure(synth_set, denoised, rows[-1]["name"], args.figures_dir)
    for r in rows:
        scores = f"affine PSNR {r['scores']['affine_psnr']:.2f} dB, SSIM {r['scores']['ssim']:.3f}"
        print(f"[{synth_set.name}] {r['name']}: {result.steps} steps, {scores}")
    record = {
        **_base_record("method", synth_set),
        "method": method,
        "label": label,
        "method_config": config.model_dump(mode="json")["method_config"],
        "data_config": config.data.model_dump(mode="json", exclude={"inputs"}),
        "trainer": config.model_dump(mode="json")["trainer"],
        "seed": config.seed,
        "best_val_loss": result.best_val_loss,
        "train_cores_used": None if cores is None else round(cores, 2),
        "run_dir": str(result.run_dir),
        "figure": _relative(figure),
        "rows": rows,
    }
    if getattr(args, "from_run", None) is not None:
        record["command"] = f"{args.trained_by or '(trained earlier)'}; scored by {record['command']}"
    return record


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(common.BENCH_DIR))
    except ValueError:
        return str(path.resolve())


# --- figure ----------------------------------------------------------------------------------------


def save_figure(synth_set: Any, denoised: np.ndarray, label: str, folder: Path, frame: int = 0) -> Path:
    """noisy | denoised | ground truth for one frame, each stretched to its own 0.5-99.5 percentiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{synth_set.name}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}.png"
    images = (synth_set.noisy[frame], denoised[frame], synth_set.clean[frame])
    titles = ("noisy", f"{label} (onnxruntime)", "ground truth")
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.8), dpi=100)
    for ax, image, title in zip(axes, images, titles):
        low, high = np.percentile(image, (0.5, 99.5))
        ax.imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{synth_set.name}, frame {frame}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --- main ------------------------------------------------------------------------------------------


def run_suite(name: str, methods: list[str], args: argparse.Namespace) -> None:
    from selfden import synth

    synth_set = make_suite(name, args.frames)
    if synth_set is None:
        return
    key = suite_key(synth_set)
    noisy_path, _ = synth.save_synth_set(synth_set, args.out / key / "data")
    common.save_result(noisy_record(synth_set), f"{key}__noisy", args.results_dir)
    for method in methods:
        record = method_record(method, synth_set, noisy_path, args, len(methods))
        common.save_result(record, f"{key}__{record['label']}", args.results_dir)
        common.render_results_md(args.results_dir, args.results_md)
    names = [] if args.baselines.strip() in ("", "none") else [n.strip() for n in args.baselines.split(",")]
    if names:
        common.save_result(baseline_record(synth_set, names, args), f"{key}__baselines", args.results_dir)
    common.render_results_md(args.results_dir, args.results_md)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    for name in SUITES if args.suite == "all" else (args.suite,):
        run_suite(name, methods, args)
    print(f"wrote {args.results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
