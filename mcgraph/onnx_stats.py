"""What an ONNX graph costs, read from the graph itself: operators, stored weights, MACs.

    onnx_macs("model.onnx")             # multiply-accumulates of one sample (batch 1)
    op_counts("model.onnx")             # {"Conv": 13, "Relu": 13, ...}
    initializer_params("model.onnx")    # scalars stored in the initializers

MACs count Conv (and ConvInteger, QLinearConv), Gemm and MatMul (and their integer forms):
the products a layer computes, out_elements x (C_in / groups) x kernel area for a convolution,
M x N x K for a matrix product. Element-wise work (adds, ReLU, pads) costs no MACs.
"""
from __future__ import annotations

import os
from collections import Counter

import numpy as np
import onnx
from onnx import shape_inference

_CONV = {"Conv", "ConvInteger", "QLinearConv"}
_MATMUL = {"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"}


def _load(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))


def op_counts(model: str | os.PathLike | onnx.ModelProto) -> dict[str, int]:
    """ONNX operator histogram of the main graph (and its local functions)."""
    m = _load(model)
    ops = Counter(n.op_type for n in m.graph.node)
    for f in m.functions:
        ops.update(n.op_type for n in f.node)
    return dict(sorted(ops.items()))


def initializer_params(model: str | os.PathLike | onnx.ModelProto) -> int:
    """Number of scalars stored in the ONNX initializers (the exported weights)."""
    m = _load(model)
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in m.graph.initializer))


def _with_batch(m: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    m2 = onnx.ModelProto()
    m2.CopyFrom(m)
    for v in list(m2.graph.input) + list(m2.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    del m2.graph.value_info[:]
    return shape_inference.infer_shapes(m2, strict_mode=False, data_prop=True)


def _shapes(m: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    out = {}
    for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        dims = v.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            out[v.name] = tuple(d.dim_value for d in dims)
    for t in m.graph.initializer:
        out[t.name] = tuple(t.dims)
    return out


def onnx_macs(model: str | os.PathLike | onnx.ModelProto, batch: int = 1) -> int:
    """Multiply-accumulates of one batch of ``batch`` samples, from inferred shapes.

    Raises ValueError naming the node when a Conv or matrix product has a shape that shape
    inference could not settle (a count that silently skipped it would be wrong)."""
    m = _with_batch(_load(model), batch)
    shapes = _shapes(m)
    total = 0
    for n in m.graph.node:
        if n.op_type in _CONV:
            w_idx = 3 if n.op_type == "QLinearConv" else 1
            out, w = shapes.get(n.output[0]), shapes.get(n.input[w_idx])
            if out is None or w is None:
                raise ValueError(f"onnx_macs: {n.name or n.op_type} has no inferred shape")
            total += int(np.prod(out, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
        elif n.op_type in _MATMUL:
            b_idx = 3 if n.op_type == "QLinearMatMul" else 1
            a, b, out = shapes.get(n.input[0]), shapes.get(n.input[b_idx]), shapes.get(n.output[0])
            if a is None or b is None or out is None:
                raise ValueError(f"onnx_macs: {n.name or n.op_type} has no inferred shape")
            trans_a = any(at.name == "transA" and at.i for at in n.attribute)
            k = a[-2] if (n.op_type == "Gemm" and trans_a) else a[-1]
            total += int(np.prod(out, dtype=np.int64)) * int(k)
    return total
