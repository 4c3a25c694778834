"""The package's README.md: method, training data, settings, measured validation, limits, citations.

Also the package's name and description, which the rdf repeats.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

import selfden
from selfden.export.architecture import ARCHITECTURE_FILE
from selfden.export.metadata import SELFDEN_CITATION, PackageMetadata
from selfden.export.onnx import ParityReport
from selfden.export.package_assets import package_min_size
from selfden.geometry.tile_plan import suggested_tile_size
from selfden.methods.base import Method

#: Limits shared by every self-supervised denoiser.
GENERAL_LIMITATIONS = (
    "Trained on one kind of data: other detectors, doses or samples need retraining.",
    "Self-supervised denoisers can remove real structure that resembles noise or invent structure "
    "that is absent from the data: compare with the raw image before quantitative use.",
)


def package_name(method: Method, info: dict[str, Any], metadata: PackageMetadata) -> str:
    """The package's name: given in the metadata, else in the training info, else the method's."""
    return str(metadata.name or info.get("name") or f"selfden {method.name} denoiser")


def package_description(method: Method, info: dict[str, Any], metadata: PackageMetadata) -> str:
    """The package's one-paragraph description (metadata, else training info, else a default)."""
    default = f"Self-supervised {method.name} denoiser trained with selfden on noisy images alone."
    return str(metadata.description or info.get("description") or default)


def readme(
    method: Method,
    info: dict[str, Any],
    reports: list[ParityReport],
    test: tuple[np.ndarray, np.ndarray],
    orientations: tuple[str, ...],
    torch_callable: str,
    metadata: PackageMetadata,
) -> str:
    """The package's documentation: method, training data, settings, measured validation, limits, citations."""
    cites = "\n".join(f"- {c.text}" + (f" (doi:{c.doi})" if c.doi else f" ({c.url})" if c.url else "") for c in method.citations)
    cites += f"\n- {SELFDEN_CITATION}"
    parity = "\n".join(f"- {r.format()}" for r in reports)
    inputs = ", ".join(f"`{name}`" for name in info.get("inputs", [])) or "(not recorded)"
    inputs = f"{metadata.training_data}\n\nFiles: {inputs}." if metadata.training_data else f"Files: {inputs}."
    settings = {k: info[k] for k in ("method_config", "data", "trainer", "seed") if k in info}
    settings_lines = "\n".join(f"- {k}: `{json.dumps(v)}`" for k, v in settings.items()) or "- (not recorded)"
    progress = _training_progress(info)
    measured = "\n".join(f"- {line}" for line in info.get("validation", []))
    limitations = "\n".join(f"- {line}" for line in (*method.limitations, *GENERAL_LIMITATIONS))
    test_input, test_output = test
    removed = float(np.std(test_input - test_output))
    tta = (
        f" Trained on crops in {len(orientations)} orientations ({', '.join(orientations)}): `--tta` averages "
        f"them ({len(orientations)}x the time)."
        if len(orientations) > 1 else ""
    )
    return f"""# {package_name(method, info, metadata)}

{package_description(method, info, metadata)}

## Method
{method.summary or method.name}

Trained with selfden {selfden.__version__} (method `{method.name}`) on noisy images alone. Raw intensities in,
raw intensities out: the training statistics are baked into the `scale_linear` pre- and postprocessing
(offset {method.normalisation.offset:.6g}, scale {method.normalisation.scale:.6g}). Tiles need a halo of
{method.halo} px each side; valid tile sizes are {package_min_size(method)} + n·{method.size_step}. `selfden infer`
picks the tile size per image size (as large as a 4 GiB working-memory budget allows, so the halo costs
little; `--tile-size` overrides); for a 1024² image it computes a core of
{suggested_tile_size(package_min_size(method), method.size_step, method.halo)} px (`config.selfden.tile_size`).

## Use
- `selfden infer` with this folder as the model (tiled, any image size, CPU or CUDA).{tta} Install selfden
  for inference alone (no PyTorch) from a clone of its source repository: `pip install -e ".[cpu]"`.
- deepImageJ (Fiji) or any bioimage.io consumer that runs ONNX (opset 17, IR 8).
- Borders: the ONNX weights reflect-pad the input by the halo inside the graph, run the network and crop, so
  bioimageio.core, deepImageJ and `selfden infer` give the same pixels up to the image edge (`selfden infer`
  tiles the plain network, `denoiser_core.onnx`, with the same reflect padding).
- PyTorch: `denoiser.pt` is the state dict of `{torch_callable}(**kwargs)` from `{ARCHITECTURE_FILE}` (needs only PyTorch) (kwargs in rdf.yaml), on normalised
  intensities, for fine-tuning or retraining.

## Training data
{inputs}

## Settings
{settings_lines}

## Validation
{progress}
{measured}
{parity}
- `bioimageio.core.test_model` (CPU) reproduced the {test_input.shape[0]}x{test_input.shape[1]} test tensor with both
  the ONNX graph and the PyTorch state dict, and ran the valid sizes at batch 1 and 2, before this
  folder was written.
- Test crop (raw units): input std {float(np.std(test_input)):.4g}, output std {float(np.std(test_output)):.4g},
  std of what was removed {removed:.4g}.

## Limitations
{limitations}

## Cite
{cites}
"""


def _training_progress(info: dict[str, Any]) -> str:
    parts = []
    if "steps" in info:
        parts.append(f"{info['steps']} optimiser steps")
    if "minutes" in info:
        parts.append(f"{float(info['minutes']):.1f} min on {info.get('device', 'an unrecorded device')}")
    if info.get("best_val_loss") is not None:
        parts.append(f"best validation loss {float(info['best_val_loss']):.4g} (held-out 10% of the frames)")
    return f"- Training: {', '.join(parts)}." if parts else "- Training progress: not recorded."
