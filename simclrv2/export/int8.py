"""INT8 ONNX: onnxruntime's static QDQ quantization of an export's model.onnx, calibrated on images
the user names, and kept only when its top-1 stays within a threshold of the float model's
(int8_check.py, the gate every int8 model of an export passes). The calibration and check images
(`calibration_set`) are the same for the OpenVINO and LiteRT int8 models.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Optional

import numpy as np

from simclrv2.export.errors import ExportError, QuantizationError
from simclrv2.export.int8_check import check_int8
from simclrv2.export.options import CALIBRATION_EXAMPLES, CHECK_EXAMPLES, MAX_INT8_DROP

INT8_FILE = "model.int8.onnx"
MIN_CHECK_EXAMPLES = 50
BATCH = 50
SEED = 0
LOGITS = "logits"  # the ONNX output the check reads (onnx.onnx_function)
# x86 flags of int8 dot-product instructions, which onnxruntime's int8 kernels need to run
# faster than float32 (docs/export.md has the figures with and without them).
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# Activations are uint8 and weights int8 (U8S8): the form onnxruntime's x86 int8 kernels run
# fast, since VNNI multiplies unsigned by signed bytes (docs/export.md compares S8S8).


@dataclasses.dataclass
class CalibrationSet:
    """Images (float32 NHWC in [0, 1]) to calibrate on, and disjoint ones to check on."""

    calibration: np.ndarray
    check: np.ndarray
    check_labels: Optional[np.ndarray]
    description: dict


def _as_images(array, image_size, what):
    images = np.asarray(array, dtype=np.float32)
    if images.ndim != 4 or images.shape[1:] != (image_size, image_size, 3):
        raise ExportError(f"{what} must be float images [N, {image_size}, {image_size}, 3] in "
                          f"[0, 1] (the export's input), got shape {list(images.shape)}")
    return images


def _read(source, indices, image_size):
    """float32 [N, S, S, 3] (the export's evaluation preprocessing) and int64 labels of
    `indices` of a simclrv2.data source; a stream source gives its first len(indices)."""
    import simclrv2.data as data

    wanted = len(indices)
    if source.random_access:
        source = source.subset(np.sort(indices))
    images, labels = [], []
    for x, y in data.eval_dataset(source, BATCH, image_size=image_size).take(
            -(-wanted // BATCH)):
        images.append(x.numpy())
        labels.append(y.numpy())
    return (np.concatenate(images)[:wanted].astype(np.float32),
            np.concatenate(labels)[:wanted].astype(np.int64))


def _load_named(name, data_dir):
    """(pool to draw from, labeled test split or None) of a dataset name or an image folder."""
    import simclrv2.data as data

    try:
        pool = data.load_labeled(name, "train", data_dir)
    except ValueError as labeled_error:
        try:  # a folder of images without class folders: calibration and agreement only
            pool = data.load_unlabeled(name, None, data_dir)
        except ValueError:
            raise ExportError(f"calibration images {name!r}: {labeled_error}") from None
    try:
        test = data.load_labeled(name, "test", data_dir)
    except ValueError:
        test = None  # no test split: the check images come from the pool, disjoint
    return pool, test


def calibration_set(source, image_size, num_classes, calibration_examples=CALIBRATION_EXAMPLES,
                    check_examples=CHECK_EXAMPLES, data_dir=None, seed=SEED) -> CalibrationSet:
    """Images to calibrate and check on, from:

    - a dataset name (`fashion_mnist`, a tfds name) or an image folder (`folder:/path` or a path):
      calibration images drawn at random from its training split; check images from its test
      split when it has one, else from the rest of the training split;
    - an array of images [N, S, S, 3], or a tuple (images, labels): the first
      `calibration_examples` calibrate, the rest (up to `check_examples`) check.

    Labels are used when the source's class count equals the model's; otherwise only the
    agreement with the float model is measured.
    """
    if calibration_examples < 1 or check_examples < MIN_CHECK_EXAMPLES:
        raise ExportError(f"calibration_examples must be >= 1 and check_examples >= "
                          f"{MIN_CHECK_EXAMPLES}, got {calibration_examples} and {check_examples}")
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        pool, test = _load_named(name, data_dir)
        rng = np.random.default_rng(seed)
        n = int(pool.num_examples)
        order = rng.permutation(n) if pool.random_access else np.arange(n)
        calib_index = order[:calibration_examples]
        if test is not None:
            m = int(test.num_examples)
            check_index = (rng.permutation(m) if test.random_access else np.arange(m))[
                :check_examples]
            check_from, check_split = test, "test"
        else:
            check_index = order[calibration_examples:calibration_examples + check_examples]
            check_from, check_split = pool, "train (disjoint from the calibration images)"
            if not pool.random_access:
                raise ExportError(f"{name} is read as a stream and has no test split; name a "
                                  f"dataset with a test split or an image folder")
        if len(check_index) < MIN_CHECK_EXAMPLES:
            raise ExportError(
                f"calibration images {name!r}: {n} images leave {len(check_index)} to check the "
                f"int8 model on after {len(calib_index)} calibration images; at least "
                f"{MIN_CHECK_EXAMPLES} are needed (give more images or lower "
                f"calibration_examples)")
        calibration, _ = _read(pool, calib_index, image_size)
        check, labels = _read(check_from, check_index, image_size)
        classes = check_from.num_classes
        description = {"source": name, "calibration_split": "train",
                       "check_split": check_split, "seed": seed}
    else:
        images, labels = (source if isinstance(source, tuple) else (source, None))
        images = _as_images(images, image_size, "calibration images")
        if len(images) < calibration_examples + MIN_CHECK_EXAMPLES:
            raise ExportError(f"{len(images)} calibration images are too few: the first "
                              f"{calibration_examples} calibrate and at least "
                              f"{MIN_CHECK_EXAMPLES} more are needed to check the int8 model")
        calibration = images[:calibration_examples]
        check = images[calibration_examples:calibration_examples + check_examples]
        if labels is not None:
            labels = np.asarray(labels, np.int64).reshape(-1)
            if len(labels) != len(images):
                raise ExportError(f"{len(labels)} labels for {len(images)} calibration images; "
                                  f"give one label per image")
            labels = labels[calibration_examples:calibration_examples + check_examples]
        classes = None if labels is None else num_classes
        description = {"source": "array", "calibration_split": f"first {len(calibration)}",
                       "check_split": "the images after those"}
    labelled = labels is not None and classes is not None and bool(np.all(labels >= 0))
    use_labels = labelled and classes == num_classes
    if not labelled:
        description["labels_not_used"] = "the images have no labels"
    elif not use_labels:
        description["labels_not_used"] = (f"the images have {classes} classes, the model "
                                          f"{num_classes}")
    description.update(calibration_examples=len(calibration), check_examples=len(check))
    return CalibrationSet(calibration, check, labels if use_labels else None, description)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol: feeds {"images": batch} until None."""

    def __init__(self, images):
        self._batches = iter([images[i:i + BATCH] for i in range(0, len(images), BATCH)])

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {"images": batch}


def _logits(onnx_path, images):
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run([LOGITS], {"images": images[i:i + BATCH]})[0]
                           for i in range(0, len(images), BATCH)])


def _into_one_file(path):
    """Rewrites the ONNX model at `path`, written with external data, as one file; returns its
    layout ("single file"), or leaves it as it is ("external data") when it cannot fit one."""
    import onnx

    from simclrv2.export.onnx import ONNX_MAX_BYTES

    model = onnx.load(str(path))  # reads the external data into the proto
    if model.ByteSize() > ONNX_MAX_BYTES:
        raise QuantizationError(f"the int8 model of {path.name} is {model.ByteSize() / 1e9:.1f} "
                                f"GB, over what one ONNX file holds; leave --quantize out")
    tmp = path.with_name(path.name + ".one")
    onnx.save(model, str(tmp))
    del model
    os.replace(tmp, path)
    return "single file"


def quantize_int8(float_onnx, out_path, images: CalibrationSet,
                  max_drop_points: float = MAX_INT8_DROP) -> dict:
    """Writes the int8 model to `out_path` and returns its check; raises QuantizationError (and
    removes `out_path`) when its top-1 drop (labels) or its disagreement with the float model
    (no labels: an upper bound of the drop) exceeds `max_drop_points`."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from simclrv2.export.onnx import EXTERNAL_DATA_FILE

    out_path = pathlib.Path(out_path)
    prepared = out_path.with_name(out_path.name + ".prepared")
    # A float model over 2 GB (its weights in model.onnx.data) is prepared and quantized with
    # external data too; its int8 weights, a quarter of the float ones, then fit one file again.
    large = pathlib.Path(float_onnx).with_name(EXTERNAL_DATA_FILE).exists()
    side_files = [prepared.with_name(prepared.name + ".data"),
                  out_path.with_name(out_path.name + ".data")]
    try:
        # Shape inference and graph optimisation first, as onnxruntime recommends: quantization
        # needs the shapes, and BN is folded into the convolutions before it is quantized.
        # ONNX's own shape inference covers these graphs (fixed sides, a free batch); the
        # symbolic pass would need sympy.
        quant_pre_process(str(float_onnx), str(prepared), skip_symbolic_shape=True,
                          save_as_external_data=large, all_tensors_to_one_file=large,
                          external_data_location=side_files[0].name if large else None)
        quantize_static(str(prepared), str(out_path), _Reader(images.calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        use_external_data_format=large)
        layout = _into_one_file(out_path) if large else "single file"
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    finally:
        prepared.unlink(missing_ok=True)
        for path in side_files:
            path.unlink(missing_ok=True)
    try:
        check = check_int8(_logits(float_onnx, images.check), _logits(out_path, images.check),
                           images.check_labels, max_drop_points, "int8 model")
    except QuantizationError:
        out_path.unlink(missing_ok=True)
        raise
    from simclrv2.precision import cpu_flags

    fast = [flag for flag in INT8_DOT_PRODUCT_FLAGS if flag in cpu_flags()]
    return {"file": out_path.name, "layout": layout, "quant_format": "QDQ",
            "weights": "int8 per channel",
            "exporting_cpu_int8_dot_product": fast,
            "activations": "uint8 per tensor", "calibration_method": "MinMax", **check}
