"""The demo's pipeline with a fixed step budget: numbers that must not change when the code is reshaped.

``selfden demo`` trains for 2.5 minutes, so its result depends on the machine's speed. This runs
the same pipeline (data seed 0, the demo's method and options, training seed 0) for ``--steps``
steps on the CPU and prints the affine PSNR before/after and a hash of the denoised stack: run it
before and after a refactoring, on the same machine and library versions, and compare.

    python benchmarks/demo_fixed_steps.py [--steps 150]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    import tifffile

    from selfden import synth
    from selfden.demo import DEMO_METHOD, DEMO_OPTIONS, DEMO_PATCH
    from selfden.inference.running import denoise_files
    from selfden.metrics import affine_psnr
    from selfden.runs.plan import new_run_config
    from selfden.runs.train import train_run

    with tempfile.TemporaryDirectory(prefix="selfden-demo-steps-") as temp:
        out = Path(temp)
        dataset = synth.poisson_gaussian_suite(rng=np.random.default_rng(0))
        noisy_path, _ = synth.save_synth_set(dataset, out / "data")
        trainer = {"device": "cpu", "max_steps": args.steps}
        config = new_run_config(DEMO_METHOD, [noisy_path], DEMO_OPTIONS, DEMO_PATCH, trainer, seed=0)
        result = train_run(config, out / "run")
        denoise_files(result.model_dir, [noisy_path], out / "denoised.tif", device="cpu")
        denoised = np.asarray(tifffile.imread(out / "denoised.tif"), dtype=np.float32)
    digest = hashlib.sha256(np.ascontiguousarray(denoised).tobytes()).hexdigest()[:16]
    print(f"steps {result.steps} noisy {affine_psnr(dataset.noisy, dataset.clean):.6f} "
          f"denoised {affine_psnr(denoised, dataset.clean):.6f} sha256 {digest}")


if __name__ == "__main__":
    main()
