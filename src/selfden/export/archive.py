"""Zip a model folder the way the bioimage.io uploader takes it.

The zip is written by bioimageio.spec's ``save_bioimageio_package`` from the loaded
description: rdf.yaml at the root, every referenced file included and hashed. It is
written to a temporary file beside the target, checked to load again, then renamed.
An existing zip is replaced only by a package of the same run (``config.selfden.run_id``,
see ``ownership``): a zip of another run, a third-party package or any other file is kept.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import yaml

from selfden.errors import ModelError, SelfdenError
from selfden.export.ownership import check_zip_replaceable, rdf_run_id
from selfden.export.bioimageio_bridge import RDF_NAMES, bioimageio_quietly, ensure_bioimageio_cache, load_model_description

logger = logging.getLogger(__name__)


def write_package_zip(folder: str | os.PathLike[str], zip_path: str | os.PathLike[str]) -> Path:
    """Write the package in ``folder`` (or its rdf.yaml) as a bioimage.io .zip at ``zip_path``.

    Raises ModelError (one line) when the package does not load with bioimageio.spec, and
    SelfdenError when ``zip_path`` is not a .zip, lies inside the package, or would replace
    anything but a zip of the same run. Returns ``zip_path``.
    """
    rdf = _find_rdf(Path(folder))
    zip_path = Path(zip_path).absolute()
    _check_target(zip_path, rdf.parent.resolve(), _run_id(rdf))
    ensure_bioimageio_cache()
    descr, problem = load_model_description(rdf)
    if descr is None:
        raise ModelError(f"{rdf}: not a valid bioimage.io package ({problem}); fix it or re-export it before zipping")
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    temp = zip_path.with_name(f".{zip_path.stem}-{uuid.uuid4().hex[:8]}.partial.zip")
    try:
        _save(descr, temp)
        os.replace(temp, zip_path)
    finally:
        temp.unlink(missing_ok=True)
    logger.info("wrote bioimage.io package %s", zip_path)
    return zip_path


def _find_rdf(folder: Path) -> Path:
    if folder.is_file() and folder.name in RDF_NAMES:
        return folder
    rdf = next((folder / n for n in RDF_NAMES if (folder / n).is_file()), None)
    if rdf is None:
        raise ModelError(f"{folder}: no rdf.yaml; expected a bioimage.io model folder (e.g. RUN/model)")
    return rdf


def _run_id(rdf: Path) -> str | None:
    try:
        return rdf_run_id(yaml.safe_load(rdf.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _check_target(zip_path: Path, package_root: Path, run_id: str | None) -> None:
    """Refuse targets that are not .zip, lie in the package, or would replace anything but
    a zip of the same run."""
    if zip_path.suffix.lower() != ".zip":
        raise SelfdenError(f"{zip_path}: a bioimage.io package file must end in .zip")
    resolved = zip_path.resolve()
    if resolved == package_root or package_root in resolved.parents:
        raise SelfdenError(f"{zip_path}: inside the package folder {package_root}; write the zip somewhere else")
    check_zip_replaceable(zip_path, run_id)


def _save(descr: object, temp: Path) -> None:
    """Write the zip and prove it loads again (files and hashes), so a broken zip never appears."""
    from bioimageio.spec import save_bioimageio_package

    with bioimageio_quietly():
        save_bioimageio_package(descr, output_path=temp)  # type: ignore[arg-type]
    reloaded, problem = load_model_description(temp)
    if reloaded is None:
        raise ModelError(f"the zipped package does not load again ({problem}); this is a bug, please report it")
