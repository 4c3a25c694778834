"""Device choice, precision, seeding and moving numpy batches onto the device."""

from __future__ import annotations

import contextlib
import logging
from typing import ContextManager

import numpy as np
import torch

from selfden.errors import SelfdenError
from selfden.training.config import DeviceName, TrainerConfig

logger = logging.getLogger(__name__)


def resolve_device(name: DeviceName) -> torch.device:
    """``"auto"`` → CUDA when torch sees a GPU, else CPU; ``"cuda"`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SelfdenError(
            f"device 'cuda' requested but this torch {torch.__version__} sees no CUDA GPU; "
            "use device 'auto' or 'cpu', or install a CUDA build of torch"
        )
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed torch's CPU and CUDA generators (numpy draws come from passed-in Generators)."""
    torch.manual_seed(seed)


def uses_bf16(device: torch.device, config: TrainerConfig, method_prefers_bf16: bool = False) -> bool:
    """bf16 autocast on CUDA when asked and supported; on CPU when ``bf16_on_cpu`` says so, or, left unset,
    when the method prefers it (``MethodConfig.cpu_bf16_pays``) and the CPU computes bf16 natively."""
    if device.type == "cuda":
        if config.bf16 and not torch.cuda.is_bf16_supported():
            logger.warning("this GPU does not support bf16; training in float32")
            return False
        return config.bf16
    if device.type != "cpu":
        return False
    if config.bf16_on_cpu is not None:
        return config.bf16_on_cpu
    return method_prefers_bf16 and cpu_has_native_bf16()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX tiles). Elsewhere oneDNN emulates
    bf16, where selfden measured no method, so float32 stays."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def autocast_context(device: torch.device, enabled: bool) -> ContextManager[object]:
    """``torch.autocast`` to bf16 when enabled, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def batch_to_device(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """A ``(B, 1, H, W)`` float32 array as a tensor on ``device``."""
    array = np.asarray(batch)
    if array.ndim != 4 or array.shape[1] != 1:
        raise ValueError(f"batch of shape {array.shape}: expected (B, 1, H, W)")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)
