"""The contract every denoising method fulfils.

The trainer, the exporter and the CLI talk to methods only through this class and the
registry in ``selfden.methods``; nothing outside a method's module knows its networks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict

from selfden.data import StackLike
from selfden.geometry.orientations import DIHEDRAL
from selfden.normalisation import Normalisation, NormalisationKind

__all__ = [
    "Cite", "DeviceDefaults", "Method", "MethodConfig", "Normalisation", "NormalisationKind", "Note",
    "average_gradients", "reseed_for_rank",
]


class MethodConfig(BaseModel):
    """Base of every method's config: unknown keys are an error naming the key."""

    model_config = ConfigDict(extra="forbid")

    def device_defaults(self, device_type: str) -> DeviceDefaults:
        """What this config means on ``device_type`` ("cpu" or "cuda"): the one place device-dependent
        defaults live (e.g. COSDD's size "auto", smaller crops on a CPU). A planned run applies it
        once and saves the result; networks are built from that result. The base has none."""
        return DeviceDefaults(self)

    def cpu_bf16_pays(self) -> bool:
        """Whether bf16 autocast pays for this config on a CPU that computes bf16 natively: faster steps and
        better quality per minute, measured per method. The trainer then turns it on unless ``bf16_on_cpu`` is set."""
        return False

    def training_orientations(self) -> tuple[str, ...]:
        """Orientations (names from ``selfden.geometry.orientations``) that leave the modelled noise's
        statistics unchanged: training crops are drawn in them at random, and ``--tta`` may
        average over them. All eight flips and quarter turns unless a method says otherwise."""
        return DIHEDRAL

    def size_step(self) -> int:
        """Training crops' side must be a multiple of this (2**downsamplings of the networks); 1 by default.

        Called on the device-resolved config (``device_defaults``), before any network is built."""
        return 1

    def patch_size_problem(self, patch_size: int, batch_size: int) -> str | None:
        """Why crops of ``patch_size`` in batches of ``batch_size`` cannot train this config, with a
        fix (None when they can): checked before a run folder is made. Methods add their own rules."""
        step = self.size_step()
        if patch_size >= step and patch_size % step == 0:
            return None
        low = max(step, patch_size // step * step)
        return (
            f"patch size {patch_size} must be a multiple of {step} (the network halves it "
            f"{step.bit_length() - 1} times); try {low} or {low + step}"
        )


@dataclass(frozen=True)
class DeviceDefaults:
    """A method config with its device-dependent fields made explicit, and the crops to train on
    when the user sets none (None: the run's own defaults)."""

    config: MethodConfig
    patch_size: int | None = None
    batch_size: int | None = None


@dataclass(frozen=True)
class TorchArchitecture:
    """The exported denoiser as ``callable(**kwargs)``, defined by the source of ``modules``.

    ``modules`` import nothing from selfden except each other, earlier ones first (see
    ``selfden.export.architecture``, which bundles them into the package's architecture.py).
    """

    modules: tuple[ModuleType, ...]
    callable: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Note:
    """What a method tells the user before a new run trains: a choice it made from the data
    ("note", printed plain) or a doubt about the data or the options ("warning")."""

    level: Literal["note", "warning"]
    text: str


@dataclass(frozen=True)
class Cite:
    """A paper to cite in docs and packages."""

    text: str
    doi: str | None = None
    url: str | None = None


class Method(ABC):
    """One denoising method: its networks, optimisers, losses and exported graphs.

    Batches are float32 tensors ``(B, 1, H, W)`` already normalised with
    ``self.normalisation`` and already on ``self.device``.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]]
    #: "range": map robust percentiles (low, high) to (0, 1); "standardise": mean 0, std 1.
    normalisation_kind: ClassVar[NormalisationKind] = "range"
    #: Papers to cite in docs and packages.
    citations: ClassVar[tuple[Cite, ...]] = ()
    #: One paragraph for package READMEs: what the method models and removes.
    summary: ClassVar[str] = ""
    #: What the method cannot do, for package READMEs (one sentence each).
    limitations: ClassVar[tuple[str, ...]] = ()
    #: Export ``best.pt`` (lowest ``val_loss``) rather than ``last.pt``. False for methods whose
    #: ``val_loss`` does not track quality (e.g. adversarial ones); the trainer still writes both.
    export_best_checkpoint: ClassVar[bool] = True

    @classmethod
    def prepare(cls, config: MethodConfig, stacks: Sequence[StackLike]) -> tuple[MethodConfig, tuple[Note, ...]]:
        """Before a new run trains on ``stacks``: ``config`` with the choices the data decide (e.g.
        COSDD's noise direction) and notes for the user (e.g. data that break the method's
        assumptions). Nothing to decide or say by default."""
        return config, ()

    @classmethod
    def start_note(cls, config: MethodConfig) -> Note | None:
        """What a new run of ``config`` starts from, when the user gave no ``--init-from``: said
        only when it is not random weights, or when a prior the user asked for does not fit."""
        return None

    def __init__(self, config: MethodConfig, normalisation: Normalisation, device: torch.device) -> None:
        self.config = config
        self.normalisation = normalisation
        self.device = device

    # --- training -------------------------------------------------------------------------
    @abstractmethod
    def training_step(self, batch: torch.Tensor) -> dict[str, float]:
        """One optimisation step (the method does its own backward passes and optimiser steps).

        Returns scalar metrics; ``"loss"`` is required.
        """

    @abstractmethod
    def validation_step(self, batch: torch.Tensor) -> dict[str, float]:
        """Metrics on a validation batch without updating anything; ``"val_loss"`` is required.

        Lower ``val_loss`` is better: the trainer keeps ``best.pt`` by it.
        """

    def on_validation_end(self, metrics: dict[str, float]) -> None:
        """Called with the averaged validation metrics (e.g. for plateau LR schedulers)."""

    def on_budget_progress(self, fraction: float) -> None:
        """Called before every training step with the share of the budget used, 0 to 1 (whichever of
        steps or minutes ends first), the same on every rank: for schedules that anneal to the end."""

    def optimise(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, *, skip_non_finite: bool = False) -> bool:
        """One update of ``optimizer``'s parameters: zero the gradients, backpropagate ``loss``,
        average the gradients over data-parallel ranks, step. Every method steps through here, so
        ``--devices N`` trains any method with the gradient of the whole batch.

        ``skip_non_finite``: a NaN/Inf loss on any rank skips the update on every rank (returns False).
        """
        optimizer.zero_grad(set_to_none=True)
        if skip_non_finite and not _finite_on_all_ranks(loss):
            return False
        loss.backward()
        average_gradients([p for group in optimizer.param_groups for p in group["params"]])
        optimizer.step()
        return True

    def decorrelate_streams(self, rank: int) -> None:
        """Data-parallel rank ``rank`` > 0: reseed the method's private random streams (masks,
        posterior noise, simulations) so ranks do not draw the same numbers. Rank 0 keeps the
        single-process streams. torch's global generator is seeded per rank by the trainer."""

    @abstractmethod
    def denoise(self, batch: torch.Tensor) -> torch.Tensor:
        """Denoised estimate of a normalised batch (eval mode, no grad): for previews and tests."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: networks, optimisers, schedulers (tensors and plain containers)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    @abstractmethod
    def warm_start(self, state: dict[str, Any]) -> None:
        """Take the network weights of another run's ``state_dict()`` (``selfden train --init-from``);
        optimisers, schedules and counters stay this run's own: fine-tuning, not resuming."""

    def prior_weights(self) -> dict[str, Any] | None:
        """Weights a new run starts from when the user gave no ``--init-from``, as ``warm_start``
        takes them; None (the default): random weights."""
        return None

    def parameter_count(self) -> int:
        """Trainable parameters of the networks that are exported."""
        return sum(p.numel() for g in self.export_graphs().values() for p in g.parameters())

    # --- inference contract ----------------------------------------------------------------
    @abstractmethod
    def export_graphs(self) -> dict[str, torch.nn.Module]:
        """Inference networks in eval mode, on normalised ``(B, 1, H, W)`` float32 input.

        The main deterministic graph is called ``"denoiser"``; COSDD adds ``"sampler"``.
        """

    @property
    @abstractmethod
    def size_step(self) -> int:
        """Input height and width must be multiples of this (2**downsamplings)."""

    @property
    @abstractmethod
    def halo(self) -> int:
        """Pixels of context each side that a tile needs so its centre matches the whole image."""

    @property
    def min_size(self) -> int:
        """Smallest input height/width the networks accept."""
        return self.size_step

    def package_config(self) -> dict[str, Any]:
        """Extra keys for ``config.selfden`` in the exported package (e.g. COSDD's sample count)."""
        return {}

    def torch_architecture(self) -> TorchArchitecture | None:
        """How a package rebuilds the ``"denoiser"`` graph from torch-only source; exporting
        needs it (None: this method cannot be exported)."""
        return None

    def diagnostic_figures(self, val_batches: Sequence[torch.Tensor], out_dir: Path) -> list[Path]:
        """Method-specific figures written beside the training report (e.g. a learned noise model).

        Called by the trainer after training with its validation batches (normalised tensors).
        """
        return []

    def outcome_notes(self, val_batches: Sequence[torch.Tensor]) -> tuple[Note, ...]:
        """What the trained model achieves, judged without a clean image (e.g. against a simple filter),
        for the user to read after training; a "warning" when it is likely no better than that filter.

        Called by the trainer after training with its validation batches (normalised tensors).
        """
        return ()


def reseed_for_rank(generator: torch.Generator, rank: int) -> None:
    """Reseed ``generator`` from its own next draw and ``rank``: distinct, reproducible streams per rank."""
    draw = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    generator.manual_seed((draw + 0x9E3779B97F4A7C15 * rank) % 2**64)


def _group_size() -> int:
    distributed = torch.distributed
    return distributed.get_world_size() if distributed.is_available() and distributed.is_initialized() else 1


def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """Replace each gradient by its mean over the data-parallel ranks (no-op on one process).

    One all-reduce of a flat buffer per device and dtype. A parameter without a gradient on some
    ranks counts as zero there; one without a gradient on every rank keeps ``grad = None``, so
    optimisers skip it as they would on one process.
    """
    world = _group_size()
    if world == 1 or not params:
        return
    buckets: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for param in params:
        buckets.setdefault((param.device, param.dtype), []).append(param)
    for bucket in buckets.values():
        _average_bucket(bucket, world)


def _average_bucket(params: list[torch.Tensor], world: int) -> None:
    present = torch.tensor([p.grad is not None for p in params], dtype=params[0].dtype, device=params[0].device)
    grads = [p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1) for p in params]
    flat = torch.cat([*grads, present])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for param, seen in zip(params, flat[-len(params):].tolist()):
        size = param.numel()
        if seen > 0:  # copied into the gradient's own layout (channels_last stays channels_last)
            mean = flat[offset : offset + size].view(param.shape)
            if param.grad is None:
                param.grad = torch.empty_like(param)
            param.grad.copy_(mean)
        offset += size


def _finite_on_all_ranks(loss: torch.Tensor) -> bool:
    finite = bool(torch.isfinite(loss.detach()).all())
    if _group_size() == 1:
        return finite
    flag = torch.tensor([float(finite)], device=loss.device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item() > 0)
