"""The accuracy gate every int8 model of an export passes (onnxruntime, OpenVINO, LiteRT): the
same figures, the same threshold, the same refusal.

Parity to 1e-4 means nothing for an 8-bit model, so the gate is what a deployment cares about:
on the check images (held apart from the calibration images), how often the int8 model's top
class agrees with the float model's and, where the images carry the model's own labels, the
difference of their top-1 accuracies; without labels the disagreement, which bounds the drop,
is held to the same limit.
"""

from __future__ import annotations

import numpy as np

from simclrv2.export.errors import QuantizationError


def check_int8(reference_logits, quantized_logits, labels, max_drop_points, model_name) -> dict:
    """The check's figures (config.json's int8 record); raises QuantizationError when the top-1
    drop (labels) or the disagreement with the float model (no labels) exceeds
    `max_drop_points`. `model_name` says which int8 model, in the refusal."""
    reference = np.asarray(reference_logits).argmax(1)
    quantized = np.asarray(quantized_logits).argmax(1)
    check = {"agreement_with_float": float(np.mean(reference == quantized)),
             "check_examples": len(reference)}
    if labels is not None:
        float_top1 = float(np.mean(reference == labels))
        int8_top1 = float(np.mean(quantized == labels))
        check.update(float_top1=float_top1, int8_top1=int8_top1,
                     top1_drop_points=round(100 * (float_top1 - int8_top1), 3))
        measured, what = check["top1_drop_points"], "top-1 drop"
    else:
        check["disagreement_points"] = round(100 * (1 - check["agreement_with_float"]), 3)
        measured, what = check["disagreement_points"], "disagreement with the float model"
    if measured > max_drop_points:
        raise QuantizationError(
            f"the {model_name}'s {what} is {measured:.2f} points on {len(reference)} images, over "
            f"the allowed {max_drop_points:g}; nothing was written. Calibrate on images closer to "
            f"what it will see, or allow more (max_int8_drop / --max-int8-drop)")
    return {"max_drop_points": max_drop_points, "gate": what, **check}
