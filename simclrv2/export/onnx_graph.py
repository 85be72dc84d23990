"""Rewrites of the converted ONNX graph that change how runtimes can run it, not what it computes.

tf2onnx writes the NHWC->NCHW transposes of 1x1 tensors (the selective-kernel gate, the pooled
features) as Reshapes to `[-1, C, 1, 1]`. ONNX shape inference cannot carry the symbolic batch
dimension through a -1, so every tensor downstream of the first SK gate gets a fresh unknown
batch dimension. onnxruntime's NCHWc optimizer then cannot prove that a residual Add's two inputs
have one shape, and falls back to a separate Add and Relu on reshaped tensors instead of folding
both into the preceding convolution (docs/export.md has what that costs). A 0 in a Reshape's
shape copies the input's dimension, symbol included, so `[0, C, 1, 1]` is the same reshape with
the batch kept.

The selective-kernel convolution computes its two streams as one convolution to 2C channels
and slices them apart (and likewise the two halves of its gate's logits). A channel slice of a
blocked-layout tensor is a copy that OpenVINO runs with its reference kernel, at bfloat16 around
an int8 model's convolutions, with a layout reorder on each side; two convolutions, each with
its half of the weights, compute the same streams without either. Along the output channels
(axis 0 of an OIHW kernel) a half is a contiguous run of the kernel's bytes, so the halves are
new views of the same bytes: offsets into the external data file, or slices of inline ones,
never a copy of a model's weights in memory.
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


def _constant_ints(initializers, name):
    from onnx import TensorProto, numpy_helper

    if name not in initializers or initializers[name].data_location == TensorProto.EXTERNAL:
        return None  # not a constant, or one this rewrite would have to read from disk
    return [int(v) for v in numpy_helper.to_array(initializers[name]).reshape(-1)]


def _channel_range(slice_node, initializers, channels, rank):
    """(start, end) of a Slice that takes a run of channels (axis 1 of a rank-`rank` NCHW
    tensor) with step 1, else None."""
    inputs = list(slice_node.input) + [""] * (5 - len(slice_node.input))
    starts, ends = (_constant_ints(initializers, inputs[i]) for i in (1, 2))
    axes = _constant_ints(initializers, inputs[3]) if inputs[3] else [0]
    steps = _constant_ints(initializers, inputs[4]) if inputs[4] else [1]
    if (starts is None or ends is None or axes is None or steps is None
            or len(starts) != 1 or axes[0] not in (1, 1 - rank) or steps != [1]):
        return None
    start, end = (min(max(v + channels if v < 0 else v, 0), channels) for v in (starts[0], ends[0]))
    return (start, end) if start < end else None


def _rows(tensor, start, end, name):
    """A TensorProto named `name` holding rows start:end (axis 0) of `tensor`, sharing its
    bytes: an inline tensor's raw bytes sliced, an external one's offset and length moved."""
    import onnx
    from onnx import TensorProto

    dims = list(tensor.dims)
    row_bytes = int(np.prod(dims[1:], dtype=np.int64)) * np.dtype(
        onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    part = TensorProto(name=name, data_type=tensor.data_type, dims=[end - start] + dims[1:])
    if tensor.data_location == TensorProto.EXTERNAL:
        entries = {e.key: e.value for e in tensor.external_data}
        entries["offset"] = str(int(entries.get("offset", 0)) + start * row_bytes)
        entries["length"] = str((end - start) * row_bytes)
        part.data_location = TensorProto.EXTERNAL
        for key, value in entries.items():
            part.external_data.add(key=key, value=value)
    else:
        if not tensor.HasField("raw_data"):
            from onnx import numpy_helper

            array = numpy_helper.to_array(tensor)[start:end]
            return numpy_helper.from_array(array, name)
        part.raw_data = tensor.raw_data[start * row_bytes:end * row_bytes]
    return part


def split_sliced_convolutions(proto):
    """Rewrites, in place, each Conv (group 1, constant weights) whose output, directly or
    through one Relu, is read only by channel Slices: one Conv (and Relu) per Slice, computing
    that Slice's channels from its rows of the weights and bias, writing the Slice's output.
    The same function: each output channel is the same sum of the same products. Returns the
    number of convolutions split."""
    from onnx.helper import make_node

    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    # One list of the nodes, read throughout: its objects are what the id()s below name.
    all_nodes = list(graph.node)
    readers = {}
    for node in all_nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    replacements, removed, dropped_values = {}, set(), set()
    for conv in all_nodes:
        if (conv.op_type != "Conv" or any(a.name == "group" and a.i != 1 for a in conv.attribute)
                or conv.input[1] not in initializers
                or (len(conv.input) > 2 and conv.input[2] and conv.input[2] not in initializers)):
            continue
        relu, streams = None, conv.output[0]
        users = readers.get(streams, [])
        if len(users) == 1 and users[0].op_type == "Relu" and streams not in outputs:
            relu, streams = users[0], users[0].output[0]
            users = readers.get(streams, [])
        if not users or streams in outputs or any(u.op_type != "Slice" for u in users):
            continue
        weights = initializers[conv.input[1]]
        if any(len(readers[name]) != 1 for name in conv.input[1:] if name):
            continue  # weights shared with another node keep their one initializer
        ranges = [_channel_range(u, initializers, weights.dims[0], len(weights.dims))
                  for u in users]
        if any(r is None for r in ranges):
            continue
        bias = initializers.get(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
        nodes = []
        for user, (start, end) in zip(users, ranges):
            suffix = f"__channels_{start}_{end}"
            kernel = _rows(weights, start, end, weights.name + suffix)
            graph.initializer.append(kernel)
            inputs = [conv.input[0], kernel.name]
            if bias is not None:
                part = _rows(bias, start, end, bias.name + suffix)
                graph.initializer.append(part)
                inputs.append(part.name)
            result = user.output[0] if relu is None else user.output[0] + "__conv"
            part_conv = make_node("Conv", inputs, [result], name=conv.name + suffix)
            part_conv.attribute.extend(conv.attribute)
            nodes.append(part_conv)
            if relu is not None:
                nodes.append(make_node("Relu", [result], [user.output[0]],
                                       name=relu.name + suffix))
            removed.add(id(user))
        replacements[id(conv)] = nodes
        removed.update({id(conv)} | ({id(relu)} if relu is not None else set()))
        dropped_values.update({conv.output[0], streams})
    if not replacements:
        return 0
    nodes = []
    for node in all_nodes:
        nodes.extend(replacements.get(id(node), []))
        if id(node) not in removed:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    kept_info = [v for v in graph.value_info if v.name not in dropped_values]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    return len(replacements)
