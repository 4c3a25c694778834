"""Packages' architecture.py: each method's exported denoiser rebuilt from torch-only source."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from selfden.export.architecture import ArchitectureError, bordered_architecture, bundle_source
from selfden.export.border_graph import border_pads
from selfden.export.package_assets import package_min_size
from selfden.export.reflect_border import ReflectBorder
from selfden.methods import get_method
from selfden.normalisation import Normalisation

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Small networks of each method; the architecture code is the same at any size.
SMALL = {
    "cae": dict(widths=(4, 4, 8, 8), residual_blocks=1, residual_width=8, bottleneck=2),
    "cosdd": dict(size="tiny", direction="x"),
    "dnnet": dict(filters=8, noise_net_width=16),
    "noise2atom": dict(widths=(4, 8, 8, 16), residual_blocks=1, residual_width=16, critic_widths=(4, 8, 8, 16)),
}

# Loads architecture.py as bioimage.io consumers do, with selfden made unimportable.
REBUILD = """
import importlib.util, json, sys
import numpy as np, torch
sys.modules["selfden"] = None
folder = sys.argv[1]
spec = importlib.util.spec_from_file_location("architecture", folder + "/architecture.py")
module = importlib.util.module_from_spec(spec)
sys.modules["architecture"] = module
spec.loader.exec_module(module)
described = json.load(open(folder + "/callable.json"))
network = getattr(module, described["callable"])(**described["kwargs"]).eval()
network.load_state_dict(torch.load(folder + "/weights.pt", weights_only=True))
with torch.no_grad():
    np.save(folder + "/output.npy", network(torch.from_numpy(np.load(folder + "/input.npy"))).numpy())
"""


@pytest.mark.parametrize("name", sorted(SMALL))
def test_architecture_file_rebuilds_the_exported_denoiser_in_its_reflect_border_without_selfden(
    name: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    cls = get_method(name)
    method = cls(cls.config_class(**SMALL[name]), Normalisation(0.0, 1.0), torch.device("cpu"))
    plain = method.torch_architecture()
    assert plain is not None, f"{name} has no torch-only architecture"
    before, after = border_pads(method.halo, method.size_step)
    described = bordered_architecture(plain, before, after)  # what a package ships
    (tmp_path / "architecture.py").write_text(bundle_source(described.modules))
    (tmp_path / "callable.json").write_text(json.dumps({"callable": described.callable, "kwargs": described.kwargs}))
    denoiser = method.export_graphs()["denoiser"].eval()
    state = ReflectBorder(denoiser, None, before, after).state_dict()
    torch.save({k: v.contiguous() for k, v in state.items()}, tmp_path / "weights.pt")
    size = package_min_size(method)
    x = torch.rand(1, 1, size, size + method.size_step, generator=torch.Generator().manual_seed(1))
    np.save(tmp_path / "input.npy", x.numpy())
    done = subprocess.run([sys.executable, "-c", REBUILD, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (before, after), (before, after)), mode="reflect")  # = ONNX reflect
    with torch.no_grad():
        expected = denoiser(torch.from_numpy(padded)).numpy()[..., before : before + size, before : before + size + method.size_step]
    assert np.abs(np.load(tmp_path / "output.npy") - expected).max() < 1e-5


def test_a_module_importing_an_unbundled_selfden_module_is_refused(tmp_path: Path) -> None:
    import importlib.util

    path = tmp_path / "uses_selfden.py"
    path.write_text("from selfden.errors import SelfdenError\n")
    spec = importlib.util.spec_from_file_location("uses_selfden", path)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(ArchitectureError, match="selfden.errors"):
        bundle_source([module])
