"""Autoregressive noise model p(x | s_code): causal along the noise axis, blind across it.

Each pixel's distribution is a K-component Gaussian mixture conditioned on s_code at that
pixel and on the noisy pixels strictly before it along the noise axis (up to
``receptive_field`` of them). It can model row-correlated and signal-dependent noise but no
2-D structure, which is what pushes the signal into the latents (Salmon & Krull, WACV 2025).
Direction "y" rotates the inputs by 90 degrees so that columns become rows; "none" sees no
neighbours at all (pixel-independent noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfden.methods.cosdd.config import AR_BLOCKS, CosddArch

#: Smallest mixture-component standard deviation (normalised units): keeps the NLL finite.
SCALE_FLOOR = 1e-3
KERNEL = 5


def ar_dilations(receptive_field: int) -> tuple[int, ...]:
    """Dilations of the 7 blocks after the first, so the total receptive field is ``receptive_field``.

    The first block sees 4 pixels; a kernel-5 block of dilation d adds 4d; d = 0 is a 1x1 block.
    For 40: (1, 1, 1, 1, 1, 2, 2).
    """
    units = receptive_field // 4 - 1
    base, extra = divmod(units, AR_BLOCKS - 1)
    return tuple(base + (1 if i >= AR_BLOCKS - 1 - extra else 0) for i in range(AR_BLOCKS - 1))


class CausalConv(nn.Module):
    """Conv of kernel (1, k) along x with left padding only.

    ``exclusive=True`` also hides the current pixel: a kernel-(k-1) conv on the input shifted one
    pixel right, i.e. the reference's kernel-k conv with its current-pixel tap masked.
    """

    def __init__(self, c_in: int, c_out: int, dilation: int, exclusive: bool = False) -> None:
        super().__init__()
        taps = KERNEL - 1 if exclusive else KERNEL
        self.exclusive = exclusive
        self.left = (taps - 1) * dilation + (1 if exclusive else 0)
        self.conv = nn.Conv2d(c_in, c_out, (1, taps), dilation=(1, dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.left, 0))
        return self.conv(x[..., :-1] if self.exclusive else x)


@dataclass(frozen=True)
class MixtureParams:
    """Per-pixel Gaussian mixture, each (B, K, H, W): log weights, means, standard deviations."""

    log_weights: torch.Tensor
    means: torch.Tensor
    scales: torch.Tensor


def mixture_nll(params: MixtureParams, x: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of ``x`` (B, 1, H, W) per pixel, in nats, computed in float32."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        w, mu, s, x = (t.float() for t in (params.log_weights, params.means, params.scales, x))
        log_normal = -0.5 * ((x - mu) / s).square() - torch.log(s) - 0.5 * math.log(2 * math.pi)
        return -torch.logsumexp(w + log_normal, dim=1, keepdim=True)


class ArNoiseDecoder(nn.Module):
    """8 causal blocks: [causal conv of the previous features + 1x1 conv of s_code] -> ReLU -> 1x1 conv."""

    def __init__(self, arch: CosddArch) -> None:
        super().__init__()
        c = arch.features
        self.direction = arch.direction
        self.components = arch.components
        dilations = (0,) * (AR_BLOCKS - 1) if arch.direction == "none" else ar_dilations(arch.ar_receptive_field)
        # direction "none": the first block takes no pixel input at all.
        self.first = None if arch.direction == "none" else CausalConv(1, c, 1, exclusive=True)
        self.convs = nn.ModuleList(CausalConv(c, c, d) if d else nn.Conv2d(c, c, 1) for d in dilations)
        self.s_proj = nn.ModuleList(nn.Conv2d(arch.code_features, c, 1) for _ in range(AR_BLOCKS))
        self.outs = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(AR_BLOCKS))
        self.head = nn.Conv2d(c, 3 * arch.components, 1)

    @property
    def receptive_field(self) -> int:
        """Pixels strictly before the current one that influence its distribution."""
        return sum(m.left for m in [self.first, *self.convs] if isinstance(m, CausalConv))

    def forward(self, x: torch.Tensor, s_code: torch.Tensor) -> MixtureParams:
        """Mixture parameters of every pixel of ``x`` (B, 1, H, W) given ``s_code`` (B, F, H, W)."""
        if self.direction == "y":
            x, s_code = torch.rot90(x, 1, (2, 3)), torch.rot90(s_code, 1, (2, 3))
        raw = self._rows(x, s_code)
        if self.direction == "y":
            raw = torch.rot90(raw, -1, (2, 3))
        logits, means, scales = raw.chunk(3, dim=1)
        return MixtureParams(F.log_softmax(logits, dim=1), means, F.softplus(scales) + SCALE_FLOOR)

    def _rows(self, x: torch.Tensor, s_code: torch.Tensor) -> torch.Tensor:
        pre = self.s_proj[0](s_code) + (0 if self.first is None else self.first(x))
        h = self.outs[0](F.relu(pre))
        for conv, s_proj, out in zip(self.convs, self.s_proj[1:], self.outs[1:]):
            h = h + out(F.relu(conv(h) + s_proj(s_code)))
        # The head runs in float32 under autocast: bf16 means would be coarser than small noise scales.
        with torch.autocast(device_type=h.device.type, enabled=False):
            return self.head(F.relu(h.float()))
