"""The ONNX format: model.onnx converted by tf2onnx from one function with every output, with
the batch dimension named and kept symbolic (onnx_graph.py), and how onnxruntime runs it.

A model whose float32 weights exceed EXTERNAL_DATA_ABOVE (protobuf cannot serialise a message
over 2 GiB) is converted by tf2onnx's large-model path and written as model.onnx holding the
graph plus one file of weights beside it, model.onnx.data, named relative to it (ONNX's external
data: onnxruntime and OpenVINO read it, and the directory can be moved as a whole).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from simclrv2 import process_memory
from simclrv2.export.errors import ExportError

FILE = "model.onnx"
OUTPUT_NAMES = ("final_avg_pool", "logits", "probabilities", "proj_head_output")  # onnx_function
EXTERNAL_DATA_FILE = FILE + ".data"
ONNX_OPSET = 17
ONNX_MAX_BYTES = 2 * 1024 ** 3 - 64 * 1024 ** 2  # protobuf's 2 GiB limit, with room for the graph
# Weights above this many bytes go to EXTERNAL_DATA_FILE; the environment variable lowers it
# (a test forces the large-model layout on a small model with it).
EXTERNAL_DATA_ABOVE = ONNX_MAX_BYTES
EXTERNAL_DATA_ENV = "SIMCLRV2_ONNX_EXTERNAL_DATA_ABOVE"
_DATA_ALIGNMENT = 4096  # each tensor's offset, so that a runtime may map it directly

# tf2onnx's switch for its optimizer loop: unset, it deep-copies the whole graph, weights
# included, before each optimizer it applies (in every round), so that a failing optimizer can
# be skipped. tf2onnx 1.17 turns the copies off when the variable is set at all (it compares the
# variable's name, not its value, to "TRUE"); "FALSE" also says so to a tf2onnx that reads the
# value. An optimizer that fails then fails the export with tf2onnx's error, instead of leaving
# a graph it did not finish optimizing. docs/export.md has what it saves.
TF2ONNX_CATCH_ERRORS = ("TF2ONNX_CATCH_ERRORS", "FALSE")


def external_data_above() -> int:
    """The weight size (bytes) above which model.onnx keeps its weights in EXTERNAL_DATA_FILE."""
    value = os.environ.get(EXTERNAL_DATA_ENV)
    if value is None:
        return EXTERNAL_DATA_ABOVE
    try:
        return int(value)
    except ValueError:
        raise ExportError(f"{EXTERNAL_DATA_ENV}={value!r} is not a number of bytes; unset it "
                          f"or give an integer") from None


def layout(config) -> str:
    """"single file" or "external data": how model.onnx of `config` is written, decided from
    the architecture's weight count alone (simclrv2.zoo.param_count), before any is loaded."""
    from simclrv2.zoo.param_count import weight_bytes

    return "external data" if weight_bytes(config) > external_data_above() else "single file"


def onnx_function(graph):
    """One tf.function of `graph` (an ExportGraph) returning every ONNX output: final_avg_pool,
    logits and probabilities with a supervised head, proj_head_output with a projection head."""
    import keras
    import tensorflow as tf

    model = graph.model
    keys = ["final_avg_pool"] + ["proj_head_output"] * graph.has_projection + [
        "logits_sup"] * graph.has_logits
    # One network with every output: ONNX Runtime would not merge the backbones of parts.
    whole = keras.Model(model.inputs, {k: model.output[k] for k in keys}, name="export_onnx")

    @tf.function(input_signature=[graph.images_spec], autograph=False)
    def onnx_outputs(images):
        out = graph.run(whole, images)
        result = {"final_avg_pool": out["final_avg_pool"]}
        if graph.has_logits:
            result.update(logits=out["logits_sup"],
                          probabilities=tf.nn.softmax(out["logits_sup"]))
        if graph.has_projection:
            result["proj_head_output"] = out["proj_head_output"]
        return result

    return onnx_outputs


def _optimize_without_proto_updates(optimize_graph):
    """tf2onnx's optimize_graph, with Graph.update_proto a no-op while it runs. Each optimizer
    ends by rewriting every node's protobuf from its Python object, the weights of every
    constant included. The optimizers read and edit the Python objects only, and make_graph,
    which builds the model after them, runs update_proto itself; the export's verification would
    catch a graph that came out wrong."""
    from unittest import mock

    from tf2onnx.graph import Graph

    def optimize(*args, **kwargs):
        with mock.patch.object(Graph, "update_proto", lambda self, *a, **k: None):
            return optimize_graph(*args, **kwargs)

    return optimize


def _moving_value_attr(node, storage=None):
    """tf2onnx's Node.get_value_attr for its large-model path, moving a constant's bytes into
    the external storage instead of deep-copying the attribute first (which held every weight
    twice while the model was made); the graph is not used after make_model."""
    from onnx import AttributeProto, TensorProto

    attr = node._attr["value"]
    if storage is None or attr.type != AttributeProto.TENSOR:
        return attr
    if node in storage.node_to_modified_value_attr:
        return storage.node_to_modified_value_attr[node]
    if int(np.prod(attr.t.dims)) <= storage.external_tensor_size_threshold:
        return attr
    name = f"{node.name.strip()}_{storage.name_counter}"
    storage.name_counter += 1
    storage.name_to_tensor_data[name] = attr.t.raw_data
    attr.t.ClearField("raw_data")
    entry = attr.t.external_data.add()
    entry.key, entry.value = "location", name
    attr.t.data_location = TensorProto.EXTERNAL
    storage.node_to_modified_value_attr[node] = attr
    return attr


def _external_tensors(proto):
    """Every TensorProto of the graph whose data is external: initializers and Constant nodes."""
    from onnx import TensorProto

    tensors = list(proto.graph.initializer)
    for node in proto.graph.node:
        tensors += [a.t for a in node.attribute if a.HasField("t")]
    return [t for t in tensors if t.data_location == TensorProto.EXTERNAL]


def _write_external_data(proto, storage, data_path):
    """Writes the tensors tf2onnx set aside into one file, `data_path`, each at an aligned
    offset, and points each tensor at it by a path relative to model.onnx; each tensor's bytes
    are dropped once written."""
    data = storage.name_to_tensor_data
    with open(data_path, "wb") as out:
        for tensor in _external_tensors(proto):
            fields = {e.key: e.value for e in tensor.external_data}
            raw = data.pop(fields["location"])
            offset = -(-out.tell() // _DATA_ALIGNMENT) * _DATA_ALIGNMENT
            out.seek(offset)
            out.write(raw)
            del tensor.external_data[:]
            for key, value in (("location", os.path.basename(data_path)),
                               ("offset", str(offset)), ("length", str(len(raw)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
    if data:
        raise ExportError(f"internal: tf2onnx set aside {len(data)} tensors that the ONNX graph "
                          f"does not use; the export would lose them")


def _inline_external_data(proto, storage):
    """Puts the tensors tf2onnx set aside back into the graph: a model that fits one file."""
    from onnx import TensorProto

    data = storage.name_to_tensor_data
    for tensor in _external_tensors(proto):
        location = next(e.value for e in tensor.external_data if e.key == "location")
        tensor.raw_data = data.pop(location)
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT


def _patch_numpy_names():
    # tf2onnx 1.17's large-model path still calls numpy<2's np.product and np.object.
    if not hasattr(np, "product"):
        np.product = np.prod


def write_onnx(graph, path, metadata, large=None):
    """Converts `graph` (an ExportGraph) to an ONNX model at `path` with `metadata` as its
    metadata_props; returns the names of its outputs. large: write the weights to
    EXTERNAL_DATA_FILE beside `path` (default: when layout() says so)."""
    from unittest import mock

    import onnx
    import tf2onnx
    import tf2onnx.optimizer
    from keras.src.export.tf2onnx_lib import patch_tf2onnx
    from tf2onnx.graph import Node

    from simclrv2.export.onnx_graph import keep_batch_in_reshapes

    if large is None:
        large = layout(graph.model.simclr_config) == "external data"
    patch_tf2onnx()  # tf2onnx 1.17 still uses numpy<2 names; Keras ships this fix
    _patch_numpy_names()
    fast_optimize = _optimize_without_proto_updates(tf2onnx.optimizer.optimize_graph)
    with mock.patch.dict(os.environ, dict([TF2ONNX_CATCH_ERRORS])), warnings.catch_warnings(), \
            mock.patch.object(tf2onnx.optimizer, "optimize_graph", fast_optimize), \
            mock.patch.object(Node, "get_value_attr", _moving_value_attr):
        warnings.simplefilter("ignore", FutureWarning)
        # tf2onnx's large-model path for every model: its other path runs TensorFlow's grappler
        # over a frozen graph holding every weight, which held many copies of them at once
        # (docs/export.md, memory); onnxruntime's own graph optimisations follow either way.
        proto, storage = tf2onnx.convert.from_function(
            onnx_function(graph), input_signature=[graph.images_spec], opset=ONNX_OPSET,
            large_model=True)
    # tf2onnx's graphs hold reference cycles, each with a copy of the weights: collected now,
    # before the protobuf is checked and serialised beside them.
    process_memory.release()
    # tf2onnx names the batch dimension after the TF tensor (unk__N); a plain name documents it.
    for value in list(proto.graph.input) + list(proto.graph.output):
        dim = value.type.tensor_type.shape.dim
        if dim and not dim[0].HasField("dim_value"):
            dim[0].dim_param = "batch"
    keep_batch_in_reshapes(proto)  # after naming the batch: it carries that name through
    onnx.helper.set_model_props(proto, {k: str(v) for k, v in metadata.items()})
    if not large:
        _inline_external_data(proto, storage)
        del storage
        onnx.checker.check_model(proto)
        onnx.save(proto, str(path))
        return [o.name for o in proto.graph.output]
    _write_external_data(proto, storage, os.path.join(os.path.dirname(str(path)),
                                                      EXTERNAL_DATA_FILE))
    del storage
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))  # by path: the checker then reads the external data
    return [o.name for o in proto.graph.output]


def onnx_session_options(threads=None):
    """onnxruntime.SessionOptions for the exported models (what the verification, the benchmark
    and docs/export.md use): every graph optimisation, `threads` intra-op threads (default: all
    cores) and one inter-op thread with sequential execution, since the graph is one chain of
    convolutions."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    return options


def run_onnx(onnx_path, images):
    """{output name: array} of the ONNX model on `images` (what verification compares)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), onnx_session_options(),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"images": images})))
