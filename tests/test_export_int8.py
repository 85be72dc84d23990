"""INT8 ONNX export: written beside model.onnx with its accuracy check in config.json, loads in
onnxruntime with the float model's input and output names, and is refused (nothing written)
when its top-1 drop exceeds the threshold; calibration images from arrays and image folders."""

import json

import numpy as np
import onnx
import pytest
import tensorflow as tf

import simclrv2.zoo as zoo
from simclrv2.export import ExportError, export_model
from simclrv2.export.cli import export_main
from simclrv2.export.int8 import QuantizationError, calibration_set

SIDE = 16


@pytest.fixture(scope="module")
def model():
    return zoo.build("r18_0.25x_sk0", num_classes=10, input_shape=(SIDE, SIDE, 3))


def _images(n, seed):
    return np.random.default_rng(seed).uniform(0, 1, (n, SIDE, SIDE, 3)).astype(np.float32)


def _predictions(model, images):
    return np.argmax(np.asarray(model(images, training=False)["logits_sup"]), axis=1)


def test_int8_model_is_written_checked_and_loads(model, tmp_path):
    import onnxruntime as ort

    images = _images(200, seed=1)
    labels = _predictions(model, images)  # the float model is right on every check image
    report = export_model(model, tmp_path / "exp", formats="onnx", quantize="int8",
                          calibration=(images, labels), calibration_examples=100,
                          check_examples=100, max_int8_drop=100.0)
    q = report["int8"]
    assert q["file"] == "model.int8.onnx" and q["check_examples"] == 100
    assert q["float_top1"] == 1.0 and 0.0 <= q["int8_top1"] <= 1.0
    assert q["top1_drop_points"] == pytest.approx(100 * (1.0 - q["int8_top1"]), abs=1e-3)
    assert q["agreement_with_float"] == pytest.approx(q["int8_top1"])
    assert q["calibration"]["calibration_examples"] == 100
    saved = json.loads((tmp_path / "exp" / "config.json").read_text())
    assert saved["int8"]["top1_drop_points"] == q["top1_drop_points"]
    assert "model.int8.onnx" in (tmp_path / "exp" / "SHA256SUMS").read_text()
    assert "model.int8.onnx" in (tmp_path / "exp" / "README.md").read_text()

    float_session = ort.InferenceSession(str(tmp_path / "exp" / "model.onnx"))
    int8_session = ort.InferenceSession(str(tmp_path / "exp" / "model.int8.onnx"))
    assert [i.name for i in int8_session.get_inputs()] == ["images"]
    assert ([o.name for o in int8_session.get_outputs()]
            == [o.name for o in float_session.get_outputs()])
    ops = {node.op_type for node in onnx.load(str(tmp_path / "exp" / "model.int8.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    logits = int8_session.run(["logits"], {"images": images[150:]})[0]
    assert logits.shape == (50, 10) and np.all(np.isfinite(logits))


def test_int8_export_is_refused_past_the_threshold_and_nothing_is_written(model, tmp_path):
    # Calibrated on black images, the int8 ranges are far too narrow for real ones: its top
    # class then disagrees with the float model's, which is right by construction here.
    check = _images(100, seed=2)
    images = np.concatenate([np.zeros((50, SIDE, SIDE, 3), np.float32), check])
    labels = np.concatenate([np.zeros(50, np.int64), _predictions(model, check)])
    with pytest.raises(QuantizationError, match=r"top-1 drop is .* over the allowed 0.5"):
        export_model(model, tmp_path / "exp", formats="onnx,keras", quantize="int8",
                     calibration=(images, labels), calibration_examples=50,
                     check_examples=100, max_int8_drop=0.5)
    assert list(tmp_path.iterdir()) == []  # no export, no temporary folder


def test_bad_int8_requests_are_refused_before_any_work(model, tmp_path):
    images = _images(120, seed=3)
    with pytest.raises(ExportError, match="add onnx to the formats"):
        export_model(model, tmp_path / "a", formats="keras", quantize="int8", calibration=images)
    with pytest.raises(ExportError, match="needs calibration images"):
        export_model(model, tmp_path / "b", formats="onnx", quantize="int8")
    with pytest.raises(ExportError, match="unknown quantization 'int4'"):
        export_model(model, tmp_path / "c", formats="onnx", quantize="int4", calibration=images)
    with pytest.raises(ExportError, match="too few"):
        export_model(model, tmp_path / "d", formats="onnx", quantize="int8",
                     calibration=images[:60], calibration_examples=50)
    with pytest.raises(ExportError, match=r"must be float images \[N, 16, 16, 3\]"):
        export_model(model, tmp_path / "e", formats="onnx", quantize="int8",
                     calibration=images[:, :8])
    headless = zoo.build("r18_0.25x_sk0", input_shape=(SIDE, SIDE, 3))
    with pytest.raises(ExportError, match="no supervised head"):
        export_model(headless, tmp_path / "f", formats="onnx", quantize="int8",
                     calibration=images)
    assert list(tmp_path.iterdir()) == []


def test_cli_names_the_missing_calibration(model, tmp_path, capsys):
    path = tmp_path / "m.keras"
    model.save(path)
    code = export_main(["--model", str(path), "--out", str(tmp_path / "exp"),
                        "--quantize", "int8"])
    assert code == 2
    err = capsys.readouterr().err
    assert "needs calibration images" in err and "Traceback" not in err
    assert not (tmp_path / "exp").exists()


def _write_png(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    path.write_bytes(tf.io.encode_png(pixels).numpy())


def test_calibration_from_image_folders(tmp_path):
    split, seed = tmp_path / "split", 0
    for part, count in (("train", 40), ("test", 60)):
        for name in ("coat", "shirt"):
            for i in range(count // 2):
                seed += 1
                _write_png(split / part / name / f"{i}.png", seed)
    images = calibration_set(str(split), SIDE, num_classes=2, calibration_examples=30,
                             check_examples=100)
    assert images.calibration.shape == (30, SIDE, SIDE, 3)
    assert images.check.shape == (60, SIDE, SIDE, 3)  # the whole test split
    assert images.description["check_split"] == "test"
    assert sorted(set(images.check_labels.tolist())) == [0, 1]
    # Another class count than the model's: the labels can't be the model's, only agreement.
    other = calibration_set(str(split), SIDE, num_classes=10, calibration_examples=30)
    assert other.check_labels is None and "labels_not_used" in other.description

    flat = tmp_path / "flat"
    for i in range(90):
        _write_png(flat / f"{i}.png", 1000 + i)
    images = calibration_set(str(flat), SIDE, num_classes=10, calibration_examples=30)
    assert images.check_labels is None
    assert len(images.calibration) == 30 and len(images.check) == 60
    assert images.description["check_split"].startswith("train (disjoint")
    # Disjoint: no check image is one of the calibration images.
    seen = {img.tobytes() for img in images.calibration}
    assert not any(img.tobytes() in seen for img in images.check)

    with pytest.raises(ExportError, match="at least 50 are needed"):
        calibration_set(str(flat), SIDE, num_classes=10, calibration_examples=60)
