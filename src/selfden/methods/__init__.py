"""Registry of denoising methods: name -> Method class.

Methods are imported lazily so that ``selfden --help`` and ``selfden infer`` never import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from selfden.errors import SelfdenError

if TYPE_CHECKING:
    from torch import nn

    from selfden.methods.base import Method

_REGISTRY: dict[str, str] = {
    "cae": "selfden.methods.cae:Cae",
    "cosdd": "selfden.methods.cosdd:Cosdd",
    "dnnet": "selfden.methods.dnnet:Dnnet",
    "noise2atom": "selfden.methods.noise2atom:Noise2Atom",
}


def method_names() -> list[str]:
    """Names accepted by ``selfden train``."""
    return sorted(_REGISTRY)


def get_method(name: str) -> type["Method"]:
    """The Method class registered under ``name``."""
    if name not in _REGISTRY:
        raise SelfdenError(f"unknown method {name!r}; choose one of: {', '.join(method_names())}")
    module_name, class_name = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_graph(method: str, method_config: dict[str, Any], graph: str = "denoiser") -> "nn.Module":
    """An untrained copy of one exported network of ``method``, built from its saved config.

    The architecture named by the ``pytorch_state_dict`` weights of packages exported before
    they carried their own ``architecture.py``; kept so those packages still load.
    """
    import torch

    from selfden.normalisation import Normalisation

    cls = get_method(method)
    instance = cls(cls.config_class(**method_config), Normalisation(offset=0.0, scale=1.0), torch.device("cpu"))
    return instance.export_graphs()[graph].eval()
