"""The OpenVINO format: openvino/model.xml + model.bin, read by OpenVINO from the export's
model.onnx (so the input and outputs keep model.onnx's names), float32 weights; how OpenVINO
runs it, at float32 or at the runtime's default precision; and the check of that default
precision, which is bfloat16 on CPUs with bfloat16 instructions and cannot match to 1e-4.
"""

from __future__ import annotations

import pathlib

import numpy as np

from simclrv2.export.errors import VerificationError

DIRECTORY = "openvino"
FILE = "model.xml"          # with model.bin beside it
INT8_FILE = "model.int8.xml"  # with model.int8.bin (openvino_int8.py)
# When "onnx" is not among the formats, model.onnx is still written for OpenVINO to read, under
# this name in openvino/ (so that an export killed then leaves only export entries), and
# removed once read.
SOURCE_ONNX = "source.onnx"
DEVICE = "CPU"
F32 = "f32"
BATCH = 50
LOGITS = "logits"


def write_openvino(onnx_path, directory) -> dict:
    """Converts `onnx_path` to `directory`/model.xml + model.bin, keeping float32 weights;
    config.json's "openvino" record (before its checks are added)."""
    import openvino as ov

    directory = pathlib.Path(directory)
    directory.mkdir(exist_ok=True)
    model = ov.Core().read_model(str(onnx_path))
    # save_model halves the weights to float16 unless told not to; the f32 run could then not
    # match the Keras model to 1e-4.
    ov.save_model(model, str(directory / FILE), compress_to_fp16=False)
    return {"files": [f"{DIRECTORY}/{FILE}", f"{DIRECTORY}/{pathlib.Path(FILE).stem}.bin"],
            "converted_from": "model.onnx (openvino.Core.read_model)",
            "weights": "float32", "input": model.inputs[0].get_any_name(),
            "outputs": [output_name(o) for o in model.outputs],
            "openvino_version": ov.__version__.split("-")[0]}


def compile_model(path, precision=None, threads=None):
    """OpenVINO's compiled model of `path` on the CPU: `precision` None is the runtime's default
    (INFERENCE_PRECISION_HINT unset), "f32" forces float32; `threads` None uses every core. One
    stream with the latency hint: one request at a time runs on all the threads, as the other
    runtimes are called."""
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return ov.Core().compile_model(str(path), DEVICE, config)


def output_name(output):
    """The ONNX output name of an OpenVINO output. A tensor can carry several names (tf2onnx
    may name one tensor both as an output and as the node that made it), and get_any_name
    picks any of them."""
    from simclrv2.export.onnx import OUTPUT_NAMES

    named = sorted(set(output.get_names()) & set(OUTPUT_NAMES))
    return named[0] if named else output.get_any_name()


def inference_precision(compiled) -> str:
    """The precision `compiled` computes in, as OpenVINO reports it ("bf16", "f32", ...)."""
    return str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())


def run_compiled(compiled, images, batch=BATCH):
    """{output name: array} of `compiled` on `images`, `batch` images per call."""
    names = [output_name(o) for o in compiled.outputs]
    chunks = {name: [] for name in names}
    for start in range(0, len(images), batch):
        result = compiled(np.ascontiguousarray(images[start:start + batch]))
        for output, name in zip(compiled.outputs, names):
            chunks[name].append(np.asarray(result[output], np.float32))
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def run_openvino(path, images, precision=F32):
    """{output name: array} of the OpenVINO model at `path` (what verification compares)."""
    return run_compiled(compile_model(path, precision), images)


def check_default_precision(path, images, reference, min_agreement) -> dict:
    """config.json's "openvino" "default_precision": the model at `path` run at OpenVINO's
    default precision on the check `images`, against `reference` ({output: array}, the Keras
    model's on the same images): its top-1 agreement (with a supervised head) and the largest
    relative difference of each output. Raises VerificationError when the agreement is below
    `min_agreement`."""
    from simclrv2.zoo.importer import rel_diff

    compiled = compile_model(path)
    got = run_compiled(compiled, images)
    record = {"inference_precision": inference_precision(compiled),
              "check_examples": len(images),
              "max_relative_difference": {k: float(rel_diff(got[k], v))
                                          for k, v in reference.items() if k in got},
              "min_top1_agreement": min_agreement}
    if LOGITS not in reference:
        record["top1_agreement"] = None
        record["gate"] = "none: the model has no supervised head (differences recorded only)"
        return record
    agreement = float(np.mean(got[LOGITS].argmax(1) == reference[LOGITS].argmax(1)))
    record.update(top1_agreement=agreement, gate="top-1 agreement with the Keras model")
    if not agreement >= min_agreement:
        raise VerificationError(
            f"OpenVINO at its default precision ({record['inference_precision']}) agrees with "
            f"the Keras model's top class on {100 * agreement:.2f}% of {len(images)} images, "
            f"under the required {100 * min_agreement:g}%; nothing was written. Export without "
            f"openvino, or run it with INFERENCE_PRECISION_HINT f32")
    return record
