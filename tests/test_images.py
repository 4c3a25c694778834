"""Image files: reading lazily, refusing bad inputs clearly, writing atomically."""

from __future__ import annotations

import os
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from selfden.errors import InputError
from selfden.inference.running import denoise_files
from selfden.io import metadata as io_metadata
from selfden.io.metadata import ImageMetadata
from selfden.io.paths import check_output_path
from selfden.io.reading import open_image
from selfden.io.resumable_writer import ResumableWriter, partial_dir


def assert_one_line_naming(error: pytest.ExceptionInfo[InputError], path: Path) -> None:
    message = str(error.value)
    assert str(path) in message, message
    assert "\n" not in message, message


def write_stack(path: Path, shape: tuple[int, ...] = (4, 24, 32), dtype: str = "uint16") -> np.ndarray:
    data = (np.random.default_rng(0).random(shape) * 200).astype(dtype)
    tifffile.imwrite(path, data, photometric="minisblack")
    return data


# --- reading ------------------------------------------------------------------------------


def test_imagej_stack_reads_axes_spacing_and_frames(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 8 * 10, dtype=np.uint16).reshape(2, 3, 8, 10)
    path = tmp_path / "hyper.tif"
    metadata = {"axes": "TZYX", "spacing": 0.25, "unit": "um", "finterval": 2.0}
    tifffile.imwrite(path, data, imagej=True, resolution=(5.0, 5.0), metadata=metadata)
    stack = open_image(path)
    assert (stack.shape, stack.axes, stack.dtype, len(stack)) == ((2, 3, 8, 10), "TZYX", np.uint16, 6)
    assert stack.frame_shape == (8, 10)
    np.testing.assert_array_equal(stack.frame(4), data[1, 1])
    assert stack.metadata.imagej["spacing"] == 0.25 and stack.metadata.imagej["unit"] == "um"
    assert stack.metadata.resolution == (5.0, 5.0)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "float64"])
def test_supported_dtypes_read_unchanged(tmp_path: Path, dtype: str) -> None:
    path = tmp_path / f"{dtype}.tif"
    data = write_stack(path, dtype=dtype)
    stack = open_image(path)
    assert stack.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(stack.frame(3), data[3])


def test_generic_leading_axis_becomes_t(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    write_stack(path)
    assert open_image(path).axes == "TYX"


def test_compressed_tiff_is_read_page_by_page(tmp_path: Path) -> None:
    data = (np.random.default_rng(3).random((5, 16, 20)) * 1000).astype(np.uint16)
    path = tmp_path / "zlib.tif"
    tifffile.imwrite(path, data, compression="zlib")
    with open_image(path) as stack:
        frames = [stack.frame(i) for i in range(len(stack))]
    np.testing.assert_array_equal(np.stack(frames), data)


def test_big_stack_is_read_frame_by_frame_without_loading_it(tmp_path: Path) -> None:
    path = tmp_path / "big.tif"
    frames = np.zeros((200, 256, 256), dtype=np.uint16)
    frames[:, 0, 0] = np.arange(200)
    tifffile.imwrite(path, frames)
    del frames
    stack = open_image(path)
    tracemalloc.start()
    checksum = sum(int(stack.frame(i)[0, 0]) for i in range(len(stack)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert checksum == sum(range(200))
    assert peak < 2_000_000, f"peak {peak} bytes while reading a 26 MB stack frame by frame"
    assert not stack.frame(7).flags.owndata, "frames of an uncompressed TIFF should be memory-mapped views"


def test_png_8_and_16_bit_grayscale(tmp_path: Path) -> None:
    for dtype in ("uint8", "uint16"):
        data = (np.arange(12 * 9).reshape(12, 9) * 3).astype(dtype)
        path = tmp_path / f"{dtype}.png"
        Image.fromarray(data).save(path)
        stack = open_image(path)
        assert (stack.shape, stack.axes, stack.dtype) == ((12, 9), "YX", np.dtype(dtype))
        np.testing.assert_array_equal(stack.frame(0), data)


def test_rgb_png_with_equal_channels_is_accepted_and_colour_refused(tmp_path: Path) -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "gray_rgb.png")
    np.testing.assert_array_equal(open_image(tmp_path / "gray_rgb.png").frame(0), gray)
    colour = np.stack([gray, gray[::-1], gray], axis=-1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(InputError, match="colour") as error:
        open_image(tmp_path / "colour.png")
    assert_one_line_naming(error, tmp_path / "colour.png")


def test_npy_is_memory_mapped(tmp_path: Path) -> None:
    data = np.random.default_rng(4).random((3, 10, 12)).astype(np.float32)
    np.save(tmp_path / "a.npy", data)
    stack = open_image(tmp_path / "a.npy")
    assert (stack.axes, len(stack)) == ("TYX", 3)
    assert isinstance(stack.frame(1), np.memmap)
    np.testing.assert_array_equal(stack.frame(1), data[1])


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.tif"
    write_stack(good, shape=(3, 64, 64))
    raw = good.read_bytes()
    cases = {
        "missing": tmp_path / "missing.tif",
        "directory": tmp_path / "folder.tif",
        "zero_bytes": tmp_path / "empty.tif",
        "text_renamed": tmp_path / "notes.tif",
        "truncated": tmp_path / "truncated.tif",
        "truncated_compressed": tmp_path / "truncated_zlib.tif",
        "empty_stack": tmp_path / "no_frames.tif",
        "unsupported_suffix": tmp_path / "image.jpg",
        "unsupported_dtype": tmp_path / "complex.npy",
        "one_dimensional": tmp_path / "line.npy",
        "not_npy": tmp_path / "text.npy",
        "truncated_png": tmp_path / "cut.png",
    }
    cases["directory"].mkdir()
    cases["zero_bytes"].write_bytes(b"")
    cases["text_renamed"].write_text("just some notes\nnot an image\n")
    cases["truncated"].write_bytes(raw[: len(raw) // 2])
    tifffile.imwrite(tmp_path / "zlib.tif", np.random.default_rng(0).random((5, 32, 32)), compression="zlib")
    zipped = (tmp_path / "zlib.tif").read_bytes()
    cases["truncated_compressed"].write_bytes(zipped[: len(zipped) * 3 // 4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile warns that a 0-frame TIFF is nonconformant
        tifffile.imwrite(cases["empty_stack"], np.zeros((0, 8, 8), np.uint16))
    cases["unsupported_suffix"].write_bytes(b"\xff\xd8\xff")
    np.save(cases["unsupported_dtype"], np.zeros((4, 4), np.complex64))
    np.save(cases["one_dimensional"], np.zeros(16, np.float32))
    cases["not_npy"].write_text("hello")
    Image.fromarray(np.zeros((64, 64), np.uint8) + 7).save(tmp_path / "ok.png")
    png = (tmp_path / "ok.png").read_bytes()
    cases["truncated_png"].write_bytes(png[: len(png) // 2])
    return cases


BAD_CASES = [
    "missing", "directory", "zero_bytes", "text_renamed", "truncated", "truncated_compressed",
    "empty_stack", "unsupported_suffix", "unsupported_dtype", "one_dimensional", "not_npy", "truncated_png",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_raises_input_error_naming_the_file(tmp_path: Path, case: str, capfd: pytest.CaptureFixture[str]) -> None:
    path = _bad_inputs(tmp_path)[case]
    with pytest.raises(InputError) as error:
        open_image(path)  # before any frame is read: inputs are checked before work starts
    assert_one_line_naming(error, path)
    assert "invalid page offset" not in capfd.readouterr().err, "tifffile noise should not reach the terminal"


def test_rgb_tiff_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    with pytest.raises(InputError, match="RGB") as error:
        open_image(path)
    assert_one_line_naming(error, path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_frame_raises_input_error(tmp_path: Path, bad: float) -> None:
    data = np.ones((3, 8, 8), np.float32)
    data[2, 4, 4] = bad
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    stack = open_image(path)
    stack.frame(1)
    with pytest.raises(InputError, match="frame 2 contains NaN or Inf") as error:
        stack.frame(2)
    assert_one_line_naming(error, path)


# --- writing ------------------------------------------------------------------------------
# ResumableWriter is the one writer (selfden.inference.running drives it); ``{}`` is its
# fingerprint: nothing but the layout decides these frames.


def writer(target: Path, shape: tuple[int, ...], axes: str, metadata: ImageMetadata | None = None,
           dtype: np.typing.DTypeLike = np.float32, inputs: tuple[Path, ...] = (), overwrite: bool = False) -> ResumableWriter:
    return ResumableWriter(target, shape, axes, metadata or ImageMetadata(), dtype, {}, inputs=inputs, overwrite=overwrite)


def test_writer_roundtrip_keeps_imagej_axes_spacing_and_resolution(tmp_path: Path) -> None:
    data = (np.random.default_rng(5).random((2, 3, 8, 10)) * 500).astype(np.uint16)
    source = tmp_path / "in.tif"
    metadata = {"axes": "TZYX", "spacing": 0.5, "unit": "um", "finterval": 1.5, "Info": "scope A"}
    tifffile.imwrite(source, data, imagej=True, resolution=(4.0, 4.0), metadata=metadata)
    stack = open_image(source)
    target = tmp_path / "out.tif"
    with writer(target, stack.shape, stack.axes, stack.metadata, inputs=(source,)) as out:
        for index in range(len(stack)):
            out.write(stack.frame(index) / 2)
    with tifffile.TiffFile(target) as tif:
        series, ij = tif.series[0], tif.imagej_metadata
        assert (series.shape, series.axes, series.dtype) == ((2, 3, 8, 10), "TZYX", np.float32)
        assert (ij["spacing"], ij["unit"], ij["finterval"], ij["Info"]) == (0.5, "um", 1.5, "scope A"), ij
        assert tif.pages[0].resolution == (4.0, 4.0)
        np.testing.assert_allclose(series.asarray(), data / 2)


def test_writer_keeps_ome_physical_sizes(tmp_path: Path) -> None:
    source = tmp_path / "in.ome.tif"
    meta = {"axes": "ZYX", "PhysicalSizeX": 0.1, "PhysicalSizeXUnit": "µm", "PhysicalSizeZ": 0.7}
    tifffile.imwrite(source, np.zeros((3, 8, 8), np.uint16), ome=True, metadata=meta)
    stack = open_image(source)
    target = tmp_path / "out.ome.tif"
    with writer(target, stack.shape, stack.axes, stack.metadata) as out:
        for index in range(len(stack)):
            out.write(stack.frame(index))
    with tifffile.TiffFile(target) as tif:
        assert tif.is_ome and tif.series[0].axes == "ZYX"
        assert 'PhysicalSizeX="0.1"' in tif.ome_metadata and 'PhysicalSizeZ="0.7"' in tif.ome_metadata


def test_large_output_is_written_as_bigtiff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(io_metadata, "BIGTIFF_THRESHOLD", 1000)
    target = tmp_path / "big.tif"
    with writer(target, (3, 16, 16), "TYX") as out:
        for index in range(3):
            out.write(np.full((16, 16), index, np.float32))
    with tifffile.TiffFile(target) as tif:
        assert tif.is_bigtiff and tif.series[0].shape == (3, 16, 16)
        assert tif.series[0].asarray()[2, 0, 0] == 2


def test_writer_leaves_nothing_when_the_block_fails(tmp_path: Path) -> None:
    """A failure caused by the input or the model leaves nothing; any other failure (an
    interruption) leaves only the hidden partial folder, for --resume, never the target."""
    target = tmp_path / "out.tif"
    with pytest.raises(InputError):
        with writer(target, (3, 8, 8), "TYX") as out:
            out.write(np.zeros((8, 8)))
            raise InputError("the input is at fault")
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())
    with pytest.raises(KeyError):
        with writer(target, (3, 8, 8), "TYX") as out:
            out.write(np.zeros((8, 8)))
            raise KeyError("interrupted")
    assert list(tmp_path.iterdir()) == [partial_dir(target)], list(tmp_path.iterdir())


def test_writer_leaves_no_output_when_frames_are_missing(tmp_path: Path) -> None:
    target = tmp_path / "out.npy"
    with pytest.raises(RuntimeError, match="1 of 3 frames"):
        with writer(target, (3, 8, 8), "TYX") as out:
            out.write(np.zeros((8, 8)))
    assert list(tmp_path.iterdir()) == [partial_dir(target)], "the frames done are kept for --resume"


def test_writer_replaces_atomically_and_uses_a_hidden_partial_folder(tmp_path: Path) -> None:
    target = tmp_path / "out.tif"
    target.write_text("old result")
    with writer(target, (8, 8), "YX", overwrite=True) as out:
        partial = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.tif.partial")]
        assert partial == [partial_dir(target).name], list(tmp_path.iterdir())
        assert target.read_text() == "old result", "the old file must stay until the new one is complete"
        out.write(np.ones((8, 8)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]
    assert tifffile.imread(target).dtype == np.float32


def test_writer_refuses_to_overwrite_an_input(tmp_path: Path) -> None:
    source = tmp_path / "in.tif"
    write_stack(source)
    os.link(source, tmp_path / "hardlink.tif")
    (tmp_path / "sub").mkdir()
    for target in (source, tmp_path / "sub" / ".." / "in.tif", tmp_path / "hardlink.tif"):
        with pytest.raises(InputError, match="refusing to overwrite") as error:
            writer(target, (4, 24, 32), "TYX", inputs=(source,), overwrite=True)
        assert_one_line_naming(error, target)
    check_output_path(tmp_path / "other.tif", [source])


def test_npy_and_png_outputs(tmp_path: Path) -> None:
    with writer(tmp_path / "out.npy", (2, 4, 5), "TYX") as out:
        out.write(np.zeros((4, 5)))
        out.write(np.ones((4, 5)))
    assert np.load(tmp_path / "out.npy").shape == (2, 4, 5)
    with writer(tmp_path / "out.png", (4, 5), "YX", dtype=np.uint16) as out:
        out.write(np.full((4, 5), 70000.0))  # clipped, not wrapped
    assert open_image(tmp_path / "out.png").frame(0).max() == 65535
    source = tmp_path / "float.tif"
    tifffile.imwrite(source, np.zeros((4, 5), np.float32))
    with pytest.raises(InputError, match="PNG"):  # refused while planning, before the model is loaded
        denoise_files(tmp_path / "no-model", [source], tmp_path / "float.png")


def test_writing_a_big_stack_keeps_memory_bounded(tmp_path: Path) -> None:
    frame = np.ones((256, 256), np.float32)
    tracemalloc.start()
    with writer(tmp_path / "big.tif", (200, 256, 256), "TYX") as out:
        for _ in range(200):
            out.write(frame)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5_000_000, f"peak {peak} bytes while writing a 52 MB stack"
    assert open_image(tmp_path / "big.tif").shape == (200, 256, 256)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files through /proc (Linux)")
def test_opened_stacks_hold_no_file_open_until_read(tmp_path: Path) -> None:
    for index in range(40):
        np.save(tmp_path / f"{index}.npy", np.zeros((2, 4, 4), np.float32))
        tifffile.imwrite(tmp_path / f"{index}.tif", np.zeros((2, 4, 4), np.float32), photometric="minisblack")
    before = len(os.listdir("/proc/self/fd"))
    stacks = [open_image(p) for p in sorted(tmp_path.iterdir())]
    assert len(os.listdir("/proc/self/fd")) - before < 5, "validating many inputs must not keep them open"
    with stacks[0] as stack:
        assert stack.frame(1).shape == (4, 4)
