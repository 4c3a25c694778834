"""A package's PyTorch architecture as one file that needs only torch.

bioimage.io consumers (the model zoo's CI, bioimageio.core, deepImageJ's PyTorch engine) rebuild
``pytorch_state_dict`` weights from an architecture. Naming ``selfden.methods.build_graph`` would
make them install selfden first; instead the package carries ``architecture.py``: the source of
the method's torch-only network modules, concatenated in order with their imports of each other
removed. The code is selfden's own, copied at export time, so nothing is maintained twice.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Sequence
from types import ModuleType

import selfden
from selfden.methods.base import TorchArchitecture

ARCHITECTURE_FILE = "architecture.py"


class ArchitectureError(RuntimeError):
    """The modules cannot stand alone (a bug in the method's ``torch_architecture``)."""


def bundle_source(modules: Sequence[ModuleType]) -> str:
    """One module's source made of ``modules``, in order; ArchitectureError if it would import selfden."""
    names = ", ".join(m.__name__ for m in modules)
    parts = [
        f'"""Network architecture of a selfden {selfden.__version__} package: the source of {names},\n'
        'copied at export time. Needs only PyTorch."""\n',
        "from __future__ import annotations\n",
    ]
    bundled: set[str] = set()
    for module in modules:
        parts.append(f"\n# ---- {module.__name__} " + "-" * max(0, 80 - len(module.__name__) - 8) + "\n")
        parts.append(_without_internal_imports(inspect.getsource(module), module.__name__, bundled))
        bundled.add(module.__name__)
    source = "".join(parts)
    leftover = _internal_imports(ast.parse(source))
    if leftover:
        raise ArchitectureError(f"bundled architecture still imports {', '.join(leftover)}")
    return source


def module_source(module: ModuleType) -> str:
    """The source of one torch-only module as it is bundled (no ``from __future__``), to append to a file."""
    return _without_internal_imports(inspect.getsource(module), module.__name__, set())


def _without_internal_imports(source: str, name: str, bundled: set[str]) -> str:
    """``source`` without ``from __future__`` and imports from ``bundled`` modules (defined above it)."""
    tree = ast.parse(source)
    drop: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and _is_internal(node.module or "") and node.module not in bundled:
            raise ArchitectureError(f"{name} imports {node.module}, which is not bundled before it")
        if isinstance(node, ast.ImportFrom) and (node.module == "__future__" or _is_internal(node.module or "")):
            drop.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        elif isinstance(node, ast.Import) and any(_is_internal(a.name) for a in node.names):
            raise ArchitectureError(f"{name}: `import {node.names[0].name}` cannot be bundled; use from-imports")
    lines = source.splitlines(keepends=True)
    return "".join(line for number, line in enumerate(lines, start=1) if number not in drop)


def _is_internal(module: str) -> bool:
    return module == "selfden" or module.startswith("selfden.")


def _internal_imports(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _is_internal(node.module or ""):
            found.append(node.module or "")
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if _is_internal(a.name)]
    return found


def bordered_architecture(described: TorchArchitecture, pad_before: int, pad_after: int) -> TorchArchitecture:
    """``described`` inside ``ReflectBorder``: the PyTorch weights then compute the bordered ONNX graph."""
    from selfden.export import reflect_border

    kwargs = {"network": described.callable, "network_kwargs": dict(described.kwargs),
              "pad_before": int(pad_before), "pad_after": int(pad_after)}  # fmt: skip
    return TorchArchitecture((*described.modules, reflect_border), "ReflectBorder", kwargs)
