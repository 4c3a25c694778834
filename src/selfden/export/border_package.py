"""Give an exported selfden package its borders and fast graphs, from the package alone.

Packages exported before ``border_graph`` ran their plain network as the ONNX weights: bioimageio.core
and deepImageJ then saw zero padding at the image edges while ``selfden infer`` reflect-pads. This
rebuilds such a package (or an already bordered one, idempotently) from its own files, without the
training run: the plain graph becomes the core (``config.selfden.graphs.core``, an attachment), the
weights become Pad(reflect) → core → Slice, the PyTorch weights are wrapped in ``ReflectBorder``
(state-dict keys under ``network.``), and the test output, sample output and cover are made again by
the new weights. Nothing else changes: ``selfden infer`` tiles the same core with the same reflect
padding as before, so its outputs, and the validation numbers measured with it, stay what they were.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from selfden.export import reflect_border
from selfden.export.architecture import module_source
from selfden.export.border_graph import CORE, border_of, border_pads, write_bordered
from selfden.export.onnx import INPUT_NAME, ExportError
from selfden.export.onnx_rewrites import rewrite_for_speed
from selfden.io.atomic import replace_folder
from selfden.package.files import files_outside, outside_message, sha256_of, source_entries
from selfden.package.runtime import open_session

logger = logging.getLogger(__name__)

WRAPPER = "ReflectBorder"
BORDER_NOTE = (
    "- Borders: the ONNX weights reflect-pad the input by the halo inside the graph, run the network and "
    "crop, so bioimageio.core, deepImageJ and `selfden infer` give the same pixels up to the image edge "
    "(`selfden infer` tiles the plain network, `{core}`, with the same reflect padding)."
)


def add_borders(folder: str | os.PathLike[str]) -> Path:
    """Rebuild the selfden package ``folder`` in place with the reflect border in its weights; returns it.

    The new folder is assembled beside the old one and swapped in only when complete.
    """
    folder = Path(folder).absolute()
    _load(folder)  # refused before anything is copied, with the folder's own name
    staging = folder.with_name(f".{folder.name}-border-{uuid.uuid4().hex[:8]}")
    shutil.copytree(folder, staging)
    try:
        _rebuild(staging)
        replace_folder(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("rebuilt %s with the reflect border in its weights", folder)
    return folder


def _rebuild(root: Path) -> None:
    rdf = _load(root)
    selfden = rdf["config"]["selfden"]
    halo, step, low = int(selfden["halo"]), int(selfden["size_step"]), int(selfden["min_size"])
    weights = rdf["weights"]["onnx"]["source"]
    core = _core_graph(root, rdf, weights)
    _rewrite_graphs(root, {core, *(str(v) for v in (selfden.get("graphs") or {}).values())} - {weights})
    write_bordered(root / core, root / weights, halo, step, ((low, low), (low + step, low + 2 * step)))
    before, after = border_pads(halo, step)
    _wrap_torch(root, rdf["weights"]["pytorch_state_dict"], before, after)
    graphs = dict(selfden.get("graphs") or {})
    selfden["graphs"] = {"denoiser": weights, CORE: core, **{k: v for k, v in graphs.items() if k not in ("denoiser", CORE)}}
    attachments = rdf.setdefault("attachments", [])
    if not any(a.get("source") == core for a in attachments):
        attachments.insert(0, {"source": core})
    write_rdf(root, rdf)  # hashes first: read_spec below checks them
    _remake_outputs(root, rdf)
    _note_in_readme(root / rdf["documentation"]["source"], core)
    write_rdf(root, rdf)


def _load(root: Path) -> dict[str, Any]:
    rdf = yaml.safe_load((root / "rdf.yaml").read_text(encoding="utf-8"))
    if not (isinstance(rdf, dict) and isinstance((rdf.get("config") or {}).get("selfden"), dict)):
        raise ExportError(f"{root.name}: not a selfden package (no config.selfden in rdf.yaml); only selfden's can be rebuilt")
    outside = files_outside(root, "rdf.yaml", rdf)
    if outside:  # the rebuild reads and rewrites the files the rdf names: only inside the package
        raise ExportError(f"{root.name}: {outside_message(outside)}")
    if "onnx" not in rdf.get("weights", {}) or "pytorch_state_dict" not in rdf["weights"]:
        raise ExportError(f"{root.name}: needs ONNX and pytorch_state_dict weights to rebuild; re-export it with selfden export")
    return rdf


def _core_graph(root: Path, rdf: Mapping[str, Any], weights: str) -> str:
    """The plain network's file: the one already named as core, else today's weights moved aside."""
    import onnx

    core = (rdf["config"]["selfden"].get("graphs") or {}).get(CORE)
    if core:
        return str(core)
    if border_of(onnx.load(str(root / weights))) is not None:
        raise ExportError(f"{root.name}: {weights} has a reflect border but the rdf names no core graph; re-export it")
    core = f"{Path(weights).stem}_core.onnx"
    os.replace(root / weights, root / core)
    return core


def _rewrite_graphs(root: Path, names: set[str]) -> None:
    """Each named graph in ``onnx_rewrites``' fast forms (idempotent: a rewritten graph is left as it is)."""
    import onnx

    for name in sorted(names):
        model = onnx.load(str(root / name))
        if any(rewrite_for_speed(model).values()):
            onnx.checker.check_model(model)
            onnx.save_model(model, str(root / name))
            logger.info("rewrote %s into onnxruntime's fast forms", name)


def _wrap_torch(root: Path, entry: dict[str, Any], before: int, after: int) -> None:
    """architecture.py gains ReflectBorder; the state dict's keys move under ``network.``."""
    import torch

    architecture = entry["architecture"]
    source_path = root / architecture["source"]
    source = source_path.read_text(encoding="utf-8")
    if f"class {WRAPPER}(" not in source:
        module = reflect_border.__name__
        wrapper = module_source(reflect_border)
        source_path.write_text(f"{source}\n# ---- {module} {'-' * max(0, 72 - len(module))}\n{wrapper}", encoding="utf-8")
    if architecture["callable"] != WRAPPER:
        network = {"network": architecture["callable"], "network_kwargs": architecture.get("kwargs") or {}}
        architecture["callable"], architecture["kwargs"] = WRAPPER, network
        state = torch.load(root / entry["source"], weights_only=True)
        torch.save({f"network.{k}": v for k, v in state.items()}, root / entry["source"])
    architecture["kwargs"].update(pad_before=before, pad_after=after)


def _remake_outputs(root: Path, rdf: Mapping[str, Any]) -> None:
    """Test output, sample output and cover from the bordered weights (raw in, raw out)."""
    import tifffile

    from selfden.export.cover import denoise_crop, square_crop, write_cover
    from selfden.package.rdf import read_spec
    from selfden.geometry.tiles import valid_size

    spec = read_spec(root / "rdf.yaml")
    run = _raw_runner(spec)
    test_input = np.load(root / rdf["inputs"][0]["test_tensor"]["source"])[0, 0]
    test_output = run(test_input)
    np.save(root / rdf["outputs"][0]["test_tensor"]["source"], test_output[None, None])
    tifffile.imwrite(root / rdf["outputs"][0]["sample_tensor"]["source"], test_output[None, None])
    crop = square_crop(test_input)
    low, step = spec.min_size[0], spec.size_step[0]
    denoised = denoise_crop(crop, lambda n: valid_size(max(n, low), low, step), run)
    write_cover(root / rdf["covers"][0]["source"], crop, denoised, str(rdf["config"]["selfden"]["method"]))


def _raw_runner(spec: Any) -> Any:
    from selfden.package.processing import apply_steps

    session = open_session(spec.weights)

    def run(raw: np.ndarray) -> np.ndarray:
        refs = {spec.input_id: raw}
        x = np.asarray(apply_steps(raw.astype(np.float32), spec.preprocessing, refs), np.float32)
        y = session.run(None, {INPUT_NAME: x[None, None]})[0][0, 0]
        return np.asarray(apply_steps(y, spec.postprocessing, refs), np.float32)

    return run


def _note_in_readme(readme: Path, core: str) -> None:
    text = readme.read_text(encoding="utf-8")
    text = text.replace("is the state dict of `", f"is the state dict of `{WRAPPER}(**kwargs)`, the network `", 1) \
        if f"state dict of `{WRAPPER}" not in text else text
    note = BORDER_NOTE.format(core=core)
    if note not in text and "\n## Validation\n" in text:
        text = text.replace("\n## Validation\n", f"\n## Validation\n{note}\n", 1)
    readme.write_text(text, encoding="utf-8")


def write_rdf(root: Path, rdf: dict[str, Any]) -> None:
    """rdf.yaml with every named file's sha256 recomputed."""
    for entry in source_entries(rdf):
        if (root / entry["source"]).is_file():
            entry["sha256"] = sha256_of(root / entry["source"])
    text = yaml.dump(rdf, Dumper=_IndentedDumper, sort_keys=False, allow_unicode=True, width=100)
    (root / "rdf.yaml").write_text(f"%YAML 1.2\n---\n{text}", encoding="utf-8")


class _IndentedDumper(yaml.SafeDumper):
    """Lists indented under their key, as bioimageio.spec writes rdf.yaml (smaller diffs)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)
