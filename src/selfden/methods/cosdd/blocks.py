"""Building blocks shared by the ladder VAE and the direct denoiser."""

from __future__ import annotations

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
