"""The ONNX format: model.onnx with every output of the model, the batch dimension named and
kept symbolic (onnx_graph.py), and how onnxruntime runs it.

Written in two steps, so that the weights never pass through a converter's graphs:
1. `write_unoptimized`, while the Keras model is held: tf2onnx converts a function that takes
   every convolution and dense kernel as an input of its own (a graph of a few hundred
   kilobytes whatever the model's size), then each kernel becomes an initializer whose bytes are
   copied from its Keras variable, one at a time, into a data file beside the graph.
2. `optimize`, once the Keras model is let go (exporter.py): onnxruntime's hardware-independent
   graph optimisations (ORT_ENABLE_BASIC: constant folding, batch norm folded into the
   convolutions, transposes removed) read that model and write model.onnx, as the frozen-graph
   conversion made it (docs/export.md, "Models over 2 GB, and memory"), with the
   selective-kernel convolutions' channel slices made convolutions of their own (onnx_graph.py).

A model whose float32 weights exceed EXTERNAL_DATA_ABOVE (protobuf cannot serialise a message
over 2 GiB) is written as model.onnx holding the graph plus one file of weights beside it,
model.onnx.data, named relative to it (ONNX's external data: onnxruntime and OpenVINO read it,
and the directory can be moved as a whole).
"""

from __future__ import annotations

import os
import pathlib
import warnings

import numpy as np

from simclrv2 import process_memory
from simclrv2.export.errors import ExportError

FILE = "model.onnx"
OUTPUT_NAMES = ("final_avg_pool", "logits", "probabilities", "proj_head_output")  # onnx_function
EXTERNAL_DATA_FILE = FILE + ".data"
UNOPTIMIZED_FILE = "model.unoptimized.onnx"  # step 1's model, removed by step 2
ONNX_OPSET = 17
ONNX_MAX_BYTES = 2 * 1024 ** 3 - 64 * 1024 ** 2  # protobuf's 2 GiB limit, with room for the graph
# Weights above this many bytes go to EXTERNAL_DATA_FILE; the environment variable lowers it
# (a test forces the large-model layout on a small model with it).
EXTERNAL_DATA_ABOVE = ONNX_MAX_BYTES
EXTERNAL_DATA_ENV = "SIMCLRV2_ONNX_EXTERNAL_DATA_ABOVE"
_DATA_ALIGNMENT = 4096  # each tensor's offset, so that a runtime may map it directly
_WEIGHT_PREFIX = "simclrv2_weight_"  # step 1's inputs: the i-th kernel is _WEIGHT_PREFIX + i
_WEIGHT_INPUT = _WEIGHT_PREFIX + "{}"


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


def _whole_model(graph):
    """One Keras model of `graph`'s network with every output ONNX has (ONNX Runtime would not
    merge the backbones of parts)."""
    import keras

    model = graph.model
    keys = ["final_avg_pool"] + ["proj_head_output"] * graph.has_projection + [
        "logits_sup"] * graph.has_logits
    return keras.Model(model.inputs, {k: model.output[k] for k in keys}, name="export_onnx")


def _named_outputs(graph, out):
    import tensorflow as tf

    result = {"final_avg_pool": out["final_avg_pool"]}
    if graph.has_logits:
        result.update(logits=out["logits_sup"], probabilities=tf.nn.softmax(out["logits_sup"]))
    if graph.has_projection:
        result["proj_head_output"] = out["proj_head_output"]
    return result


def onnx_function(graph):
    """One tf.function of `graph` (an ExportGraph) returning every ONNX output: final_avg_pool,
    logits and probabilities with a supervised head, proj_head_output with a projection head
    (the TFLite converter's input: the weights are captured)."""
    import tensorflow as tf

    whole = _whole_model(graph)

    @tf.function(input_signature=[graph.images_spec], autograph=False)
    def onnx_outputs(images):
        return _named_outputs(graph, graph.run(whole, images))

    return onnx_outputs


def weights_as_inputs(graph):
    """(function, input signature, variables): `onnx_function`'s outputs computed from the
    images and from the model's kernels (its convolution and dense weights: all but a sliver of
    its bytes), each an input of its own; `variables[i]` is the Keras variable of input i + 1.
    The small weights (batch norm's, biases) stay constants, so that the converter folds batch
    norm and moves the layout transposes out of the graph as it does for a frozen model."""
    import tensorflow as tf

    whole = _whole_model(graph)
    variables = [v for v in whole.trainable_variables + whole.non_trainable_variables
                 if len(v.shape) >= 2]
    signature = [graph.images_spec] + [
        tf.TensorSpec(v.shape, v.dtype, name=_WEIGHT_INPUT.format(i))
        for i, v in enumerate(variables)]

    @tf.function(input_signature=signature, autograph=False)
    def onnx_outputs(images, *kernels):
        replaced = {id(v): kernel for v, kernel in zip(variables, kernels)}
        return _named_outputs(graph, graph.run(whole, images, replaced))

    return onnx_outputs, signature, variables


def _patch_numpy_names():
    # tf2onnx 1.17 still calls numpy<2's np.product and np.object; Keras ships one fix.
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    patch_tf2onnx()
    if not hasattr(np, "product"):
        np.product = np.prod


def _external(tensor, location, offset, length):
    from onnx import TensorProto

    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _weights_as_initializers(proto, variables, data_path):
    """Turns the weight inputs of `proto` into initializers stored in `data_path`, each copied
    from its Keras variable in turn (one weight in memory at a time) at an aligned offset."""
    from onnx import TensorProto

    images = [v for v in proto.graph.input if not v.name.startswith(_WEIGHT_PREFIX)]
    used = {name for node in proto.graph.node for name in node.input}
    with open(data_path, "wb") as out:
        for i, variable in enumerate(variables):
            name = _WEIGHT_INPUT.format(i)
            if name not in used:
                continue
            value = np.ascontiguousarray(variable.numpy(), dtype=np.float32)
            offset = -(-out.tell() // _DATA_ALIGNMENT) * _DATA_ALIGNMENT
            out.seek(offset)
            out.write(value.tobytes())
            tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=value.shape)
            _external(tensor, os.path.basename(data_path), offset, value.nbytes)
            proto.graph.initializer.append(tensor)
            del value
    del proto.graph.input[:]
    proto.graph.input.extend(images)


def _check_free_disk(path, weight_bytes):
    """Step 2 writes the optimised weights while step 1's are still on disk: refuses, before
    anything is written, a disk that cannot hold both."""
    import shutil

    folder = pathlib.Path(path).parent
    free = shutil.disk_usage(folder).free
    if free < 2.05 * weight_bytes:
        raise ExportError(f"ONNX export needs about {2 * weight_bytes / 1e9:.1f} GB of free disk "
                          f"in {folder.parent} (the converted weights and the optimised ones), "
                          f"{free / 1e9:.1f} GB free; free some space or export to an --out on "
                          f"another disk")


def write_unoptimized(graph, path, metadata):
    """Step 1: converts `graph` (an ExportGraph) with its kernels as inputs and writes the model
    to `path`, the kernels, read from the Keras variables, in `path`.data; `metadata` becomes
    its metadata_props. Returns the names of its outputs."""
    import onnx
    import tf2onnx

    from simclrv2.export.onnx_graph import keep_batch_in_reshapes

    from simclrv2.zoo.param_count import weight_bytes

    _check_free_disk(path, weight_bytes(graph.model.simclr_config))
    function, signature, variables = weights_as_inputs(graph)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        _patch_numpy_names()
        proto, _ = tf2onnx.convert.from_function(function, input_signature=signature,
                                                 opset=ONNX_OPSET)
    del function
    process_memory.release()  # tf2onnx's graphs hold reference cycles
    # tf2onnx names the batch dimension after the TF tensor (unk__N); a plain name documents it.
    for value in list(proto.graph.input) + list(proto.graph.output):
        dim = value.type.tensor_type.shape.dim
        if dim and not dim[0].HasField("dim_value") and not value.name.startswith(
                _WEIGHT_PREFIX):
            dim[0].dim_param = "batch"
    keep_batch_in_reshapes(proto)  # after naming the batch: it carries that name through
    onnx.helper.set_model_props(proto, {k: str(v) for k, v in metadata.items()})
    path = pathlib.Path(path)
    _weights_as_initializers(proto, variables, path.with_name(path.name + ".data"))
    onnx.save(proto, str(path))
    return [o.name for o in proto.graph.output]


def _used_domains(proto):
    return {node.domain for node in proto.graph.node} | {""}


def optimize(unoptimized, path, large):
    """Step 2: onnxruntime's basic graph optimisations of the model `write_unoptimized` wrote,
    saved as `path` (with EXTERNAL_DATA_FILE beside it when `large`, else one file); the
    unoptimized model and its data are removed. Returns the outputs' names."""
    import onnx
    import onnxruntime as ort

    from simclrv2.export.onnx_graph import split_sliced_convolutions

    unoptimized, path = pathlib.Path(unoptimized), pathlib.Path(path)
    data = path.with_name(EXTERNAL_DATA_FILE)
    staged = path.with_name(path.name + ".optimizing")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(staged)
    # Written beside the staged graph (the name is relative to it), one file whatever the
    # layout: a single-file model takes its weights back below.
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", data.name)
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    options.add_session_config_entry("session.disable_prepacking", "1")  # it never runs
    try:
        ort.InferenceSession(str(unoptimized), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's errors have no common base class
        raise ExportError(f"onnxruntime could not optimise the converted model: {error}") \
            from None
    finally:
        unoptimized.unlink(missing_ok=True)
        unoptimized.with_name(unoptimized.name + ".data").unlink(missing_ok=True)
        process_memory.release()
    proto = onnx.load(str(staged), load_external_data=False)
    # onnxruntime imports every domain it knows; the graph uses the standard one only.
    kept = [o for o in proto.opset_import if o.domain in _used_domains(proto)]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    split_sliced_convolutions(proto)
    if large:
        onnx.save(proto, str(path))
    else:
        onnx.load_external_data_for_model(proto, str(path.parent))
        onnx.save(proto, str(path))
        data.unlink()
    staged.unlink()
    names = [o.name for o in proto.graph.output]
    del proto
    process_memory.release()
    onnx.checker.check_model(str(path))  # by path: the checker then reads the external data
    return names


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
