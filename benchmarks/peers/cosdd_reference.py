"""Train and apply the reference COSDD (krulllab/COSDD, MIT) on one noisy stack, for benchmarks/peers.py.

Runs in the reference's own virtual environment, never in selfden's: it imports the reference's
modules from a local checkout given by path (``--checkout``) and nothing from selfden. The training
is the reference's own (its Hub, DataModule and Lightning loop, validation every epoch, early
stopping on the validation ELBO), on the CPU instead of its hard-wired GPU. At each time mark the
weights are copied aside; afterwards each copy denoises the whole stack with the reference's direct
denoiser (its default inference when one was trained), and the outputs are written as .npy.

    PEER_PYTHON benchmarks/peers/cosdd_reference.py --checkout COSDD --data noisy.tif --marks 5,15,30 --out DIR
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import tifffile
import torch
from driver_args import add_driver_arguments, marks_of


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", type=Path, required=True, help="local checkout of krulllab/COSDD")
    add_driver_arguments(parser)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (speed runs)")
    parser.add_argument("--precision", default="auto",
                        help="Lightning precision: bf16-mixed, 32-true, or auto: bf16-mixed where the CPU does bf16 "
                        "natively (avx512_bf16 or amx_bf16), else 32-true (emulated bf16 ran 38x slower here)")
    parser.add_argument("--direction", default="x", help="the reference's noise-direction: x, y or none")
    # The configuration of the measured reference run (METHODS.md): S=32, L=6, K=4, 64² crops, batch 4.
    parser.add_argument("--s-code-channels", type=int, default=32)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--gaussians", type=int, default=4)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    return parser.parse_args()


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (Linux flags); without it torch emulates bf16 slowly."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def reference_config(args: argparse.Namespace, utils: object) -> dict:
    config = {
        "model-name": "peer",
        "data": {"paths": str(args.data.parent), "patterns": args.data.name, "axes": "SYX"},
        "train-parameters": {
            "batch-size": args.batch, "number-grad-batches": 1, "crop-size": [args.crop, args.crop],
            "training-split": 0.9, "use-direct-denoiser": True, "direct-denoiser-loss": "MSE",
        },
        "hyper-parameters": {
            "s-code-channels": args.s_code_channels, "number-layers": args.layers,
            "number-gaussians": args.gaussians, "noise-direction": args.direction,
        },
        # Activation checkpointing off: it trades speed for GPU memory, which a CPU run has plenty of.
        "memory": {"precision": args.precision, "checkpointed": False, "gpu": [0]},
    }
    return utils.get_defaults(config)  # type: ignore[attr-defined]


def main() -> int:
    args = parse_args()
    if args.precision == "auto":
        args.precision = "bf16-mixed" if native_bf16() else "32-true"
    sys.path.insert(0, str(args.checkout.resolve()))
    import utils  # the reference's
    from models.get_models import get_models
    from models.hub import Hub

    torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, verbose=False)
    args.out.mkdir(parents=True, exist_ok=True)
    marks = marks_of(args)
    cfg = reference_config(args, utils)
    stack = np.asarray(tifffile.imread(args.data), dtype=np.float32)
    low_snr = torch.from_numpy(stack)[:, None]  # (S, C, Y, X) as the reference's loader returns
    datamodule = utils.DataModule(low_snr=low_snr.clone(), batch_size=args.batch,
                                  rand_crop_size=[args.crop, args.crop], train_split=0.9)
    lvae, ar_decoder, s_decoder, direct = get_models(cfg, 1)
    dtype = torch.bfloat16 if "bf16" in args.precision else torch.float32
    mean = low_snr.mean([0, 2, 3], keepdim=True).to(dtype)
    std = low_snr.std([0, 2, 3], keepdim=True).to(dtype)
    hub = Hub(vae=lvae, ar_decoder=ar_decoder, s_decoder=s_decoder, direct_denoiser=direct,
              data_mean=mean, data_std=std, n_grad_batches=1, checkpointed=False)
    keeper = MarkKeeper(marks)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=100000, max_steps=args.max_steps,
        max_time={"minutes": marks[-1] + 0.5}, precision=args.precision,
        # Its validation logs images: the TensorBoard logger its own training script uses.
        logger=pl.loggers.TensorBoardLogger(str(args.out / "tensorboard")),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[keeper, pl.callbacks.EarlyStopping(patience=50, monitor="elbo/val")],
    )
    trainer.fit(hub, datamodule=datamodule)
    keeper.keep_last(hub)

    results = []
    for kept in keeper.kept:
        hub.load_state_dict(kept.pop("state"))
        denoised, seconds = denoise(hub, low_snr, dtype)
        name = f"direct-{kept['minutes']:g}min.npy"
        np.save(args.out / name, denoised, allow_pickle=False)
        results.append({**kept, "output": name, "seconds_per_frame": seconds / len(stack)})
    summary = {
        "peer": "COSDD reference (krulllab/COSDD)", "precision": args.precision, "threads": args.threads,
        "settings": f"S={args.s_code_channels}, L={args.layers}, K={args.gaussians}, crop {args.crop}, batch "
        f"{args.batch}, {args.precision}, noise direction {args.direction}, direct denoiser",
        "config": cfg, "parameters": sum(p.numel() for p in hub.parameters()),
        "steps": keeper.steps, "train_seconds": keeper.train_seconds, "validation_seconds": keeper.val_seconds,
        "steps_per_second": keeper.steps / max(keeper.train_seconds - keeper.val_seconds, 1e-9),
        "steps_per_second_with_validation": keeper.steps / max(keeper.train_seconds, 1e-9),
        "marks": results, "torch": torch.__version__, "lightning": pl.__version__,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=1))
    return 0


class MarkKeeper(pl.Callback):
    """Copies the weights aside when training time passes each mark; times training and validation."""

    def __init__(self, marks: list[float]) -> None:
        self.marks, self.kept = list(marks), []
        self.steps, self.start, self.train_seconds, self.val_seconds = 0, None, 0.0, 0.0
        self._val_start = None

    def on_train_start(self, trainer, module) -> None:
        self.start = time.perf_counter()

    def on_validation_start(self, trainer, module) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, module) -> None:
        if self.start is not None and self._val_start is not None:
            self.val_seconds += time.perf_counter() - self._val_start

    def on_train_batch_end(self, trainer, module, *rest) -> None:
        self.steps += 1
        self.train_seconds = time.perf_counter() - self.start
        while self.marks and self.train_seconds >= 60 * self.marks[0]:
            self._keep(module, self.marks.pop(0))
        if not self.marks:
            trainer.should_stop = True

    def keep_last(self, module) -> None:
        """The weights at the end, for the marks training did not reach (max_time or early stop)."""
        for mark in self.marks:
            self._keep(module, mark)
        self.marks = []

    def _keep(self, module, mark: float) -> None:
        self.kept.append({"minutes": mark, "steps": self.steps, "elapsed_seconds": self.train_seconds,
                          "state": copy.deepcopy(module.state_dict())})


@torch.no_grad()
def denoise(hub, low_snr: torch.Tensor, dtype: torch.dtype) -> tuple[np.ndarray, float]:
    """The direct denoiser on every frame, one at a time, as the reference's prediction script does."""
    hub.eval()
    hub.direct_pred = True
    out = []
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        for frame in low_snr:
            out.append(hub.predict_step(frame[None], 0).float()[0, 0].numpy())
    return np.stack(out).astype(np.float32), time.perf_counter() - start


if __name__ == "__main__":
    raise SystemExit(main())
