"""Network architecture of a selfden 0.1.0 package: the source of selfden.methods.cosdd.blocks, selfden.methods.cosdd.direct_denoiser, selfden.export.reflect_border,
copied at export time. Needs only PyTorch."""
from __future__ import annotations

# ---- selfden.methods.cosdd.blocks --------------------------------------------
"""Building blocks shared by the ladder VAE and the direct denoiser."""


import torch
import torch.nn.functional as F
from torch import nn


class GatedResBlock(nn.Module):
    """2 x [BatchNorm -> Mish -> kxk conv (k = 3 unless given)], a tanh*sigmoid gate (1x1 conv to 2F), plus the skip."""

    def __init__(self, channels: int, kernel: int = 3) -> None:
        super().__init__()
        pad = kernel // 2
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels), nn.Mish(), nn.Conv2d(channels, channels, kernel, padding=pad),
            nn.BatchNorm2d(channels), nn.Mish(), nn.Conv2d(channels, channels, kernel, padding=pad),
        )
        self.gate = nn.Conv2d(channels, 2 * channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        if torch.onnx.is_in_onnx_export():
            # The same gate as two convolutions: onnxruntime fuses each with its activation and
            # needs no split, four passes over the tensor fewer (benchmarks/graph_speed.py).
            half, weight, bias = self.gate.out_channels // 2, self.gate.weight, self.gate.bias
            a = F.conv2d(h, weight[:half], bias[:half])
            b = F.conv2d(h, weight[half:], bias[half:])
        else:
            a, b = self.gate(h).chunk(2, dim=1)
        return x + torch.tanh(a) * torch.sigmoid(b)


class Upsample(nn.Module):
    """Bilinear x2 then a 1x1 conv (to ``out_channels``, unless given the same as ``channels``)."""

    def __init__(self, channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            # The same map with the conv first: both are linear and the interpolation weights sum
            # to one, so they commute, and at the low resolution the conv costs a quarter.
            return F.interpolate(self.conv(x), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))


def conv_of_concat(conv: nn.Conv2d, first: torch.Tensor, second: torch.Tensor, first_channels: int) -> torch.Tensor:
    """``conv(cat([first, second]))``. Exported, it is one convolution per part, summed: the same
    map, without copying the parts into one tensor first (``first_channels`` is a Python int, so
    the weight slices fold to constants)."""
    if not torch.onnx.is_in_onnx_export():
        return conv(torch.cat([first, second], dim=1))
    weight = conv.weight
    return F.conv2d(first, weight[:, :first_channels], None, conv.stride, conv.padding) + F.conv2d(
        second, weight[:, first_channels:], conv.bias, conv.stride, conv.padding
    )


def downsample(channels: int) -> nn.Conv2d:
    """3x3 stride-2 conv: halves height and width (inputs are multiples of the size step)."""
    return nn.Conv2d(channels, channels, 3, stride=2, padding=1)


def stem(features: int, blocks: int = 1) -> nn.Sequential:
    """5x5 conv from the one input channel, then ``blocks`` residual blocks."""
    return nn.Sequential(nn.Conv2d(1, features, 5, padding=2), *(GatedResBlock(features) for _ in range(blocks)))


class BottomUp(nn.Module):
    """Stem then one residual block per level, some levels downsampling first; returns every level's features."""

    def __init__(self, features: int, downsample_flags: list[bool], stem_blocks: int = 1) -> None:
        super().__init__()
        self.stem = stem(features, stem_blocks)
        self.levels = nn.ModuleList(
            nn.Sequential(*([downsample(features)] if down else []), GatedResBlock(features))
            for down in downsample_flags
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(x)
        out = []
        for level in self.levels:
            h = level(h)
            out.append(h)
        return out

# ---- selfden.methods.cosdd.direct_denoiser -----------------------------------
"""Direct denoiser: one deterministic pass to the MMSE estimate.

Salmon & Krull, "Direct Unsupervised Denoising", ICCVW 2023 (arXiv 2310.18116): a network
trained with MSE to map the noisy image to the signal decoder's output for one posterior
sample converges to the mean over samples, i.e. the MMSE estimate, without sampling.
Architecture: the ladder VAE's bottom-up path with a deterministic U-Net-like top-down path
(skip connections instead of latents).
"""


from collections.abc import Sequence

import torch
from torch import nn



class DirectDenoiser(nn.Module):
    """Noisy normalised (B, 1, H, W) -> estimate of the signal (B, 1, H, W)."""

    def __init__(self, features: int, downsample: Sequence[bool]) -> None:
        """``downsample[i]``: whether level ``i`` (bottom first) halves the resolution."""
        super().__init__()
        f, flags, levels = features, list(downsample), len(downsample)
        self.features = f
        self.bottom_up = BottomUp(f, flags)
        self.merges = nn.ModuleList(nn.Conv2d(f if i == levels - 1 else 2 * f, f, 1) for i in range(levels))
        self.blocks = nn.ModuleList(GatedResBlock(f) for _ in range(levels))
        self.ups = nn.ModuleList(Upsample(f) if down else nn.Identity() for down in flags)
        self.head = nn.Conv2d(f, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.bottom_up(x)
        h = skips[-1]
        for i in reversed(range(len(skips))):
            top = i == len(skips) - 1
            merged = self.merges[i](h) if top else conv_of_concat(self.merges[i], h, skips[i], self.features)
            h = self.ups[i](self.blocks[i](merged))
        return self.head(h)

# ---- selfden.export.reflect_border -------------------------------------------
"""The PyTorch side of "borders are part of the model": reflect-pad, run the network, crop.

Bundled as the last part of a package's ``architecture.py`` (it imports only torch), where
``ReflectBorder(network="CaeNet", network_kwargs={...}, pad_before=h, pad_after=a)`` builds the
network named by ``network`` from that file. It computes what the package's ONNX weights compute
(``border_graph.add_reflect_border``) and what ``selfden infer`` gives, borders included:
torch's ``reflect`` padding, like ONNX ``Pad(mode="reflect")`` and numpy's ``reflect``, mirrors
without repeating the edge pixel.
"""


from typing import Any

import torch
import torch.nn.functional as F


class ReflectBorder(torch.nn.Module):
    """``network`` on the input reflect-padded by ``pad_before``/``pad_after`` px (top/left,
    bottom/right), cropped back to the input's size. Output shape equals input shape."""

    def __init__(
        self,
        network: str | torch.nn.Module,
        network_kwargs: dict[str, Any] | None = None,
        pad_before: int = 0,
        pad_after: int = 0,
    ) -> None:
        super().__init__()
        # A name is looked up in the bundled architecture.py, which defines the network above.
        self.network = globals()[network](**(network_kwargs or {})) if isinstance(network, str) else network
        self.pad_before, self.pad_after = int(pad_before), int(pad_after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before, after = self.pad_before, self.pad_after
        y = self.network(F.pad(x, (before, after, before, after), mode="reflect"))
        return y[..., before : y.shape[-2] - after, before : y.shape[-1] - after]
