"""LiteRT int8: model.int8.tflite, the TFLite converter's full-integer quantization (every
operation int8, TFLITE_BUILTINS_INT8 only, so a runtime or accelerator without float kernels
runs all of it), calibrated on the same images as the onnxruntime int8 model and kept only when
it passes the same gate (int8_check.py). Its input and outputs stay float32 (a quantize and a
dequantize at the edges), so it takes the images model.tflite takes, under the same names."""

from __future__ import annotations

import pathlib
import warnings

from simclrv2.export import tflite
from simclrv2.export.int8_check import check_int8


def quantize_tflite_int8(graph, out_path, images, reference_logits, max_drop_points) -> dict:
    """Writes `out_path` from `graph` (an ExportGraph), calibrated on `images.calibration` (an
    int8.CalibrationSet) and checked with LiteRT on `images.check` against `reference_logits`
    (the float model's); config.json's "tflite" "int8" record. Raises QuantizationError
    (int8_check) past `max_drop_points`; the caller's staging directory is then removed with
    everything in it."""
    import tensorflow as tf

    out_path = pathlib.Path(out_path)
    calibration = images.calibration

    def representative_images():
        for start in range(0, len(calibration), tflite.BATCH):
            yield {"images": calibration[start:start + tflite.BATCH]}

    converter = tflite.converter(graph)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_images
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings():
        # The converter calibrates with tf.lite.Interpreter, which warns that it is deprecated.
        warnings.simplefilter("ignore", UserWarning)
        out_path.write_bytes(converter.convert())
    logits = tflite.run_tflite(out_path, images.check)["logits"]
    check = check_int8(reference_logits, logits, images.check_labels, max_drop_points,
                       "LiteRT int8 model")
    return {"file": out_path.name, "quantizer": "tf.lite.TFLiteConverter full-integer "
                                                "(TFLITE_BUILTINS_INT8)",
            "weights": "int8 per channel", "activations": "int8 per tensor",
            "interface": "float32 input and outputs", **check}
