"""Rewrite exported graphs into equal forms that onnxruntime's CPU kernels run fast.

onnxruntime computes ``Softplus`` one element at a time (log1p(exp(x))), about 20x slower than
its vectorised ``Sigmoid``, ``Tanh`` or ``Mul`` on the same tensor (1x32x1024², one thread:
432 ms against 17-20 ms; ``benchmarks/graph_speed.py``). Torch exports ``Mish`` as
``x * tanh(softplus(x))`` and ``F.softplus`` as ``Softplus``, so in COSDD's graphs Softplus alone
took about half the run time. Both are rewritten here with vectorised ops only:

- Mish: tanh(softplus(x)) = n / (2 - n) with p = sigmoid(x), n = p * (2 - p); this follows from
  (1 + e^x)^2 = 1 / (1 - p)^2. Every step is well conditioned: for x -> -inf it tends to x * p,
  for x -> +inf to x, never inf / inf.
- Softplus: relu(x) - log(sigmoid(|x|)); sigmoid(|x|) lies in [1/2, 1], so the log never
  overflows (log1p(exp(x)) does for x > 88).

The values agree with the original nodes to float32 rounding; every export still goes through
its parity check against torch afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper


def rewrite_for_speed(model: onnx.ModelProto) -> dict[str, int]:
    """Apply every rewrite to ``model`` in place; returns how many nodes each one replaced."""
    return {"mish": rewrite_mish(model), "softplus": rewrite_softplus(model)}


def rewrite_mish(model: onnx.ModelProto) -> int:
    """Replace each ``Mul(x, Tanh(Softplus(x)))`` whose inner results feed nothing else."""
    graph = model.graph
    nodes = list(graph.node)  # one wrapper per node, so that id() below stays valid
    consumers = _consumers(nodes)
    outputs = {value.name for value in graph.output}
    replaced: dict[int, list[onnx.NodeProto]] = {}
    dropped: set[int] = set()
    two = "selfden_two"
    for node in nodes:
        tanh = _only_consumer(node, "Softplus", "Tanh", consumers, outputs)
        mul = tanh and _only_consumer(tanh, "Tanh", "Mul", consumers, outputs)
        if not mul or sorted(mul.input) != sorted([node.input[0], tanh.output[0]]):
            continue
        x = node.input[0]
        name = f"selfden_mish{len(replaced)}"  # the exporter's names never start with "selfden"
        p, q, n, d, r = (f"{name}_{s}" for s in "pqndr")
        replaced[id(mul)] = [
            helper.make_node("Sigmoid", [x], [p], name=f"{name}_sigmoid"),
            helper.make_node("Sub", [two, p], [q], name=f"{name}_sub_p"),
            helper.make_node("Mul", [p, q], [n], name=f"{name}_n"),
            helper.make_node("Sub", [two, n], [d], name=f"{name}_sub_n"),
            helper.make_node("Div", [n, d], [r], name=f"{name}_ratio"),
            helper.make_node("Mul", [x, r], [mul.output[0]], name=f"{name}_mul"),
        ]
        dropped.update((id(node), id(tanh)))
    if replaced:
        graph.initializer.append(numpy_helper.from_array(np.array(2.0, dtype=np.float32), two))
    _replace_nodes(graph, nodes, replaced, dropped)
    return len(replaced)


def rewrite_softplus(model: onnx.ModelProto) -> int:
    """Replace each remaining ``Softplus(x)`` by ``Relu(x) - Log(Sigmoid(Abs(x)))``."""
    graph = model.graph
    nodes = list(graph.node)
    replaced: dict[int, list[onnx.NodeProto]] = {}
    for node in nodes:
        if node.op_type != "Softplus":
            continue
        name = f"selfden_softplus{len(replaced)}"
        x = node.input[0]
        relu, absolute, sigmoid, log = (f"{name}_{s}" for s in ("relu", "abs", "sigmoid", "log"))
        replaced[id(node)] = [
            helper.make_node("Relu", [x], [relu], name=relu),
            helper.make_node("Abs", [x], [absolute], name=absolute),
            helper.make_node("Sigmoid", [absolute], [sigmoid], name=sigmoid),
            helper.make_node("Log", [sigmoid], [log], name=log),
            helper.make_node("Sub", [relu, log], [node.output[0]], name=f"{name}_sub"),
        ]
    _replace_nodes(graph, nodes, replaced, set())
    return len(replaced)


def _consumers(nodes: Sequence[onnx.NodeProto]) -> dict[str, list[onnx.NodeProto]]:
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _only_consumer(
    node: onnx.NodeProto, op: str, next_op: str, consumers: dict[str, list[onnx.NodeProto]], outputs: set[str]
) -> onnx.NodeProto | None:
    """The single ``next_op`` node reading ``node``'s output, if ``node`` is an ``op`` and nothing else reads it."""
    if node.op_type != op or node.output[0] in outputs:
        return None
    readers = consumers.get(node.output[0], [])
    return readers[0] if len(readers) == 1 and readers[0].op_type == next_op else None


def _replace_nodes(
    graph: onnx.GraphProto,
    nodes: Sequence[onnx.NodeProto],
    replaced: dict[int, Sequence[onnx.NodeProto]],
    dropped: set[int],
) -> None:
    """Put each replacement (keyed by the id of the node it replaces) where that node stood, so
    the topological order is kept; drop the ``dropped`` ones."""
    if not replaced:
        return
    order = [new for node in nodes if id(node) not in dropped for new in replaced.get(id(node), [node])]
    copies = [onnx.NodeProto.FromString(node.SerializeToString()) for node in order]  # before clearing their parent
    del graph.node[:]
    graph.node.extend(copies)
