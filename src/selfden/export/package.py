"""Write a trained method as a bioimage.io (format 0.5) model folder: selfden's MODEL FOLDER.

Export validates itself: every graph is checked against torch (``export_onnx``), the folder is
built next to ``out_dir``, tested with ``bioimageio.core.test_model`` (ONNX, CPU, offline) and
only then renamed into place, so a broken package never appears at ``out_dir``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import selfden
from selfden.export.architecture import ARCHITECTURE_FILE, bordered_architecture, bundle_source
from selfden.export.border_graph import CORE, border_pads, write_bordered
from selfden.export.metadata import SELFDEN_CITATION, UNKNOWN_AUTHOR, PackageMetadata, Person
from selfden.export.onnx import INPUT_NAME, ExportError, ParityReport
from selfden.export.onnx_graphs import export_graph
from selfden.export.ownership import check_same_run
from selfden.geometry.orientations import IDENTITY_ONLY, check_names
from selfden.geometry.tile_plan import suggested_tile_size
from selfden.methods.base import Method, TorchArchitecture
from selfden.package.runtime import open_session

logger = logging.getLogger(__name__)

DENOISER = "denoiser"
TEST_INPUT, TEST_OUTPUT, SAMPLE_INPUT, SAMPLE_OUTPUT, COVER, README = (
    "test_input.npy", "test_output.npy", "sample_input.tif", "sample_output.tif", "cover.png", "README.md",
)  # fmt: skip
TORCH_WEIGHTS = "denoiser.pt"  # the denoiser's state dict; architecture: architecture.py
TEST_SIZE = 256  # preferred test-tensor height/width (smaller when the sample is smaller)


def export_package(
    method: Method,
    out_dir: str | os.PathLike[str],
    sample_raw: np.ndarray,
    training_info: dict[str, Any],
    symmetries: Sequence[str] = IDENTITY_ONLY,
    metadata: PackageMetadata | None = None,
) -> Path:
    """Export ``method`` as a tested bioimage.io package folder at ``out_dir``; returns its path.

    ``sample_raw``: a 2-D image in raw intensities; a centred crop becomes the test tensor and cover.
    ``training_info``: plain values, recorded under ``config.selfden.training``; ``name``,
    ``description`` and ``authors`` (list of names) are used for the package when present.
    ``symmetries``: the orientations training showed the model (``selfden infer --tta`` averages them).
    ``metadata``: names, authors, maintainers, git_repo, tags and the training data's description.
    An existing ``out_dir`` is replaced only if it is an earlier selfden export (or empty);
    with ``training_info["run_id"]`` (exports of a run), only one of the same run holding
    nothing but the files it wrote.
    """
    out_dir = Path(out_dir).absolute()
    run_id = training_info.get("run_id")
    _check_replaceable(out_dir, run_id)
    # Before bioimageio is first imported: its settings read the cache path once.
    os.environ.setdefault("BIOIMAGEIO_CACHE_PATH", str(Path(tempfile.gettempdir()) / "selfden-bioimageio-cache"))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-build-", dir=out_dir.parent))
    try:
        staging = build / "staging"
        staging.mkdir()
        metadata = metadata or PackageMetadata()
        description = _describe(method, staging, sample_raw, _plain(training_info), check_names(symmetries), metadata)
        # test_model asks GitHub about every github_user, which fails offline: test a copy without them.
        offline = _without_github_users(description)
        package = _save(offline, build / "tested")
        _test_package(package)
        if offline is not description:
            package = _save(description, build / "package")
        _check_replaceable(out_dir, run_id)  # again: the folder may have changed while we built
        _swap_in(package, out_dir)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    logger.info("wrote bioimage.io package %s", out_dir)
    return out_dir


def is_selfden_package(folder: Path) -> bool:
    """Whether ``folder`` holds an rdf.yaml written by selfden (one with ``config.selfden``)."""
    try:
        rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(rdf, dict) and isinstance((rdf.get("config") or {}).get("selfden"), dict)


def package_min_size(method: Method) -> int:
    """Smallest tile of the package: the network's minimum, raised in steps until it exceeds 2·halo.

    bioimage.io requires ``min - 2·halo >= 1`` for an output with a halo.
    """
    size = method.min_size
    while size <= 2 * method.halo:
        size += method.size_step
    return size


def valid_size_at_most(limit: int, min_size: int, step: int) -> int:
    """Largest ``min_size + n·step`` that is not above ``limit`` (requires ``limit >= min_size``)."""
    return min_size + (limit - min_size) // step * step


# --- building ----------------------------------------------------------------------------


def _check_replaceable(out_dir: Path, run_id: str | None = None) -> None:
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return
    if not (out_dir.is_dir() and is_selfden_package(out_dir)):
        raise ExportError(
            f"{out_dir} exists and is not a selfden model folder (no rdf.yaml with config.selfden); "
            "choose another output folder or remove it first"
        )
    if run_id is not None:
        check_same_run(out_dir, run_id)


def _describe(
    method: Method, staging: Path, sample_raw: np.ndarray, info: dict[str, Any], symmetries: tuple[str, ...],
    metadata: PackageMetadata,
) -> Any:
    """Write every file of the package into ``staging`` and return its ModelDescr."""
    test_input = crop_for_test_tensor(method, sample_raw)  # first: a bad sample should fail before the slow steps
    architecture = _write_architecture(method, staging)
    graphs, reports = _export_graphs(method, staging)
    _save_state_dict(method, staging / TORCH_WEIGHTS)
    test_output = predict_raw(staging / graphs[DENOISER], test_input, method)
    np.save(staging / TEST_INPUT, test_input[None, None])
    np.save(staging / TEST_OUTPUT, test_output[None, None])
    _write_tif(staging / SAMPLE_INPUT, test_input[None, None])
    _write_tif(staging / SAMPLE_OUTPUT, test_output[None, None])
    _write_cover(staging / COVER, staging / graphs[DENOISER], sample_raw, method)
    readme = _readme(method, info, reports, (test_input, test_output), symmetries, architecture.callable, metadata)
    (staging / README).write_text(readme, encoding="utf-8")
    if not metadata.github_users:
        return _model_descr(method, staging, graphs, info, symmetries, architecture, metadata)
    from bioimageio.spec import ValidationContext

    # bioimageio looks every github_user up on GitHub while validating; export runs offline (the
    # zoo's CI, online, checks them on upload). Files are still hashed when the folder is saved.
    with ValidationContext(perform_io_checks=False):
        return _model_descr(method, staging, graphs, info, symmetries, architecture, metadata)


def _export_graphs(method: Method, staging: Path) -> tuple[dict[str, str], list[ParityReport]]:
    """Every graph of ``export_graphs()`` as ``<name>.onnx``, each checked against torch; the denoiser's
    is the core (``denoiser_core.onnx``, tiled by selfden infer) and ``denoiser.onnx`` wraps it in the
    reflect border (the weights every other tool runs)."""
    modules = method.export_graphs()
    if DENOISER not in modules:
        raise ExportError(f"method {method.name} exports {sorted(modules)}, expected a {DENOISER!r} graph; this is a bug")
    size, step = _parity_base_size(method), method.size_step
    sizes = ((size, size), (size + step, size + 2 * step))
    files, reports = {DENOISER: f"{DENOISER}.onnx"}, []
    for name, module in modules.items():
        key = CORE if name == DENOISER else name  # the plain network, which selfden infer tiles itself
        files[key] = f"{DENOISER}_core.onnx" if name == DENOISER else f"{name}.onnx"
        reports.append(export_graph(module, staging / files[key], sizes=sizes))
    # The weights every other tool runs: the core inside selfden's reflect border (border_graph.py).
    low = package_min_size(method)
    border_sizes = ((low, low), (low + step, low + 2 * step))
    reports.append(write_bordered(staging / files[CORE], staging / files[DENOISER], method.halo, step, border_sizes))
    return files, reports


def _parity_base_size(method: Method) -> int:
    """A valid network size of at least 64 px, so parity is tested beyond degenerate 1-pixel codes."""
    size = method.min_size
    while size < 64:
        size += method.size_step
    return size


def crop_for_test_tensor(method: Method, sample_raw: np.ndarray) -> np.ndarray:
    """Centred crop of ``sample_raw`` with a valid package size (TEST_SIZE when the image allows)."""
    image = np.asarray(sample_raw)
    if image.ndim != 2:
        raise ExportError(f"sample image for the package has shape {image.shape}, expected a 2-D (H, W) frame")
    min_size, step = package_min_size(method), method.size_step
    if image.size == 0 or not np.isfinite(image).all():
        raise ExportError(f"sample image for the package ({image.shape}) is empty or has NaN/Inf pixels; pass a finite frame")
    if min(image.shape) < min_size:
        logger.info("sample %s is smaller than the minimum tile %d: mirror-padding it for the test tensor", image.shape, min_size)
        image = _mirror_pad_to(image, min_size)
    size = [valid_size_at_most(min(n, max(TEST_SIZE, min_size)), min_size, step) for n in image.shape]
    top, left = ((n - s) // 2 for n, s in zip(image.shape, size))
    return np.ascontiguousarray(image[top : top + size[0], left : left + size[1]], dtype=np.float32)


def _mirror_pad_to(image: np.ndarray, size: int) -> np.ndarray:
    """Pad symmetrically (mirrored, repeated as needed) to at least ``size`` in both dimensions."""
    while min(image.shape) < size:
        pad = [(0, min(size - n, n)) if n < size else (0, 0) for n in image.shape]
        image = np.pad(image, pad, mode="symmetric")
    return image


def predict_raw(onnx_path: Path, raw: np.ndarray, method: Method) -> np.ndarray:
    """What a package user gets for a 2-D raw image: scale_linear → network → scale_linear back."""
    norm = method.normalisation
    gain, offset = np.float32(1.0 / norm.scale), np.float32(-norm.offset / norm.scale)
    x = (raw.astype(np.float32) * gain + offset)[None, None]
    session = open_session(onnx_path)
    y = session.run(None, {INPUT_NAME: x})[0][0, 0]
    return (y * np.float32(norm.scale) + np.float32(norm.offset)).astype(np.float32)


def _save_state_dict(method: Method, path: Path) -> None:
    """The denoiser graph's weights for PyTorch users (fine-tuning, retraining): plain tensors only."""
    import torch

    from selfden.export.reflect_border import ReflectBorder

    wrapped = ReflectBorder(method.export_graphs()[DENOISER], None, *border_pads(method.halo, method.size_step))
    state = {k: v.detach().cpu().contiguous() for k, v in wrapped.state_dict().items()}
    torch.save(state, path)


def _write_tif(path: Path, array: np.ndarray) -> None:
    import tifffile

    tifffile.imwrite(path, array)


def _write_cover(path: Path, onnx_path: Path, sample_raw: np.ndarray, method: Method) -> None:
    """Noisy | denoised from a square crop of the real sample frame (no mirror padding shown)."""
    from selfden.export.cover import denoise_crop, square_crop, write_cover
    from selfden.geometry.tiles import valid_size

    crop = square_crop(np.asarray(sample_raw, dtype=np.float32))
    min_size, step = package_min_size(method), method.size_step
    denoised = denoise_crop(crop, lambda n: valid_size(max(n, min_size), min_size, step),
                            lambda x: predict_raw(onnx_path, x, method))
    write_cover(path, crop, denoised, method.name)


def _readme(
    method: Method,
    info: dict[str, Any],
    reports: list[ParityReport],
    test: tuple[np.ndarray, np.ndarray],
    symmetries: tuple[str, ...],
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
        f" Trained on crops in {len(symmetries)} orientations ({', '.join(symmetries)}): `--tta` averages "
        f"them ({len(symmetries)}x the time)."
        if len(symmetries) > 1 else ""
    )
    return f"""# {_name(method, info, metadata)}

{_description(method, info, metadata)}

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


#: Limits shared by every self-supervised denoiser.
GENERAL_LIMITATIONS = (
    "Trained on one kind of data: other detectors, doses or samples need retraining.",
    "Self-supervised denoisers can remove real structure that resembles noise or invent structure "
    "that is absent from the data: compare with the raw image before quantitative use.",
)


def _training_progress(info: dict[str, Any]) -> str:
    parts = []
    if "steps" in info:
        parts.append(f"{info['steps']} optimiser steps")
    if "minutes" in info:
        parts.append(f"{float(info['minutes']):.1f} min on {info.get('device', 'an unrecorded device')}")
    if info.get("best_val_loss") is not None:
        parts.append(f"best validation loss {float(info['best_val_loss']):.4g} (held-out 10% of the frames)")
    return f"- Training: {', '.join(parts)}." if parts else "- Training progress: not recorded."


def _name(method: Method, info: dict[str, Any], metadata: PackageMetadata) -> str:
    return str(metadata.name or info.get("name") or f"selfden {method.name} denoiser")


def _description(method: Method, info: dict[str, Any], metadata: PackageMetadata) -> str:
    default = f"Self-supervised {method.name} denoiser trained with selfden on noisy images alone."
    return str(metadata.description or info.get("description") or default)


def _people(kind: Any, people: Sequence[Person]) -> list[Any]:
    """bioimage.io Author or Maintainer entries (``kind``) for ``people``."""
    return [kind(**person.model_dump(exclude_none=True)) for person in people]


def _without_github_users(descr: Any) -> Any:
    """``descr`` with no github_user anywhere (itself when it has none), for testing offline."""
    if not descr.maintainers and not any(a.github_user for a in descr.authors):
        return descr
    authors = [a.model_copy(update={"github_user": None}) for a in descr.authors]
    return descr.model_copy(update={"authors": authors, "maintainers": []})


def _plain(info: dict[str, Any]) -> dict[str, Any]:
    """JSON/YAML-safe copy (paths, numpy scalars and the like become strings or numbers)."""
    return json.loads(json.dumps(info, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def _selfden_config(
    method: Method, graphs: dict[str, str], info: dict[str, Any], symmetries: tuple[str, ...]
) -> dict[str, Any]:
    """``config.selfden``: what ``selfden infer`` needs; the method's package_config() may add or override keys."""
    min_size, step = package_min_size(method), method.size_step
    # The core selfden infer's tile plan picks for a 1024² image (inference/tile_plan.py): the whole
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
        "symmetries": list(symmetries),
        "selfden_version": selfden.__version__,
        **({"run_id": info["run_id"]} if "run_id" in info else {}),
        "training": {k: v for k, v in info.items() if k != "run_id"},
    }
    config.update(_plain(method.package_config()))
    return config


def _model_descr(
    method: Method,
    staging: Path,
    graphs: dict[str, str],
    info: dict[str, Any],
    symmetries: tuple[str, ...],
    architecture: TorchArchitecture,
    metadata: PackageMetadata,
) -> Any:
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
        name=_name(method, info, metadata),
        description=_description(method, info, metadata),
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
            selfden=_selfden_config(method, graphs, info, symmetries),
            bioimageio=bio.BioimageioConfig(reproducibility_tolerance=[_torch_tolerance(bio, norm.scale)]),
        ),
    )  # fmt: skip


def _weights(bio: Any, staging: Path, graphs: dict[str, str], described: TorchArchitecture) -> Any:
    """ONNX (what deepImageJ and bioimageio run: the core network inside its reflect border), converted from the PyTorch state dict
    (architecture: ``architecture.py``, written by ``_write_architecture``)."""
    import torch

    architecture = bio.ArchitectureFromFileDescr(
        source=staging / ARCHITECTURE_FILE, callable=bio.Identifier(described.callable), kwargs=_plain(described.kwargs)
    )
    torch_version = torch.__version__.split("+")[0]
    return bio.WeightsDescr(
        pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
            source=staging / TORCH_WEIGHTS, architecture=architecture, pytorch_version=bio.Version(torch_version)
        ),
        onnx=bio.OnnxWeightsDescr(source=staging / graphs[DENOISER], opset_version=17, parent="pytorch_state_dict"),
    )


def _write_architecture(method: Method, staging: Path) -> TorchArchitecture:
    """architecture.py: the denoiser's torch-only source, so PyTorch consumers need no selfden."""
    described = method.torch_architecture()
    if described is None:
        raise ExportError(f"method {method.name} does not describe its network (torch_architecture); this is a bug")
    described = bordered_architecture(described, *border_pads(method.halo, method.size_step))
    (staging / ARCHITECTURE_FILE).write_text(bundle_source(described.modules), encoding="utf-8")
    return described


def _torch_tolerance(bio: Any, scale: float) -> Any:
    """How closely the PyTorch weights must reproduce the test output (made by the ONNX graph).

    Two engines sum in different orders; in deep networks with large gains (Noise2Atom's
    generator) a few hundred pixels per million then differ by up to ~0.5 % (measured: 427 and
    1160 ppm beyond bioimageio's default 1e-3). The ONNX weights keep the default tolerance.
    """
    return bio.ReproducibilityTolerance(
        relative_tolerance=1e-3, absolute_tolerance=1e-3 * abs(float(scale)) or 1e-3,
        mismatched_elements_per_million=2000, weights_formats=["pytorch_state_dict"],
    )  # fmt: skip


def _cite_entry(bio: Any, cite: Any) -> Any:
    if cite.doi:
        return bio.CiteEntry(text=cite.text, doi=bio.Doi(cite.doi))
    return bio.CiteEntry(text=cite.text, url=bio.HttpUrl(cite.url or "https://bioimage.io"))


# --- saving, testing, renaming -------------------------------------------------------------


@contextmanager
def _bioimageio_quietly() -> Iterator[None]:
    """bioimageio logs through loguru to stderr; keep our library quiet (it logs, the CLI prints)."""
    from loguru import logger as loguru_logger

    loguru_logger.disable("bioimageio")
    try:
        yield
    finally:
        loguru_logger.enable("bioimageio")


def _save(descr: Any, folder: Path) -> Path:
    from bioimageio.spec import save_bioimageio_package_as_folder

    with _bioimageio_quietly():
        return Path(save_bioimageio_package_as_folder(descr, output_path=folder))


def _test_package(folder: Path) -> None:
    """``bioimageio.core.test_model`` on CPU, offline, for the ONNX graph and the PyTorch state dict:
    both must reproduce the test output. Raises ExportError with the summary if either fails."""
    from bioimageio.core import test_model

    for weight_format, devices in (("onnx", ["CPUExecutionProvider"]), ("pytorch_state_dict", ["cpu"])):
        with _bioimageio_quietly():
            summary = test_model(folder / "rdf.yaml", weight_format=weight_format, devices=devices)
        if summary.status != "passed":
            raise ExportError(f"the exported package failed bioimageio.core's test_model ({weight_format}): {_failures(summary)}")
        logger.info("bioimageio.core test_model passed for %s (%d checks)", weight_format, len(summary.details))


def _failures(summary: Any) -> str:
    failed = [f"{d.name}: {'; '.join(str(e.msg) for e in d.errors)}" for d in summary.details if d.status == "failed"]
    return " | ".join(failed) or str(summary.status)


def _swap_in(package: Path, out_dir: Path) -> None:
    """Rename the finished folder into place, replacing an earlier export only after it is complete."""
    if not out_dir.exists():
        os.replace(package, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}-old-{uuid.uuid4().hex[:8]}")
    os.replace(out_dir, old)
    os.replace(package, out_dir)
    shutil.rmtree(old, ignore_errors=True)
