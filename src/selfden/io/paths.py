"""Which paths selfden reads images from and writes results to, checked before any work starts.

An input must be an existing, non-empty file of a supported type; an output must be of a
supported type, in an existing folder, and never one of the inputs (however it is spelled:
``..``, symlinks, hard links). Never imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from selfden.errors import InputError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".npy")
#: An output may also be an OME-Zarr group (a folder).
OUTPUT_SUFFIXES = (*IMAGE_SUFFIXES, ".zarr")


def check_image_file(path: Path) -> str:
    """The lower-case suffix of an image file; InputError when it is missing, a folder,
    of an unsupported type or empty."""
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected an image file (.tif, .png or .npy)")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(
            f"{path}: unsupported file type '{path.suffix}'; expected one of "
            f"{', '.join(IMAGE_SUFFIXES)}"
        )
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes)")
    return suffix


def check_output_path(output: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]]) -> None:
    """Raise InputError if ``output`` is (or resolves to) one of ``inputs``."""
    out = Path(output)
    for candidate in map(Path, inputs):
        same = out.resolve() == candidate.resolve()
        if not same and out.exists() and candidate.exists():
            same = os.path.samefile(out, candidate)
        if same:
            raise InputError(
                f"{out}: refusing to overwrite the input image {candidate}; "
                "choose another output file or folder"
            )


def check_output_target(target: Path, inputs: Sequence[Path], need_folder: bool = True) -> None:
    """Refuse unsupported types, missing folders, inputs, and (for Zarr) existing stores."""
    suffix = target.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"{target}: unsupported output type; use one of {', '.join(OUTPUT_SUFFIXES)}")
    if need_folder and not target.parent.is_dir():
        raise InputError(f"{target}: the output folder {target.parent} does not exist")
    if suffix == ".zarr" and target.exists():
        raise InputError(f"{target}: already exists; selfden does not replace a Zarr store: delete it or choose another name")
    if suffix != ".zarr" and target.is_dir():
        raise InputError(f"{target}: is a folder; give an output file name")
    check_output_path(target, inputs)
