"""Network architecture of a selfden 0.1.0 package: the source of selfden.methods.cae_networks,
copied at export time. Needs only PyTorch."""
from __future__ import annotations

# ---- selfden.methods.cae_networks --------------------------------------------
"""The compressive autoencoder's network (torch only: packages ship this file as their architecture).

See ``selfden.methods.cae`` for the method, its measurements and its citations.
"""


from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

FULL_RES_KERNELS = (1, 3, 5, 7)
LOW_RES_KERNELS = (3, 5)
HEAD_KERNELS = (9, 7, 5, 3)  # full, 1/2, 1/4, 1/8 resolution
NormKind = Literal["layer", "batch", "none"]


def _split_channels(total: int, parts: int) -> list[int]:
    """Near-equal positive split of ``total`` channels into at most ``parts`` groups."""
    parts = min(parts, total)
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def make_norm(kind: NormKind, channels: int) -> nn.Module:
    """Normalisation layer; "layer" is GroupNorm(1, C), i.e. over (C, H, W) per sample, which exports cleanly."""
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class MultiKernelConv(nn.Module):
    """Parallel convolutions of several kernel sizes, concatenated, then normalisation and LeakyReLU."""

    def __init__(self, cin: int, cout: int, kernels: tuple[int, ...], norm: NormKind, stride: int = 1) -> None:
        super().__init__()
        splits = _split_channels(cout, len(kernels))
        self.branches = nn.ModuleList(
            nn.Conv2d(cin, c, k, stride=stride, padding=k // 2) for c, k in zip(splits, kernels)
        )
        self.norm = make_norm(norm, cout)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(torch.cat([branch(x) for branch in self.branches], dim=1)))


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions with normalisation and a residual connection (all after the squeeze)."""

    def __init__(self, width: int, norm: NormKind) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1),
            make_norm(norm, width),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, padding=1),
            make_norm(norm, width),
        )
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class UpStage(nn.Module):
    """×2 upsampling (4×4 stride-2 transposed convolution) followed by a multi-kernel block."""

    def __init__(self, cin: int, cout: int, kernels: tuple[int, ...], norm: NormKind) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
        self.norm = make_norm(norm, cout)
        self.act = nn.LeakyReLU(0.2)
        self.conv = MultiKernelConv(cout, cout, kernels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(self.norm(self.up(x))))


class CaeNet(nn.Module):
    """Encoder → squeeze to ``bottleneck`` channels → residual blocks → decoder with multi-resolution heads.

    ``forward`` returns only the full-resolution head (the exported denoiser);
    ``heads`` returns all heads, finest first.
    """

    def __init__(
        self,
        widths: Sequence[int],
        bottleneck: int,
        residual_blocks: int = 4,
        residual_width: int = 64,
        norm: NormKind = "batch",
        output_margin: float = 0.25,
    ) -> None:
        super().__init__()
        self.margin = output_margin
        self.stem = MultiKernelConv(1, widths[0], FULL_RES_KERNELS, norm)
        self.down = nn.ModuleList(
            nn.Sequential(MultiKernelConv(a, b, LOW_RES_KERNELS, norm, stride=2), MultiKernelConv(b, b, LOW_RES_KERNELS, norm))
            for a, b in zip(widths[:-1], widths[1:])
        )
        # The squeeze is linear: its output is the whole code the decoder ever sees.
        self.squeeze = nn.Conv2d(widths[-1], bottleneck, 3, padding=1)
        self.expand = MultiKernelConv(bottleneck, residual_width, LOW_RES_KERNELS, norm)
        self.residual = nn.Sequential(*(ResidualBlock(residual_width, norm) for _ in range(residual_blocks)))
        dec_widths = [residual_width, *reversed(widths[:-1])]
        n_up = len(widths) - 1
        self.up = nn.ModuleList(
            UpStage(a, b, FULL_RES_KERNELS if i == n_up - 1 else LOW_RES_KERNELS, norm)
            for i, (a, b) in enumerate(zip(dec_widths[:-1], dec_widths[1:]))
        )
        n_heads = min(len(HEAD_KERNELS), n_up)  # heads sit on decoder outputs: 1/2**(n_up-1) ... full
        head_widths = list(reversed(dec_widths))[:n_heads]  # finest first
        self.heads_conv = nn.ModuleList(
            nn.Conv2d(w, 1, k, padding=k // 2) for w, k in zip(head_widths, HEAD_KERNELS)
        )

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck tensor: everything the decoder learns about ``x``."""
        h = self.stem(x)
        for stage in self.down:
            h = stage(h)
        return self.squeeze(h)

    def _decode(self, code: torch.Tensor) -> list[torch.Tensor]:
        """Decoder features at every resolution, coarsest first (1/16 ... full)."""
        h = self.residual(self.expand(code))
        features = []
        for stage in self.up:
            h = stage(h)
            features.append(h)
        return features

    def _head(self, index: int, features: torch.Tensor) -> torch.Tensor:
        return (1.0 + 2.0 * self.margin) * torch.sigmoid(self.heads_conv[index](features)) - self.margin

    def heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs at full, 1/2, 1/4 and 1/8 resolution (finest first)."""
        features = self._decode(self.code(x))[::-1]
        return [self._head(i, features[i]) for i in range(len(self.heads_conv))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._head(0, self._decode(self.code(x))[-1])

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
