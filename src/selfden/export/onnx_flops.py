"""Multiply-accumulates of an ONNX graph at given input shapes, from (symbolic) shape inference.

Counts Conv, ConvTranspose, MatMul and Gemm (the nodes that hold nearly all the arithmetic of
selfden's graphs); elementwise ops are left out. Deterministic: no timing, no session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx


def count_macs(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> int:
    """MACs of one run of ``model`` with inputs of ``input_shapes`` (every input named, one batch size)."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    # onnx's own inference loses shapes after a chunk (Slice with computed ends); onnxruntime's
    # symbolic inference propagates them.
    inferred = SymbolicShapeInference.infer_shapes(_with_fixed_inputs(model, input_shapes), auto_merge=True)
    shapes = {**_shapes(inferred.graph.value_info), **_shapes(inferred.graph.input), **_shapes(inferred.graph.output)}
    shapes.update({t.name: tuple(t.dims) for t in model.graph.initializer})
    unknown = [n.output[0] for n in inferred.graph.node if n.op_type in _COUNTED and 0 in shapes.get(n.output[0], (0,))]
    if unknown:
        raise ValueError(f"shape inference left {len(unknown)} counted outputs without a shape, e.g. {unknown[0]}")
    return sum(_node_macs(node, shapes) for node in inferred.graph.node)


_COUNTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _with_fixed_inputs(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> onnx.ModelProto:
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    initializers = {t.name for t in fixed.graph.initializer}
    for node in fixed.graph.node:  # shape inference leaves RandomNormalLike's output shapeless
        if node.op_type in ("RandomNormalLike", "RandomUniformLike"):
            node.op_type = "Identity"
            del node.attribute[:]
    for value in fixed.graph.input:
        if value.name in initializers:
            continue
        if value.name not in input_shapes:
            raise ValueError(f"no shape given for input {value.name!r}; got {sorted(input_shapes)}")
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(dims, input_shapes[value.name]):
            dim.Clear()
            dim.dim_value = int(size)
    return fixed


def _shapes(values: Sequence[onnx.ValueInfoProto]) -> dict[str, tuple[int, ...]]:
    return {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim) for v in values}


def _node_macs(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> int:
    if node.op_type in ("Conv", "ConvTranspose"):
        weight = shapes[node.input[1]]  # Conv: (M, C/g, k...); ConvTranspose: (C, M/g, k...)
        out = shapes[node.output[0]]
        if node.op_type == "Conv":
            return int(np.prod(out)) * int(np.prod(weight[1:]))
        return int(np.prod(shapes[node.input[0]])) * int(np.prod(weight[1:]))
    if node.op_type in ("MatMul", "Gemm"):
        a = shapes[node.input[0]]
        out = shapes[node.output[0]]
        transposed = node.op_type == "Gemm" and any(x.name == "transA" and x.i for x in node.attribute)
        return int(np.prod(out)) * int(a[-2] if transposed else a[-1])
    return 0
