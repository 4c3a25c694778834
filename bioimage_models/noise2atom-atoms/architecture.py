"""Network architecture of a selfden 0.1.0 package: the source of selfden.methods.noise2atom.networks,
copied at export time. Needs only PyTorch."""
from __future__ import annotations

# ---- selfden.methods.noise2atom.networks -------------------------------------
"""Noise2Atom's networks: the two U-Net generators, the critic and the fixed Gaussian low-pass filter.

Architecture after Wang et al., Applied Microscopy 50:23 (2020): a depth-3 U-Net with additive
skips, multi-kernel blocks (1/3/5/7 at full resolution, 3/5 below), residual blocks at 1/8
resolution and a tanh output; a critic of 4 stride-2 blocks with dropout and a linear read-out.
"""


from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

Norm = Literal["none", "instance"]
FULL_RES_KERNELS = (1, 3, 5, 7)
LOW_RES_KERNELS = (3, 5)


def _split_channels(total: int, parts: int) -> list[int]:
    """Near-equal positive split of ``total`` channels into at most ``parts`` groups."""
    parts = min(parts, total)
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class ConvAct(nn.Sequential):
    """Convolution (same padding), optional instance norm, LeakyReLU(0.2)."""

    def __init__(self, cin: int, cout: int, kernel: int, norm: Norm, stride: int = 1) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)]
        if norm == "instance":
            layers.append(nn.InstanceNorm2d(cout, affine=True))
        layers.append(nn.LeakyReLU(0.2))
        super().__init__(*layers)


class MultiKernelBlock(nn.Module):
    """Parallel convolutions of several kernel sizes (channels split between them), concatenated.

    Without normalisation the branches run as one convolution whose kernel is each branch's
    zero-padded to the largest size: the same function, but one wide convolution instead of
    several with a few output channels each (measured: 35 -> 20 ms forward+backward at 8
    channels, 8 x 64², one CPU thread).
    """

    def __init__(self, cin: int, cout: int, kernels: tuple[int, ...], norm: Norm) -> None:
        super().__init__()
        splits = _split_channels(cout, len(kernels))
        self.branches = nn.ModuleList(ConvAct(cin, c, k, norm) for c, k in zip(splits, kernels))
        self.fused = norm == "none"
        self.size = max(kernels[: len(splits)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Fused only while training: the ONNX exporter cannot convolve with a computed kernel, and
        # eval mode (denoise, the packages' PyTorch weights) must run the graph the ONNX file holds.
        if not (self.fused and self.training) or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return torch.cat([branch(x) for branch in self.branches], dim=1)
        weights, biases = [], []
        for branch in self.branches:
            conv: nn.Conv2d = branch[0]
            p = (self.size - conv.kernel_size[0]) // 2
            weights.append(F.pad(conv.weight, (p, p, p, p)))
            biases.append(conv.bias)
        y = F.conv2d(x, torch.cat(weights), torch.cat(biases), padding=self.size // 2)
        return F.leaky_relu(y, 0.2)


class ResidualBlock(nn.Module):
    """``x + conv(act(conv(x)))`` with 3x3 convolutions."""

    def __init__(self, width: int, norm: Norm) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvAct(width, width, 3, norm), nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpStage(nn.Module):
    """x2 transposed convolution, add the encoder's skip, then a multi-kernel block."""

    def __init__(self, cin: int, cout: int, kernels: tuple[int, ...], norm: Norm) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2))
        self.block = MultiKernelBlock(cout, cout, kernels, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(self.up(x) + skip)


class Generator(nn.Module):
    """Depth-3 U-Net on [-1, 1] images: additive skips, multi-kernel blocks, residual bottom.

    ``input_skip`` adds the input before the output tanh: the network starts near the identity.
    """

    def __init__(
        self,
        widths: tuple[int, int, int, int],
        residual_blocks: int,
        residual_width: int,
        norm: Norm,
        input_skip: bool,
    ) -> None:
        super().__init__()
        self.input_skip = input_skip
        self.stem = nn.Sequential(ConvAct(1, widths[0], 3, "none"), MultiKernelBlock(widths[0], widths[0], FULL_RES_KERNELS, norm))
        self.down = nn.ModuleList(
            nn.Sequential(ConvAct(a, b, 3, norm, stride=2), MultiKernelBlock(b, b, LOW_RES_KERNELS, norm))
            for a, b in zip(widths[:-1], widths[1:])
        )
        self.bottom = nn.Sequential(
            ConvAct(widths[-1], residual_width, 1, norm),
            *(ResidualBlock(residual_width, norm) for _ in range(residual_blocks)),
            ConvAct(residual_width, widths[-1], 1, norm),
        )
        self.up = nn.ModuleList(
            UpStage(widths[i + 1], widths[i], FULL_RES_KERNELS if i == 0 else LOW_RES_KERNELS, norm)
            for i in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.preactivation(x))

    def preactivation(self, x: torch.Tensor) -> torch.Tensor:
        """The output before its tanh."""
        skips = [self.stem(x)]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        h = skips[-1] + self.bottom(skips[-1])
        for stage, skip in zip(self.up, reversed(skips[:-1])):
            h = stage(h, skip)
        out = self.head(h)
        return out + x if self.input_skip else out


class Critic(nn.Module):
    """4 blocks (3x3 conv, stride-2 3x3 conv, dropout), average-pooled to a fixed grid, then linear.

    The pooling makes the critic accept any crop size (the reference's flatten fixed it at 128²);
    at 128² crops and grid 8 it is the identity. No normalisation: the gradient penalty is
    per sample, so batch statistics would break it (Gulrajani et al. 2017).
    """

    def __init__(self, widths: tuple[int, int, int, int], dropout: float, grid: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for width in widths:
            layers += [ConvAct(cin, width, 3, "none"), ConvAct(width, width, 3, "none", stride=2), nn.Dropout(dropout)]
            cin = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(grid))
        self.linear = nn.Linear(cin * grid * grid, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x).flatten(1)).squeeze(1)


def gaussian_kernel_1d(size: int, variance: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (odd) and ``variance`` px^2, centred."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(offsets**2) / (2.0 * variance))
    return (kernel / kernel.sum()).float()


def gaussian_kernel_2d(size: int, variance: float) -> torch.Tensor:
    """The separable ``size`` x ``size`` Gaussian, variance ``variance`` per axis, summing to 1."""
    k = gaussian_kernel_1d(size, variance)
    return torch.outer(k, k)


class GaussianLowPass(nn.Module):
    """Fixed low-pass filter Ms2b: a normalised Gaussian (paper: 33x33, variance 15 px^2).

    The reference code builds its kernel with ``^`` (XOR) where it means ``**``; this is the
    intended Gaussian. Applied separably with reflected borders (replicated when too small).
    """

    def __init__(self, size: int, variance: float) -> None:
        super().__init__()
        self.register_buffer("kernel", gaussian_kernel_1d(size, variance), persistent=False)
        self.pad = size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pad
        mode = "reflect" if min(x.shape[-2:]) > p else "replicate"
        x = F.pad(x, (p, p, p, p), mode=mode)
        k = self.kernel.to(x.dtype)
        x = F.conv2d(x, k.view(1, 1, -1, 1))
        return F.conv2d(x, k.view(1, 1, 1, -1))


class UnitRangeDenoiser(nn.Module):
    """The exported graph: [0, 1]-normalised input -> Ms2c on [-1, 1] -> clean [-a, a] back to [0, 1]."""

    def __init__(self, generator: Generator, clean_amplitude: float) -> None:
        super().__init__()
        self.generator = generator
        self.gain = 0.5 / clean_amplitude

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * self.generator(2.0 * x - 1.0) + 0.5


def build_denoiser(generator: dict[str, Any], clean_amplitude: float) -> UnitRangeDenoiser:
    """The exported graph from plain arguments (``generator``: the Generator's keyword arguments)."""
    return UnitRangeDenoiser(Generator(**generator), clean_amplitude)

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
