"""The ONNX format: model.onnx converted by tf2onnx from one function with every output, with
the batch dimension named and kept symbolic (onnx_graph.py), and how onnxruntime runs it."""

from __future__ import annotations

import os
import warnings

import numpy as np

from simclrv2.export.errors import ExportError

FILE = "model.onnx"
ONNX_OPSET = 17
ONNX_MAX_BYTES = 2 * 1024 ** 3 - 64 * 1024 ** 2  # protobuf's 2 GiB limit, with room for the graph

# tf2onnx's switch for its optimizer loop: unset, it deep-copies the whole graph, weights
# included, before each optimizer it applies (in every round), so that a failing optimizer can
# be skipped. tf2onnx 1.17 turns the copies off when the variable is set at all (it compares the
# variable's name, not its value, to "TRUE"); "FALSE" also says so to a tf2onnx that reads the
# value. An optimizer that fails then fails the export with tf2onnx's error, instead of leaving
# a graph it did not finish optimizing. docs/export.md has what it saves.
TF2ONNX_CATCH_ERRORS = ("TF2ONNX_CATCH_ERRORS", "FALSE")


def check_fits(model):
    """Refuses a model whose float32 weights exceed what one ONNX file can hold."""
    weight_bytes = sum(int(np.prod(v.shape)) * 4 for v in model.weights)
    if weight_bytes > ONNX_MAX_BYTES:
        raise ExportError(f"{model.simclr_config.name} has {weight_bytes / 1e9:.1f} GB of "
                          "weights, over the 2 GB limit of a single-file ONNX model; export "
                          "with --formats savedmodel,keras")


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


def write_onnx(graph, path, metadata):
    """Converts `graph` (an ExportGraph) to an ONNX model at `path` with `metadata` as its
    metadata_props; returns the names of its outputs."""
    from unittest import mock

    import onnx
    import tf2onnx
    import tf2onnx.optimizer
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    from simclrv2.export.onnx_graph import keep_batch_in_reshapes

    patch_tf2onnx()  # tf2onnx 1.17 still uses numpy<2 names; Keras ships this fix
    fast_optimize = _optimize_without_proto_updates(tf2onnx.optimizer.optimize_graph)
    with mock.patch.dict(os.environ, dict([TF2ONNX_CATCH_ERRORS])), warnings.catch_warnings(), \
            mock.patch.object(tf2onnx.optimizer, "optimize_graph", fast_optimize):
        warnings.simplefilter("ignore", FutureWarning)
        proto, _ = tf2onnx.convert.from_function(
            onnx_function(graph), input_signature=[graph.images_spec], opset=ONNX_OPSET)
    # tf2onnx names the batch dimension after the TF tensor (unk__N); a plain name documents it.
    for value in list(proto.graph.input) + list(proto.graph.output):
        dim = value.type.tensor_type.shape.dim
        if dim and not dim[0].HasField("dim_value"):
            dim[0].dim_param = "batch"
    keep_batch_in_reshapes(proto)  # after naming the batch: it carries that name through
    onnx.helper.set_model_props(proto, {k: str(v) for k, v in metadata.items()})
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
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
