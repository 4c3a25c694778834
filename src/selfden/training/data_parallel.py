"""Data-parallel training: process groups, spawning, and the few collectives the trainer needs.

``selfden train --devices N`` runs N processes with one copy of the method each. Every rank
draws ``batch_size / N`` crops from its own random stream; :meth:`Method.optimise` averages the
gradients over ranks before each optimiser step, so the update equals that of the whole batch
on one device (the classic synchronous data parallelism of PyTorch DDP, Li et al., VLDB 2020,
https://arxiv.org/abs/2006.15704). Rank 0 alone validates, logs, checkpoints and exports.

Started by torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set), a process joins that group;
otherwise :func:`run_ranks` makes the calling process rank 0 and spawns the others, so the
progress bar, Ctrl-C and the return value stay in the caller. NCCL on GPUs (one per rank),
gloo on CPUs.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfden.errors import SelfdenError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a collective may wait for a peer before the group gives up (a crashed rank).
_TIMEOUT = timedelta(minutes=10)
#: How long rank 0 waits for spawned ranks to exit after training before terminating them
#: (they write nothing, so ending one is safe; after a Ctrl-C they wait in a collective).
_JOIN_SECONDS = 5.0


@dataclass(frozen=True)
class RankInfo:
    """This process's place in the data-parallel group (rank 0 of 1 without a group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that validates, logs, checkpoints and exports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def current() -> RankInfo:
    """The initialised group's rank and size, else a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return RankInfo()
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return RankInfo(dist.get_rank(), dist.get_world_size(), local)


def torchrun_world() -> RankInfo | None:
    """The rank torchrun (or any launcher setting ``RANK``/``WORLD_SIZE``) gave this process."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return RankInfo(rank, world, int(os.environ.get("LOCAL_RANK", rank)))


def world_size_for(devices: int) -> int:
    """Processes a run will use: torchrun's world size when launched by it, else ``devices``."""
    launched = torchrun_world()
    if launched is None:
        return devices
    if devices not in (1, launched.world_size):
        raise SelfdenError(
            f"--devices {devices} but torchrun started {launched.world_size} processes; "
            "drop --devices under torchrun (its --nproc-per-node sets the count)"
        )
    return launched.world_size


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """Crops each rank draws per step; the global batch must split evenly."""
    if batch_size % world_size:
        low = batch_size // world_size * world_size or world_size
        raise SelfdenError(
            f"batch size {batch_size} does not split over {world_size} devices; "
            f"choose a multiple of {world_size} (e.g. --batch-size {low} or {low + world_size})"
        )
    return batch_size // world_size


def rank_device(device: torch.device) -> torch.device:
    """One GPU per rank (``cuda:LOCAL_RANK``); CPU ranks share the CPU."""
    info = current()
    if device.type != "cuda" or not info.distributed:
        return device
    cuda = torch.device("cuda", info.local_rank)
    torch.cuda.set_device(cuda)
    return cuda


# --- collectives used by the trainer ------------------------------------------------------------
def broadcast(value: T) -> T:
    """Rank 0's ``value`` on every rank (any picklable object); identity without a group."""
    if not current().distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_metrics(metrics: dict[str, float], device: torch.device) -> dict[str, float]:
    """Each metric averaged over ranks (every rank must report the same keys)."""
    info = current()
    if not info.distributed:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return {k: float(v) / info.world_size for k, v in zip(keys, values.tolist())}


def barrier() -> None:
    """Wait for every rank; nothing without a group."""
    if current().distributed:
        dist.barrier()


# --- starting and stopping ----------------------------------------------------------------------
def run_ranks(world_size: int, backend: str, fn: Callable[..., T], *args: Any, **local: Any) -> T:
    """``fn(*args, **local)`` on every rank of a ``world_size`` group; returns this process's result.

    Under torchrun this process joins the launcher's group; with ``world_size`` 1 no group is made.
    Otherwise ranks 1.. are spawned and run ``fn(*args)`` (``fn`` and ``args`` must pickle; ``local``,
    e.g. a progress display, stays here) and this process is rank 0.
    """
    launched = torchrun_world()
    if launched is not None:
        _join(launched.rank, launched.world_size, backend)
        try:
            return _finished(fn(*args, **local))
        finally:
            _leave()
    if world_size == 1:
        return fn(*args, **local)
    return _spawn_and_run(world_size, backend, fn, args, local)


def _spawn_and_run(
    world_size: int, backend: str, fn: Callable[..., T], args: tuple[Any, ...], local: dict[str, Any]
) -> T:
    _check_devices(world_size, backend)
    port = _free_port()
    context = mp.get_context("spawn")
    messages = context.SimpleQueue()
    children = [
        context.Process(target=_child, args=(rank, world_size, backend, port, fn, args, messages), daemon=True)
        for rank in range(1, world_size)
    ]
    for child in children:
        child.start()
    try:
        _wait_until_started(children, messages)
        _join(0, world_size, backend, port)
        return _finished(fn(*args, **local))
    except Exception as exc:
        failed = _first_error(messages)
        if failed is not None:  # a peer's own error explains the broken collective here
            raise SelfdenError(failed) from exc
        raise
    finally:
        _leave()
        _reap(children)


def _child(
    rank: int, world_size: int, backend: str, port: int, fn: Callable[..., Any], args: tuple[Any, ...], messages: Any
) -> None:
    # Ctrl-C belongs to rank 0: it saves the checkpoint and then ends this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    messages.put((rank, "started", ""))
    try:
        _join(rank, world_size, backend, port)
        _finished(fn(*args))
    except Exception as exc:
        messages.put((rank, "error", " ".join(str(exc).split()) or type(exc).__name__))
        raise SystemExit(1) from None
    finally:
        _leave()


def _wait_until_started(children: list[Any], messages: Any) -> None:
    """Return once every spawned rank runs; raise if one died first (rank 0 would wait for it in vain)."""
    started: set[int] = set()
    while len(started) < len(children):
        while not messages.empty():
            rank, kind, text = messages.get()
            if kind == "error":
                raise SelfdenError(f"training rank {rank} failed: {text}")
            started.add(rank)
        dead = [c for rank, c in enumerate(children, 1) if c.exitcode is not None and rank not in started]
        if dead and messages.empty():
            raise SelfdenError(
                f"a spawned training process exited with code {dead[0].exitcode} before starting; "
                "run with --devices 1 to see the error"
            )
        time.sleep(0.05)


def _first_error(messages: Any) -> str | None:
    while not messages.empty():
        rank, kind, text = messages.get()
        if kind == "error":
            return f"training rank {rank} failed: {text}"
    return None


def _join(rank: int, world_size: int, backend: str, port: int | None = None) -> None:
    # Spawned ranks meet over TCP on localhost; the environment is left alone so that a later
    # run in this process is not mistaken for one started by torchrun.
    init = f"tcp://127.0.0.1:{port}" if port is not None else "env://"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)) if port is None else rank)
    dist.init_process_group(backend, init_method=init, rank=rank, world_size=world_size, timeout=_TIMEOUT)
    logger.info("rank %d of %d joined the %s group", rank, world_size, backend)


def _finished(result: T) -> T:
    """``result``, once every rank has finished too, so that no rank tears the group down while a
    peer still uses it (that can abort the peer's gloo threads: SIGABRT at exit). The work is done
    either way: a peer that does not arrive (gone, or rank 0 exporting past the group's timeout) is
    logged, never raised."""
    try:
        barrier()
    except RuntimeError as error:  # torch's DistBackendError and gloo timeouts are RuntimeErrors
        logger.warning("ranks did not meet before leaving the group: %s", error)
    return result


def _leave() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _reap(children: list[Any]) -> None:
    for child in children:
        child.join(timeout=_JOIN_SECONDS)
        if child.is_alive():  # e.g. waiting in a collective after rank 0 was interrupted
            child.terminate()
            child.join()


def _check_devices(world_size: int, backend: str) -> None:
    if backend == "nccl" and world_size > torch.cuda.device_count():
        raise SelfdenError(
            f"--devices {world_size} but this machine has {torch.cuda.device_count()} CUDA GPUs; "
            "use at most one process per GPU (or --device cpu)"
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"
