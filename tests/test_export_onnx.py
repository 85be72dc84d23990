"""simclrv2.export.onnx's large-model layout, forced on a small model by lowering the threshold:
model.onnx with its weights in one model.onnx.data beside it, named in the model card and
SHA256SUMS, loaded by onnxruntime from a moved copy of the directory and equal to Keras; the
layout decided from the architecture's weight count; int8 from such a model in one file."""

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf

tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(1)

import simclrv2.zoo as zoo  # noqa: E402
from simclrv2.zoo.config import resolve_config  # noqa: E402
from simclrv2.export import ExportError, export_model  # noqa: E402
from simclrv2.export import onnx as onnx_export  # noqa: E402
from simclrv2.zoo.param_count import weight_bytes  # noqa: E402

SIDE = 16
MATCH = 1e-5


@pytest.fixture(scope="module")
def model():
    return zoo.build("r18_0.25x_sk0", num_classes=10, input_shape=(SIDE, SIDE, 3))


@pytest.fixture
def external(monkeypatch):
    """Every model over 1 kB of weights is written with external data."""
    monkeypatch.setenv(onnx_export.EXTERNAL_DATA_ENV, "1000")


def _images(n, seed):
    return np.random.default_rng(seed).uniform(0, 1, (n, SIDE, SIDE, 3)).astype(np.float32)


def test_layout_follows_the_weight_count_and_the_override(model, monkeypatch):
    config = model.simclr_config
    assert onnx_export.layout(config) == "single file"
    assert onnx_export.layout(resolve_config("r152_3x_sk1", num_classes=1000)) == \
        "external data"  # 3.5 GB of float32 weights
    monkeypatch.setenv(onnx_export.EXTERNAL_DATA_ENV, str(weight_bytes(config)))
    assert onnx_export.layout(config) == "single file"  # not over it
    monkeypatch.setenv(onnx_export.EXTERNAL_DATA_ENV, str(weight_bytes(config) - 1))
    assert onnx_export.layout(config) == "external data"
    monkeypatch.setenv(onnx_export.EXTERNAL_DATA_ENV, "two gigabytes")
    with pytest.raises(ExportError, match="SIMCLRV2_ONNX_EXTERNAL_DATA_ABOVE"):
        onnx_export.layout(config)


def test_external_data_export_loads_from_a_moved_directory_and_matches_keras(
        model, tmp_path, external):
    out = tmp_path / "exp"
    report = export_model(model, out, formats="onnx")
    assert report["onnx"]["layout"] == "external data"
    assert report["onnx"]["external_data"] == "model.onnx.data"
    data = out / "model.onnx.data"
    # The graph alone in model.onnx, the weights beside it.
    assert (out / "model.onnx").stat().st_size < 100_000 < data.stat().st_size
    assert data.stat().st_size >= weight_bytes(model.simclr_config) * 0.9
    assert "model.onnx.data" in (out / "SHA256SUMS").read_text()
    assert "`model.onnx.data`" in (out / "README.md").read_text()
    saved = json.loads((out / "config.json").read_text())
    assert saved["onnx"]["layout"] == "external data"
    locations = {e.value for t in onnx.load(str(out / "model.onnx"), load_external_data=False)
                 .graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"model.onnx.data"}  # relative: the directory can move

    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(out, moved)
    shutil.rmtree(out)
    images = _images(3, seed=5)
    session = ort.InferenceSession(str(moved / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {"images": images})))
    ref = {k: np.asarray(v) for k, v in model(images, training=False).items()}
    for ours, theirs in (("logits", "logits_sup"), ("final_avg_pool", "final_avg_pool"),
                         ("proj_head_output", "proj_head_output")):
        scale = max(float(np.max(np.abs(ref[theirs]))), 1e-12)
        assert np.max(np.abs(got[ours] - ref[theirs])) / scale <= MATCH, ours


def test_an_external_data_sk_export_splits_its_slices_by_offset_and_matches_keras(
        tmp_path, external):
    # The selective-kernel streams' convolutions are split into one per slice: with external
    # data, their halves are offsets into model.onnx.data (onnx_graph.split_sliced_convolutions).
    sk = zoo.build("r50_0.25x_sk1", num_classes=10, input_shape=(SIDE, SIDE, 3))  # r18 has no SK
    out = tmp_path / "exp"
    export_model(sk, out, formats="onnx")
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    assert "Slice" not in {node.op_type for node in graph.node}
    halves = [t for t in graph.initializer if "__channels_" in t.name]
    assert halves and all(t.data_location == onnx.TensorProto.EXTERNAL for t in halves
                          if np.prod(t.dims) * 4 >= 1024)
    images = _images(3, seed=6)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"images": images})[0]
    ref = np.asarray(sk(images, training=False)["logits_sup"])
    assert np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-12) <= MATCH


def test_an_external_data_export_is_replaced_by_overwrite(model, tmp_path, external):
    """model.onnx.data is part of the export: --overwrite replaces it with the rest."""
    out = tmp_path / "exp"
    export_model(model, out, formats="onnx")
    first = (out / "model.onnx.data").stat().st_mtime_ns
    report = export_model(model, out, formats="onnx", overwrite=True)
    assert report["onnx"]["external_data"] == "model.onnx.data"
    assert (out / "model.onnx.data").stat().st_mtime_ns != first


def test_int8_of_an_external_data_model_is_one_file(model, tmp_path, external):
    images = _images(200, seed=1)
    labels = np.argmax(np.asarray(model(images, training=False)["logits_sup"]), axis=1)
    out = tmp_path / "exp"
    report = export_model(model, out, formats="onnx", quantize="int8",
                          calibration=(images, labels), calibration_examples=100,
                          check_examples=100, max_int8_drop=100.0)
    assert report["onnx"]["layout"] == "external data"
    assert report["int8"]["layout"] == "single file"
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "SHA256SUMS", "config.json", "model.int8.onnx", "model.onnx",
        "model.onnx.data"]
    int8 = onnx.load(str(out / "model.int8.onnx"), load_external_data=False)
    assert not any(t.external_data for t in int8.graph.initializer)
    logits = ort.InferenceSession(str(out / "model.int8.onnx")).run(
        ["logits"], {"images": images[150:]})[0]
    assert logits.shape == (50, 10) and np.all(np.isfinite(logits))


def test_a_disk_without_room_for_the_onnx_weights_is_refused_before_writing(
        model, tmp_path, monkeypatch):
    """The optimised weights are written while the converted ones are still on disk: a disk that
    cannot hold both is refused in one message naming the space needed, and nothing is left."""
    import collections
    import shutil as shutil_module

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: usage(10 ** 12, 0, 1000))
    out = tmp_path / "exp"
    with pytest.raises(ExportError, match=r"needs about .* GB of free disk .* 0\.0 GB free"):
        export_model(model, out, formats="onnx")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_the_onnx_graph_takes_only_the_kernels_as_inputs_while_converting(model):
    """Step 1 traces the model with its convolution and dense kernels as inputs (the bytes) and
    its batch-norm weights and biases as constants (what the converter folds)."""
    from simclrv2.export.signatures import ExportGraph

    graph = ExportGraph(model, SIDE, 1.0)
    _, signature, variables = onnx_export.weights_as_inputs(graph)
    assert signature[0].name == "images" and len(signature) == len(variables) + 1
    assert variables and all(len(v.shape) >= 2 for v in variables)
    kernel_bytes = sum(int(np.prod(v.shape)) for v in variables)
    assert kernel_bytes > 0.95 * sum(int(np.prod(v.shape)) for v in model.weights)
