"""Frames as Dask tasks: a LocalCluster on this machine, or an existing dask.distributed cluster.

The driver reads each frame, sends it to a worker and writes the results back in order
through the same resumable writer as the single-process path, so outputs are identical
and ``--resume`` works the same way. The model files travel once per run to every worker
(scattered, so workers need no shared file system); each worker loads one onnxruntime
session per model and reuses it for all its frames. At most ``window`` frames are in
flight, which bounds memory on the driver and on the workers. ``dask`` is imported here
only: selfden works without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selfden.errors import SelfdenError
from selfden.inference.loading import load_predictor
from selfden.inference.predictors import Prediction, Predictor
from selfden.inference.running import model_files
from selfden.io.stack import ImageStack
from selfden.io.resumable_writer import files_digest
from selfden.package.runtime import Device, _cpu_count

log = logging.getLogger(__name__)

LOCAL = "local"


@dataclass(frozen=True)
class ModelPayload:
    """A model's files and the options to load it with, as sent to the workers."""

    digest: str
    files: dict[str, bytes]  # path relative to the rdf's folder -> contents
    rdf_name: str
    device: Device
    tile_size: int | None  # None: planned per image size, as on the driver
    tile_batch: int
    samples: int | str | None  # a count, "auto", or None for the direct denoiser
    threads: int | None
    tta: bool = False
    std: bool = False

    @classmethod
    def from_predictor(cls, predictor: Predictor, device: Device, threads: int | None) -> ModelPayload:
        root = predictor.spec.rdf_path.parent
        paths = model_files(predictor)
        files = {str(p.relative_to(root)): p.read_bytes() for p in paths}
        return cls(files_digest(paths), files, predictor.spec.rdf_path.name, device,
                   None if predictor.auto_tiles else predictor.tile_size, predictor.tile_batch, predictor.n_samples,
                   threads, predictor.tta, predictor.with_std)

    @property
    def key(self) -> tuple[Any, ...]:
        return self.digest, self.device, self.tile_size, self.tile_batch, self.samples, self.threads, self.tta, self.std


# --- on the workers --------------------------------------------------------------------------------

_PREDICTORS: dict[tuple[Any, ...], tuple[Predictor, tempfile.TemporaryDirectory[str]]] = {}
_LOCK = threading.Lock()


def worker_predictor(payload: ModelPayload) -> Predictor:
    """This process's Predictor for ``payload``, loaded on first use and then reused."""
    with _LOCK:
        if payload.key not in _PREDICTORS:
            folder = tempfile.TemporaryDirectory(prefix="selfden-dask-model-")
            for name, data in payload.files.items():
                path = Path(folder.name) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            predictor = load_predictor(Path(folder.name) / payload.rdf_name, payload.device, payload.tile_size,
                                       payload.tile_batch, payload.samples, payload.std, payload.threads, payload.tta)
            _PREDICTORS[payload.key] = (predictor, folder)
            log.info("worker %d loaded model %s on %s", os.getpid(), payload.digest[:12], predictor.provider)
        return _PREDICTORS[payload.key][0]


def denoise_frame(payload: ModelPayload, frame: np.ndarray) -> Prediction:
    """One task: the prediction of a raw 2-D frame."""
    return worker_predictor(payload).predict(frame)


# --- on the driver ---------------------------------------------------------------------------------


class DaskFrames:
    """A FrameMapper (see ``running.denoise_files``) that runs frames on a Dask cluster."""

    def __init__(self, client: Any, device: Device = "auto", threads: int | None = None, window: int | None = None):
        self.client = client
        self.device = device
        self.threads = threads
        workers = client.scheduler_info().get("workers", {})
        slots = sum(int(w.get("nthreads", 1)) for w in workers.values()) or 1
        self.window = window or max(4, 2 * slots)
        self._payloads: dict[int, Any] = {}

    def _payload(self, predictor: Predictor) -> Any:
        """The payload scattered to every worker once per predictor (a future, on the driver)."""
        if id(predictor) not in self._payloads:
            payload = ModelPayload.from_predictor(predictor, self.device, self.threads)
            self._payloads[id(predictor)] = self.client.scatter(payload, broadcast=True)
        return self._payloads[id(predictor)]

    def __call__(self, predictor: Predictor, stack: ImageStack, start: int) -> Iterator[Prediction]:
        payload = self._payload(predictor)
        pending: deque[Any] = deque()
        following = start
        try:
            while following < len(stack) or pending:
                while following < len(stack) and len(pending) < self.window:
                    frame = np.array(stack.frame(following))  # a copy: the map's pages are released next
                    stack.release_pages()
                    pending.append(self.client.submit(denoise_frame, payload, frame, pure=False))
                    following += 1
                yield pending.popleft().result()
        finally:
            if pending:
                self.client.cancel(list(pending))


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as error:
        raise SelfdenError("--dask needs dask.distributed; install it with pip install 'selfden[scale]'") from error
    return distributed


@contextlib.contextmanager
def dask_frames(
    address: str = LOCAL,
    device: Device = "auto",
    n_workers: int | None = None,
    processes: bool = True,
) -> Iterator[DaskFrames]:
    """A DaskFrames on a new LocalCluster (``address`` "local": one single-threaded worker
    per core, or ``n_workers``) or on the scheduler at ``address`` (e.g. tcp://host:8786)."""
    distributed = _import_distributed()
    quiet = max(logging.getLogger().getEffectiveLevel(), logging.WARNING)
    logging.getLogger("distributed").setLevel(quiet)  # its INFO lines would swamp the progress bar
    with contextlib.ExitStack() as scope:
        if address == LOCAL:
            workers = n_workers or _cpu_count()
            cluster = scope.enter_context(distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=None,
                silence_logs=quiet))
            client = scope.enter_context(distributed.Client(cluster))
            threads: int | None = max(1, _cpu_count() // workers)
        else:
            client = scope.enter_context(_connect(distributed, address))
            threads = None  # a worker of an existing cluster uses its machine's cores
        log.info("Dask cluster %s: %d workers", client.scheduler.address, len(client.scheduler_info()["workers"]))
        yield DaskFrames(client, device, threads)


def _connect(distributed: Any, address: str) -> Any:
    try:
        return distributed.Client(address, timeout="10s")
    except (OSError, TimeoutError) as error:
        raise SelfdenError(
            f"--scheduler {address}: cannot reach a Dask scheduler there ({' '.join(str(error).split())[:120]}); "
            "start one with `dask scheduler` and workers with `dask worker ADDRESS`, or use --dask for a local cluster"
        ) from error
