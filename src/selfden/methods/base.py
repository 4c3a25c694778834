"""The contract every denoising method fulfils.

The trainer, the exporter and the CLI talk to methods only through this class and the
registry in ``selfden.methods``; nothing outside a method's module knows its networks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from selfden.normalisation import Normalisation, NormalisationKind

__all__ = ["Cite", "Method", "MethodConfig", "Normalisation", "NormalisationKind"]


class MethodConfig(BaseModel):
    """Base of every method's config: unknown keys are an error naming the key."""

    model_config = ConfigDict(extra="forbid")


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
    #: Whether flips and 90-degree rotations preserve the noise statistics this method models.
    allows_augmentation: ClassVar[bool] = True
    #: Papers to cite in docs and packages.
    citations: ClassVar[tuple[Cite, ...]] = ()
    #: One paragraph for package READMEs: what the method models and removes.
    summary: ClassVar[str] = ""
    #: What the method cannot do, for package READMEs (one sentence each).
    limitations: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def for_device(cls, config: MethodConfig, device_type: str) -> MethodConfig:
        """The config with device-dependent defaults made explicit ("cpu" or "cuda"); saved with the run."""
        return config

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

    @abstractmethod
    def denoise(self, batch: torch.Tensor) -> torch.Tensor:
        """Denoised estimate of a normalised batch (eval mode, no grad): for previews and tests."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: networks, optimisers, schedulers (tensors and plain containers)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

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

    def diagnostic_figures(self, val_batches: Sequence[torch.Tensor], out_dir: Path) -> list[Path]:
        """Method-specific figures written beside the training report (e.g. a learned noise model).

        Called by the trainer after training with its validation batches (normalised tensors).
        """
        return []
