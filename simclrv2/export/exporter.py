"""One self-describing, verified export directory: SavedModel, ONNX, .keras, and on request OpenVINO
and TFLite, of a SimCLRv2 model.

    from simclrv2.export import export_model
    report = export_model(model, "exports/r50_1x_sk1")     # or a .keras / run dir / SavedModel path

`export_model` checks its options (options.py) and the output directory (output_dir.py),
resolves the model (simclrv2.artifacts), writes each format into a temporary sibling of the
output directory (saved_model.py, onnx.py, openvino.py, tflite.py, keras_file.py), compares every
artifact with the Keras model on a probe batch (verification.py), checks OpenVINO's default
precision and quantizes to int8 (int8.py, openvino_int8.py, tflite_int8.py) on the check images,
adds config.json, README.md and SHA256SUMS (model_card.py), and only then renames the directory
into place. See docs/export.md.
"""

from __future__ import annotations

import datetime
import json
import os
import time

import numpy as np

from simclrv2 import precision as precision_lib
from simclrv2 import process_memory
from simclrv2.artifacts import EXPORT_FORMAT
from simclrv2.dir_lock import DirectoryLock, refuse_if_being_written
from simclrv2.export import (int8, keras_file, onnx, openvino, openvino_int8, output_dir,
                             saved_model, tflite, tflite_int8, verification)
from simclrv2.export import options as export_options
from simclrv2.export.errors import ExportError
from simclrv2.export.model_card import file_sizes, model_card, write_checksums
from simclrv2.export.options import (CALIBRATION_EXAMPLES, CHECK_EXAMPLES, DEFAULT_TEMPERATURE,
                                     FORMATS, MAX_INT8_DROP, ExportOptions)
from simclrv2.export.signatures import ExportGraph, preprocessing_description

FORMAT_VERSION = 1


def export_model(model, out_dir, formats=FORMATS, image_size=None, stage=None, provenance=None,
                 overwrite=False, temperature=DEFAULT_TEMPERATURE, quantize=None,
                 calibration=None, calibration_examples=CALIBRATION_EXAMPLES,
                 check_examples=CHECK_EXAMPLES, max_int8_drop=MAX_INT8_DROP,
                 data_dir=None, allow_running=False) -> dict:
    """Exports `model` to `out_dir`, verified; returns the report also written to config.json.

    model: a SimCLRv2Model, a .keras path, a recipe run directory, an export directory, an
      official SimCLRv2 SavedModel directory, or a registry name (with `stage`); see
      simclrv2.artifacts.resolve.
    formats: any of "savedmodel", "onnx", "keras" (the default), "openvino", "tflite" (list or
      comma-separated string). "openvino" is read from model.onnx (written for it, and
      removed, when "onnx" is not asked for) and run at float32 to RTOL, then at OpenVINO's
      default precision on the check images: refused (VerificationError) when its top-1
      agrees with the Keras model's on less than options.MIN_RUNTIME_AGREEMENT of them.
    image_size: the square input side of every artifact (default: the model's input size).
    stage: recorded in config.json; for a registry name, which released stage to load.
    provenance: extra fields recorded under config.json's "provenance".
    overwrite: replace out_dir when it is an earlier export (config.json with the
      "simclrv2-export" format marker, nothing else in it); any other non-empty out_dir is
      refused, with or without it.
    temperature: the distill signature's default, recorded in config.json (the signature takes
      it as an input).
    quantize="int8": an int8 model for each of onnx (model.int8.onnx, onnxruntime's static QDQ
      quantization), openvino (openvino/model.int8.xml, NNCF) and tflite (model.int8.tflite,
      full-integer) among the formats (one at least; needs a supervised head), calibrated on
      `calibration_examples` images of `calibration` (a dataset name, an image folder, or an
      array of images / a tuple (images, labels); see simclrv2.export.int8.calibration_set,
      `data_dir` as for the recipes) and checked on up to `check_examples` other ones: refused
      (QuantizationError, nothing written) when its top-1 drop, or without labels its
      disagreement with the float model, exceeds `max_int8_drop` points. Those check images
      are also OpenVINO's (without `calibration`, RUNTIME_CHECK_EXAMPLES random images).
    allow_running: export a run directory (or a file in one) that a training process is still
      writing, from its newest checkpoint; refused without (dir_lock.DirectoryInUseError).
    Raises ExportError for bad input, VerificationError when an artifact doesn't match; either
    way nothing is left at out_dir. One export at a time writes out_dir: a second one is
    refused (DirectoryInUseError) while the first holds `.NAME.lock` beside it.
    """
    options = ExportOptions(
        formats=formats, image_size=image_size, stage=stage, provenance=provenance,
        overwrite=overwrite, temperature=temperature, quantize=quantize, calibration=calibration,
        calibration_examples=calibration_examples, check_examples=check_examples,
        max_int8_drop=max_int8_drop, data_dir=data_dir)
    # Exports are float32 whatever precision the model was trained in (a bfloat16 run's
    # variables are float32 already; only its layers compute in bfloat16), and verified against
    # float32 Keras models: everything below is built under a float32 policy.
    started = time.monotonic()
    out = output_dir.check_out_dir(out_dir, options.overwrite, _existing_path(model))
    _check_sizes_before_loading(model, options)
    refuse_if_being_written(_existing_path(model), allow_running)
    # Held from here to the rename into place: a second export to the same out_dir is refused
    # before it loads anything, and could not replace the directory this one is placing.
    with DirectoryLock(out, beside=True, option="another --out"), \
            precision_lib.float32_policy(), process_memory.collecting_new_objects_only():
        return _export(model, out, options, started)


def _export(model, out, options: ExportOptions, started) -> dict:
    keras_model, source = resolve_model(model, options.stage, options.image_size)
    config = keras_model.simclr_config
    # An any-size model is exported at the size its stem was made for.
    image_size = int(options.image_size or config.input_shape[0] or
                     (32 if config.cifar_stem else 224))
    keras_model = _at_size(keras_model, image_size)
    # Between formats, what the last one freed goes back to the system before the next one
    # allocates (process_memory): each holds its own copy of the weights while it is written.
    process_memory.release()
    if "tflite" in options.formats:
        tflite.check_fits(config)
    check_images = _check_images(options, keras_model, image_size)
    graph = ExportGraph(keras_model, image_size, options.temperature)
    report = _report(keras_model, image_size, options, source, graph)

    # What the checks need of the model, computed now: the model (and every function on its
    # weights) is let go before the artifacts are loaded back to be checked.
    expectations = verification.Expectations(keras_model, image_size, options.temperature)
    reference = (None if check_images is None
                 else verification.reference_outputs(keras_model, check_images.check))

    out.parent.mkdir(parents=True, exist_ok=True)
    stale = output_dir.remove_stale_temporaries(out.parent)
    with output_dir.staging(out, options.overwrite) as tmp:
        if "savedmodel" in options.formats:
            saved_model.write_saved_model(graph, tmp / saved_model.DIRECTORY)
            report["signatures"] = graph.signature_report()
            report["skipped_signatures"] = dict(graph.skipped)
            process_memory.release()
        # ONNX's first step (the graph converted with the kernels as inputs, their bytes written
        # from the Keras variables): the optimised model.onnx and OpenVINO's model follow once
        # the Keras model is let go.
        unoptimized = _write_unoptimized_onnx(graph, tmp, options.formats, report)
        process_memory.release()
        if "tflite" in options.formats:
            report["tflite"] = tflite.write_tflite(graph, tmp / tflite.FILE)
            process_memory.release()
        if "keras" in options.formats:
            keras_file.write_keras_file(keras_model, tmp / keras_file.FILE)
        if options.quantize and "tflite" in options.formats:
            # The one int8 model made from the graph, not from a file: made while it is held.
            report["tflite"]["int8"] = tflite_int8.quantize_tflite_int8(
                graph, tmp / tflite.INT8_FILE, check_images, reference["logits"],
                float(options.max_int8_drop))
            report["tflite"]["int8"]["calibration"] = check_images.description
        del graph, keras_model  # held by the caller still, when it passed a model object
        process_memory.release()
        _optimize_onnx_and_openvino(unoptimized, tmp, options.formats, report)
        process_memory.release()
        report["verification"] = verification.verify(tmp, options.formats, expectations)
        _check_on_images(tmp, options, check_images, reference, report)
        report["exported_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds")
        report["export_wall_s"] = round(time.monotonic() - started, 2)
        (tmp / "config.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(report, file_sizes(tmp)))
        write_checksums(tmp)
    report["out_dir"] = str(out)
    report["removed_stale"] = stale
    report["files"] = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    return report


def _check_sizes_before_loading(model, options):
    """The size refusals, decided from the architecture's weight count before any weight is
    loaded (seconds, where loading r152_3x_sk1 takes a minute); where the architecture cannot be
    read cheaply (a registry name), _export checks again once the model is loaded."""
    from simclrv2.artifacts import peek_config

    if "tflite" in options.formats:
        config = peek_config(model)
        if config is not None:
            tflite.check_fits(config)


def resolve_model(model, stage=None, image_size=None):
    """(SimCLRv2Model, {"source", "source_kind", "stage", "provenance"}) of what `model` names,
    by simclrv2.artifacts.resolve; refuses what holds no Keras model to export."""
    from simclrv2.artifacts import ArtifactError, resolve
    from simclrv2.zoo.model import SimCLRv2Model

    try:
        found = resolve(model, stage, image_size)
    except ArtifactError as error:
        raise ExportError(str(error)) from None
    if not isinstance(found.model, SimCLRv2Model):
        raise ExportError(f"{found.source} is the saved_model/ of a simclrv2 export, which holds "
                          f"no Keras model to export again; export the model.keras it came "
                          f"from, or export with --formats keras too")
    return found.model, {"source": found.source, "source_kind": found.kind, "stage": found.stage,
                         "provenance": found.provenance}


def _existing_path(model):
    """The path `model` names when it is one that exists (so the output cannot contain it)."""
    if not isinstance(model, (str, os.PathLike)):
        return None
    path = os.path.expanduser(os.fspath(model))
    return path if os.path.exists(path) else None


def _at_size(model, image_size):
    """The model with a fixed square input of `image_size`, computing in float32 (a copy, under
    the caller's float32 policy, when it is not already that)."""
    import simclrv2.zoo as zoo

    config = model.simclr_config
    if (tuple(config.input_shape[:2]) == (image_size, image_size)
            and precision_lib.is_float32(model)):
        return model
    resized = zoo.build(config.replace(input_shape=(image_size, image_size, 3)))
    resized.set_weights(model.get_weights())
    return resized


def _check_images(options, model, image_size):
    """The images the int8 models are calibrated and checked on, and OpenVINO's default
    precision checked on, read before anything is exported so that bad ones fail fast: those
    of `calibration` when given, else for OpenVINO RUNTIME_CHECK_EXAMPLES random images; None
    when neither is needed."""
    config = model.simclr_config
    if options.quantize and not config.num_classes:
        raise ExportError(f"{config.name} has no supervised head: the int8 model is checked "
                          "by its top-1, so quantize a fine-tuned or distilled model")
    if options.calibration is not None and (options.quantize or "openvino" in options.formats):
        return int8.calibration_set(options.calibration, image_size, config.num_classes,
                                    options.calibration_examples, options.check_examples,
                                    data_dir=options.data_dir)
    if "openvino" not in options.formats:
        return None
    count = export_options.RUNTIME_CHECK_EXAMPLES
    rng = np.random.default_rng(int8.SEED)
    images = rng.uniform(0, 1, (count, image_size, image_size, 3)).astype(np.float32)
    return int8.CalibrationSet(
        calibration=images[:0], check=images, check_labels=None,
        description={"source": "random", "check_split": "uniform random images in [0, 1]",
                     "seed": int8.SEED, "calibration_examples": 0, "check_examples": count})


def _write_unoptimized_onnx(graph, tmp, formats, report):
    """ONNX's first step, when "onnx" or "openvino" is among the formats (OpenVINO reads the
    model.onnx): (the unoptimized model's path, config.json's "onnx" record), or None."""
    if "onnx" not in formats and "openvino" not in formats:
        return None
    path = tmp / onnx.UNOPTIMIZED_FILE
    return path, _write_onnx(graph, path, report)


def _optimize_onnx_and_openvino(unoptimized, tmp, formats, report):
    """model.onnx from the unoptimized model, and the OpenVINO model read from it (from a
    model.onnx written into openvino/ and removed there when "onnx" is not among the formats)."""
    if unoptimized is None:
        return
    path, record = unoptimized
    large = record["layout"] == "external data"
    if "onnx" not in formats:
        source = tmp / openvino.DIRECTORY / openvino.SOURCE_ONNX
        source.parent.mkdir()
        onnx.optimize(path, source, large)
        report["openvino"] = openvino.write_openvino(source, tmp / openvino.DIRECTORY)
        source.unlink()
        source.with_name(onnx.EXTERNAL_DATA_FILE).unlink(missing_ok=True)
        return
    report["onnx"] = {**record, "outputs": onnx.optimize(path, tmp / onnx.FILE, large)}
    if "openvino" in formats:
        report["openvino"] = openvino.write_openvino(tmp / onnx.FILE, tmp / openvino.DIRECTORY)


def _check_on_images(tmp, options, images, reference, report):
    """OpenVINO at its default precision, then the int8 models made from files, on the check
    images against the Keras model's outputs on them (`reference`); each adds its record to
    `report` or refuses the export. (The TFLite int8 model is made and checked before, from
    the graph.)"""
    report["int8"] = None
    if images is None:
        return
    formats = options.formats
    if "openvino" in formats:
        report["openvino"]["default_precision"] = openvino.check_default_precision(
            tmp / openvino.DIRECTORY / openvino.FILE, images.check, reference,
            export_options.MIN_RUNTIME_AGREEMENT)
        report["openvino"]["check_images"] = images.description
    if not options.quantize:
        return
    max_drop = float(options.max_int8_drop)
    if "onnx" in formats:
        report["int8"] = int8.quantize_int8(tmp / onnx.FILE, tmp / int8.INT8_FILE, images,
                                            max_drop)
        report["int8"]["calibration"] = images.description
    if "openvino" in formats:
        folder = tmp / openvino.DIRECTORY
        report["openvino"]["int8"] = openvino_int8.quantize_openvino_int8(
            folder / openvino.FILE, folder / openvino.INT8_FILE, images, reference["logits"],
            max_drop)
        report["openvino"]["int8"]["calibration"] = images.description


def _report(model, image_size, options, source, graph):
    """config.json's fields known before anything is written; the rest are filled as the
    formats are written and checked."""
    import simclrv2

    config = model.simclr_config
    report = {
        "format": EXPORT_FORMAT,
        "format_version": FORMAT_VERSION,
        "simclrv2_version": simclrv2.__version__,
        "architecture": config.name,
        "model_config": config.to_dict(),
        "stage": source["stage"],
        "classes": {"num_classes": config.num_classes, "names": None},
        "image_size": image_size,
        "input": {"name": "images", "dtype": "float32", "layout": "NHWC",
                  "shape": [None, image_size, image_size, 3], "range": [0.0, 1.0],
                  "description": "float32 RGB images in [0, 1], NHWC, no mean/std normalisation"},
        "preprocessing": preprocessing_description(image_size),
        "formats": list(options.formats),
        "signatures": {}, "skipped_signatures": {}, "onnx": None, "openvino": None,
        "tflite": None,
        "finetune_trainable_variables": graph.head_paths,
        "distill_default_temperature": float(options.temperature),
        "source": source["source"], "source_kind": source["source_kind"],
        "provenance": {**source["provenance"], **(options.provenance or {})},
    }
    if options.provenance and "class_names" in options.provenance:
        report["classes"]["names"] = list(options.provenance["class_names"])
    return report


def _write_onnx(graph, path, report):
    """Writes model.onnx with the export's facts as its metadata; config.json's "onnx"."""
    import simclrv2

    config = graph.model.simclr_config
    meta = {"architecture": config.name, "stage": report["stage"],
            "num_classes": config.num_classes or 0, "image_size": report["image_size"],
            "input_range": "[0, 1]", "input_layout": "NHWC float32 RGB",
            "preprocessing": report["preprocessing"]["eval"],
            "simclrv2_version": simclrv2.__version__}
    layout = onnx.layout(config)
    names = onnx.write_unoptimized(graph, path, meta)
    return {"file": onnx.FILE, "opset": onnx.ONNX_OPSET, "input": "images", "outputs": names,
            "metadata_props": meta, "layout": layout,
            "external_data": onnx.EXTERNAL_DATA_FILE if layout == "external data" else None}
