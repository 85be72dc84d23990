"""OpenVINO int8: NNCF's post-training quantization of the export's OpenVINO model, calibrated on
the same images as the onnxruntime int8 model and kept only when it passes the same gate
(int8_check.py) against the float model, run as deployed: at OpenVINO's default precision."""

from __future__ import annotations

import pathlib

from simclrv2.export import openvino
from simclrv2.export.int8_check import check_int8


def quantize_openvino_int8(float_xml, out_xml, images, reference_logits, max_drop_points) -> dict:
    """Writes `out_xml` (+ .bin) from the float OpenVINO model `float_xml`, calibrated on
    `images.calibration` (an int8.CalibrationSet) and checked on `images.check` against
    `reference_logits` (the float model's); config.json's "openvino" "int8" record. Raises
    QuantizationError (int8_check) past `max_drop_points`; the caller's staging directory is
    then removed with everything in it."""
    import nncf
    import openvino as ov

    out_xml = pathlib.Path(out_xml)
    model = ov.Core().read_model(str(float_xml))
    calibration = images.calibration
    # One image per calibration item: NNCF collects its statistics per item.
    dataset = nncf.Dataset(list(range(len(calibration))),
                           lambda i: calibration[i:i + 1])
    quantized = nncf.quantize(model, dataset, preset=nncf.QuantizationPreset.PERFORMANCE,
                              subset_size=len(calibration))
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    logits = openvino.run_compiled(openvino.compile_model(out_xml), images.check)[openvino.LOGITS]
    check = check_int8(reference_logits, logits, images.check_labels, max_drop_points,
                       "OpenVINO int8 model")
    return {"files": [f"{openvino.DIRECTORY}/{out_xml.name}",
                      f"{openvino.DIRECTORY}/{out_xml.stem}.bin"],
            "quantizer": f"NNCF {nncf.__version__} post-training quantization (nncf.quantize)",
            "preset": "performance (symmetric weights and activations)",
            "weights": "int8 per channel", "activations": "8-bit per tensor", **check}
