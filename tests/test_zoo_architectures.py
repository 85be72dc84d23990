"""The zoo's networks match the official SimCLRv2 architecture: counts, shapes, names, init."""

import math

import keras
import numpy as np
import pytest

from simclrv2 import zoo
from simclrv2.zoo.architectures import OFFICIAL_EXACT_BACKBONE


def trainable_by_part(model):
    parts = {"backbone": 0, "projection_head": 0, "supervised_head": 0}
    for variable in model.trainable_weights:
        if variable.path.startswith("proj_head/"):
            parts["projection_head"] += int(np.prod(variable.shape))
        elif variable.path.startswith("head_supervised/"):
            parts["supervised_head"] += int(np.prod(variable.shape))
        else:
            parts["backbone"] += int(np.prod(variable.shape))
    return parts


def round_half_up_millions(count):
    return math.floor(count / 1e6 + 0.5)


@pytest.fixture(scope="module")
def r50_sk1():
    return zoo.build("r50_1x_sk1", num_classes=1000, input_shape=(64, 64, 3))


def test_official_exact_counts_r18_cifar_and_r50_sk0():
    r18 = zoo.build("r18_1x_sk0", input_shape=(32, 32, 3))
    assert r18.simclr_config.cifar_stem
    assert trainable_by_part(r18)["backbone"] == OFFICIAL_EXACT_BACKBONE[("r18_1x_sk0", "cifar")]
    r50 = zoo.build("r50_1x_sk0", input_shape=(64, 64, 3))
    parts = trainable_by_part(r50)
    assert parts["backbone"] == 23_508_032
    assert parts["projection_head"] == 8_659_072


def test_official_exact_counts_r50_sk1_with_heads(r50_sk1):
    parts = trainable_by_part(r50_sk1)
    assert parts == {"backbone": 35_215_584, "projection_head": 8_659_072,
                     "supervised_head": 2_049_000}


# Table 1 prints 233M and 354M for the two ResNet-152 2x models, but the same architecture that
# reproduces the three exact counts of the official format and the other 11 rows gives 232.25M
# and 353.40M: less than 1M apart, so we pin our exact counts and record the deviation.
TABLE1_DEVIATIONS = {"r152_2x_sk0": 232_253_568, "r152_2x_sk1": 353_398_528}


@pytest.mark.parametrize("name", sorted(zoo.OFFICIAL_PARAMS_M))
def test_table1_backbone_millions(name):
    count = zoo.count_parameters(name)["backbone"]
    if name in TABLE1_DEVIATIONS:
        assert count == TABLE1_DEVIATIONS[name]
        assert abs(count / 1e6 - zoo.OFFICIAL_PARAMS_M[name]) < 1.0
    else:
        assert round_half_up_millions(count) == zoo.OFFICIAL_PARAMS_M[name]


@pytest.mark.parametrize("name", sorted(zoo.SIMCLRV1_PARAMS_M))
def test_simclrv1_backbone_millions(name):
    assert round_half_up_millions(zoo.count_parameters(name)["backbone"]) == \
        zoo.SIMCLRV1_PARAMS_M[name]


# One small member of every depth, with and without SK, with both stems: the analytic count
# (used for the big models above) must equal what Keras actually allocates.
COUNT_CASES = [
    ("r18_0.25x_sk0", (32, 32, 3)), ("r18_0.25x_sk1", (64, 64, 3)),
    ("r34_0.125x_sk1", (64, 64, 3)), ("r50_0.25x_sk0", (64, 64, 3)),
    ("r50_0.25x_sk1", (32, 32, 3)), ("r101_0.125x_sk1", (64, 64, 3)),
    ("r152_0.125x_sk0", (64, 64, 3)), ("r200_0.125x_sk1", (64, 64, 3)),
]


@pytest.mark.parametrize("name,shape", COUNT_CASES)
def test_analytic_count_equals_built_model(name, shape):
    model = zoo.build(name, input_shape=shape, num_classes=7, ft_proj_selector=2)
    counted = zoo.count_parameters(name, input_shape=shape, num_classes=7, ft_proj_selector=2)
    assert trainable_by_part(model) == {k: counted[k] for k in
                                        ("backbone", "projection_head", "supervised_head")}
    assert model.count_params() > counted["total"]  # plus the BN moving statistics


def test_endpoint_shapes_r50_224_like_official():
    model = zoo.ResNet(depth=50, width=1, sk=False, input_shape=(224, 224, 3))
    shapes = {k: tuple(v.shape[1:]) for k, v in model.output.items()}
    assert shapes == {
        "initial_conv": (112, 112, 64), "initial_max_pool": (56, 56, 64),
        "block_group1": (56, 56, 256), "block_group2": (28, 28, 512),
        "block_group3": (14, 14, 1024), "block_group4": (7, 7, 2048), "final_avg_pool": (2048,)}


def test_named_outputs_and_supervised_head_wiring(r50_sk1):
    assert set(r50_sk1.output) == set(zoo.BACKBONE_ENDPOINTS) | {
        "proj_head_input", "proj_head_output", "logits_sup"}
    # ft_proj_selector=1 (default): the head reads the ReLU output of projection layer 0
    head = r50_sk1.get_layer("head_supervised")
    assert head.input.shape[-1] == 2048
    images = np.random.default_rng(1).random((2, 64, 64, 3), dtype=np.float32)
    out = r50_sk1(images)
    proj = r50_sk1.get_layer("proj_head")
    hidden0 = proj(out["proj_head_input"])[0]
    expected = keras.ops.matmul(hidden0, head.kernel) + head.bias
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["logits_sup"]),
                               keras.ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-6)


def test_selector_zero_reads_backbone():
    model = zoo.build("r18_0.25x_sk0", input_shape=(32, 32, 3), num_classes=3, ft_proj_selector=0)
    images = np.random.default_rng(2).random((2, 32, 32, 3), dtype=np.float32)
    out = model(images)
    head = model.get_layer("head_supervised")
    expected = keras.ops.matmul(out["final_avg_pool"], head.kernel) + head.bias
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["logits_sup"]),
                               keras.ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-6)


def test_layer_names_are_deterministic_and_descriptive(r50_sk1):
    paths = [v.path for v in r50_sk1.weights]
    first, second = (zoo.build("r50_0.125x_sk1", num_classes=3, input_shape=(32, 32, 3))
                     for _ in range(2))
    assert [v.path for v in first.weights] == [v.path for v in second.weights]
    for expected in ["stem/conv1/kernel", "stem/conv3/kernel", "stem/bn3/moving_variance",
                     "block_group2/block1/sk_conv/mixing_conv/kernel",
                     "block_group2/block1/sk_conv/reduce_bn/gamma",
                     "block_group2/block1/shortcut_conv/kernel", "block_group4/block3/bn3/gamma",
                     "proj_head/dense0/kernel", "proj_head/bn2/gamma", "head_supervised/bias"]:
        assert expected in paths, expected
    assert "proj_head/bn2/beta" not in paths  # last projection BN is center=False
    assert len(set(paths)) == len(paths)


def test_official_layer_hyperparameters(r50_sk1):
    bns = [l for l in r50_sk1._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(bn.epsilon == 1e-5 and bn.momentum == 0.9 for bn in bns)
    convs = [l for l in r50_sk1._flatten_layers() if isinstance(l, keras.layers.Conv2D)]
    assert convs and all(not c.use_bias for c in convs)
    init = convs[0].kernel_initializer
    assert isinstance(init, keras.initializers.VarianceScaling)
    assert (init.scale, init.mode, init.distribution) == (1.0, "fan_in", "truncated_normal")
    weights = {v.path: keras.ops.convert_to_numpy(v) for v in r50_sk1.weights}
    # the last BN of every residual branch starts at gamma = 0; the others at 1
    assert np.all(weights["block_group3/block2/bn3/gamma"] == 0)
    assert np.all(weights["block_group3/block2/bn1/gamma"] == 1)
    assert np.all(weights["block_group3/block2/shortcut_bn/gamma"] == 1) if \
        "block_group3/block2/shortcut_bn/gamma" in weights else True
    assert np.all(weights["block_group3/block1/shortcut_bn/gamma"] == 1)
    std = weights["proj_head/dense0/kernel"].std()
    assert 0.008 < std < 0.012  # RandomNormal(stddev=0.01)


def test_sk_conv_with_zero_gate_logits_averages_streams():
    layer = zoo.SelectiveKernelConv(filters=4, strides=1, name="sk")
    x = np.random.default_rng(3).random((2, 6, 6, 5), dtype=np.float32)
    layer(x)
    layer.mixing_conv.kernel.assign(np.zeros(layer.mixing_conv.kernel.shape, np.float32))
    streams = keras.ops.relu(layer.bn(layer.conv(x), training=False))
    expected = 0.5 * (streams[..., :4] + streams[..., 4:])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=False)),
                               keras.ops.convert_to_numpy(expected), rtol=1e-6, atol=1e-6)
    assert layer.mid_dim == 32  # max(int(4 * 0.0625), 32)


def test_sk_conv_gate_is_the_softmax_over_the_two_streams():
    # The layer computes the gate as a sigmoid of the logits' difference; the SK paper's (and
    # upstream's) form is a softmax over the streams stacked on a new axis: the same function.
    ops = keras.ops
    layer = zoo.SelectiveKernelConv(filters=4, strides=1, name="sk")
    x = np.random.default_rng(4).normal(size=(3, 6, 6, 5)).astype(np.float32)
    layer(x)
    rng = np.random.default_rng(5)
    layer.mixing_conv.kernel.assign(rng.normal(0, 3, layer.mixing_conv.kernel.shape)
                                    .astype(np.float32))
    streams = ops.relu(layer.bn(layer.conv(x), training=False))
    a, b = streams[..., :4], streams[..., 4:]
    gate = layer.mixing_conv(ops.relu(layer.reduce_bn(layer.reduce_conv(
        ops.mean(a + b, axis=(1, 2), keepdims=True)), training=False)))
    weights = ops.softmax(ops.stack([gate[..., :4], gate[..., 4:]]), axis=0)
    expected = weights[0] * a + weights[1] * b
    assert float(ops.max(ops.abs(weights[0] - 0.5))) > 0.1  # the gate is far from uniform
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x, training=False)),
                               ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-6)


def test_resnet_d_stride1_pool_averages_valid_pixels_only():
    from simclrv2.zoo.resnet import BottleneckBlock

    block = BottleneckBlock(4, strides=1, use_projection=True, sk=True)
    ones = np.ones((1, 5, 5, 3), np.float32)
    block(ones)
    pooled = keras.ops.convert_to_numpy(block.shortcut_pool(ones))
    assert pooled.shape == (1, 5, 5, 3) and np.allclose(pooled, 1.0)


def test_fixed_padding_stride2_pads_begin_and_end():
    from simclrv2.zoo.layers import FixedPaddingConv2D

    conv = FixedPaddingConv2D(1, 3, 2)
    x = np.zeros((1, 4, 4, 1), np.float32)
    x[0, 0, 0, 0] = 1.0
    conv(x)
    kernel = np.zeros((3, 3, 1, 1), np.float32)
    kernel[0, 0] = 1.0  # top-left tap reads the pixel one above-left of each output centre
    conv.kernel.assign(kernel)
    out = keras.ops.convert_to_numpy(conv(x))[0, :, :, 0]
    # pad 1 before: output (1,1) is centred on input (2,2), whose top-left tap is input (1,1)
    assert out.shape == (2, 2) and out.sum() == 0.0
    x2 = np.zeros((1, 4, 4, 1), np.float32)
    x2[0, 1, 1, 0] = 1.0
    assert keras.ops.convert_to_numpy(conv(x2))[0, 1, 1, 0] == 1.0


@pytest.mark.parametrize("bad,match", [
    ("r51_1x_sk0", "valid depths"), ("r50_5x_sk0", "valid widths"), ("resnet50", "expected r<depth>"),
])
def test_bad_names_list_valid_choices(bad, match):
    with pytest.raises(ValueError, match=match):
        zoo.build(bad)


def test_bad_depth_width_channels_selector():
    with pytest.raises(ValueError, match="valid depths"):
        zoo.ResNet(depth=42)
    with pytest.raises(ValueError, match="valid widths"):
        zoo.ResNet(depth=50, width=0.3)
    with pytest.raises(ValueError, match="3 channels"):
        zoo.build("r18_1x_sk0", input_shape=(32, 32, 1))
    with pytest.raises(ValueError, match="ft_proj_selector"):
        zoo.build("r18_1x_sk0", input_shape=(32, 32, 3), ft_proj_selector=5)
    model = zoo.build("r18_0.125x_sk0", input_shape=(32, 32, 3))
    with pytest.raises(ValueError):
        model(np.zeros((1, 32, 32, 1), np.float32))


def test_list_models_covers_every_depth_width_sk():
    names = zoo.list_models()
    assert len(names) == 6 * 7 * 2 and "r152_3x_sk1" in names and "r18_0.25x_sk0" in names
    assert zoo.list_models(released_only=True) == sorted(zoo.OFFICIAL_PARAMS_M, key=names.index)
    for name in names:
        assert zoo.parse_name(name).name == name
