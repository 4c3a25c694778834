"""The peers scorecard: every suite at every mark in one table, and what issue 17 asks of it.

``peers.py`` trains each peer for 30 minutes, one after the other, so a run with every peer on every
suite is eight hours of a quiet machine. A peer whose code and settings did not change since an
earlier run (CAREamics, the reference COSDD) need not run again: this script takes rows from named
``peers.py`` records (``--runs LABEL`` for every peer of that run, ``LABEL:peer,peer`` for some), puts
them in one table per suite with the run each row came from, and checks the issue's bars:

- selfden's recommended method ahead of every peer at every mark;
- at the last mark, at least 1 dB over the best oracle classical filter (also with ``selfden infer
  --tta`` where the run scored it: ``peers.py --tta``; peers are compared with plain selfden);
- no selfden output worse than its noisy input.

Steps/s ratios are quoted only between rows of one run (load differs between runs; PSNR per step
does not). Every row's own run, with its full settings, stays in RESULTS.md under its label.

    python benchmarks/peers_scorecard.py --runs stripe-free-bits-0.03 \\
        --runs stripe-30min-prior:n2v,structn2v --runs atoms-noise2atom-30min ...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common

#: selfden's rows with ``--tta`` (peers.py --tta) are a peer id of their own, "selfden-tta".
TTA_SUFFIX = " --tta"
PEER_PREFIXES = {"selfden": "selfden ", "cosdd-reference": "COSDD reference", "n2v": "CAREamics N2V",
                 "structn2v": "CAREamics structN2V"}
ORACLE_SUFFIX = "(oracle)"
MARK_TOLERANCE_MINUTES = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", action="append", required=True,
                        help="a peers.py label, optionally ':peer,peer' (selfden, cosdd-reference, n2v, structn2v)")
    parser.add_argument("--speed-runs", action="append", default=[], metavar="LABEL",
                        help="a peers.py label whose steps/s ratios are quoted but whose rows are not tabled "
                             "(e.g. selfden at a peer's batch size)")
    parser.add_argument("--marks", default="5,15,30", help="minutes to report (the last is the budget)")
    parser.add_argument("--margin-db", type=float, default=1.0, help="the bar over the best oracle at the last mark")
    return parser.parse_args(argv)


def peer_of(row_name: str) -> str | None:
    """The peer id of a table row ('selfden cosdd' -> 'selfden', 'selfden dnnet --tta' -> 'selfden-tta');
    None for the noisy input and the oracles."""
    if row_name.startswith(PEER_PREFIXES["selfden"]) and row_name.endswith(TTA_SUFFIX):
        return "selfden-tta"
    for peer, prefix in PEER_PREFIXES.items():
        if row_name.startswith(prefix):
            return peer
    return None


def mark_of(minutes: float, marks: list[float]) -> float | None:
    closest = min(marks, key=lambda mark: abs(mark - minutes))
    return closest if abs(closest - minutes) <= MARK_TOLERANCE_MINUTES else None


def load_run(spec: str) -> tuple[str, set[str] | None, dict[str, Any]]:
    label, _, peers = spec.partition(":")
    path = common.RESULTS_DIR / f"peers-{label}.json"
    if not path.is_file():
        raise SystemExit(f"peers_scorecard.py: {path} not found; run peers.py --label {label} first")
    wanted = {p for p in peers.split(",") if p} or None
    unknown = (wanted or set()) - set(PEER_PREFIXES) - {"selfden-tta"}
    if unknown:
        raise SystemExit(f"peers_scorecard.py: unknown peer(s) {sorted(unknown)} in --runs {spec}")
    return label, wanted, json.loads(path.read_text())


def collect(specs: list[str], marks: list[float], speed_labels: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Per suite: the oracle rows; per (peer, mark), the row closest to the mark and the run it came from; per
    run, every peer's steps/s over its whole training (``speed``; ``speed_labels`` add only that)."""
    suites: dict[str, dict[str, Any]] = {}
    for spec, speed_only in [*((spec, False) for spec in specs), *((label, True) for label in speed_labels)]:
        label, wanted, record = load_run(spec)
        for table in record["tables"]:
            suite = table["title"].split(":")[0]
            entry = suites.setdefault(suite, {"reference": {}, "peers": {}, "runs": {}, "speed": {}})
            entry["runs"][label] = f"`{record['command']}` ({record['date']})"
            for row in table["rows"]:
                name, minutes = row[0], row[1]
                peer = peer_of(name)
                if peer is not None and peer != "selfden-tta":  # steps/s is cumulative: the last row covers it all
                    entry["speed"].setdefault(label, {})[name] = row[3]
                if speed_only:
                    continue
                if peer is None:
                    entry["reference"].setdefault(name, row)
                    continue
                mark = mark_of(minutes, marks)
                # "LABEL:selfden" takes the run's --tta rows too
                taken = peer if peer != "selfden-tta" else "selfden"
                if mark is None or (wanted is not None and taken not in wanted):
                    continue
                key = (peer, mark)
                held = entry["peers"].get(key)
                if held and held[1] != label:
                    raise SystemExit(f"peers_scorecard.py: {suite} {peer} at {mark:g} min comes from both "
                                     f"{held[1]} and {label}; name the peers to take from one of them")
                if held is None or abs(minutes - mark) < abs(held[0][1] - mark):
                    entry["peers"][key] = (row, label)
    return suites


def checks(suite: str, entry: dict[str, Any], marks: list[float], margin_db: float) -> list[list[Any]]:
    """The issue's bars for one suite, each as a row: what, the numbers, met or not."""
    rows = []
    noisy = entry["reference"]["noisy input"][4]
    oracles = {name: row[4] for name, row in entry["reference"].items() if name.endswith(ORACLE_SUFFIX)}
    for mark in marks:
        ours = entry["peers"].get(("selfden", mark))
        if ours is None:
            rows.append([suite, f"{mark:g} min", "selfden not measured yet", "every bar", "not measured"])
            continue
        psnr = ours[0][4]
        others = {key[0]: value[0] for key, value in entry["peers"].items()
                  if key[1] == mark and not key[0].startswith("selfden")}
        missing = sorted(set(PEER_PREFIXES) - {"selfden"} - set(others) - skipped_peers(suite))
        best = max(others.values(), key=lambda row: row[4]) if others else None
        lead = psnr - best[4] if best else None
        rows.append([suite, f"{mark:g} min", f"{ours[0][0]} {psnr:.2f} dB vs best peer "
                     + (f"{best[0]} {best[4]:.2f} dB ({lead:+.2f})" if best else "none")
                     + (f"; not measured: {', '.join(missing)}" if missing else ""),
                     "ahead of every peer", "not measured" if missing else "yes" if best and lead > 0 else "no"])
        rows.append([suite, f"{mark:g} min", f"{psnr:.2f} dB vs noisy {noisy:.2f} dB ({psnr - noisy:+.2f})",
                     "better than the noisy input", "yes" if psnr > noisy else "no"])
    if not oracles:
        return rows
    name, value = max(oracles.items(), key=lambda item: item[1])
    for peer in ("selfden", "selfden-tta"):
        last = entry["peers"].get((peer, marks[-1]))
        if last:
            over = last[0][4] - value
            rows.append([suite, f"{marks[-1]:g} min", f"{last[0][0]} {last[0][4]:.2f} dB vs {name} {value:.2f} dB "
                         f"({over:+.2f})", f">= {margin_db:g} dB over the best oracle", "yes" if over >= margin_db else "no"])
    return rows


def skipped_peers(suite: str) -> set[str]:
    """Peers peers.py does not run on a suite (structN2V has no axis to mask on white noise)."""
    return {"structn2v"} if suite == "poisson_gaussian" else set()


def suite_table(suite: str, entry: dict[str, Any], marks: list[float]) -> dict[str, Any]:
    rows = [[*row, "–"] for row in entry["reference"].values()]
    for peer in ("selfden", "selfden-tta", *list(PEER_PREFIXES)[1:]):
        for mark in marks:
            if (peer, mark) in entry["peers"]:
                row, label = entry["peers"][(peer, mark)]
                rows.append([*row, label])
    ratio = steps_ratio(entry)
    return {
        "title": f"{suite}: every peer at {', '.join(f'{m:g}' for m in marks)} minutes",
        "note": ("Rows as measured by peers.py in the runs named in the last column (same data, same seed, 2 threads, "
                 "each peer alone on the machine); their full settings are under each run's label. "
                 + "Runs: " + "; ".join(f"{label}: {text}" for label, text in entry["runs"].items())
                 + (f". {ratio}" if ratio else "")),
        "columns": ["denoiser", "minutes", "steps", "steps/s", "affine PSNR", "SSIM", "s per frame", "run"],
        "rows": rows,
    }


def steps_ratio(entry: dict[str, Any]) -> str:
    """selfden's steps/s over every other peer's, within each run that trained both (never across runs)."""
    quotes = []
    for label, speeds in entry["speed"].items():
        ours = [(name, value) for name, value in speeds.items() if peer_of(name) == "selfden"]
        theirs = [(name, value) for name, value in speeds.items() if peer_of(name) != "selfden"]
        if ours and theirs:
            name, value = ours[0]
            quotes.append(f"run {label}: {name} {value:.2f}; " + "; ".join(
                f"{other} {speed:.2f} ({value / speed:.2f}x)" for other, speed in theirs))
    return ("Steps/s over the whole training, selfden over each peer in one run: " + " | ".join(quotes)) if quotes else ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    marks = sorted(float(m) for m in args.marks.split(",") if m)
    suites = collect(args.runs, marks, args.speed_runs)
    tables = [suite_table(suite, entry, marks) for suite, entry in suites.items()]
    verdicts = [row for suite, entry in suites.items() for row in checks(suite, entry, marks, args.margin_db)]
    tables.append({"title": "what issue 17 asks, suite by suite", "note": "Scores are affine PSNR on all frames.",
                   "columns": ["suite", "budget", "measured", "bar", "met"], "rows": verdicts})
    for row in verdicts:
        print(" | ".join(str(cell) for cell in row))
    common.save_speed_record("peers-all-suites", "Peers at equal CPU time: the scorecard", tables,
                             "peers_scorecard.py")
    print("wrote benchmarks/results/peers-all-suites.json and RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
