"""Packages from strangers: no code runs, nothing outside the package is read, zips cannot flood the disk.

Hostile packages are copies of the smallest shipped package (bioimage_models/noise2atom-atoms)
with one thing changed: an architecture.py that writes a marker file, an rdf naming files
outside the package (absolute, '..', symlinks), a wrong sha256, zip bombs, zip-slip entries.
Temporary folders go to a per-test folder, so "nothing left behind" is checked directly.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfden.errors import ModelError, SelfdenError
from selfden.package.files import ZipLimits, extract_zip
from selfden.inference.loading import locate_rdf
from selfden.package.rdf import read_spec

SHIPPED = Path(__file__).resolve().parents[1] / "bioimage_models" / "noise2atom-atoms"
SELFDEN = [sys.executable, "-m", "selfden.cli"]
OUTSIDE_HINT = "leaves the package"


def run_selfden(*args: str | os.PathLike[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)}
    return subprocess.run([*SELFDEN, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(autouse=True)
def private_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """tempfile's folder and bioimageio's cache inside tmp_path, so leftovers can be seen."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("BIOIMAGEIO_CACHE_PATH", str(tmp_path / "bioimageio-cache"))
    yield temp


def leftovers(temp: Path) -> list[str]:
    return sorted(p.name for p in temp.iterdir())


def copy_package(target: Path) -> Path:
    shutil.copytree(SHIPPED, target)
    return target


def edit_rdf(folder: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    edit(rdf)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def changed_graph(source: Path, target: Path) -> None:
    """A working copy of the graph ``source`` with another sha256 (its doc string differs)."""
    import onnx

    model = onnx.load(str(source))
    model.doc_string = "changed"
    onnx.save(model, str(target))


def assert_one_line(error: BaseException, *parts: str) -> None:
    text = str(error)
    assert "\n" not in text and all(p in text for p in parts), text


# --- code in the package ---------------------------------------------------------------------


def package_with_marker(tmp_path: Path) -> tuple[Path, Path]:
    """A package whose architecture.py writes ``marker`` when imported (its sha256 updated to match)."""
    folder = copy_package(tmp_path / "pkg")
    marker = tmp_path / "marker.txt"
    architecture = folder / "architecture.py"
    payload = f"\nimport pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    architecture.write_text(architecture.read_text() + payload)
    digest = sha256(architecture)
    edit_rdf(folder, lambda rdf: rdf["weights"]["pytorch_state_dict"]["architecture"].update(sha256=digest))
    return folder, marker


def test_validate_does_not_import_the_packages_code_without_trust_code(tmp_path: Path, private_temp: Path) -> None:
    folder, marker = package_with_marker(tmp_path)
    result = run_selfden("validate", folder, tmp=private_temp)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("PASSED"), result.stdout
    rows = {line.split("  ")[0]: line for line in result.stdout.splitlines()}
    torch_row, onnx_row = rows["bioimageio.core test_model (PyTorch)"], rows["bioimageio.core test_model"]
    assert "warn" in torch_row and "not run: runs the package's architecture.py; pass --trust-code" in torch_row
    assert " pass " in onnx_row and not marker.exists(), result.stdout  # the ONNX test ran, no code did


def test_validate_with_trust_code_runs_the_pytorch_test(
    tmp_path: Path, private_temp: Path, one_torch_thread: None
) -> None:
    from selfden.export.validation import validate_package

    folder, marker = package_with_marker(tmp_path)
    report = validate_package(folder, trust_code=True)
    assert report.check("bioimageio.core test_model (PyTorch)").passed, report.format()
    assert report.passed and marker.read_text() == "ran", report.format()
    result = run_selfden("validate", tmp_path / "missing", "--trust-code", tmp=private_temp)  # the option exists
    assert result.returncode == 1 and "missing does not exist" in result.stdout, result.stdout + result.stderr


# --- files outside the package -----------------------------------------------------------------


def escaping_source(folder: Path, outside: Path, how: str) -> str:
    """The rdf text that reaches ``outside`` from ``folder`` one way or another."""
    if how == "absolute":
        return str(outside)
    if how == "file-url":
        return outside.as_uri()
    if how == "dotdot":
        return os.path.relpath(outside, folder)
    if how == "symlink":
        (folder / "linked").symlink_to(outside)
        return "linked"
    (folder / "sub").symlink_to(outside.parent, target_is_directory=True)  # a symlinked folder
    return f"sub/{outside.name}"


ESCAPES = ["absolute", "file-url", "dotdot", "symlink", "symlinked-folder"]


def weights_outside(tmp_path: Path, how: str) -> tuple[Path, Path]:
    """A package whose ONNX weights are a working graph outside it (the rdf's sha256 is the package's own)."""
    folder = copy_package(tmp_path / "pkg")
    outside = tmp_path / "elsewhere" / "secret.onnx"
    outside.parent.mkdir()
    changed_graph(SHIPPED / "denoiser.onnx", outside)  # a different hash: a report must not reveal it
    source = escaping_source(folder, outside, how)
    edit_rdf(folder, lambda rdf: rdf["weights"]["onnx"].update(source=source))
    return folder, outside


@pytest.mark.parametrize("how", ESCAPES)
def test_infer_refuses_weights_outside_the_package(tmp_path: Path, how: str) -> None:
    folder, outside = weights_outside(tmp_path, how)
    with pytest.raises(ModelError) as error:
        read_spec(folder / "rdf.yaml")
    assert_one_line(error.value, str(folder / "rdf.yaml"), "weights.onnx.source", OUTSIDE_HINT, "fix the rdf")
    outside.unlink()
    with pytest.raises(ModelError) as gone:
        read_spec(folder / "rdf.yaml")
    assert str(gone.value) == str(error.value)  # nothing tells whether the outside file exists


def _set_source(*keys: Any) -> Callable[[dict[str, Any], str], None]:
    def edit(rdf: dict[str, Any], source: str) -> None:
        entry = rdf
        for key in keys[:-1]:
            entry = entry[key]
        entry[keys[-1]] = source

    return edit


ARCHITECTURE = ("weights", "pytorch_state_dict", "architecture", "source")
FIELDS = {
    "documentation.source": _set_source("documentation", "source"),
    "inputs[0].test_tensor.source": _set_source("inputs", 0, "test_tensor", "source"),
    "weights.pytorch_state_dict.architecture.source": _set_source(*ARCHITECTURE),
    "config.selfden.graphs.sampler": _set_source("config", "selfden", "graphs", "sampler"),
}


@pytest.mark.parametrize("field", FIELDS)
def test_infer_refuses_any_file_the_rdf_names_outside_the_package(tmp_path: Path, field: str) -> None:
    folder = copy_package(tmp_path / "pkg")
    (tmp_path / "outside.txt").write_text("not the package's")
    edit_rdf(folder, lambda rdf: FIELDS[field](rdf, "../outside.txt"))
    with pytest.raises(ModelError) as error:
        read_spec(folder / "rdf.yaml")
    assert_one_line(error.value, field, "'../outside.txt' leaves the package")


def test_infer_cli_refuses_outside_weights_in_one_line_and_writes_nothing(tmp_path: Path, private_temp: Path) -> None:
    folder, _ = weights_outside(tmp_path, "absolute")
    np.save(tmp_path / "frame.npy", np.zeros((136, 136), np.float32))
    result = run_selfden("infer", folder, tmp_path / "frame.npy", "-o", tmp_path / "out.npy", tmp=private_temp)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert OUTSIDE_HINT in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "out.npy").exists()


@pytest.mark.parametrize("how", ESCAPES)
def test_validate_fails_outside_weights_without_reading_them(tmp_path: Path, how: str) -> None:
    from selfden.export.validation import validate_package

    folder, outside = weights_outside(tmp_path, how)
    report = validate_package(folder)
    text = report.format()
    assert not report.passed and OUTSIDE_HINT in report.check("files inside the package").detail, text
    assert report.check("bioimageio.spec").skipped and report.check("bioimageio.core test_model").skipped, text
    assert sha256(outside)[:8] not in text and "MB" not in text, text  # no hash, no size of the outside file
    outside.unlink()
    assert validate_package(folder).format() == text  # nor whether it exists


def test_validate_fails_an_architecture_outside_the_package_even_with_trust_code(tmp_path: Path) -> None:
    from selfden.export.validation import validate_package

    folder = copy_package(tmp_path / "pkg")
    marker = tmp_path / "marker.txt"
    (tmp_path / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    edit_rdf(folder, lambda rdf: FIELDS["weights.pytorch_state_dict.architecture.source"](rdf, "../evil.py"))
    report = validate_package(folder, trust_code=True)
    detail = report.check("files inside the package").detail
    assert "weights.pytorch_state_dict.architecture.source '../evil.py' leaves the package" in detail, report.format()
    assert not report.passed and not marker.exists(), report.format()


def test_validate_fails_a_tensor_whose_header_declares_gigapixels_without_loading_it(tmp_path: Path) -> None:
    from selfden.export.validation import validate_package

    folder = copy_package(tmp_path / "pkg")
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    tensor = folder / rdf["inputs"][0]["test_tensor"]["source"]
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1, 1, 1), np.float32))
    header["shape"] = (1, 1, 100_000, 100_000)  # 40 GB of float32 declared in a 128-byte file
    with tensor.open("wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
    edit_rdf(folder, lambda rdf: rdf["inputs"][0]["test_tensor"].update(sha256=sha256(tensor)))
    report = validate_package(folder)
    detail = report.check("file sizes within limits").detail
    assert not report.passed and "100000 x 100000" in detail and "Gpx" in detail, report.format()
    assert report.check("bioimageio.spec").skipped, report.format()


# --- sha256 -----------------------------------------------------------------------------------


def test_infer_refuses_weights_whose_sha256_differs_from_the_rdf(tmp_path: Path) -> None:
    folder = copy_package(tmp_path / "pkg")
    changed_graph(SHIPPED / "denoiser.onnx", folder / "denoiser.onnx")  # loads fine: only the hash can tell
    with pytest.raises(ModelError) as error:
        read_spec(folder / "rdf.yaml")
    assert_one_line(error.value, "denoiser.onnx", "sha256", "re-download", "re-export")


def test_infer_runs_weights_the_rdf_gives_no_sha256_for(tmp_path: Path) -> None:
    folder = copy_package(tmp_path / "pkg")
    edit_rdf(folder, lambda rdf: rdf["weights"]["onnx"].pop("sha256"))
    assert read_spec(folder / "rdf.yaml").weights == folder / "denoiser.onnx"


# --- zips -------------------------------------------------------------------------------------


def zip_package(path: Path, extra: Callable[[zipfile.ZipFile], None] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(SHIPPED.iterdir()):
            archive.write(file, file.name)
        if extra is not None:
            extra(archive)
    return path


def add_bomb(archive: zipfile.ZipFile) -> None:
    """64 MiB of zeros in ~64 kB: as far past the 200:1 ratio as a real bomb (1 GiB in 2 MB)."""
    with archive.open("bomb.bin", "w") as entry:
        block = bytes(1 << 20)
        for _ in range(64):
            entry.write(block)


def test_a_zip_bomb_is_refused_by_infer_and_validate_leaving_nothing(tmp_path: Path, private_temp: Path) -> None:
    from selfden.export.validation import validate_package

    path = zip_package(tmp_path / "bomb.zip", add_bomb)
    assert path.stat().st_size < 2 << 20
    with pytest.raises(ModelError) as error:
        locate_rdf(path)
    assert_one_line(error.value, str(path), "'bomb.bin' expands more than 200 times")
    assert leftovers(private_temp) == []
    report = validate_package(path)
    assert "'bomb.bin' expands more than 200 times" in report.check("zip layout").detail, report.format()
    assert not report.passed and leftovers(private_temp) == []


def test_zip_limits_on_size_and_entries_are_one_line_errors(tmp_path: Path) -> None:
    path = zip_package(tmp_path / "package.zip")
    with pytest.raises(ModelError) as error:
        extract_zip(path, tmp_path / "small", ZipLimits(max_total_bytes=1 << 20))
    assert_one_line(error.value, str(path), "unpacks to more than 1 MiB", "unzip it yourself")
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as archive:
        for index in range(10_001):
            archive.writestr(f"f{index}", b"")
    with pytest.raises(ModelError) as error:
        extract_zip(many, tmp_path / "many")
    assert_one_line(error.value, "10001 entries, more than 10000")
    assert not (tmp_path / "small").exists() and not (tmp_path / "many").exists()


def test_a_zip_whose_header_understates_a_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lying.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("rdf.yaml", (SHIPPED / "rdf.yaml").read_bytes())
        archive.writestr("big.bin", os.urandom(3 << 20))
    data = bytearray(path.read_bytes())
    for info in zipfile.ZipFile(path).infolist():  # patch the uncompressed size in both headers to 10 bytes
        if info.filename == "big.bin":
            data[info.header_offset + 22 : info.header_offset + 26] = (10).to_bytes(4, "little")
            central = data.rfind(b"PK\x01\x02" + data[info.header_offset + 4 : info.header_offset + 14])
            data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError) as error:
        extract_zip(path, tmp_path / "out", ZipLimits(max_total_bytes=2 << 20))
    assert_one_line(error.value, str(path))
    assert not (tmp_path / "out").exists()


def add_escapes(archive: zipfile.ZipFile) -> None:
    for name in ("../evil.txt", "/abs.txt", "..\\win.txt", "C:/drive.txt"):
        archive.writestr(zipfile.ZipInfo(name), b"escaped")
    link = zipfile.ZipInfo("link")
    link.external_attr = 0o120777 << 16  # a symlink entry; its content is the target
    archive.writestr(link, "/etc/passwd")


ESCAPING_ENTRIES = ["'../evil.txt'", "'/abs.txt'", "'..\\\\win.txt'", "'C:/drive.txt'", "'link' (a symlink)"]


def test_zip_slip_and_symlink_entries_fail_validate_naming_each(tmp_path: Path, private_temp: Path) -> None:
    from selfden.export.validation import validate_package

    path = zip_package(tmp_path / "slip.zip", add_escapes)
    report = validate_package(path)
    detail = report.check("zip entries").detail
    assert not report.passed and all(name in detail for name in ESCAPING_ENTRIES), report.format()
    assert not (tmp_path / "evil.txt").exists() and not (private_temp / "evil.txt").exists()
    assert leftovers(private_temp) == []


def test_infer_extraction_skips_zip_slip_and_symlink_entries_with_a_warning(
    tmp_path: Path, private_temp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = zip_package(tmp_path / "slip.zip", add_escapes)
    with caplog.at_level(logging.WARNING):
        rdf, temp = locate_rdf(path)
    assert temp is not None
    try:
        written = {p.relative_to(rdf.parent).as_posix() for p in Path(temp.name).rglob("*") if p.is_file()}
        assert written == {p.name for p in SHIPPED.iterdir()}, written
        assert not any(p.is_symlink() for p in Path(temp.name).rglob("*"))
        assert all(name in caplog.text for name in ESCAPING_ENTRIES), caplog.text
        assert read_spec(rdf).weights.is_file()
    finally:
        temp.cleanup()
    assert leftovers(private_temp) == []


# --- random damage ----------------------------------------------------------------------------

BASE_RDF = yaml.safe_load((SHIPPED / "rdf.yaml").read_text())
HOSTILE_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=12),
    st.sampled_from(["../x.onnx", "/etc/passwd", "..\\x", "C:/x", "sub/../../x", "", "denoiser.onnx", "0.5.3"]),
    st.lists(st.integers(-3, 300), max_size=4),
    st.dictionaries(st.sampled_from(["min", "step", "source", "id"]), st.integers(-3, 300)),
)  # fmt: skip


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path in a nested rdf (to pick one to damage)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, item in items:
        yield (*prefix, key)
        yield from _paths(item, (*prefix, key))


RDF_PATHS = [p for p in _paths(BASE_RDF) if p[0] != "config" or p[:2] == ("config", "selfden")]


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_package(tmp_path_factory.mktemp("fuzz") / "pkg")


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(RDF_PATHS), HOSTILE_VALUES), min_size=1, max_size=3))
def test_damaged_rdfs_raise_only_one_line_model_errors(fuzz_folder: Path, damage: list[tuple[Any, Any]]) -> None:
    rdf = copy.deepcopy(BASE_RDF)
    for path, value in damage:
        entry = rdf
        try:
            for key in path[:-1]:
                entry = entry[key]
            entry[path[-1]] = value
        except (KeyError, IndexError, TypeError):  # an earlier change removed this path
            pass
    (fuzz_folder / "rdf.yaml").write_text(yaml.dump(rdf, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)))
    try:
        read_spec(fuzz_folder / "rdf.yaml")
    except ModelError as error:
        assert "\n" not in str(error), error


@pytest.fixture(scope="module")
def small_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A package zip of small files only, so random damage mostly hits headers."""
    path = tmp_path_factory.mktemp("zip") / "small.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in ("rdf.yaml", "README.md", "cover.png"):
            archive.write(SHIPPED / name, name)
        archive.writestr("sub/denoiser.onnx", b"not a graph")
    return path.read_bytes()


FLIP = st.tuples(st.one_of(st.integers(0, 1 << 20), st.integers(-400, -1)), st.integers(0, 255))  # -400: the directory


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(FLIP, min_size=1, max_size=6), st.booleans())
def test_damaged_zips_raise_only_selfden_errors_and_leave_nothing(
    small_zip: bytes, tmp_path: Path, flips: list[tuple[int, int]], truncate: bool
) -> None:
    data = bytearray(small_zip)
    for position, value in flips:
        data[position % len(data)] = value
    if truncate:
        data = data[: flips[0][0] % len(data)]
    path = tmp_path / "damaged.zip"
    path.write_bytes(bytes(data))
    temp = Path(tempfile.gettempdir())
    before = leftovers(temp)
    try:
        rdf, folder = locate_rdf(path)
        try:
            read_spec(rdf)
        finally:
            if folder is not None:
                folder.cleanup()
    except SelfdenError as error:
        assert "\n" not in str(error), error
    assert leftovers(temp) == before
