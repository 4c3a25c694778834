"""Fixed seeds for the random nodes of an ONNX graph.

``torch.randn_like`` exports as ``RandomNormalLike`` without a seed, so every process draws
differently. With a ``seed`` attribute on each random node (a different one per node, or
they would draw the same numbers), the first ``run()`` of a fresh onnxruntime session is
reproducible across processes and runtime versions; later runs continue the generator.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from onnx import helper

RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"})
#: ONNX stores the seed as float32: integers above 2**24 would no longer stay distinct.
MAX_SEED = 2.0**24


def seed_random_nodes(model: onnx.ModelProto, base_seed: float) -> int:
    """Give every random node (subgraphs included) the seed ``base_seed + i``; returns how many."""
    if not 0 <= base_seed < MAX_SEED - 1e4:
        raise ValueError(
            f"base_seed {base_seed} must lie in [0, {MAX_SEED - 1e4:.0f}) so that float32 seeds stay distinct"
        )
    count = 0
    for node in _all_nodes(model.graph):
        if node.op_type not in RANDOM_OPS:
            continue
        kept = [a for a in node.attribute if a.name != "seed"]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute("seed", float(base_seed) + count)])
        count += 1
    return count


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _all_nodes(sub)
