"""OpenVINO export: openvino/model.xml + .bin loads in OpenVINO with model.onnx's input and output
names, matches the Keras model to 1e-4 at float32, and its default precision (bfloat16 on a CPU
with bfloat16 instructions) is checked by top-1 agreement on the check images and recorded; the
NNCF int8 model passes the int8 gate; every refusal leaves nothing behind."""

import json
import re

import numpy as np
import openvino as ov
import pytest

from export_check_model import logits as _logits
from export_check_model import int8_refusal, spread_classifier, sure_images
from simclrv2.export import VerificationError, export_model
from simclrv2.export import openvino as openvino_format
from simclrv2.export import options as export_options
from simclrv2.export.cli import export_main
from simclrv2.export.errors import ExportError
from simclrv2.zoo.importer import RTOL, rel_diff

SIDE = 32
CALIBRATION, CHECK = 100, 200


@pytest.fixture(scope="module")
def model():
    return spread_classifier("r18_0.125x_sk0", SIDE, num_classes=10)


@pytest.fixture(scope="module")
def confident(model):
    """Images the model is sure about (see export_check_model) with its own top class as label:
    bfloat16's ~0.5% error cannot flip them, so the check must find full agreement."""
    return sure_images(model, CALIBRATION + CHECK, SIDE)


def _output_names(compiled_or_model):
    return [o.get_any_name() for o in compiled_or_model.outputs]


def test_openvino_model_has_the_onnx_names_matches_keras_and_records_its_precision(
        model, confident, tmp_path):
    import onnxruntime as ort

    report = export_model(model, tmp_path / "exp", formats="onnx,openvino",
                          calibration=confident, calibration_examples=CALIBRATION,
                          check_examples=CHECK)
    out = tmp_path / "exp"
    core = ov.Core()
    ir = core.read_model(str(out / "openvino" / "model.xml"))
    session = ort.InferenceSession(str(out / "model.onnx"))
    assert [i.get_any_name() for i in ir.inputs] == [i.name for i in session.get_inputs()]
    assert _output_names(ir) == [o.name for o in session.get_outputs()]
    assert report["openvino"]["outputs"] == _output_names(ir)

    images = np.random.default_rng(7).uniform(0, 1, (5, SIDE, SIDE, 3)).astype(np.float32)
    f32 = core.compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    keras_out = model(images, training=False)
    got = f32(images)
    assert rel_diff(got["logits"], np.asarray(keras_out["logits_sup"])) <= RTOL
    assert rel_diff(got["final_avg_pool"], np.asarray(keras_out["final_avg_pool"])) <= RTOL
    assert set(report["verification"]["openvino"]) == set(_output_names(ir))
    assert max(report["verification"]["openvino"].values()) <= RTOL

    # The default precision is what OpenVINO reports for this CPU, and its figures are the ones
    # a run at that precision gives on the check images.
    saved = json.loads((out / "config.json").read_text())
    default = saved["openvino"]["default_precision"]
    assert default["inference_precision"] == core.get_property(
        "CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    assert default["check_examples"] == CHECK and default["min_top1_agreement"] == 0.995
    check_images, labels = confident[0][CALIBRATION:], confident[1][CALIBRATION:]
    at_default = core.compile_model(ir, "CPU")(check_images)
    agreement = float(np.mean(at_default["logits"].argmax(1) == labels))
    assert default["top1_agreement"] == pytest.approx(agreement) and agreement >= 0.995
    assert default["max_relative_difference"]["logits"] == pytest.approx(
        rel_diff(at_default["logits"], _logits(model, check_images)), rel=1e-3, abs=1e-6)
    assert saved["openvino"]["check_images"]["check_examples"] == CHECK

    assert "openvino/model.bin" in (out / "SHA256SUMS").read_text()
    card = (out / "README.md").read_text()
    assert "| `openvino/model.xml` + `.bin` | " in card and " kB |" in card
    assert sorted(p.name for p in (out / "openvino").iterdir()) == ["model.bin", "model.xml"]


def test_openvino_alone_with_its_nncf_int8_model(model, confident, tmp_path):
    report = export_model(model, tmp_path / "exp", formats="openvino", quantize="int8",
                          calibration=confident, calibration_examples=CALIBRATION,
                          check_examples=CHECK, max_int8_drop=100.0)
    out = tmp_path / "exp"
    # model.onnx was written for OpenVINO to read and removed; only the OpenVINO files remain.
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "README.md", "SHA256SUMS", "config.json", "openvino/model.bin",
        "openvino/model.int8.bin", "openvino/model.int8.xml", "openvino/model.xml"]
    assert report["onnx"] is None and report["int8"] is None
    q = report["openvino"]["int8"]
    assert q["files"] == ["openvino/model.int8.xml", "openvino/model.int8.bin"]
    assert q["check_examples"] == CHECK and q["float_top1"] == 1.0
    assert q["top1_drop_points"] == pytest.approx(100 * (1.0 - q["int8_top1"]), abs=1e-3)
    assert q["calibration"]["calibration_examples"] == CALIBRATION

    core = ov.Core()
    int8_ir = core.read_model(str(out / "openvino" / "model.int8.xml"))
    assert [i.get_any_name() for i in int8_ir.inputs] == ["images"]
    assert _output_names(int8_ir) == report["openvino"]["outputs"]
    assert "FakeQuantize" in {op.get_type_name() for op in int8_ir.get_ops()}
    check_images, labels = confident[0][CALIBRATION:], confident[1][CALIBRATION:]
    logits = core.compile_model(int8_ir, "CPU")(check_images)["logits"]
    assert q["int8_top1"] == pytest.approx(float(np.mean(logits.argmax(1) == labels)))
    assert "openvino/model.int8.xml" in (out / "README.md").read_text()


def test_a_default_precision_below_the_threshold_is_refused_by_the_command(
        model, tmp_path, monkeypatch, capsys):
    path = tmp_path / "m.keras"
    model.save(path)
    monkeypatch.setattr(export_options, "MIN_RUNTIME_AGREEMENT", 1.01)  # never met
    code = export_main(["--model", str(path), "--out", str(tmp_path / "exp"),
                        "--formats", "openvino"])
    assert code == 1
    err = capsys.readouterr().err
    assert "OpenVINO at its default precision" in err and "nothing was written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]  # no export, no temporary


def test_an_openvino_model_off_at_float32_is_refused(model, tmp_path, monkeypatch):
    real = openvino_format.run_openvino

    def off(path, images, precision=openvino_format.F32):
        out = real(path, images, precision)
        out["logits"] = out["logits"] * 1.01
        return out

    monkeypatch.setattr(openvino_format, "run_openvino", off)
    with pytest.raises(VerificationError, match=r"openvino logits: 0\.01"):
        export_model(model, tmp_path / "exp", formats="openvino")
    assert list(tmp_path.iterdir()) == []


def test_an_openvino_int8_model_past_the_threshold_is_refused(model, tmp_path):
    message = int8_refusal(model, tmp_path / "exp", "openvino", SIDE)
    assert re.search(r"OpenVINO int8 model's top-1 drop is .* over the allowed 0.5", message)
    assert list(tmp_path.iterdir()) == []  # no export, no temporary folder


def test_a_missing_runtime_package_is_named_before_any_work(model, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "nncf" else find_spec(name, *a))
    with pytest.raises(ExportError, match="needs the nncf package, which is not installed"):
        export_model(model, tmp_path / "exp", formats="openvino", quantize="int8",
                     calibration=np.zeros((120, SIDE, SIDE, 3), np.float32))
    assert list(tmp_path.iterdir()) == []
