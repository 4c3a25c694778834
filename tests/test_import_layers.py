"""The package's shape, checked: imports follow the data (io → methods → training → export →
runs → inference → CLI), no import circles, no torch where users may lack it, small modules.

Imports are read from the source with ``ast`` (every ``import``, also those inside functions
and ``TYPE_CHECKING`` blocks), so the contract holds for lazy imports too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SOURCE / "selfden"
MAX_LINES = 400

# Lowest first; a module may import its own layer and those the table allows.
FOUNDATION = ("selfden", "selfden.errors", "selfden.io", "selfden.geometry", "selfden.package",
              "selfden.normalisation", "selfden.metrics", "selfden.synth", "selfden.scenes", "selfden.data",
              "selfden.noise_analysis", "selfden.noise_analysis_plot", "selfden.value_grid", "selfden.report")
LAYERS = {
    "foundation": FOUNDATION,
    "methods": ("selfden.methods",),
    "training": ("selfden.training",),
    "export": ("selfden.export",),
    "runs": ("selfden.runs",),
    "inference": ("selfden.inference",),
    "interface": ("selfden.cli", "selfden.demo", "selfden.__main__"),
}
# The trainer and the exporter know methods only through the contract, never a method by name.
CONTRACT = ("selfden.methods.base",)
ALLOWED = {
    "foundation": {"foundation"},
    "methods": {"foundation", "methods"},
    "training": {"foundation", "training"},
    "export": {"foundation", "export"},
    "runs": {"foundation", "methods", "training", "export", "runs"},
    "inference": {"foundation", "inference"},
    "interface": set(LAYERS),
}
NO_TORCH = ("foundation", "inference")


def _name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        package = module if modules()[module].name == "__init__.py" else module.rpartition(".")[0]
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
    for alias in node.names:  # `from selfden.io import reading` names a module
        yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules() else base


def _known(target: str) -> str | None:
    """The selfden module ``target`` refers to (the longest known prefix), or None for outside ones."""
    parts = target.split(".")
    while parts:
        if ".".join(parts) in modules():
            return ".".join(parts)
        parts.pop()
    return None


@cache
def imports() -> dict[str, frozenset[str]]:
    """Every module's imports: selfden modules by name, others by top-level package."""
    found: dict[str, frozenset[str]] = {}
    for module, path in modules().items():
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, node):
                    names.add(_known(target) or target.split(".")[0])
        found[module] = frozenset(names - {module})
    return found


def layer_of(module: str) -> str:
    for layer, prefixes in LAYERS.items():
        # "selfden" itself (the version) is foundation; its submodules are placed by name
        if any(module == p or (p != "selfden" and module.startswith(p + ".")) for p in prefixes):
            return layer
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in {Path(__file__).name}")


def test_every_module_belongs_to_a_layer() -> None:
    for module in modules():
        layer_of(module)


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = []
    for module, targets in imports().items():
        layer = layer_of(module)
        for target in sorted(t for t in targets if t in modules()):
            target_layer = layer_of(target)
            allowed = target_layer in ALLOWED[layer] or (layer in ("training", "export") and target in CONTRACT)
            if not allowed:
                wrong.append(f"{module} ({layer}) imports {target} ({target_layer})")
    assert not wrong, "\n".join(wrong)


def test_the_bottom_layer_and_inference_never_import_torch() -> None:
    heavy = [f"{m} imports torch" for m, targets in imports().items()
             if layer_of(m) in NO_TORCH and "torch" in targets]
    assert not heavy, "\n".join(heavy)


def test_the_trainer_never_names_a_method() -> None:
    named = [f"{m} imports {t}" for m, targets in imports().items() if layer_of(m) == "training"
             for t in targets if t.startswith("selfden.methods") and t not in CONTRACT]
    assert not named, "\n".join(named)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_there_are_no_import_circles() -> None:
    graph = {m: {t for t in targets if t in modules()} for m, targets in imports().items()}
    circles = _cycles(graph)
    assert not circles, "\n".join(" <-> ".join(circle) for circle in circles)


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", sorted(modules()))
def test_modules_stay_small(module: str) -> None:
    lines = len(modules()[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{modules()[module]}: {lines} lines; split it by job (limit {MAX_LINES})"
