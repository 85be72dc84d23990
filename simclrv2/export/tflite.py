"""The TFLite format for LiteRT (phones, embedded): model.tflite, float32, converted by
TensorFlow's TFLite converter from the function model.onnx is made from (onnx.onnx_function), so
its one signature, `serving_default`, has model.onnx's input and outputs under the same names;
and how the LiteRT interpreter (package ai-edge-litert) runs it."""

from __future__ import annotations

import pathlib
import warnings

import numpy as np

from simclrv2.export.errors import ExportError

FILE = "model.tflite"
INT8_FILE = "model.int8.tflite"  # tflite_int8.py
SIGNATURE = "serving_default"
BATCH = 50
FLATBUFFER_MAX_BYTES = 2 * 1024 ** 3  # a .tflite file is one flatbuffer, 32-bit offsets


def check_fits(config):
    """Refuses an architecture (a ModelConfig) whose float32 weights exceed what one .tflite
    flatbuffer can hold, from its weight count alone (nothing needs to be loaded)."""
    from simclrv2.zoo.param_count import weight_bytes as count_weight_bytes

    weight_bytes = count_weight_bytes(config)
    if weight_bytes >= FLATBUFFER_MAX_BYTES:
        raise ExportError(f"{config.name} has {weight_bytes / 1e9:.1f} GB of "
                          "weights, over the 2 GB a .tflite file can hold; leave tflite out "
                          "of --formats")


def converter(graph):
    """A tf.lite.TFLiteConverter of `graph` (an ExportGraph): one signature with every output."""
    import tensorflow as tf

    from simclrv2.export.onnx import onnx_function

    function = onnx_function(graph)
    # The converter freezes the variables the function captures; it needs the object that
    # holds them, and gives the function its signature (without it the file has none).
    holder = tf.Module()
    holder.weights = graph.trainable + graph.non_trainable
    holder.function = function
    return tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], holder)


def write_tflite(graph, path) -> dict:
    """Writes the float32 TFLite model of `graph` to `path`; config.json's "tflite" record."""
    import ai_edge_litert

    path = pathlib.Path(path)
    path.write_bytes(converter(graph).convert())
    runner = interpreter(path).get_signature_runner(SIGNATURE)
    details = runner.get_output_details()
    return {"file": path.name, "signature": SIGNATURE, "weights": "float32",
            "input": list(runner.get_input_details())[0], "outputs": sorted(details),
            "converter": "tf.lite.TFLiteConverter (TensorFlow)",
            "runtime": f"LiteRT (ai-edge-litert {ai_edge_litert.__version__})"}


def interpreter(path, threads=None):
    """LiteRT's interpreter of `path`, tensors allocated; `threads` None uses every core."""
    import os

    from ai_edge_litert.interpreter import Interpreter

    model = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count() or 1)
    model.allocate_tensors()
    return model


def run_runner(runner, images, batch=BATCH):
    """{output name: array} of a LiteRT signature runner on `images`, `batch` images per call."""
    chunks = {}
    for start in range(0, len(images), batch):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            out = runner(images=np.ascontiguousarray(images[start:start + batch]))
        for name, value in out.items():
            chunks.setdefault(name, []).append(np.asarray(value, np.float32))
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def run_tflite(path, images):
    """{output name: array} of the TFLite model at `path` run by LiteRT (what verification
    compares)."""
    return run_runner(interpreter(path).get_signature_runner(SIGNATURE), images)
