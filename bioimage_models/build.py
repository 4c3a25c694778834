"""Rebuild the bioimage.io packages shipped in bioimage_models/, and their README table.

For each method (cae, cosdd, dnnet, noise2atom; the ones whose module imports) this script

1. generates a synthetic dataset with known ground truth (``selfden.synth``, data seed 0);
2. trains with the real command line, ``selfden train METHOD NOISY.tif -o run --minutes M --seed S``;
3. denoises the noisy stack with ``selfden infer`` (the run's model) and scores noisy and denoised
   frames against the truth (affine PSNR, ``selfden.metrics``);
4. exports with ``selfden export run -o bioimage_models/<name> --validation "<that measurement>"``
   and validates the package (``selfden.export.validation.validate_package``: bioimage.io format,
   test_model for both weight formats, deepImageJ);
5. records everything in ``packages.json`` and regenerates ``README.md`` from it.

Usage (from the repository root, in the environment that has selfden installed)::

    python bioimage_models/build.py [--minutes M] [--only cae[,cosdd]] [--device auto|cpu|cuda]
    python bioimage_models/build.py --only cosdd --from-run RUN --trained-by "COMMAND"

``--from-run`` packages a run trained elsewhere (e.g. by a benchmark, on the same suite and data
seed) instead of training again; ``--trained-by`` records the command that trained it.

``--from-package`` rebuilds shipped packages from their own files, without training or run folders
(``selfden.export.border_package.add_borders``: the reflect border goes into the weights, the test
output and cover are made again), validates them and updates ``packages.json``::

    python bioimage_models/build.py --from-package bioimage_models/cae-atoms [bioimage_models/...]

Exit status 1 when a build, its validation or the 20 MB size limit fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from catalogue import MAX_MB, load_records, render_readme, save_records

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclass(frozen=True)
class Recipe:
    """One shipped package: a method trained on one synthetic suite."""

    name: str  # folder under bioimage_models/
    method: str
    suite: str  # function of selfden.synth returning a SynthSet
    train_options: tuple[str, ...] = ()


RECIPES = (
    Recipe("cae-atoms", "cae", "atoms_suite"),
    Recipe("cosdd-stripe", "cosdd", "stripe_suite", ("--direction", "x")),
    Recipe("dnnet-poisson-gaussian", "dnnet", "poisson_gaussian_suite"),
    Recipe("noise2atom-atoms", "noise2atom", "atoms_suite"),
)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.from_package:
        return rebuild_packages([Path(p) for p in args.from_package], Path(args.output).resolve())
    recipes = _selected(args.only)
    if args.from_run and len(recipes) != 1:
        raise SystemExit("--from-run packages one run: name its recipe with --only")
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    records = load_records(output)
    ok = True
    for recipe in recipes:
        reason = _unavailable(recipe.method)
        if reason:
            print(f"skipping {recipe.name}: {reason}", flush=True)
            ok = ok and args.only is None
            continue
        with tempfile.TemporaryDirectory(prefix=f"selfden-build-{recipe.name}-") as temp:
            work = Path(args.work or temp) / recipe.name
            if work.exists() and any(work.iterdir()):
                raise SystemExit(f"{work} is not empty (an earlier build?); remove it or choose another --work")
            record = build(recipe, output, work, args)
        records[recipe.name] = record
        save_records(output, records)
        ok = ok and record["ok"]
    (output / "README.md").write_text(render_readme(records), encoding="utf-8")
    print(f"wrote {output / 'README.md'}", flush=True)
    return 0 if ok else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per method (default 20)")
    parser.add_argument("--only", help="comma-separated methods or package names (default: every available method)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--seed", type=int, default=0, help="training seed (the data seed is always 0)")
    parser.add_argument("--output", default=str(HERE), help="where packages, packages.json and README.md go")
    parser.add_argument("--from-run", help="package this finished run folder instead of training (one recipe)")
    parser.add_argument("--trained-by", help="with --from-run: the command that trained the run (recorded)")
    parser.add_argument("--from-package", nargs="+", metavar="FOLDER",
                        help="rebuild these shipped packages from their own files (no training), then validate")
    parser.add_argument("--work", help="keep data, run folders and denoised stacks here (default: a temp folder)")
    return parser


def _selected(only: str | None) -> list[Recipe]:
    if only is None:
        return list(RECIPES)
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    chosen = [r for r in RECIPES if r.method in wanted or r.name in wanted]
    unknown = wanted - {r.method for r in chosen} - {r.name for r in chosen}
    if unknown:
        names = ", ".join(r.method for r in RECIPES)
        raise SystemExit(f"--only: unknown {', '.join(sorted(unknown))}; choose from {names}")
    return chosen


def _unavailable(method: str) -> str | None:
    """Why ``method`` cannot be built here, or None."""
    from selfden.methods import get_method

    try:
        get_method(method)
    except Exception as error:  # a missing or broken method module: report and go on
        return f"method module does not import ({type(error).__name__}: {error})"
    return None


# --- one package ------------------------------------------------------------------------


def rebuild_packages(folders: list[Path], output: Path) -> int:
    """Rebuild each package folder in place (borders in the weights), validate it, record it; 1 on any failure."""
    from selfden.errors import SelfdenError
    from selfden.export.border_package import add_borders

    records, ok = load_records(output), True
    for folder in folders:
        print(f"rebuilding {folder} from its own files", flush=True)
        try:
            add_borders(folder)
        except SelfdenError as error:  # not a selfden package, or one without both weight formats
            print(f"{folder.name}: {error}", flush=True)
            ok = False
            continue
        record = records.setdefault(folder.name, {"name": folder.name, "method": folder.name.split("-")[0],
                                                  "commands": [], "data": "(not recorded)", "data_call": "", "data_file": ""})
        record.update(_validate(folder))
        record["rebuilt"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") + " (--from-package)"
        record["ok"] = record["validation"] == "passed" and record["size_mb"] <= MAX_MB
        ok = ok and record["ok"]
        save_records(output, records)
    (output / "README.md").write_text(render_readme(records), encoding="utf-8")
    return 0 if ok else 1



def build(recipe: Recipe, output: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Data, train, export, validate and score one recipe; returns its record."""
    from selfden import synth
    from selfden.inference.loading import trained_orientations

    work.mkdir(parents=True, exist_ok=True)
    data = getattr(synth, recipe.suite)(rng=np.random.default_rng(0))
    noisy_path, _ = synth.save_synth_set(data, work)
    package = output / recipe.name
    train = ["train", recipe.method, noisy_path.name, "-o", "run", "--minutes", f"{args.minutes:g}",
             "--seed", str(args.seed), "--device", args.device, *recipe.train_options]  # fmt: skip
    infer = ["infer", "run", noisy_path.name, "-o", "denoised.tif", "--device", args.device]
    if args.from_run:
        (work / "run").symlink_to(Path(args.from_run).resolve(), target_is_directory=True)
    record: dict[str, Any] = {
        "name": recipe.name, "method": recipe.method, "data": data.description,
        "data_call": f"selfden.synth.{recipe.suite}(rng=numpy.random.default_rng(0))", "data_file": noisy_path.name,
        "commands": [_shown(c) for c in (train, infer)], "minutes": args.minutes, "ok": False,
    }  # fmt: skip
    if args.from_run:
        record["commands"][0] = args.trained_by or f"(trained elsewhere: {args.from_run})"
    try:
        record.update(_run_progress(work / "run") if args.from_run else _parse_training(_selfden(train, work)))
        record["built"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        _selfden(infer, work)
        record.update(_scores(data, work / "denoised.tif"))
        measured = (
            f"Affine PSNR against the known ground truth of the synthetic training stack ({len(data.clean)} frames, "
            f"`selfden infer` on every frame): noisy {record['noisy_affine_psnr']:.2f} dB -> denoised "
            f"{record['denoised_affine_psnr']:.2f} dB"
        )
        if len(trained_orientations(work / "run")) > 1:  # the model lists what --tta may average
            tta = [*infer[:4], "denoised_tta.tif", *infer[5:], "--tta"]
            record["commands"].append(_shown(tta))
            _selfden(tta, work)
            record["tta_affine_psnr"] = _scores(data, work / "denoised_tta.tif")["denoised_affine_psnr"]
            measured += f" ({record['tta_affine_psnr']:.2f} dB with `--tta`)"
        measured += "."

        export_and_validate(["export", "run", "-o", package, "--validation", measured], package, work, record)
    except subprocess.CalledProcessError as error:
        return failed(record, error)
    return record


def export_and_validate(export: list[Any], package: Path, work: Path, record: dict[str, Any]) -> None:
    """Run ``selfden export`` (recorded), validate the package and mark the record ok when it passed."""
    record["commands"].append(_shown(export))
    _selfden(export, work)
    record.update(_validate(package))
    record["ok"] = record["validation"] == "passed" and record["size_mb"] <= MAX_MB


def failed(record: dict[str, Any], error: subprocess.CalledProcessError) -> dict[str, Any]:
    """``record`` with the command that failed."""
    record["error"] = f"`{_shown(error.cmd[3:])}` exited with {error.returncode}"
    print(f"{record['name']}: {record['error']}", flush=True)
    return record


def _selfden(arguments: list[Any], cwd: Path) -> str:
    """Run the real command line (``python -m selfden.cli``); progress goes to the terminal."""
    print(f"$ {_shown(arguments)}", flush=True)
    command = [sys.executable, "-m", "selfden.cli", *map(str, arguments)]
    done = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, text=True, check=False)
    print(done.stdout, end="", flush=True)
    if done.returncode:
        raise subprocess.CalledProcessError(done.returncode, command, done.stdout)
    return done.stdout


def _shown(arguments: list[Any]) -> str:
    """The command as a user types it: paths in the repository relative to its root."""
    shown = []
    for argument in arguments:
        if isinstance(argument, Path) and REPO in argument.resolve().parents:
            argument = argument.resolve().relative_to(REPO)
        shown.append(str(argument))
    return "selfden " + shlex.join(shown)


def _parse_training(stdout: str) -> dict[str, Any]:
    found = re.search(r"trained (\d+) steps in ([\d.]+) min on (\S+)", stdout)
    if not found:
        return {}
    return {"steps": int(found[1]), "train_minutes": float(found[2]), "device": found[3]}


def _run_progress(run: Path) -> dict[str, Any]:
    """Steps, minutes and device of a finished run, from its metrics log and config."""
    import yaml

    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = max(lines, key=lambda entry: entry.get("step", 0))
    device = yaml.safe_load((run / "config.yaml").read_text())["trainer"].get("device", "auto")
    return {"steps": int(last["step"]), "train_minutes": round(last["elapsed_seconds"] / 60, 1), "device": device}


def _validate(package: Path) -> dict[str, Any]:
    from selfden.export.validation import validate_package

    report = validate_package(package, trust_code=True)  # our own package: run its PyTorch test too
    print(report.format(), flush=True)
    failed = [c.name for c in report.checks if not (c.passed or c.warning)]
    size = sum(p.stat().st_size for p in package.rglob("*") if p.is_file()) / 1e6
    return {"validation": "passed" if report.passed else f"failed: {', '.join(failed)}", "size_mb": round(size, 2)}


def _scores(data: Any, denoised_path: Path) -> dict[str, float]:
    import tifffile

    from selfden.metrics import affine_psnr

    denoised = np.asarray(tifffile.imread(denoised_path), dtype=np.float32).reshape(data.clean.shape)
    return {
        "noisy_affine_psnr": round(affine_psnr(data.noisy, data.clean), 2),
        "denoised_affine_psnr": round(affine_psnr(denoised, data.clean), 2),
    }


if __name__ == "__main__":
    sys.exit(main())
