"""One table from several ``cosdd_trajectory.py`` records: each variant's direct and MMSE-8 score at its last step.

Equal-step A/Bs (``cosdd_trajectory.py --steps N --set KEY=VALUE --label L``) each write a full
trajectory record; this puts their end points side by side, with the command behind each row.

    python benchmarks/cosdd_compare.py --name early-555steps --title "..." RESULT.json ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import common


def end_point(record: dict) -> list[object]:
    """[label, last step, direct dB, MMSE-8 dB, command] of one trajectory record."""
    rows = record["tables"][0]["rows"]
    steps = [row for row in rows if isinstance(row[0], int)]
    mmse = next((row for row in rows if str(row[0]).startswith("MMSE")), None)
    label = record["title"].rsplit("(", 1)[-1].rstrip(")")
    return [label, steps[-1][0], round(steps[-1][2], 2), round(mmse[2], 2) if mmse else "", f"`{record['command']}`"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", type=Path, nargs="+", help="cosdd__trajectory-*.json records")
    parser.add_argument("--name", required=True, help="this comparison's record name")
    parser.add_argument("--title", required=True)
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    records = [json.loads(path.read_text()) for path in args.records]
    baselines = [row for row in records[0]["tables"][0]["rows"] if "oracle" in str(row[0]) or "noisy" in str(row[0])]
    rows = [end_point(record) for record in records]
    rows += [[row[0], "", round(row[2], 2), "", ""] for row in baselines]
    table = {"title": args.title, "note": args.note + " Dates and machines: " + "; ".join(
        f"{end_point(r)[0]} {r['date']}, {r['machine']}" for r in records) + ".",
        "columns": ["variant", "step", "direct affine PSNR", "MMSE-8 affine PSNR", "command"], "rows": rows}
    common.save_speed_record(f"cosdd_compare-{args.name}", args.title, [table], "cosdd_compare.py")


if __name__ == "__main__":
    sys.exit(main())
