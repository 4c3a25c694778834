"""Side by side with the peers at equal CPU time: selfden, the reference COSDD and CAREamics.

Every peer trains on the same noisy stack, with the same number of CPU threads and the same
wall-clock budget, one after the other; at each time mark (``--marks``, minutes) its weights at that
moment denoise the whole stack, and one scorer (affine PSNR and SSIM against the truth, as
quality.py) scores every output. Peers:

- **selfden**: the recommended method for the suite (``RECOMMENDED``), trained as ``selfden train``
  plans it; each mark uses the last checkpoint written by then (one every 15 s), in torch. ``--tta``
  adds a row per mark for ``selfden infer --tta``: the mean over the orientations the method trained
  with (eight for pixel-independent noise, two for row or column noise), at that many times the cost.
- **COSDD reference** (krulllab/COSDD, MIT): a local checkout (``--cosdd-checkout``) run by
  ``peers/cosdd_reference.py`` in its own virtual environment (``--cosdd-python``), at the measured
  reference configuration (S=32, L=6, K=4, 64² crops, batch 4), bf16 autocast; its direct denoiser.
- **CAREamics N2V and structN2V** (PyPI ``careamics``, in its own environment,
  ``--careamics-python``), run by ``peers/careamics_peer.py``.

The peers are never imported here: each runs as a subprocess of its own interpreter and hands back
.npy arrays and a JSON summary. Suites: stripe (row-correlated), columns (the stripe suite
transposed: column-correlated), atoms and poisson_gaussian.

    python benchmarks/peers.py --suites stripe --marks 5,15,30 --cosdd-checkout PEERS/COSDD \\
        --cosdd-python PEERS/cosdd-ref/bin/python --careamics-python PEERS/careamics/bin/python
    python benchmarks/peers.py --suites stripe --frames 8 --marks 0.5 --label smoke ...   # smoke test
    python benchmarks/peers.py --suites poisson_gaussian --peers selfden --tta --from-work WORK  # rescore
    python benchmarks/peers.py --suites poisson_gaussian --peers selfden,n2v --marks 5 --batch-size 16 \
        --careamics-python PEERS/careamics/bin/python   # steps/s at CAREamics' configuration, one run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import common
import quality
from snapshots import Snapshots, at_marks, load_snapshots

SUITES = ("stripe", "columns", "atoms", "poisson_gaussian")
#: selfden's method for each suite's noise: what the README recommends for such data. Atoms: cosdd since its
#: training spreads photon counts over their grid (30 minutes: 33.17 dB against noise2atom's 26.27, RESULTS.md).
RECOMMENDED = {"stripe": "cosdd", "columns": "cosdd", "atoms": "cosdd", "poisson_gaussian": "dnnet"}
#: The noise axis the peers are told (the reference's noise-direction; structN2V's mask axis).
AXIS = {"stripe": "x", "columns": "y", "atoms": "x", "poisson_gaussian": "none"}
PEERS = ("selfden", "cosdd-reference", "n2v", "structn2v")
HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--suites", default=",".join(SUITES))
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--marks", default="5,15,30", help="minutes of training at which to score (the last is the budget)")
    parser.add_argument("--threads", type=int, default=common.cpu_count())
    parser.add_argument("--frames", type=int, default=None, help="only this many frames per suite (smoke tests)")
    parser.add_argument("--cosdd-checkout", type=Path, help="local checkout of krulllab/COSDD")
    parser.add_argument("--cosdd-python", type=Path, help="python of the reference's own virtual environment")
    parser.add_argument("--careamics-python", type=Path, help="python of a virtual environment with careamics")
    parser.add_argument("--baselines", default="gaussian,nlm,bm3d", help="oracle classical baselines (cached)")
    parser.add_argument("--method", default=None, help="selfden's method on every suite (default: RECOMMENDED's)")
    parser.add_argument("--set", action="append", default=[], metavar="[METHOD.]KEY=VALUE",
                        help="option of selfden's method (repeatable), e.g. lr_schedule=cosine; recorded in its settings")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="selfden's batch size (default: selfden train's for the method and device), e.g. 16 "
                             "to train at CAREamics' configuration")
    parser.add_argument("--patch-size", type=int, default=None, help="selfden's crop size (default: selfden train's)")
    parser.add_argument("--tta", action="store_true",
                        help="also score selfden with --tta (its training orientations averaged), as extra rows")
    parser.add_argument("--from-work", type=Path, default=None, metavar="WORK",
                        help="score selfden from an earlier peers.py run's folder (WORK/run, WORK/snapshots) "
                             "instead of training, e.g. with --tta; one suite only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", default="", help="suffix of this run's section in RESULTS.md")
    parser.add_argument("--out", type=Path, default=HERE / "_work" / "peers")
    return parser.parse_args(argv)


def make_suite(name: str, frames: int | None) -> Any:
    """The suite's SynthSet; "columns" is the stripe suite transposed, so its noise runs down columns."""
    from selfden import synth

    if name != "columns":
        return quality.make_suite(name, frames)
    stripe = quality.make_suite("stripe", frames)
    description = stripe.description.replace("along x", "along y") + " (the stripe suite transposed)"
    return synth.SynthSet("columns", stripe.noisy.transpose(0, 2, 1).copy(), stripe.clean.transpose(0, 2, 1).copy(),
                          description)


# --- the peers -------------------------------------------------------------------------------------


def run_selfden(suite: str, noisy_path: Path, marks: list[float], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train selfden's recommended method for ``marks[-1]`` minutes (or take ``--from-work``'s run); the last
    checkpoint by each mark denoises."""
    import torch

    from selfden.methods import get_method
    from selfden.runs.config import load_run_config

    torch.set_num_threads(args.threads)
    method_name = args.method or RECOMMENDED[suite]
    options = quality.method_options(method_name, args.set)
    if args.from_work:
        settings = f"scored from {work}, trained by an earlier peers.py run (its settings are under its label)"
    else:
        settings = train_selfden(method_name, options, noisy_path, marks, args, work)
    config = load_run_config(work / "run")  # as trained: with the normalisation measured from the data
    trained_on = [quality.read_stack(Path(path)) for path in config.data.inputs]
    if len(trained_on) != 1 or not np.array_equal(trained_on[0], quality.read_stack(noisy_path)):
        raise SystemExit(f"peers.py: {work / 'run'} was trained on other data than {noisy_path}")
    norm = config.normalisation
    frames = [torch.from_numpy((frame - norm.offset) / norm.scale).float() for frame in quality.read_stack(noisy_path)]
    outputs = []
    for checkpoint in at_marks(load_snapshots(work / "snapshots"), marks):
        method = get_method(method_name)(config.method_config, norm, torch.device("cpu"))
        method.load_state_dict(checkpoint["method"])
        variants = {"": ("identity",)}
        if args.tta:
            variants[" --tta"] = method.config.training_orientations()
        for suffix, names in variants.items():
            start = time.perf_counter()
            denoised = np.stack([ensemble_denoise(method, frame, names) for frame in frames]) * norm.scale + norm.offset
            outputs.append({"elapsed_seconds": checkpoint["elapsed_seconds"], "steps": checkpoint["step"],
                            "denoised": denoised, "seconds_per_frame": (time.perf_counter() - start) / len(frames),
                            "suffix": suffix})
    return {"peer": f"selfden {method_name}", "steps": outputs[-1]["steps"], "train_seconds": outputs[-1]["elapsed_seconds"],
            "parameters": method.parameter_count(), "outputs": outputs, "settings": settings}


def train_selfden(method_name: str, options: dict[str, Any], noisy_path: Path, marks: list[float],
                  args: argparse.Namespace, work: Path) -> str:
    """Train as ``selfden train`` for ``marks[-1]`` minutes, copying checkpoints into WORK/snapshots as they
    are written; the settings line of the table's note."""
    from selfden.runs.plan import new_run_config, plan_run
    from selfden.runs.train import train_run

    # A checkpoint every 15 s (the default is a minute), so each mark scores weights close to it.
    trainer = {"device": "cpu", "max_minutes": marks[-1], "checkpoint_every_minutes": 0.25}
    crops = {key: value for key, value in (("batch_size", args.batch_size), ("patch_size", args.patch_size)) if value}
    plan = plan_run(new_run_config(method_name, [noisy_path], options, crops, trainer, args.seed))
    # where its weights started (selfden's COSDD prior: pretrained before, outside the budget)
    started_from = [note.text.split(";")[0] for note in plan.notes if "prior" in note.text]
    watcher = Snapshots(work / "run", work / "snapshots")
    watcher.start()
    try:
        result = train_run(plan.config, work / "run")
    finally:
        watcher.done.set()
        watcher.join()
    for note in result.outcome:  # the verdict selfden train prints, for the log
        print(f"  selfden {method_name} {note.level}: {note.text}", flush=True)
    data = plan.config.data
    settings = (f"{method_name} defaults as planned by selfden train"
                + "".join(f", {key}={value}" for key, value in options.items())
                + f", patch {data.patch_size}, batch {data.batch_size}, {args.threads} threads"
                + f", bf16 autocast {'on' if bf16_used(plan.config) else 'off'}"
                + "".join(f", {text}" for text in started_from)
                + validation_share(work / "run" / "metrics.jsonl", result.elapsed_seconds))
    return settings


def bf16_used(config: Any) -> bool:
    """Whether the trainer ran this planned run under bf16 autocast (as it decides, on this machine)."""
    import torch

    from selfden.training.device import uses_bf16

    return uses_bf16(torch.device("cpu"), config.trainer, config.method_config.cpu_bf16_pays())


def ensemble_denoise(method: Any, frame: Any, names: tuple[str, ...]) -> np.ndarray:
    """The method's denoised (H, W) frame averaged over orientations ``names``, as ``selfden infer --tta``."""
    import torch

    from selfden.geometry.orientations import running_mean, self_ensemble

    def predict(image: np.ndarray) -> np.ndarray:  # (H, W) -> (1, H, W), as self_ensemble expects
        with torch.no_grad():
            return method.denoise(torch.from_numpy(image)[None, None])[0].numpy()

    return self_ensemble(frame.numpy(), predict, names, running_mean)[0]


def validation_share(metrics_path: Path, train_seconds: float) -> str:
    """', validation N % of the budget' from the trainer's val_seconds (empty for logs from before it was kept)."""
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    spent = [row["val_seconds"] for row in rows if row.get("kind") == "val" and "val_seconds" in row]
    return f", validation {100 * sum(spent) / train_seconds:.1f} % of the budget" if spent else ""


def run_foreign(peer: str, suite: str, noisy_path: Path, marks: list[float], args: argparse.Namespace,
                work: Path) -> dict[str, Any]:
    """Run a peer's driver with its own interpreter; read back its summary and .npy outputs."""
    mark_list = ",".join(f"{m:g}" for m in marks)
    common_args = ["--data", str(noisy_path), "--marks", mark_list, "--threads", str(args.threads),
                   "--seed", str(args.seed), "--out", str(work)]
    if peer == "cosdd-reference":
        if not (args.cosdd_checkout and args.cosdd_python):
            raise SystemExit("peers.py: the reference COSDD needs --cosdd-checkout and --cosdd-python")
        command = [str(args.cosdd_python), str(HERE / "peers" / "cosdd_reference.py"), "--checkout",
                   str(args.cosdd_checkout), "--direction", AXIS[suite], *common_args]
    else:
        if not args.careamics_python:
            raise SystemExit(f"peers.py: {peer} needs --careamics-python")
        command = [str(args.careamics_python), str(HERE / "peers" / "careamics_peer.py"), "--algorithm", peer,
                   "--axis", AXIS[suite], *common_args]
    print("  $ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)
    summary = json.loads((work / "summary.json").read_text())
    outputs = [{"elapsed_seconds": m["elapsed_seconds"], "steps": m["steps"], "seconds_per_frame": m["seconds_per_frame"],
                "denoised": np.load(work / m["output"], allow_pickle=False)} for m in summary["marks"]]
    return {"peer": summary["peer"], "steps": summary["steps"], "train_seconds": summary["train_seconds"],
            "parameters": summary["parameters"], "outputs": outputs, "settings": summary.get("settings", "")}


# --- scoring and the table ------------------------------------------------------------------------


def score_rows(run: dict[str, Any], clean: np.ndarray) -> list[list[Any]]:
    rows = []
    for output in run["outputs"]:
        scores = quality._scores(output["denoised"], clean)
        minutes = output["elapsed_seconds"] / 60
        rows.append([run["peer"] + output.get("suffix", ""), round(minutes, 2), output["steps"],
                     output["steps"] / max(output["elapsed_seconds"], 1e-9), scores["affine_psnr"], scores["ssim"],
                     output["seconds_per_frame"]])
        print(f"  {run['peer'] + output.get('suffix', ''):34} {minutes:6.2f} min {output['steps']:6d} steps  "
              f"affine PSNR {scores['affine_psnr']:.2f} dB  SSIM {scores['ssim']:.3f}", flush=True)
    return rows


def reference_rows(synth_set: Any, args: argparse.Namespace) -> list[list[Any]]:
    """The noisy input and the oracle classical baselines (quality.py's cache), as table rows."""
    noisy = quality.noisy_record(synth_set)["rows"][0]["scores"]
    rows = [["noisy input", "–", "–", "–", noisy["affine_psnr"], noisy["ssim"], "–"]]
    names = [n for n in args.baselines.split(",") if n]
    if names:
        options = argparse.Namespace(results_dir=common.RESULTS_DIR, rerun_baselines=False)
        record = quality.baseline_record(synth_set, names, options)
        common.save_result(record, f"{quality.suite_key(synth_set)}__baselines")
        for row in record["rows"]:
            rows.append([row["name"], "–", "–", "–", row["scores"]["affine_psnr"], row["scores"]["ssim"], "–"])
    return rows


def run_suite(suite: str, args: argparse.Namespace) -> dict[str, Any]:
    from selfden import synth

    marks = sorted(float(m) for m in args.marks.split(",") if m)
    synth_set = make_suite(suite, args.frames)
    key = quality.suite_key(synth_set)
    noisy_path, _ = synth.save_synth_set(synth_set, args.out / key / "data")
    rows, runs = reference_rows(synth_set, args), []
    for peer in [p for p in args.peers.split(",") if p]:
        if peer == "structn2v" and AXIS[suite] == "none":
            print(f"[{suite}] structn2v: skipped (no correlated noise to mask along)")
            continue
        work = (args.from_work if peer == "selfden" and args.from_work
                else args.out / key / f"{peer}-{time.strftime('%Y%m%d-%H%M%S')}")
        print(f"[{suite}] {peer}: {work}", flush=True)
        run = (run_selfden(suite, noisy_path, marks, args, work) if peer == "selfden"
               else run_foreign(peer, suite, noisy_path, marks, args, work))
        rows += score_rows(run, synth_set.clean)
        runs.append({k: v for k, v in run.items() if k != "outputs"}
                    | {"steps_per_second": run["steps"] / max(run["train_seconds"], 1e-9)})
    return {
        "title": f"{suite}: peers at {args.marks} minutes ({len(synth_set.noisy)} frames)",
        "note": (f"{synth_set.description}. Each peer trained alone on {args.threads} threads for the last mark's "
                 "minutes; at each mark its weights then (selfden: its last checkpoint, one every 15 s) denoised all "
                 "frames in torch (s per frame); steps/s over training including each peer's own validation. "
                 + "; ".join(f"{r['peer']}: {r['settings']}, {r['parameters']} parameters" for r in runs)
                 + speed_ratios(runs)),
        "columns": ["denoiser", "minutes", "steps", "steps/s", "affine PSNR", "SSIM", "s per frame"],
        "rows": rows,
    }


def speed_ratios(runs: list[dict[str, Any]]) -> str:
    """The note's last sentence: every peer's steps/s over its whole training in this run, and selfden's over it."""
    ours = [r for r in runs if r["peer"].startswith("selfden")]
    others = [r for r in runs if not r["peer"].startswith("selfden")]
    if not ours or not others:
        return ""
    mine = ours[0]["steps_per_second"]
    return (f". Steps/s over the whole training in this run: {ours[0]['peer']} {mine:.2f}; "
            + "; ".join(f"{r['peer']} {r['steps_per_second']:.2f} ({mine / r['steps_per_second']:.2f}x)" for r in others))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    suites = [suite for suite in args.suites.split(",") if suite]
    if args.from_work and len(suites) != 1:
        raise SystemExit("peers.py: --from-work scores one earlier run: give one suite (--suites)")
    tables = [run_suite(suite, args) for suite in suites]
    name = "peers" + (f"-{args.label}" if args.label else "")
    common.save_speed_record(name, "Peers side by side at equal CPU time" + (f" ({args.label})" if args.label else ""),
                             tables, "peers.py")
    print(f"wrote benchmarks/results/{name}.json and RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
