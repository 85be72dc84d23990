"""Rewrites of the converted ONNX graph that change what onnxruntime can prove, not what it computes.

tf2onnx writes the NHWC->NCHW transposes of 1x1 tensors (the selective-kernel gate, the pooled
features) as Reshapes to `[-1, C, 1, 1]`. ONNX shape inference cannot carry the symbolic batch
dimension through a -1, so every tensor downstream of the first SK gate gets a fresh unknown
batch dimension. onnxruntime's NCHWc optimizer then cannot prove that a residual Add's two inputs
have one shape, and falls back to a separate Add and Relu on reshaped tensors instead of folding
both into the preceding convolution (docs/export.md has what that costs). A 0 in a Reshape's
shape copies the input's dimension, symbol included, so `[0, C, 1, 1]` is the same reshape with
the batch kept.
"""

from __future__ import annotations

import numpy as np


def _static_dims(value_info):
    """The dims of a value_info as ints, None for a dimension that is not a known value."""
    if value_info is None or not value_info.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None
            for d in value_info.type.tensor_type.shape.dim]


def keep_batch_in_reshapes(proto):
    """Rewrites, in place, each Reshape whose constant shape is [-1, d1, ...] and whose input
    has known dims 1.. with the same product, to [0, d1, ...]: equal by construction (the
    first output dimension is the input's), and the symbolic batch dimension survives shape
    inference. Returns the number of Reshapes rewritten."""
    import onnx
    from onnx import numpy_helper

    graph = proto.graph
    inferred = onnx.shape_inference.infer_shapes(proto)
    infos = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    initializers = {t.name: t for t in graph.initializer}
    uses = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    rewritten_shapes = {}
    count = 0
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in initializers:
            continue
        if any(a.name == "allowzero" and a.i for a in node.attribute):
            continue  # with allowzero a 0 is a zero-sized dimension, not a copy
        shape = numpy_helper.to_array(initializers[node.input[1]])
        dims = _static_dims(infos.get(node.input[0]))
        if (shape.ndim != 1 or len(shape) < 2 or shape[0] != -1 or np.any(shape[1:] <= 0)
                or not dims or any(d is None for d in dims[1:])
                or int(np.prod(dims[1:])) != int(np.prod(shape[1:]))):
            continue
        name = node.input[1]
        if name not in rewritten_shapes:
            kept = shape.copy()
            kept[0] = 0
            new_name = f"{name}__keep_batch"
            graph.initializer.append(numpy_helper.from_array(kept, new_name))
            rewritten_shapes[name] = new_name
        node.input[1] = rewritten_shapes[name]
        uses[name] -= 1
        count += 1
    unused = {name for name in rewritten_shapes if uses[name] == 0}
    kept_initializers = [t for t in graph.initializer if t.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(kept_initializers)
    return count
