"""Every exported artifact against the Keras model it came from, on a probe batch: each
SavedModel signature as TF Serving calls it, each output of model.onnx (onnxruntime), of the
OpenVINO model run at float32 and of model.tflite (LiteRT), the reloaded .keras. An output
further than RTOL from the Keras model's fails the export before anything is written.

The Keras model's outputs are computed first (`expectations`), so that the export can let the
model go before it loads each artifact to check it (`verify`): a big model is then held once,
not twice."""

from __future__ import annotations

import warnings

import numpy as np

from simclrv2 import process_memory
from simclrv2.export import keras_file, onnx, openvino, saved_model, tflite
from simclrv2.export.errors import VerificationError
from simclrv2.export.signatures import preprocess_encoded
from simclrv2.zoo.importer import RTOL, rel_diff

PROBE_BATCH = 3  # not the batch of 1 or 2 that a fixed-batch bug could pass with
DISTILL_PROBE_TEMPERATURES = (0.5, 1.0, 4.0)
METRIC = "max |exported - keras| / max |keras| per output"


def _softmax(x, temperature=1.0):
    x = np.asarray(x, np.float64) / temperature
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def probe_inputs(image_size, seed=0):
    """(float images [B, S, S, 3], encoded PNG strings of other sizes, their decoded images)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 1.0, (PROBE_BATCH, image_size, image_size, 3)).astype(np.float32)
    # Non-square and larger than the model input, so the crop and the resize both run.
    shapes = [(image_size + 9, image_size + 3), (image_size, image_size + 17),
              (2 * image_size, image_size + 1)]
    encoded = [tf.io.encode_png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).numpy()
               for h, w in shapes]
    decoded = np.stack([preprocess_encoded(tf.constant(e), image_size).numpy() for e in encoded])
    return images, np.array(encoded, dtype=object), decoded


def _keras_outputs(model, images):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The structure of `inputs`")
        out = model(images, training=False)
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def reference_outputs(model, images, batch=50):
    """The Keras model's outputs on many images, `batch` at a time, under the names of
    model.onnx's outputs ("logits" for "logits_sup"): what the runtimes' checks compare with."""
    chunks = {}
    for start in range(0, len(images), batch):
        out = _keras_outputs(model, images[start:start + batch])
        for key in ("final_avg_pool", "proj_head_output", "logits_sup"):
            if key in out:
                chunks.setdefault("logits" if key == "logits_sup" else key, []).append(out[key])
    return {k: np.concatenate(v) for k, v in chunks.items()}


def expected_outputs(model, images, bytes_images, temperature, out=None):
    """{signature: {output: reference array}} from the Keras model itself (`out`: its outputs on
    `images`, when computed already)."""
    from simclrv2.zoo.resnet import BACKBONE_ENDPOINTS

    out = _keras_outputs(model, images) if out is None else out
    expected = {"features": {"final_avg_pool": out["final_avg_pool"]},
                "hidden": {k: out[k] for k in BACKBONE_ENDPOINTS if k in out}}
    if "proj_head_output" in out:
        expected["projection"] = {"proj_head_output": out["proj_head_output"]}
    if "logits_sup" in out:
        logits = out["logits_sup"]
        expected["serving_default"] = {"logits": logits, "probabilities": _softmax(logits)}
        expected["finetune"] = {"logits": logits}
        for t in sorted({*DISTILL_PROBE_TEMPERATURES, float(temperature)}):
            expected[f"distill[temperature={t:g}]"] = {"soft_targets": _softmax(logits, t)}
        from_bytes = _keras_outputs(model, bytes_images)["logits_sup"]
        expected["serving_bytes"] = {"logits": from_bytes, "probabilities": _softmax(from_bytes)}
    return expected


def _compare(got, expected, what):
    diffs, missing = {}, []
    for sig, outputs in expected.items():
        for key, ref in outputs.items():
            if key not in got.get(sig, {}):
                missing.append(f"{sig}/{key}")
                continue
            diffs[f"{sig}/{key}"] = rel_diff(got[sig][key], ref)
    if missing:
        raise VerificationError(f"the {what} lacks outputs {missing}; refusing to export")
    return diffs


class Expectations:
    """The probe inputs and the Keras model's outputs on them: all `verify` needs of the model."""

    def __init__(self, model, image_size, temperature, seed=0):
        self.images, self.encoded, bytes_images = probe_inputs(image_size, seed)
        self.keras = _keras_outputs(model, self.images)  # every endpoint, for the .keras file
        self.expected = expected_outputs(model, self.images, bytes_images, temperature,
                                         self.keras)
        self.temperatures = sorted({*DISTILL_PROBE_TEMPERATURES, float(temperature)})


def verify(directory, formats, expectations: Expectations) -> dict:
    """config.json's "verification": the relative difference of every output of every format
    written in `directory` from the Keras model's (`expectations`); raises VerificationError
    when one exceeds RTOL."""
    images, expected = expectations.images, expectations.expected
    figures = {}
    if "savedmodel" in formats:
        got = saved_model.run_saved_model(directory / saved_model.DIRECTORY, images,
                                          expectations.encoded, expectations.temperatures)
        figures["saved_model"] = _compare(got, expected, "SavedModel")
        del got
        process_memory.release()  # the loaded SavedModel's copy of the weights
    # model.onnx, the OpenVINO model and model.tflite share one set of outputs and names.
    flat = {**expected.get("serving_default", {}), **expected["features"],
            **expected.get("projection", {})}
    runners = {"onnx": ("ONNX model", lambda: onnx.run_onnx(directory / onnx.FILE, images)),
               "openvino": ("OpenVINO model (f32)", lambda: openvino.run_openvino(
                   directory / openvino.DIRECTORY / openvino.FILE, images, openvino.F32)),
               "tflite": ("TFLite model (LiteRT)",
                          lambda: tflite.run_tflite(directory / tflite.FILE, images))}
    for fmt, (what, run) in runners.items():
        if fmt in formats:
            compared = _compare({fmt: run()}, {fmt: flat}, what)
            figures[fmt] = {k.split("/", 1)[1]: v for k, v in compared.items()}
            process_memory.release()
    if "keras" in formats:
        out = _keras_outputs(keras_file.read_keras_file(directory / keras_file.FILE), images)
        figures["keras"] = {k: rel_diff(out.get(k, np.zeros(0)), v)
                            for k, v in expectations.keras.items()}
        process_memory.release()
    bad = [(fmt, k, v) for fmt, d in figures.items() for k, v in d.items() if not v <= RTOL]
    if bad:
        listed = ", ".join(f"{fmt} {k}: {v:.3g}" for fmt, k, v in bad)
        raise VerificationError(
            f"exported outputs differ from the Keras model beyond {RTOL:g} (max abs difference / "
            f"max abs value on a probe batch of {PROBE_BATCH}): {listed}; nothing was written")
    worst = max((v for d in figures.values() for v in d.values()), default=0.0)
    return {"tolerance": RTOL, "probe_shape": list(images.shape), "metric": METRIC,
            "max_relative_difference": worst, **figures}
