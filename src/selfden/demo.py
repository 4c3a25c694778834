"""`selfden demo`: the whole job on synthetic data with known ground truth.

Makes a noisy dataset whose clean images are known, trains a denoiser on the noisy frames
alone, exports it, denoises the frames through onnxruntime exactly as `selfden infer` does,
and scores noisy and denoised frames against the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selfden.errors import InputError

# Measured (benchmarks/RESULTS.md): dnnet with 32 filters lifts this suite from 19.4 dB to
# ~26.8 dB affine PSNR within minutes on two CPU cores, where cae needs far longer to beat
# a blur. A demo has to convince in its budget, so it shows the fast learner.
DEMO_METHOD = "dnnet"
DEMO_DATASET = "poisson_gaussian"
DEMO_OPTIONS = {"noise_model": "gaussian", "filters": 32}
DEMO_PATCH = {"patch_size": 64, "batch_size": 8}


@dataclass(frozen=True)
class DemoResult:
    """Scores and files of one demo run."""

    dataset: str
    method: str
    noisy_psnr: float
    denoised_psnr: float
    steps: int
    minutes: float
    noisy_path: Path
    denoised_path: Path
    figure_path: Path
    model_dir: Path
    #: What the method says of its model without the ground truth (``Method.outcome_notes``), "warning: " first where a doubt.
    outcome: tuple[str, ...] = ()

    def summary(self) -> str:
        gain = self.denoised_psnr - self.noisy_psnr
        return "\n".join(
            [
                f"dataset: {self.dataset} (synthetic, ground truth known); method: {self.method}; "
                f"{self.steps} steps in {self.minutes:.1f} min",
                f"PSNR (affine-fitted) against ground truth: noisy {self.noisy_psnr:.2f} dB -> "
                f"denoised {self.denoised_psnr:.2f} dB ({gain:+.2f} dB)",
                *(f"without the ground truth, {self.method} judged: {text}" for text in self.outcome),
                f"before/after: {self.figure_path}",
                f"denoised stack: {self.denoised_path}",
                f"model: {self.model_dir}",
                f"denoise your own images:\n  selfden infer {self.model_dir} YOUR_IMAGE.tif -o DENOISED.tif",
            ]
        )


def run_demo(output: Path, minutes: float = 2.5, device: str = "auto", progress: Any = None) -> DemoResult:
    """Generate data, train, export, denoise with onnxruntime and score; files go under ``output``."""
    from selfden import synth
    from selfden.io.reading import open_image
    from selfden.inference.running import denoise_files
    from selfden.metrics import affine_psnr
    from selfden.report import before_after_png
    from selfden.runs.plan import new_run_config
    from selfden.runs.train import train_run

    run_dir = output / "run"
    if run_dir.exists():
        raise InputError(f"{output}: a demo already ran here; remove the folder or pass -o NEW_FOLDER")
    dataset = synth.poisson_gaussian_suite(rng=np.random.default_rng(0))
    noisy_path, clean_path = synth.save_synth_set(dataset, output / "data")

    config = new_run_config(
        DEMO_METHOD,
        [noisy_path],
        method_options=DEMO_OPTIONS,
        data_options=DEMO_PATCH,
        trainer_options={"device": device, "max_minutes": minutes},
        seed=0,
    )
    result = train_run(config, run_dir, progress=progress)
    denoised_path = output / "denoised.tif"
    denoise_files(result.model_dir, [noisy_path], denoised_path, device=device)

    denoised = _read_all(open_image(denoised_path))
    noisy_psnr = affine_psnr(dataset.noisy, dataset.clean)
    denoised_psnr = affine_psnr(denoised, dataset.clean)
    figure = output / "before_after.png"
    before_after_png(dataset.noisy[0], denoised[0], figure, labels=("noisy", "denoised (selfden)"))
    return DemoResult(
        dataset=DEMO_DATASET,
        method=DEMO_METHOD,
        noisy_psnr=float(noisy_psnr),
        denoised_psnr=float(denoised_psnr),
        steps=result.steps,
        minutes=result.elapsed_seconds / 60,
        noisy_path=noisy_path,
        denoised_path=denoised_path,
        figure_path=figure,
        model_dir=result.model_dir,
        outcome=tuple(f"warning: {n.text}" if n.level == "warning" else n.text for n in result.outcome),
    )


def _read_all(stack: Any) -> np.ndarray:
    return np.stack([np.asarray(stack.frame(i), dtype=np.float32) for i in range(len(stack))])
