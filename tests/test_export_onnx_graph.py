"""simclrv2.export.onnx_graph: the Reshape rewrite keeps the symbolic batch, the channel-slice
rewrite turns sliced convolutions into one per slice (inline and external weights alike), and
neither changes what the graph computes."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from simclrv2.export.onnx_graph import keep_batch_in_reshapes, split_sliced_convolutions


def _model(shape, allowzero=None, channels=4):
    """x [batch, C, 5, 5] -> GlobalAveragePool -> Reshape(shape) -> Mul with x: the pattern
    tf2onnx writes around the SK gate."""
    attrs = {} if allowzero is None else {"allowzero": allowzero}
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
        helper.make_node("Reshape", ["pooled", "shape"], ["gate"], **attrs),
        helper.make_node("Mul", ["gate", "x"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", channels, 5, 5])],
        [numpy_helper.from_array(np.asarray(shape, np.int64), "shape")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _batch_dim(model, name):
    inferred = onnx.shape_inference.infer_shapes(model)
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        if value.name == name:
            dim = value.type.tensor_type.shape.dim[0]
            return dim.dim_param or dim.dim_value or None
    raise KeyError(name)


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_batch_symbol_survives_and_outputs_are_unchanged():
    model = _model([-1, 4, 1, 1])
    assert _batch_dim(model, "gate") != "batch"  # what tf2onnx's graph loses
    x = np.random.default_rng(0).normal(size=(3, 4, 5, 5)).astype(np.float32)
    before = _run(model, x)
    assert keep_batch_in_reshapes(model) == 1
    onnx.checker.check_model(model)
    assert _batch_dim(model, "gate") == "batch" and _batch_dim(model, "y") == "batch"
    np.testing.assert_array_equal(_run(model, x), before)
    # The replaced shape is dropped, not left as an unused initializer.
    assert [t.name for t in model.graph.initializer] == ["shape__keep_batch"]


@pytest.mark.parametrize("shape, allowzero", [
    ([-1, 2, 1, 1], None),    # the product differs: dim 0 is not the input's batch (8 x 2)
    ([4, -1, 1, 1], None),    # the -1 is not the batch dimension
    ([-1, 4, 1, 1], 1),       # allowzero: a 0 would mean a zero-sized dimension
])
def test_other_reshapes_are_left_alone(shape, allowzero):
    model = _model(shape, allowzero=allowzero)
    before = model.SerializeToString()
    assert keep_batch_in_reshapes(model) == 0
    assert model.SerializeToString() == before


def _sliced_conv_model(relu=True, slices=((0, 4), (4, 8)), axis=1, group=1):
    """x [batch, 3, 6, 6] -> Conv to 8 channels (3x3, bias) [-> Relu] -> channel Slices -> Sub
    or Identity: the selective-kernel convolution's two streams as the exported graph has them."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(8, 3 // group, 3, 3)).astype(np.float32)
    bias = rng.normal(size=(8,)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["streams"], pads=[1, 1, 1, 1],
                              group=group, name="sk_conv")]
    source = "streams"
    if relu:
        nodes.append(helper.make_node("Relu", ["streams"], ["streams_relu"], name="sk_relu"))
        source = "streams_relu"
    inits = [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b"),
             numpy_helper.from_array(np.asarray([axis], np.int64), "axis")]
    outs = []
    for i, (start, end) in enumerate(slices):
        inits += [numpy_helper.from_array(np.asarray([start], np.int64), f"start{i}"),
                  numpy_helper.from_array(np.asarray([end], np.int64), f"end{i}")]
        nodes.append(helper.make_node("Slice", [source, f"start{i}", f"end{i}", "axis"],
                                      [f"part{i}"], name=f"slice{i}"))
        outs.append(f"part{i}")
    nodes.append(helper.make_node("Sub", outs[:2], ["y"]) if len(outs) == 2
                 else helper.make_node("Identity", outs[:1], ["y"]))
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ops(model):
    return [node.op_type for node in model.graph.node]


@pytest.mark.parametrize("relu", [True, False])
def test_a_sliced_convolution_becomes_one_per_slice_with_the_same_outputs(relu):
    model = _sliced_conv_model(relu=relu)
    x = np.random.default_rng(1).normal(size=(2, 3, 6, 6)).astype(np.float32)
    before = _run(model, x)
    assert split_sliced_convolutions(model) == 1
    onnx.checker.check_model(model)
    assert "Slice" not in _ops(model)
    assert _ops(model).count("Conv") == 2 and _ops(model).count("Relu") == 2 * relu
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-6, atol=1e-6)
    # The whole kernel and bias are gone; each convolution holds its rows of them.
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    assert "w" not in shapes and "b" not in shapes
    assert shapes["w__channels_0_4"] == [4, 3, 3, 3] and shapes["b__channels_4_8"] == [4]


def test_external_weights_are_split_by_offset_without_copying(tmp_path):
    from onnx.external_data_helper import set_external_data

    model = _sliced_conv_model()
    x = np.random.default_rng(1).normal(size=(2, 3, 6, 6)).astype(np.float32)
    before = _run(model, x)
    # As onnxruntime writes them: the kernel and bias in the data file, the slices' 8-byte
    # bounds inline.
    for tensor in model.graph.initializer:
        if tensor.name in ("w", "b"):
            set_external_data(tensor, "m.onnx.data")
    onnx.save(model, str(tmp_path / "m.onnx"))
    data = (tmp_path / "m.onnx.data").read_bytes()
    loaded = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    assert split_sliced_convolutions(loaded) == 1
    onnx.save(loaded, str(tmp_path / "split.onnx"))
    assert (tmp_path / "m.onnx.data").read_bytes() == data  # the data file is not rewritten
    parts = [t for t in loaded.graph.initializer if "__channels_" in t.name]
    assert len(parts) == 4 and all(t.data_location == TensorProto.EXTERNAL for t in parts)
    session = ort.InferenceSession(str(tmp_path / "split.onnx"),
                                   providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], before, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant", [
    {"axis": 2},                       # a spatial slice, not channels
    {"group": 3},                      # a grouped convolution's channels belong to its groups
])
def test_other_convolutions_are_left_alone(variant):
    model = _sliced_conv_model(**variant)
    before = model.SerializeToString()
    assert split_sliced_convolutions(model) == 0
    assert model.SerializeToString() == before


def test_a_convolution_sharing_its_weights_is_left_alone():
    model = _sliced_conv_model()
    model.graph.node.append(helper.make_node("Conv", ["x", "w"], ["other"], pads=[1, 1, 1, 1]))
    model.graph.output.append(
        helper.make_tensor_value_info("other", TensorProto.FLOAT, ["batch", 8, 6, 6]))
    before = model.SerializeToString()
    assert split_sliced_convolutions(model) == 0
    assert model.SerializeToString() == before


def test_a_convolution_read_by_more_than_slices_is_left_alone():
    model = _sliced_conv_model(relu=False, slices=((0, 8),))
    model.graph.output.append(
        helper.make_tensor_value_info("streams", TensorProto.FLOAT, ["batch", 8, 6, 6]))
    before = model.SerializeToString()
    assert split_sliced_convolutions(model) == 0
    assert model.SerializeToString() == before
