"""The package's rdf.yaml as a bioimage.io (format 0.5) ModelDescr: tensors, processing, weights, config.

``config.selfden`` holds what ``selfden infer`` needs (halo, sizes, normalisation, graphs,
orientations, run id); the ONNX weights are converted from the PyTorch state dict, whose
reproducibility tolerance is set here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import selfden
from selfden.export.architecture import ARCHITECTURE_FILE
from selfden.export.metadata import UNKNOWN_AUTHOR, PackageMetadata, Person
from selfden.export.package_assets import (
    COVER,
    DENOISER,
    README,
    SAMPLE_INPUT,
    SAMPLE_OUTPUT,
    TEST_INPUT,
    TEST_OUTPUT,
    TORCH_WEIGHTS,
    package_min_size,
)
from selfden.export.package_readme import package_description, package_name
from selfden.geometry.tile_plan import suggested_tile_size
from selfden.methods.base import Method, TorchArchitecture


def plain(info: dict[str, Any]) -> dict[str, Any]:
    """JSON/YAML-safe copy (paths, numpy scalars and the like become strings or numbers)."""
    return json.loads(json.dumps(info, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def _selfden_config(
    method: Method, graphs: dict[str, str], info: dict[str, Any], orientations: tuple[str, ...]
) -> dict[str, Any]:
    """``config.selfden``: what ``selfden infer`` needs; the method's package_config() may add or override keys."""
    min_size, step = package_min_size(method), method.size_step
    # The core selfden infer's tile plan picks for a 1024² image (geometry/tile_plan.py): the whole
    # image when it fits the memory budget, so the halo costs the least; a hint for other consumers,
    # since selfden infer plans every image size itself.
    tile = suggested_tile_size(min_size, step, method.halo)
    config = {
        "method": method.name,
        "halo": method.halo,
        "size_step": step,
        "min_size": min_size,
        "tile_size": tile,
        "normalisation": {"offset": float(method.normalisation.offset), "scale": float(method.normalisation.scale)},
        "graphs": graphs,
        "orientations": list(orientations),
        "selfden_version": selfden.__version__,
        **({"run_id": info["run_id"]} if "run_id" in info else {}),
        "training": {k: v for k, v in info.items() if k != "run_id"},
    }
    config.update(plain(method.package_config()))
    return config


def model_descr(
    method: Method,
    staging: Path,
    graphs: dict[str, str],
    info: dict[str, Any],
    orientations: tuple[str, ...],
    architecture: TorchArchitecture,
    metadata: PackageMetadata,
) -> Any:
    """The package's bioimage.io ModelDescr, every file it names already in ``staging``."""
    from bioimageio.spec.model import v0_5 as bio

    norm, min_size, step = method.normalisation, package_min_size(method), method.size_step
    inp = bio.TensorId("input")
    identity = norm.offset == 0.0 and norm.scale == 1.0  # the spec rejects a redundant scale_linear
    pre = [] if identity else [
        bio.ScaleLinearDescr(kwargs=bio.ScaleLinearKwargs(gain=1.0 / norm.scale, offset=-norm.offset / norm.scale))
    ]
    post = [] if identity else [bio.ScaleLinearDescr(kwargs=bio.ScaleLinearKwargs(gain=norm.scale, offset=norm.offset))]
    space_in = [bio.SpaceInputAxis(id=bio.AxisId(a), size=bio.ParameterizedSize(min=min_size, step=step)) for a in "yx"]
    space_out = [
        bio.SpaceOutputAxisWithHalo(id=bio.AxisId(a), halo=method.halo, size=bio.SizeReference(tensor_id=inp, axis_id=bio.AxisId(a)))
        if method.halo else bio.SpaceOutputAxis(id=bio.AxisId(a), size=bio.SizeReference(tensor_id=inp, axis_id=bio.AxisId(a)))
        for a in "yx"
    ]  # fmt: skip
    channel = bio.ChannelAxis(channel_names=[bio.Identifier("c0")])
    return bio.ModelDescr(
        name=package_name(method, info, metadata),
        description=package_description(method, info, metadata),
        authors=_people(bio.Author, metadata.authors or [Person(name=n) for n in info.get("authors") or [UNKNOWN_AUTHOR]]),
        maintainers=_people(bio.Maintainer, metadata.maintainers),
        **({"git_repo": metadata.git_repo} if metadata.git_repo else {}),
        cite=[_cite_entry(bio, c) for c in method.citations],
        license=bio.LicenseId("MIT"),
        documentation=bio.FileDescr(source=staging / README),
        covers=[bio.FileDescr(source=staging / COVER)],
        tags=list(dict.fromkeys(["denoising", "self-supervised", "selfden", method.name, "onnx", "2d", *metadata.tags])),
        inputs=[
            bio.InputTensorDescr(
                id=inp, axes=[bio.BatchAxis(), channel, *space_in], test_tensor=bio.FileDescr(source=staging / TEST_INPUT),
                sample_tensor=bio.FileDescr(source=staging / SAMPLE_INPUT), data=bio.IntervalOrRatioDataDescr(type="float32"),
                preprocessing=pre,
            )
        ],
        outputs=[
            bio.OutputTensorDescr(
                id=bio.TensorId("output"), axes=[bio.BatchAxis(), channel, *space_out],
                test_tensor=bio.FileDescr(source=staging / TEST_OUTPUT), data=bio.IntervalOrRatioDataDescr(type="float32"),
                sample_tensor=bio.FileDescr(source=staging / SAMPLE_OUTPUT),
                postprocessing=post,
            )
        ],
        weights=_weights(bio, staging, graphs, architecture),
        attachments=[bio.FileDescr(source=staging / f) for n, f in graphs.items() if n != DENOISER],
        config=bio.Config(
            selfden=_selfden_config(method, graphs, info, orientations),
            bioimageio=bio.BioimageioConfig(reproducibility_tolerance=[
                _torch_tolerance(bio, norm.scale, float(np.load(staging / TEST_OUTPUT).max()))
            ]),
        ),
    )  # fmt: skip


def _weights(bio: Any, staging: Path, graphs: dict[str, str], described: TorchArchitecture) -> Any:
    """ONNX (what deepImageJ and bioimageio run: the core network inside its reflect border), converted from the PyTorch state dict
    (architecture: ``architecture.py``, written by ``package._write_architecture``)."""
    import torch

    architecture = bio.ArchitectureFromFileDescr(
        source=staging / ARCHITECTURE_FILE, callable=bio.Identifier(described.callable), kwargs=plain(described.kwargs)
    )
    torch_version = torch.__version__.split("+")[0]
    return bio.WeightsDescr(
        pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
            source=staging / TORCH_WEIGHTS, architecture=architecture, pytorch_version=bio.Version(torch_version)
        ),
        onnx=bio.OnnxWeightsDescr(source=staging / graphs[DENOISER], opset_version=17, parent="pytorch_state_dict"),
    )


def _torch_tolerance(bio: Any, scale: float, output_max: float) -> Any:
    """How closely the PyTorch weights must reproduce the test output (made by the ONNX graph).

    Two engines sum in different orders; in deep networks with large gains (Noise2Atom's
    generator) a few hundred pixels per million then differ by up to ~0.5 % (measured: 427 and
    1160 ppm beyond bioimageio's default 1e-3). The ONNX weights keep the default tolerance.
    bioimageio.spec allows an absolute tolerance of at most 1 % of the test output's maximum;
    where that maximum is 0 or negative (data below zero) only the relative tolerance applies.
    """
    # 0.9 %: under 1 % after the spec's own float32 rounding
    absolute = min(1e-3 * abs(float(scale)) or 1e-3, 0.009 * output_max) if output_max > 0 else 0.0
    return bio.ReproducibilityTolerance(
        relative_tolerance=1e-3, absolute_tolerance=absolute,
        mismatched_elements_per_million=2000, weights_formats=["pytorch_state_dict"],
    )  # fmt: skip


def _cite_entry(bio: Any, cite: Any) -> Any:
    if cite.doi:
        return bio.CiteEntry(text=cite.text, doi=bio.Doi(cite.doi))
    return bio.CiteEntry(text=cite.text, url=bio.HttpUrl(cite.url or "https://bioimage.io"))


def _people(kind: Any, people: Sequence[Person]) -> list[Any]:
    """bioimage.io Author or Maintainer entries (``kind``) for ``people``."""
    return [kind(**person.model_dump(exclude_none=True)) for person in people]
