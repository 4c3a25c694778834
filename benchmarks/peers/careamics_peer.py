"""Train and apply CAREamics N2V or structN2V (PyPI ``careamics``, BSD-3) on one noisy stack, for peers.py.

Runs in an environment with careamics installed, never in selfden's, and imports nothing from
selfden. Training is CAREamics' own (its configuration helper's defaults, its Lightning loop and
validation split) with a wall-clock budget; at each time mark the weights are copied aside, and
afterwards each copy denoises the whole stack with ``CAREamist.predict``; outputs are written as .npy.

    PEER_PYTHON benchmarks/peers/careamics_peer.py --algorithm n2v --data noisy.tif --marks 5,15,30 --out DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import tifffile
import torch
from driver_args import add_driver_arguments, marks_of

#: structN2V's mask axis for each noise axis the harness names (x: rows of correlated noise).
STRUCT_AXIS = {"x": "horizontal", "y": "vertical", "none": "none"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithm", choices=("n2v", "structn2v"), required=True)
    parser.add_argument("--axis", default="x", help="noise axis (structN2V masks along it): x, y or none")
    parser.add_argument("--span", type=int, default=5, help="structN2V mask span (px)")
    add_driver_arguments(parser)
    # The configuration of the measured CAREamics run (METHODS.md): patch 64, batch 16.
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    return parser.parse_args()


class MarkKeeper(pl.Callback):
    """Saves a checkpoint as training time passes each mark (CAREamist.predict reads checkpoints, not the
    module's current weights), and stops training after the last mark."""

    def __init__(self, marks: list[float], folder: Path) -> None:
        self.marks, self.kept, self.folder = list(marks), [], folder
        self.steps, self.start, self.train_seconds = 0, None, 0.0

    def on_train_start(self, trainer, module) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, *rest) -> None:
        self.steps += 1
        self.train_seconds = time.perf_counter() - self.start
        while self.marks and self.train_seconds >= 60 * self.marks[0]:
            self._keep(trainer, self.marks.pop(0))
        if not self.marks:
            trainer.should_stop = True

    def keep_last(self, trainer) -> None:
        for mark in self.marks:
            self._keep(trainer, mark)
        self.marks = []

    def _keep(self, trainer, mark: float) -> None:
        path = self.folder / f"mark-{mark:g}min.ckpt"
        trainer.save_checkpoint(str(path))
        self.kept.append({"minutes": mark, "steps": self.steps, "elapsed_seconds": self.train_seconds,
                          "checkpoint": str(path)})


def main() -> int:
    from careamics import CAREamist
    from careamics.config import create_n2v_config, create_structn2v_config

    args = parse_args()
    torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, verbose=False)
    args.out.mkdir(parents=True, exist_ok=True)
    marks = marks_of(args)
    stack = np.asarray(tifffile.imread(args.data), dtype=np.float32)
    struct = STRUCT_AXIS[args.axis] if args.algorithm == "structn2v" else "none"
    common = {"experiment_name": f"peer_{args.algorithm}", "data_type": "array", "axes": "SYX",
              "patch_size": [args.patch, args.patch], "batch_size": args.batch, "num_epochs": 100000}
    config = (create_structn2v_config(**common, struct_n2v_axes=struct, struct_n2v_span=args.span)
              if struct != "none" else create_n2v_config(**common))
    keeper = MarkKeeper(marks, args.out)
    careamist = CAREamist(config, work_dir=str(args.out / "careamics"), callbacks=[keeper], enable_progress_bar=False)
    careamist.train(train_data=stack)
    keeper.keep_last(careamist.trainer)

    results = []
    for kept in keeper.kept:
        start = time.perf_counter()
        predictions, _ = careamist.predict(stack, data_type="array", axes="SYX", checkpoint=kept.pop("checkpoint"))
        seconds = time.perf_counter() - start
        denoised = np.asarray(np.concatenate([np.asarray(p) for p in predictions]), dtype=np.float32).reshape(stack.shape)
        name = f"{args.algorithm}-{kept['minutes']:g}min.npy"
        np.save(args.out / name, denoised, allow_pickle=False)
        results.append({**kept, "output": name, "seconds_per_frame": seconds / len(stack)})
    version = _distribution_version("careamics")
    summary = {
        "peer": f"CAREamics {'structN2V' if struct != 'none' else 'N2V'}",
        "settings": f"careamics {version} create_n2v_config defaults, patch {args.patch}, batch {args.batch}"
        + (f", struct mask {struct} span {args.span}" if struct != "none" else "") + f", torch {torch.__version__}",
        "threads": args.threads, "parameters": sum(p.numel() for p in careamist.model.parameters()),
        "steps": keeper.steps, "train_seconds": keeper.train_seconds,
        "steps_per_second_with_validation": keeper.steps / max(keeper.train_seconds, 1e-9),
        "marks": results, "torch": torch.__version__,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


def _distribution_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    raise SystemExit(main())
