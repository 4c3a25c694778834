"""Score the shipped synthetic packages on frames they never saw, beside the best classical filter.

Each demo package was trained on one synthetic suite drawn with data seed 0. This script draws the
same suite again with data seed 1 (new scenes or crops, new noise), denoises it with the package
exactly as ``selfden infer`` does (``selfden.inference.running.denoise_files``, with ``--tta`` where
the package lists orientations), and scores the result and the oracle-tuned classical filters of
``benchmarks/baselines.py`` (Gaussian blur, non-local means; BM3D when the ``bm3d`` package imports)
against the truth by affine PSNR. The numbers go into ``packages.json``, each package's README
(Validation) and ``README.md``; rdf.yaml gets the README's new sha256 and the package is validated.

    python bioimage_models/held_out.py [--frames 32] [--only cae-atoms,...]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from build import HERE, RECIPES, REPO, _validate
from catalogue import load_records, render_readme, save_records

sys.path.insert(0, str(REPO / "benchmarks"))
from baselines import BaselineResult, bm3d_unavailable, run_baselines  # noqa: E402

HELD_OUT_SEED = 1
MARKER = "- Held-out frames"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=32, help="held-out frames per package (default 32)")
    parser.add_argument("--only", help="comma-separated package names (default: every synthetic package)")
    args = parser.parse_args(argv)
    records = load_records(HERE)
    wanted = set(args.only.split(",")) if args.only else {r.name for r in RECIPES}
    ok = True
    for recipe in RECIPES:
        if recipe.name not in wanted or recipe.name not in records:
            continue
        held = score_package(HERE / recipe.name, recipe.suite, args.frames)
        records[recipe.name]["held_out"] = held
        write_validation(HERE / recipe.name, sentence(held))
        records[recipe.name].update(_validate(HERE / recipe.name))
        ok = ok and records[recipe.name]["validation"] == "passed"
        save_records(HERE, records)
        print(f"{recipe.name}: {sentence(held)}", flush=True)
    (HERE / "README.md").write_text(render_readme(records), encoding="utf-8")
    return 0 if ok else 1


def score_package(package: Path, suite: str, frames: int) -> dict[str, Any]:
    """Affine PSNR of the held-out noisy frames, the package's output and the best classical filter."""
    import tifffile

    from selfden import synth
    from selfden.inference.loading import trained_orientations
    from selfden.inference.running import denoise_files
    from selfden.metrics import affine_psnr

    data = getattr(synth, suite)(rng=np.random.default_rng(HELD_OUT_SEED))
    noisy, clean = data.noisy[:frames], data.clean[:frames]
    held: dict[str, Any] = {"data_seed": HELD_OUT_SEED, "frames": len(noisy),
                            "noisy": round(affine_psnr(noisy, clean), 2)}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="selfden-held-out-") as temp:
        source = Path(temp) / "noisy.tif"
        tifffile.imwrite(source, noisy.astype(np.float32), photometric="minisblack")
        tta_options = (False, True) if len(trained_orientations(package)) > 1 else (False,)
        for tta in tta_options:
            out = Path(temp) / f"denoised{'_tta' if tta else ''}.tif"
            denoise_files(package, [source], out, device="cpu", tta=tta)
            denoised = np.asarray(tifffile.imread(out), np.float32).reshape(clean.shape)
            held["tta" if tta else "denoised"] = round(affine_psnr(denoised, clean), 2)
    names = ("gaussian", "nlm") if bm3d_unavailable() else ("gaussian", "nlm", "bm3d")
    results = [r for r in run_baselines(noisy, clean, names) if isinstance(r, BaselineResult)]
    held["baselines"] = {r.name: round(r.scores.affine_psnr, 2) for r in results}
    best = max(results, key=lambda r: r.scores.affine_psnr)
    held["best_baseline"], held["best_baseline_psnr"] = best.name, round(best.scores.affine_psnr, 2)
    held["bm3d"] = "run" if "bm3d" in names else f"not run: {bm3d_unavailable()}"
    return held


def sentence(held: dict[str, Any]) -> str:
    tta = f" ({held['tta']:.2f} dB with `--tta`)" if "tta" in held else ""
    others = ", ".join(f"{name} {value:.2f}" for name, value in held["baselines"].items())
    return (
        f"{MARKER} (the training suite drawn again with data seed {held['data_seed']}: new scenes and noise, "
        f"{held['frames']} frames, `selfden infer`): affine PSNR noisy {held['noisy']:.2f} dB -> denoised "
        f"{held['denoised']:.2f} dB{tta}; the best classical filter, tuned on the truth (an upper bound for "
        f"it), reaches {held['best_baseline_psnr']:.2f} dB ({others} dB)."
    )


def write_validation(package: Path, line: str) -> None:
    """Put ``line`` first in the README's Validation section (replacing an earlier one), re-hash rdf.yaml."""
    from selfden.export.border_package import write_rdf

    readme = package / "README.md"
    text = re.sub(rf"^{re.escape(MARKER)}.*\n", "", readme.read_text(encoding="utf-8"), flags=re.M)
    text = text.replace("\n## Validation\n", f"\n## Validation\n{line}\n", 1)
    readme.write_text(text, encoding="utf-8")
    write_rdf(package, yaml.safe_load((package / "rdf.yaml").read_text(encoding="utf-8")))


if __name__ == "__main__":
    sys.exit(main())
