"""The arguments every peer driver takes from peers.py (standard library only: it runs in each peer's own
virtual environment)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_driver_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="noisy stack (N, H, W) as .tif")
    parser.add_argument("--marks", default="5,15,30", help="minutes of training at which to keep the weights")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)


def marks_of(args: argparse.Namespace) -> list[float]:
    """The time marks in minutes, ascending."""
    return sorted(float(m) for m in args.marks.split(",") if m)
