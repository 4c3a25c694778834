"""Which existing package an export may replace: one of the same run, holding only its own files.

Every package exported from a run records the run's id in ``config.selfden.run_id``. An
export onto an existing folder or .zip replaces it only when that records the same id, and
a folder only when it holds nothing but the files its rdf.yaml names (what the earlier
export wrote): a file the user put there stops the export instead of being deleted. A package
exported before run ids records none; the caller names the run folder it exports, and such a
package is replaced only inside it (``RUN/model``), where that run's config.yaml lies.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from selfden.errors import SelfdenError

RUN_CONFIG = "config.yaml"  # selfden.runs.config.CONFIG_FILE; not imported: export sits below runs
_MAX_RDF_BYTES = 1 << 20  # an rdf.yaml is a few kB; a bigger one in a zip is not ours
_FILE_KEYS = ("source", "documentation")


def run_identity(config: Mapping[str, Any]) -> str:
    """The id of the run a (JSON-like) run config describes: a digest of what its creation fixed.

    Method, method options, inputs, seed and normalisation do not change when a run is
    resumed or its folder moved; two runs agree on all of them only when they would train
    the same model.
    """
    fixed = {key: config.get(key) for key in ("method", "method_config", "seed", "normalisation", "intensity_stats")}
    fixed["inputs"] = (config.get("data") or {}).get("inputs")
    return hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()[:16]


def rdf_run_id(rdf: Any) -> str | None:
    """``config.selfden.run_id`` of a loaded rdf, None when it has none."""
    selfden = ((rdf.get("config") or {}).get("selfden") if isinstance(rdf, dict) else None) or {}
    value = selfden.get("run_id") if isinstance(selfden, dict) else None
    return value if isinstance(value, str) else None


def _files_named(value: Any, key: str = "") -> Iterator[str]:
    """Every relative file name an rdf mentions (sources, documentation, covers)."""
    if isinstance(value, dict):
        for name, item in value.items():
            if name != "config":
                yield from _files_named(item, name)
    elif isinstance(value, list):
        for item in value:
            yield from _files_named(item, key)
    elif isinstance(value, str) and key in (*_FILE_KEYS, "covers"):
        yield value


def _read_rdf(folder: Path) -> Any:
    try:
        return yaml.safe_load((folder / "rdf.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def foreign_files(folder: Path, rdf: Any) -> list[str]:
    """Files in ``folder`` that its rdf.yaml does not name: not written by the export."""
    named = {"rdf.yaml", *(Path(name).as_posix() for name in _files_named(rdf))}
    present = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())
    return sorted(name for name in present if name not in named)


def _in_own_run_folder(out_dir: Path, run_folder: Path | None) -> bool:
    """Whether ``out_dir`` lies in ``run_folder`` (RUN/model), the run being exported, which holds its config."""
    if run_folder is None:
        return False
    return out_dir.parent.resolve() == Path(run_folder).resolve() and (Path(run_folder) / RUN_CONFIG).is_file()


def check_same_run(out_dir: Path, run_id: str, run_folder: Path | None = None) -> None:
    """SelfdenError unless the package folder ``out_dir`` may be replaced by an export of ``run_id``.

    ``run_folder``: the folder of the run ``run_id`` names, when a run is exported; a package
    that records no run id may be replaced only there.
    """
    rdf = _read_rdf(out_dir)
    recorded = rdf_run_id(rdf)
    if recorded is None and not _in_own_run_folder(out_dir, run_folder):
        raise SelfdenError(
            f"{out_dir}: holds a package of an unknown run (it records no run id); "
            "choose another output folder or remove it first"
        )
    if recorded is not None and recorded != run_id:
        raise SelfdenError(
            f"{out_dir}: holds the package of another run (run id {recorded}; this run is {run_id}); "
            "choose another output folder or remove it first"
        )
    extra = foreign_files(out_dir, rdf)
    if extra:
        shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        raise SelfdenError(
            f"{out_dir}: holds files the earlier export did not write ({shown}); "
            "move them out or choose another output folder"
        )


def _zip_rdf(path: Path) -> Any:
    """The rdf.yaml at the root of the zip ``path`` (None when absent, huge or unreadable)."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("rdf.yaml")
            if info.file_size > _MAX_RDF_BYTES:
                return None
            return yaml.safe_load(archive.read(info).decode("utf-8"))
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError, yaml.YAMLError, RuntimeError):
        return None


def check_zip_replaceable(zip_path: Path, run_id: str | None) -> None:
    """SelfdenError unless ``zip_path`` is absent or a selfden package zip of the run ``run_id``."""
    if not zip_path.exists() and not zip_path.is_symlink():
        return
    if zip_path.is_dir() or not zipfile.is_zipfile(zip_path):
        raise SelfdenError(f"{zip_path}: exists and is not a zip package; choose another name or remove it first")
    recorded = rdf_run_id(_zip_rdf(zip_path))
    if run_id is None or recorded != run_id:
        whose = "a package of another run" if recorded else "not a selfden package of this run"
        raise SelfdenError(
            f"{zip_path}: exists and is {whose}; selfden replaces a zip only with a package of the same run: "
            "choose another name or remove it first"
        )


def check_export_target(target: Path, run_id: str, run_folder: Path | None = None) -> None:
    """Before an export of the run ``run_id`` (in ``run_folder``) does any work: refuse a target it may not replace."""
    if target.suffix.lower() == ".zip":
        check_zip_replaceable(target, run_id)
        return
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return
    selfden = ((_read_rdf(target) or {}).get("config") or {}).get("selfden") if target.is_dir() else None
    if not isinstance(selfden, dict):
        raise SelfdenError(
            f"{target} exists and is not a selfden model folder (no rdf.yaml with config.selfden); "
            "choose another output folder or remove it first"
        )
    check_same_run(target, run_id, run_folder)
