"""Say in each shipped package what it is: a demo trained on synthetic data, for which modality and noise.

The shipped packages are demos: each was trained on one of selfden's synthetic suites
(``selfden.synth``), not on real measurements. This script writes that into each package's
``rdf.yaml`` (name, description, tags) and README (title, description, "Training data"), then
recomputes the files' sha256 and validates the package. Pixels and graphs are untouched; running
it twice changes nothing.

    python bioimage_models/describe.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from selfden.export.border_package import write_rdf

HERE = Path(__file__).resolve().parent
DEMO = "Demo trained on synthetic data with known ground truth; retrain on your own frames (selfden train) before use."

PACKAGES = {
    "cae-atoms": {
        "name": "Demo cae denoiser for HAADF STEM atoms (synthetic)",
        "description": "Compressive-autoencoder denoiser for low-dose HAADF STEM images of atoms with shot "
        "noise and scan-line offsets. " + DEMO,
        "tags": ["electron-microscopy", "stem", "haadf", "shot-noise", "synthetic-training-data", "demo"],
        "training_data": "200 simulated frames (128x128) of atoms after the Noise2Atom recipe "
        "(`selfden.synth.atoms_suite`, data seed 0): Poisson shot noise at 7 counts on the brightest pixel "
        "plus a random offset per scan row (sigma 0.1). Made by selfden; no real measurement, no licence "
        "restrictions.",
    },
    "cosdd-stripe": {
        "name": "Demo COSDD denoiser for row-correlated noise (synthetic)",
        "description": "COSDD denoiser for images with signal-dependent noise plus noise correlated along "
        "rows (streaks, as from scanning or line readout). " + DEMO,
        "tags": ["row-correlated-noise", "structured-noise", "shot-noise", "synthetic-training-data", "demo"],
        "training_data": "64 crops (128x128) of scikit-image's camera, moon, coins and cell images "
        "(`selfden.synth.stripe_suite`, data seed 0) with Poisson noise at 30 counts, white Gaussian noise "
        "(sigma 0.04) and noise blurred along x (sigma 6 px, std 0.08). The clean images ship with "
        "scikit-image (BSD-3-Clause); the noise is simulated.",
    },
    "dnnet-poisson-gaussian": {
        "name": "Demo D-net and N-net denoiser for Poisson-Gaussian noise (synthetic)",
        "description": "Self-supervised denoiser with a learned noise model for pixel-independent, "
        "signal-dependent noise, as from fluorescence cameras. " + DEMO,
        "tags": ["fluorescence-light-microscopy", "poisson-gaussian-noise", "shot-noise", "synthetic-training-data", "demo"],
        "training_data": "64 crops (128x128) of scikit-image's camera, moon, coins and cell images "
        "(`selfden.synth.poisson_gaussian_suite`, data seed 0) with Poisson noise at 20 counts and white "
        "Gaussian read noise (sigma 0.03). The clean images ship with scikit-image (BSD-3-Clause); the noise "
        "is simulated.",
    },
    "noise2atom-atoms": {
        "name": "Demo Noise2Atom denoiser for HAADF STEM atoms (synthetic)",
        "description": "Noise2Atom denoiser for low-dose HAADF STEM images of atoms: it maps noisy frames to "
        "simulated atom images. " + DEMO,
        "tags": ["electron-microscopy", "stem", "haadf", "shot-noise", "synthetic-training-data", "demo"],
        "training_data": "200 simulated frames (128x128) of atoms after the Noise2Atom recipe "
        "(`selfden.synth.atoms_suite`, data seed 0): Poisson shot noise at 7 counts on the brightest pixel "
        "plus a random offset per scan row (sigma 0.1). Made by selfden; no real measurement, no licence "
        "restrictions.",
    },
}


def describe(folder: Path, meta: dict) -> None:
    rdf_path, readme_path = folder / "rdf.yaml", folder / "README.md"
    rdf = yaml.safe_load(rdf_path.read_text())
    readme = readme_path.read_text()
    title, rest = readme.split("\n", 1)
    rest = rest.lstrip("\n")
    _, after_description = rest.split("\n\n", 1)  # the first paragraph is the description
    readme = f"# {meta['name']}\n\n{meta['description']}\n\n{after_description}"
    readme = re.sub(
        r"(## Training data\n)(?:.*?\n)(?=\n## )",
        lambda m: m.group(1) + meta["training_data"] + "\n" + _files_line(m.group(0)),
        readme, count=1, flags=re.S,
    )
    readme_path.write_text(readme)
    rdf["name"], rdf["description"] = meta["name"], meta["description"]
    rdf["tags"] = list(dict.fromkeys([*rdf.get("tags", []), *meta["tags"]]))
    write_rdf(folder, rdf)  # as build.py --from-package writes it: same layout, every sha256 recomputed


def _files_line(section: str) -> str:
    """The training files named in a Training data section (kept when the description is replaced)."""
    names = re.findall(r"`([^`]+\.(?:tif|tiff|png|npy))`", section)
    return f"\nFiles: {', '.join(f'`{n}`' for n in dict.fromkeys(names))}.\n" if names else ""


def main() -> int:
    from selfden.export.validation import validate_package

    failed = []
    for name, meta in PACKAGES.items():
        describe(HERE / name, meta)
        report = validate_package(HERE / name, trust_code=True)  # our own packages: run the PyTorch test too
        print(f"{name}: {'PASSED' if report.passed else 'FAILED'}", flush=True)
        if not report.passed:
            print(report.format())
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
