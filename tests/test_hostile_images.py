"""Hostile and broken image files: limits before decoding, true messages, and a fuzz test of the readers.

Every case must end in one line (an InputError naming the file) or a correct read; never
another exception, a huge allocation, a hang or a file left behind.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from selfden.errors import InputError, SelfdenError
from selfden.io.limits import DEFAULT_MAX_PIXELS, describe
from selfden.io.reading import open_image

SHIPPED = Path(__file__).resolve().parents[1] / "bioimage_models"
SELFDEN = [sys.executable, "-m", "selfden.cli"]
HUGE = 100_000  # 100000 x 100000 = 10 Gpx: 18.6 GiB as uint16


def run_selfden(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([*SELFDEN, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def refusal(path: Path, max_pixels: int | None = None) -> str:
    """The message of the InputError that opening (and reading every frame of) ``path`` raises."""
    with pytest.raises(InputError) as error:
        read_all(path, max_pixels)
    message = str(error.value)
    assert str(path) in message and "\n" not in message, message
    return message


def read_all(path: Path, max_pixels: int | None = None) -> None:
    with open_image(path, max_pixels) as stack:
        for index in range(len(stack)):
            stack.frame(index)


# --- crafting files ----------------------------------------------------------------------------


def set_first_ifd_longs(path: Path, values: dict[int, int]) -> None:
    """Rewrite tags of a classic little-endian TIFF's first IFD as one LONG each."""
    data = bytearray(path.read_bytes())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for entry in range(struct.unpack_from("<H", data, ifd)[0]):
        at = ifd + 2 + 12 * entry
        tag = struct.unpack_from("<H", data, at)[0]
        if tag in values:
            struct.pack_into("<HHII", data, at, tag, 4, 1, values[tag])
    path.write_bytes(bytes(data))


def set_tag_item(path: Path, name: str, index: int, value: int) -> None:
    """Set item ``index`` of an array tag (e.g. StripOffsets) of the first page."""
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages.first.tags[name]
        at, code = tag.valueoffset, tag.dtype
    fmt = {3: "<H", 4: "<I", 16: "<Q"}[code]
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, at + index * struct.calcsize(fmt), value)
    path.write_bytes(bytes(data))


def huge_tiff(path: Path, compression: str | None) -> Path:
    """A few hundred bytes that declare one 100000 x 100000 uint16 frame."""
    tifffile.imwrite(path, np.ones((16, 16), np.uint16), compression=compression, rowsperstrip=16)
    set_first_ifd_longs(path, {256: HUGE, 257: HUGE, 278: HUGE})  # ImageWidth, ImageLength, RowsPerStrip
    return path


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(path: Path, height: int, width: int) -> Path:
    """A PNG header declaring ``height`` x ``width`` 8-bit gray pixels, with a little deflate data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))
    return path


def npy_declaring(path: Path, shape: tuple[int, ...], data: bytes = b"\0" * 64) -> Path:
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<u2", "fortran_order": False, "shape": shape})
        handle.write(data)
    return path


# --- declared sizes ----------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_huge_declared_tiff_is_refused_before_decoding(tmp_path: Path, compression: str | None) -> None:
    message = refusal(huge_tiff(tmp_path / "huge.tif", compression))
    assert "100000 x 100000 = 10.0 Gpx per frame" in message, message
    assert f"--max-pixels {HUGE * HUGE}" in message, message


def test_huge_declared_tile_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, np.ones((16, 16), np.uint16), tile=(16, 16), compression="zlib")
    set_first_ifd_longs(path, {322: 60_000, 323: 60_000})  # TileWidth, TileLength
    message = refusal(path)
    assert "tile of 60000 x 60000 = 3.60 Gpx" in message and "--max-pixels" in message, message


def test_png_bomb_is_refused_with_the_same_message(tmp_path: Path) -> None:
    message = refusal(png_declaring(tmp_path / "bomb.png", HUGE, HUGE))
    assert "100000 x 100000 = 10.0 Gpx per frame" in message and "--max-pixels" in message, message


def test_pillow_bomb_limit_follows_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's own limit (a global, 89 Mpx by default) neither refuses what ours allows nor stays changed."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # stands in for an image above Pillow's default
    path = tmp_path / "ok.png"
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(path)  # 4096 px: Pillow alone would refuse it
    assert open_image(path).frame(0).sum() == 7 * 64 * 64
    assert Image.MAX_IMAGE_PIXELS == 1000
    assert "64 x 64 = 4.10 kpx per frame" in refusal(path, max_pixels=4000)


def test_npy_with_a_huge_header_is_refused(tmp_path: Path) -> None:
    message = refusal(npy_declaring(tmp_path / "huge.npy", (HUGE, HUGE)))
    assert "100000 x 100000 = 10.0 Gpx per frame" in message and "--max-pixels" in message, message


def test_npy_whose_data_are_missing_says_truncated(tmp_path: Path) -> None:
    message = refusal(npy_declaring(tmp_path / "short.npy", (3, 64, 64)))
    assert "truncated" in message, message


def test_zarr_with_a_huge_declared_shape_or_chunk_is_refused(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr", reason="Zarr cases need the zarr package (selfden[scale])")
    zarr.create_array(str(tmp_path / "huge.zarr"), shape=(HUGE, HUGE), chunks=(1000, 1000), dtype="uint16")
    zarr.create_array(str(tmp_path / "chunk.zarr"), shape=(64, 64), chunks=(HUGE, HUGE), dtype="uint16")
    assert "100000 x 100000 = 10.0 Gpx per frame" in refusal(tmp_path / "huge.zarr")
    assert "chunk of 100000 x 100000 = 10.0 Gpx" in refusal(tmp_path / "chunk.zarr")


@pytest.mark.parametrize("suffix", [".tif", ".png", ".npy"])
def test_raising_the_limit_lets_a_large_but_allowed_image_through(tmp_path: Path, suffix: str) -> None:
    data = np.arange(300 * 200, dtype=np.uint16).reshape(300, 200)
    path = tmp_path / f"large{suffix}"
    {".tif": lambda: tifffile.imwrite(path, data, compression="zlib"),
     ".png": lambda: Image.fromarray(data).save(path), ".npy": lambda: np.save(path, data)}[suffix]()
    assert "300 x 200 = 60.0 kpx per frame" in refusal(path, max_pixels=50_000)
    np.testing.assert_array_equal(open_image(path, max_pixels=60_000).frame(0), data)


def test_default_limit_is_a_gigapixel_frame() -> None:
    assert DEFAULT_MAX_PIXELS == 2**30 and describe(DEFAULT_MAX_PIXELS) == "1.07 Gpx"


# --- truncated, sparse, corrupt ------------------------------------------------------------------


def test_truncated_tiff_says_truncated(tmp_path: Path) -> None:
    stack = np.arange(5 * 32 * 32, dtype=np.uint16).reshape(5, 32, 32)
    tifffile.imwrite(tmp_path / "plain.tif", stack, photometric="minisblack")
    tifffile.imwrite(tmp_path / "zlib.tif", stack, compression="zlib", photometric="minisblack")
    for name, keep in (("plain.tif", 0.6), ("zlib.tif", 0.5), ("zlib.tif", 0.995), ("zlib.tif", 0.01)):
        cut = tmp_path / f"cut-{keep}-{name}"
        raw = (tmp_path / name).read_bytes()
        cut.write_bytes(raw[: int(len(raw) * keep)])
        message = refusal(cut)
        assert "truncated" in message and "sparse" not in message, message


@pytest.mark.parametrize("tag", ["StripOffsets", "StripByteCounts", "TileOffsets"])
def test_sparse_tiff_says_sparse_instead_of_reading_zeros(tmp_path: Path, tag: str) -> None:
    path = tmp_path / "sparse.tif"
    data = np.arange(1, 64 * 64 + 1, dtype=np.uint16).reshape(64, 64)
    layout = {"tile": (16, 16)} if tag.startswith("Tile") else {"rowsperstrip": 16}
    tifffile.imwrite(path, data, compression="zlib", **layout)
    set_tag_item(path, tag, 1, 0)
    message = refusal(path)
    assert "sparse" in message and "never written" in message and "truncated" not in message, message


def test_tiff_declaring_more_frames_than_it_holds_is_refused_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "frames.tif"
    tifffile.imwrite(path, np.ones((2, 16, 16), np.uint16), imagej=True, compression="zlib", metadata={"axes": "TYX"})
    with tifffile.TiffFile(path) as tif:
        description = tif.pages.first.description
    claim = "ImageJ=\nimages=99999999\nframes=99999999\nmode=grayscale"
    path.write_bytes(path.read_bytes().replace(description.encode(), claim.ljust(len(description)).encode()))
    with pytest.raises(InputError, match="declare 99999999 frames but the file holds 2 pages"):
        open_image(path)  # not at frame 2, after an output was started


def test_corrupt_tiff_header_says_corrupt_or_not_a_tiff(tmp_path: Path) -> None:
    bad_directory = tmp_path / "bad_ifd.tif"
    bad_directory.write_bytes(b"II*\x00\x08\x00\x00\x00" + struct.pack("<H", 0xFFFF) + b"\x00" * 64)
    assert "corrupt" in refusal(bad_directory)
    not_tiff = tmp_path / "text.tif"
    not_tiff.write_bytes(b"hello, world\n" * 8)
    assert "not a TIFF file" in refusal(not_tiff)
    far = tmp_path / "far.tif"
    far.write_bytes(b"II*\x00" + struct.pack("<I", 10**8) + b"\x00" * 64)
    assert "truncated or its header is corrupt" in refusal(far)


# --- the command line ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    packages = sorted(SHIPPED.glob("*/rdf.yaml"), key=lambda p: sum(f.stat().st_size for f in p.parent.iterdir()))
    assert packages, f"no shipped packages under {SHIPPED}: the repository ships them (bioimage_models/)"
    return Path(shutil.copytree(packages[0].parent, tmp_path_factory.mktemp("model") / "model"))


def test_infer_refuses_a_huge_image_in_one_line_and_leaves_nothing(tmp_path: Path, small_model: Path) -> None:
    huge = huge_tiff(tmp_path / "huge.tif", "zlib")
    result = run_selfden("infer", small_model, huge, "-o", tmp_path / "out.tif", "--device", "cpu")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "--max-pixels" in lines[0] and "10.0 Gpx per frame" in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.tif"]


@pytest.mark.parametrize("command", ["infer", "train", "noise", "css"])
def test_every_command_that_reads_images_takes_max_pixels(tmp_path: Path, small_model: Path, command: str) -> None:
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 999, (4, 64, 64), dtype=np.uint16), photometric="minisblack")
    args = {"infer": ["infer", small_model, path, "-o", tmp_path / "out.tif"],
            "train": ["train", "cae", path, "-o", tmp_path / "run", "--steps", "1"],
            "noise": ["noise", path], "css": ["css", path]}[command]
    result = run_selfden(*args, "--max-pixels", "4095")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stdout + result.stderr
    assert "64 x 64 = 4.10 kpx per frame" in lines[0] and "--max-pixels 4096" in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.tif"]


def test_infer_with_a_raised_limit_denoises_the_image(tmp_path: Path, small_model: Path) -> None:
    path = tmp_path / "frame.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 999, (64, 64), dtype=np.uint16))
    result = run_selfden("infer", small_model, path, "-o", tmp_path / "out.tif", "--device", "cpu", "--max-pixels", "4096")
    assert result.returncode == 0, result.stderr
    assert tifffile.imread(tmp_path / "out.tif").shape == (64, 64)


def test_css_bounds_the_whole_stack_it_holds_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((8, 16, 16), np.uint16), photometric="minisblack")
    result = run_selfden("css", path, "--max-pixels", "1000")  # frames of 256 px, 2048 px in all
    assert result.returncode == 1 and "8 x 16 x 16 = 2.05 kpx in all" in result.stderr, result.stderr
    assert "--max-pixels 2048" in result.stderr, result.stderr


# --- fuzzing the readers -------------------------------------------------------------------------


def _seed_files() -> dict[str, bytes]:
    """Small valid files of every reader and layout: the fuzzer's starting points."""
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 4000, (3, 12, 10), dtype=np.uint16)
    seeds: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as folder:
        def save(name: str, write: object) -> None:
            path = Path(folder) / name
            write(path)  # type: ignore[operator]
            seeds[name] = path.read_bytes()

        save("plain.tif", lambda p: tifffile.imwrite(p, stack, photometric="minisblack"))
        save("zlib.tif", lambda p: tifffile.imwrite(p, stack, compression="zlib", photometric="minisblack"))
        save("tiled.tif", lambda p: tifffile.imwrite(p, stack[0], tile=(16, 16), compression="zlib"))
        save("imagej.tif", lambda p: tifffile.imwrite(p, stack, imagej=True, metadata={"axes": "TYX"}))
        save("big.tif", lambda p: tifffile.imwrite(p, stack, bigtiff=True, photometric="minisblack"))
        save("gray8.png", lambda p: Image.fromarray(stack[0].astype(np.uint8)).save(p))
        save("gray16.png", lambda p: Image.fromarray(stack[0]).save(p))
        save("stack.npy", lambda p: np.save(p, stack))
        save("frame.npy", lambda p: np.save(p, stack[0].astype(np.float32)))
    return seeds


SEEDS = _seed_files()
FUZZ_MAX_PIXELS = 4096  # what a mutated header may declare and still be decoded: keeps every example small


@st.composite
def hostile_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A seed file with bytes overwritten (mostly in its header and directories), truncated, or both."""
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    kind = draw(st.sampled_from(["header", "anywhere", "truncate", "random", "tag"]))
    if kind == "tag" and name.endswith(".tif") and data[:4] == b"II*\x00":
        return name, _with_tag_value(data, draw)
    if kind == "random":
        return name, draw(st.binary(min_size=1, max_size=512))
    if kind == "truncate":
        return name, bytes(data[: draw(st.integers(1, len(data) - 1))])
    # TIFF directories sit at the start (and the end) of these files; PNG's IHDR and NPY's header at the start
    span = len(data) if kind == "anywhere" else min(len(data), 400)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, span - 1))
        if name.endswith(".tif") and draw(st.booleans()):
            at = len(data) - 1 - at  # the later directories tifffile writes after the pixel data
        data[at] = draw(st.integers(0, 255))
    if name.endswith(".png") and draw(st.booleans()):  # keep the chunk CRCs valid so Pillow reads on
        data = bytearray(_fix_png_crcs(bytes(data)))
    return name, bytes(data)


def _with_tag_value(data: bytearray, draw: st.DrawFn) -> bytes:
    """A classic TIFF with one entry of its first directory given another type, count or value."""
    ifd = struct.unpack_from("<I", data, 4)[0]
    entries = struct.unpack_from("<H", data, ifd)[0]
    at = ifd + 2 + 12 * draw(st.integers(0, entries - 1))
    field = draw(st.sampled_from([(2, "<H", 16), (4, "<I", 32), (8, "<I", 32), (8, "<H", 16)]))
    offset, fmt, bits = field
    edge = st.sampled_from([0, 1, 2**bits - 1, 2 ** (bits - 1), 100_000 % 2**bits])
    struct.pack_into(fmt, data, at + offset, draw(st.integers(0, 2**bits - 1) | edge))
    return bytes(data)


def _fix_png_crcs(data: bytes) -> bytes:
    out, at = bytearray(data[:8]), 8
    while at + 8 <= len(data):
        length = struct.unpack(">I", data[at : at + 4])[0]
        body = data[at + 4 : at + 8 + length]
        if len(body) != length + 4:
            return bytes(out) + data[at:]
        out += data[at : at + 4] + body + struct.pack(">I", zlib.crc32(body))
        at += 12 + length
    return bytes(out) + data[at:]


def _mutated(name: str, changes: dict[int, int]) -> tuple[str, bytes]:
    data = bytearray(SEEDS[name])
    for at, value in changes.items():
        data[at] = value
    return name, bytes(data)


@pytest.mark.timeout(120)
@example(_mutated("imagej.tif", {43: 234}))  # found by this test: a page decoding to 0 pixels (ValueError)
@settings(max_examples=1000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile_files())
def test_readers_give_pixels_or_one_line_input_error_on_any_bytes(case: tuple[str, bytes]) -> None:
    name, data = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            read_all(path, FUZZ_MAX_PIXELS)
        except SelfdenError as error:
            message = str(error)
            assert isinstance(error, InputError), f"{type(error).__name__}: {message}"
            assert str(path) in message and "\n" not in message, message
        assert os.listdir(folder) == [name], "reading an image must not leave files behind"


@st.composite
def zarr_metadata(draw: st.DrawFn) -> dict[str, object]:
    """A Zarr v2 array's .zarray with hostile shape, chunks, dtype or order (the chunks on disk stay)."""
    sizes = st.integers(-2, 3) | st.sampled_from([12, 10, 2**31, HUGE, 2**63 - 1])
    meta: dict[str, object] = {"shape": [3, 12, 10], "chunks": [1, 12, 10], "dtype": "<u2", "fill_value": 0,
                               "order": "C", "filters": None, "dimension_separator": ".",
                               "compressor": {"id": "zstd", "level": 0}, "zarr_format": 2}
    for key in draw(st.sets(st.sampled_from(["shape", "chunks", "dtype", "order", "fill_value"]), min_size=1)):
        if key in ("shape", "chunks"):
            meta[key] = draw(st.lists(sizes, min_size=0, max_size=5))
        else:
            meta[key] = draw(st.sampled_from(["|b1", "<f8", "<u2", "|O", "<U4", "F", "x", 1e300, None]))
    return meta


@pytest.mark.timeout(120)
@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(zarr_metadata())
def test_zarr_reader_gives_pixels_or_one_line_input_error_on_any_metadata(meta: dict[str, object]) -> None:
    zarr = pytest.importorskip("zarr", reason="Zarr cases need the zarr package (selfden[scale])")
    import json

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "image.zarr"
        array = zarr.create_array(str(path), shape=(3, 12, 10), chunks=(1, 12, 10), dtype="uint16", zarr_format=2)
        array[:] = np.arange(360, dtype=np.uint16).reshape(3, 12, 10)
        (path / ".zarray").write_text(json.dumps(meta))
        before = sorted(p.name for p in path.iterdir())
        try:
            read_all(path, FUZZ_MAX_PIXELS)
        except SelfdenError as error:
            message = str(error)
            assert isinstance(error, InputError) and str(path) in message and "\n" not in message, message
        assert sorted(p.name for p in path.iterdir()) == before, "reading an image must not write into it"
