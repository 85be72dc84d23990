"""TFLite export for LiteRT: model.tflite loads in the LiteRT interpreter with one signature
carrying model.onnx's input and output names and matches the Keras model to 1e-4;
model.int8.tflite is integer throughout (float32 only at its input and outputs) and passes the
int8 gate; every refusal leaves nothing behind; the model card gives each file's size."""

import json
import re

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from export_check_model import int8_refusal, random_images, spread_classifier, sure_images
from simclrv2.export import VerificationError, export_model
from simclrv2.export import tflite as tflite_format
from simclrv2.zoo.importer import RTOL, rel_diff

SIDE = 32
CALIBRATION, CHECK = 100, 100


@pytest.fixture(scope="module")
def model():
    return spread_classifier("r18_0.125x_sk0", SIDE, num_classes=10)


def _runner(path):
    interpreter = Interpreter(model_path=str(path))
    return interpreter, interpreter.get_signature_runner("serving_default")


def test_tflite_model_has_the_onnx_names_and_matches_keras(model, tmp_path):
    import onnxruntime as ort

    report = export_model(model, tmp_path / "exp", formats="onnx,tflite")
    out = tmp_path / "exp"
    interpreter, runner = _runner(out / "model.tflite")
    assert list(interpreter.get_signature_list()) == ["serving_default"]
    session = ort.InferenceSession(str(out / "model.onnx"))
    assert list(runner.get_input_details()) == [i.name for i in session.get_inputs()]
    assert sorted(runner.get_output_details()) == sorted(o.name for o in session.get_outputs())
    assert report["tflite"]["outputs"] == sorted(runner.get_output_details())

    images = random_images(5, SIDE, seed=7)  # another batch than the probe's 3
    got = runner(images=images)
    keras_out = model(images, training=False)
    assert got["logits"].shape == (5, 10)
    assert rel_diff(got["logits"], np.asarray(keras_out["logits_sup"])) <= RTOL
    assert rel_diff(got["proj_head_output"], np.asarray(keras_out["proj_head_output"])) <= RTOL
    assert max(report["verification"]["tflite"].values()) <= RTOL

    card = (out / "README.md").read_text()
    size_kb = (out / "model.tflite").stat().st_size / 1e3
    assert f"| `model.tflite` | {size_kb:.1f} kB | TFLite float32" in card
    assert "model.tflite" in (out / "SHA256SUMS").read_text()


def test_full_integer_tflite_model_passes_the_int8_gate(model, tmp_path):
    images, labels = sure_images(model, CALIBRATION + CHECK, SIDE)
    report = export_model(model, tmp_path / "exp", formats="tflite", quantize="int8",
                          calibration=(images, labels), calibration_examples=CALIBRATION,
                          check_examples=CHECK, max_int8_drop=100.0)
    out = tmp_path / "exp"
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "SHA256SUMS", "config.json", "model.int8.tflite", "model.tflite"]
    q = json.loads((out / "config.json").read_text())["tflite"]["int8"]
    assert q["file"] == "model.int8.tflite" and q["check_examples"] == CHECK
    assert q["float_top1"] == 1.0
    assert q["top1_drop_points"] == pytest.approx(100 * (1.0 - q["int8_top1"]), abs=1e-3)

    interpreter, runner = _runner(out / "model.int8.tflite")
    assert sorted(runner.get_output_details()) == report["tflite"]["outputs"]
    got = runner(images=images[CALIBRATION:])["logits"]
    assert q["int8_top1"] == pytest.approx(float(np.mean(got.argmax(1) == labels[CALIBRATION:])))
    # Integer throughout: float32 only for the input and the four outputs at the edges.
    dtypes = [d["dtype"] for d in interpreter.get_tensor_details()]
    assert dtypes.count(np.float32) == 1 + len(report["tflite"]["outputs"])
    assert dtypes.count(np.int8) > 20
    float_size = (out / "model.tflite").stat().st_size
    assert (out / "model.int8.tflite").stat().st_size < float_size / 2
    assert "| `model.int8.tflite` | " in (out / "README.md").read_text()


def test_a_tflite_int8_model_past_the_threshold_is_refused(model, tmp_path):
    message = int8_refusal(model, tmp_path / "exp", "tflite", SIDE)
    assert re.search(r"LiteRT int8 model's top-1 drop is .* over the allowed 0.5", message)
    assert list(tmp_path.iterdir()) == []  # no export, no temporary folder


def test_a_tflite_model_off_the_keras_model_is_refused(model, tmp_path, monkeypatch):
    real = tflite_format.run_tflite

    def off(path, images):
        out = real(path, images)
        out["final_avg_pool"] = out["final_avg_pool"] + 0.01 * np.abs(out["final_avg_pool"]).max()
        return out

    monkeypatch.setattr(tflite_format, "run_tflite", off)
    with pytest.raises(VerificationError, match=r"tflite final_avg_pool: 0\.01"):
        export_model(model, tmp_path / "exp", formats="tflite,keras")
    assert list(tmp_path.iterdir()) == []


def test_too_big_for_one_flatbuffer_is_refused_before_any_weight_is_loaded(
        model, tmp_path, monkeypatch):
    from simclrv2 import artifacts
    from simclrv2.export import ExportError
    from simclrv2.zoo.param_count import weight_bytes

    path = tmp_path / "m.keras"
    model.save(str(path))
    monkeypatch.setattr(tflite_format, "FLATBUFFER_MAX_BYTES", weight_bytes(model.simclr_config))

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the size refusal")

    monkeypatch.setattr(artifacts, "resolve", no_loading)
    with pytest.raises(ExportError, match="a .tflite file can hold"):
        export_model(str(path), tmp_path / "exp", formats="tflite")
    assert not (tmp_path / "exp").exists()
    assert artifacts.peek_config(str(path)).name == model.simclr_config.name
