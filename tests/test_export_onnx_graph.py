"""simclrv2.export.onnx_graph: the Reshape rewrite keeps the symbolic batch and changes nothing else."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from simclrv2.export.onnx_graph import keep_batch_in_reshapes


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
