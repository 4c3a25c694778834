"""Scale: peak memory of `selfden infer` against stack length, and Dask throughput.

    python benchmarks/scale.py                                   # 1,000 / 4,000 / 16,000 frames of 512²
    python benchmarks/scale.py --frames 20,40 --size 128 --dask-frames 40 --results-dir /tmp/scale   # smoke test

(a) memory: for each stack length, a memory-mapped synthetic uint16 .npy stack is denoised
    by a fresh `selfden infer` child process into a float32 TIFF (BigTIFF past 4 GB); the
    child's peak resident memory (ru_maxrss from os.wait4) should not grow with the
    stack. The model is a hand-made 3x3 convolution: its speed is irrelevant here.
(b) throughput: frames/s of the same model in one process, and with 1 and 2 Dask workers
    (LocalCluster of worker processes; cluster start-up excluded).

Disk: the largest default run needs about 8.4 GB of input and 16.8 GB of output at once
(``--work-dir``, default a temporary folder; each length's files are deleted after it).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", default="1000,4000,16000", help="comma-separated stack lengths for (a)")
    parser.add_argument("--size", type=int, default=512, help="frame side in pixels")
    parser.add_argument("--dask-frames", type=int, default=400, help="stack length for (b)")
    parser.add_argument("--workers", default="1,2", help="comma-separated Dask worker counts for (b)")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the synthetic stacks go (default: a temp dir)")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR)
    parser.add_argument("--results-md", type=Path, default=None,
                        help="default: benchmarks/RESULTS.md, or RESULTS.md inside a --results-dir given")
    return parser.parse_args(argv)


# --- a tiny model package (no torch) -------------------------------------------------------------------


def write_conv_package(folder: Path) -> Path:
    """A bioimage.io-style folder with a 3x3 mean convolution (opset 17, IR 8), rdf.yaml by hand."""
    import onnx
    import yaml
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    weight = numpy_helper.from_array(np.full((1, 1, 3, 3), 1 / 9, np.float32), "w")
    conv = helper.make_node("Conv", ["input", "w"], ["output"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    dims: list[Any] = ["b", 1, "y", "x"]
    graph = helper.make_graph([conv], "mean3", [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, dims)], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "denoiser.onnx"))
    space = [{"type": "space", "id": a, "size": {"min": 16, "step": 8}} for a in "yx"]
    out_space = [{"type": "space", "id": a, "size": {"tensor_id": "input", "axis_id": a}, "halo": 4} for a in "yx"]
    channel = {"type": "channel", "channel_names": ["c0"]}
    rdf = {
        "format_version": "0.5.4", "type": "model", "name": "scale benchmark mean3", "description": "3x3 mean",
        "inputs": [{"id": "input", "axes": [{"type": "batch"}, channel, *space], "data": {"type": "float32"},
                    "preprocessing": [{"id": "scale_linear", "kwargs": {"gain": 0.001, "offset": -0.1}}]}],
        "outputs": [{"id": "output", "axes": [{"type": "batch"}, channel, *out_space],
                     "postprocessing": [{"id": "scale_linear", "kwargs": {"gain": 1000.0, "offset": 100.0}}]}],
        "weights": {"onnx": {"source": "denoiser.onnx", "opset_version": 17}},
        "config": {"selfden": {"method": "benchmark", "halo": 4, "size_step": 8, "min_size": 16, "tile_size": 256}},
    }
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder


def synthetic_stack(path: Path, frames: int, size: int) -> Path:
    """A uint16 .npy written frame by frame with plain writes (which, unlike writes through a
    memory map, leave this process's resident memory small: see ``run_infer_child``)."""
    base = np.random.default_rng(0).poisson(400, (size, size)).astype(np.uint16)
    header = {"descr": np.lib.format.dtype_to_descr(base.dtype), "fortran_order": False, "shape": (frames, size, size)}
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        for index in range(frames):
            handle.write((base + np.uint16(index % 251)).tobytes())
    return path


def own_peak_rss_mib() -> float:
    scale = 1024 if sys.platform != "darwin" else 1024 * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / scale / 1024


# --- (a) memory ------------------------------------------------------------------------------------


def run_infer_child(model: Path, source: Path, target: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one fresh `selfden infer` process.

    Linux carries a process's peak RSS across exec, and the child starts as a copy of this
    process: its ru_maxrss is never below this process's peak at the fork, so this process
    stays small (no memory maps, no inference) until every child has run.
    """
    env = {**os.environ, "COLUMNS": "120"}
    command = [sys.executable, "-m", "selfden.cli", "infer", str(model), str(source), "-o", str(target),
               "--device", "cpu"]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    errors = child.stderr.read().decode() if child.stderr else ""
    if child.returncode != 0:
        raise RuntimeError(f"selfden infer failed ({child.returncode}): {errors[-500:]}")
    scale = 1024 if sys.platform != "darwin" else 1024 * 1024  # ru_maxrss: KiB on Linux, bytes on macOS
    return seconds, usage.ru_maxrss * 1024 / scale / 1024


def memory_table(model: Path, work: Path, lengths: list[int], size: int) -> dict[str, Any]:
    rows = []
    launcher = own_peak_rss_mib()
    for frames in lengths:
        source, target = synthetic_stack(work / f"in_{frames}.npy", frames, size), work / f"out_{frames}.tif"
        seconds, peak = run_infer_child(model, source, target)
        rows.append([frames, source.stat().st_size / 1e9, target.stat().st_size / 1e9, peak, seconds, frames / seconds])
        print(f"(a) {frames} frames: peak RSS {peak:.0f} MiB, {seconds:.1f} s")
        source.unlink()
        target.unlink()
    frame_mib = size * size * 4 / 2**20
    return {
        "title": f"(a) peak memory of `selfden infer` on memory-mapped uint16 stacks of {size}²",
        "note": (f"A fresh child process per stack; peak RSS is its ru_maxrss (imports of numpy, onnxruntime and "
                 f"tifffile included; the launching process peaked at {launcher:.0f} MiB before, a floor for the "
                 f"child's number). One float32 output frame is {frame_mib:.1f} MiB. Bounded memory means the peak "
                 "does not grow with the number of frames. frames/s includes start-up."),
        "columns": ["frames", "input GB", "output GB", "peak RSS MiB", "wall s", "frames/s"],
        "rows": rows,
    }


# --- (b) Dask throughput ---------------------------------------------------------------------------


def timed(call: Any) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def dask_table(model: Path, work: Path, frames: int, size: int, workers: list[int]) -> dict[str, Any]:
    from selfden.inference.dask_cluster import dask_frames
    from selfden.inference.running import denoise_files

    source = synthetic_stack(work / "dask_in.npy", frames, size)
    rows = []
    seconds = timed(lambda: denoise_files(model, [source], work / "single.npy", device="cpu"))
    rows.append(["one process (no Dask)", frames / seconds, 1.0])
    reference = np.load(work / "single.npy", mmap_mode="r")
    for count in workers:
        with dask_frames("local", "cpu", n_workers=count, processes=True) as mapper:
            target = work / f"dask_{count}.npy"
            seconds = timed(lambda: denoise_files(model, [source], target, device="cpu", mapper=mapper))
        same = bool(np.array_equal(np.load(target, mmap_mode="r"), reference))
        rows.append([f"Dask, {count} worker{'s' if count > 1 else ''}", frames / seconds, frames / seconds / rows[0][1]])
        print(f"(b) {rows[-1][0]}: {rows[-1][1]:.1f} frames/s (output identical: {same})")
        if not same:
            raise RuntimeError(f"Dask with {count} workers gave a different output than one process")
        target.unlink()
    return {
        "title": f"(b) throughput: {frames} frames of {size}², one process vs Dask LocalCluster",
        "note": (f"Worker processes with one thread each and onnxruntime threads = cores / workers "
                 f"({common.cpu_count()} cores here); cluster start-up excluded; outputs checked identical to "
                 "the one-process output. The 3x3 model is so cheap that this measures Dask's per-frame overhead "
                 "(read, send, receive, write); a real network gains more from more workers."),
        "columns": ["how", "frames/s", "vs one process"],
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import onnxruntime  # noqa: F401  (named in the machine description)

    lengths = [int(n) for n in args.frames.split(",") if n.strip()]
    workers = [int(n) for n in args.workers.split(",") if n.strip()]
    default_md = common.RESULTS_MD if args.results_dir == common.RESULTS_DIR else args.results_dir / "RESULTS.md"
    md = args.results_md or default_md
    with tempfile.TemporaryDirectory(prefix="selfden-scale-", dir=args.work_dir) as tmp:
        work = Path(tmp)
        model = write_conv_package(work / "model")
        tables = [memory_table(model, work, lengths, args.size),
                  dask_table(model, work, args.dask_frames, args.size, workers)]
        shutil.rmtree(work / "model", ignore_errors=True)
    record = {
        "kind": "speed",
        "title": "Scale: streaming inference memory and Dask throughput",
        "command": common.command_line("scale.py"),
        "date": common.today(),
        "machine": common.machine_description(),
        "tables": tables,
    }
    common.save_result(record, "scale", args.results_dir)
    common.render_results_md(args.results_dir, md)
    print(f"wrote {args.results_dir / 'scale.json'} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
