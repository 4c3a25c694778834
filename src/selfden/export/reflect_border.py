"""The PyTorch side of "borders are part of the model": reflect-pad, run the network, crop.

Bundled as the last part of a package's ``architecture.py`` (it imports only torch), where
``ReflectBorder(network="CaeNet", network_kwargs={...}, pad_before=h, pad_after=a)`` builds the
network named by ``network`` from that file. It computes what the package's ONNX weights compute
(``border_graph.add_reflect_border``) and what ``selfden infer`` gives, borders included:
torch's ``reflect`` padding, like ONNX ``Pad(mode="reflect")`` and numpy's ``reflect``, mirrors
without repeating the edge pixel.
"""

from __future__ import annotations

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
