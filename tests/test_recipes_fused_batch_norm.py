"""simclrv2.recipes.fused_batch_norm: the fused kernel trains batch norm as Keras's own call does."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import simclrv2.zoo as zoo
from simclrv2.recipes import fused_batch_norm, objectives


def _pair(name="r50_0.125x_sk1", size=64):
    """Two copies of one model with equal weights (the tests fuse the second)."""
    keras.utils.set_random_seed(3)
    plain = zoo.build(name, num_classes=5, input_shape=(size, size, 3), ft_proj_selector=0)
    fused = zoo.build(name, num_classes=5, input_shape=(size, size, 3), ft_proj_selector=0)
    fused.set_weights(plain.get_weights())
    # Zero-initialised gammas would hide each block's residual branch from the outputs.
    rng = np.random.default_rng(0)
    for a, b in zip(plain.weights, fused.weights):
        if a.path.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, a.shape).astype("float32")
            a.assign(value)
            b.assign(value)
    return plain, fused


def _step(model, images):
    with tf.GradientTape() as tape:
        out = model(images, training=True)
        loss, _, _ = objectives.nt_xent_loss(tf.cast(out["proj_head_output"], tf.float32), 0.1)
    grads = tape.gradient(loss, model.trainable_variables)
    return out, loss, grads


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _moving(model):
    return {v.path: v.numpy() for v in model.non_trainable_variables if "moving" in v.path}


# float32: the order of sums over 50,000 elements (dbeta); bfloat16: 2-3 of its 2^-8 steps.
@pytest.mark.parametrize("policy, tol", [("float32", 1e-4), ("mixed_bfloat16", 1e-2)])
@pytest.mark.parametrize("shape", [(16, 28, 28, 64), (16, 1, 1, 32), (16, 32)])
def test_one_layer_matches_keras_call(policy, tol, shape):
    """Outputs, the gradients of x, gamma and beta, and the moving statistics, against Keras's
    call on the same layer (4-D activations, the SK gate's 1x1 maps, the heads' vectors)."""
    keras.mixed_precision.set_global_policy(policy)  # conftest restores float32
    layers = [keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9) for _ in range(2)]
    gamma = np.random.default_rng(0).uniform(0.5, 1.5, shape[-1]).astype("float32")
    for layer in layers:
        layer.build(shape)
        layer.gamma.assign(gamma)
    assert fused_batch_norm.fuse(layers[1]) == 1
    x = tf.cast(tf.random.stateless_normal(shape, (1, 2)) * 3 + 1, layers[0].compute_dtype)
    weights = tf.random.stateless_normal(shape, (3, 4))
    results = []
    for layer in layers:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(layer(x, training=True), tf.float32)
            loss = tf.reduce_sum(y * weights) + tf.reduce_sum(y ** 2)
        results.append([y, *tape.gradient(loss, [x, layer.gamma, layer.beta]),
                        layer.moving_mean, layer.moving_variance])
    assert results[1][0].dtype == results[0][0].dtype
    for name, got, want in zip(("y", "dx", "dgamma", "dbeta", "moving_mean", "moving_variance"),
                               results[1], results[0]):
        assert _rel(got, want) <= tol, name


def test_model_training_step_matches_keras_batch_norm():
    """A whole pretraining step of ResNet-50 SK: a random network amplifies rounding (a 1e-6
    change of the input moves its gradients by ~1%), so the loss, the features and the moving
    statistics are compared, to what float32 rounding through 50 layers leaves."""
    plain, fused = _pair()
    routed = fused_batch_norm.fuse(fused)
    # The ResNet-50's (the SK convs' and gates' included) and the projection head's.
    assert routed == len(fused_batch_norm._batch_norm_layers(plain)) > 50
    assert fused_batch_norm.fuse(fused) == 0  # a second call changes nothing
    images = tf.random.stateless_uniform((8, 64, 64, 3), (1, 2))
    out_p, loss_p, _ = _step(plain, images)
    out_f, loss_f, grads_f = _step(fused, images)
    assert abs(float(loss_p) - float(loss_f)) <= 1e-2 * abs(float(loss_p))
    assert _rel(out_f["final_avg_pool"], out_p["final_avg_pool"]) <= 1e-3
    assert all(np.all(np.isfinite(g)) for g in grads_f if g is not None)
    moving_p, moving_f = _moving(plain), _moving(fused)
    assert moving_p.keys() == moving_f.keys() and len(moving_p) > 100
    for path in moving_p:
        assert _rel(moving_f[path], moving_p[path]) <= 1e-3, path


def test_bfloat16_step_is_as_close_to_float32_as_keras_bfloat16():
    images = tf.random.stateless_uniform((8, 64, 64, 3), (1, 2))
    reference, _ = _pair()
    out_ref, loss_ref, _ = _step(reference, images)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    plain, fused = _pair()
    fused_batch_norm.fuse(fused)
    out_p, loss_p, _ = _step(plain, images)
    out_f, loss_f, _ = _step(fused, images)
    assert abs(float(loss_f) - float(loss_ref)) <= 1.5 * abs(float(loss_p) - float(loss_ref)) + 0.05
    assert (_rel(out_f["final_avg_pool"], out_ref["final_avg_pool"])
            <= 1.5 * _rel(out_p["final_avg_pool"], out_ref["final_avg_pool"]) + 0.01)


# float32: a different order of the same five operations; bfloat16: one rounding of the output.
@pytest.mark.parametrize("policy, tol", [("float32", 1e-5), ("mixed_bfloat16", 1e-2)])
@pytest.mark.parametrize("shape", [(16, 14, 14, 64), (16, 32)])
@pytest.mark.parametrize("how", ["inference", "frozen"])
def test_one_layer_in_inference_matches_keras_call(policy, tol, shape, how):
    """Normalising with the moving statistics, in inference and in a frozen layer's training
    call (Keras's rule for frozen batch norm): outputs and the gradient of x, and the moving
    statistics untouched."""
    keras.mixed_precision.set_global_policy(policy)  # conftest restores float32
    gamma = np.random.default_rng(1).uniform(0.5, 1.5, shape[-1]).astype("float32")
    layers = [keras.layers.BatchNormalization(epsilon=1e-5) for _ in range(2)]
    for layer in layers:
        layer.build(shape)
        layer.gamma.assign(gamma)
        layer.beta.assign(np.linspace(-1, 1, shape[-1]).astype("float32"))
        layer.moving_mean.assign(np.linspace(0, 2, shape[-1]).astype("float32"))
        layer.moving_variance.assign(np.linspace(0.5, 4, shape[-1]).astype("float32"))
        layer.trainable = how != "frozen"
    fused_batch_norm.fuse(layers[1])
    x = tf.cast(tf.random.stateless_normal(shape, (1, 2)) * 3 + 1, layers[0].compute_dtype)
    assert fused_batch_norm.fusable_inference(layers[1], x, training=how == "frozen")
    results = []
    for layer in layers:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(layer(x, training=how == "frozen"), tf.float32)
            loss = tf.reduce_sum(y ** 2)
        results.append([y, tape.gradient(loss, x)])
    for name, got, want in zip(("y", "dx"), results[1], results[0]):
        assert _rel(got, want) <= tol, name
    np.testing.assert_array_equal(layers[1].moving_mean, layers[0].moving_mean)
    np.testing.assert_array_equal(layers[1].moving_variance, layers[0].moving_variance)


def test_inference_and_saved_files_are_unchanged(tmp_path):
    plain, fused = _pair(name="r18_0.125x_sk0", size=32)
    fused_batch_norm.fuse(fused)
    images = tf.random.stateless_uniform((4, 32, 32, 3), (3, 4))
    for key in ("logits_sup", "final_avg_pool"):
        assert _rel(fused(images, training=False)[key], plain(images, training=False)[key]) <= 1e-5
    assert fused.get_config() == plain.get_config()
    path = tmp_path / "fused.keras"
    fused.save(path)
    reloaded = keras.models.load_model(path)
    layer = next(l for l in reloaded._flatten_layers() if isinstance(l, keras.layers.BatchNormalization))
    assert type(layer) is keras.layers.BatchNormalization
    assert not getattr(layer, "_simclrv2_fused", False)


def test_what_the_kernel_would_not_compute_the_same_is_left_to_keras(monkeypatch):
    layer = keras.layers.BatchNormalization(synchronized=True)
    x = tf.zeros((4, 3, 3, 8))
    layer.build(x.shape)
    assert fused_batch_norm.fusable(layer, x, training=True)  # one replica: same statistics
    assert not fused_batch_norm.fusable(layer, x, training=False)
    # Inference reads only the moving statistics, the same on every replica.
    assert fused_batch_norm.fusable_inference(layer, x, training=False)
    assert not fused_batch_norm.fusable_inference(layer, x, training=True)
    assert not fused_batch_norm.fusable_inference(layer, tf.zeros((4, 3, 8)), training=False)
    assert not fused_batch_norm.fusable(layer, x, training=True, mask=tf.ones((4, 3, 3)))
    assert not fused_batch_norm.fusable(layer, tf.zeros((4, 3, 8)), training=True)
    # Synchronized across replicas: the kernel would see only its own replica's batch.
    monkeypatch.setattr(fused_batch_norm, "_replicas_in_sync", lambda: 2)
    assert not fused_batch_norm.fusable(layer, x, training=True)
    local = keras.layers.BatchNormalization()
    local.build(x.shape)
    assert fused_batch_norm.fusable(local, x, training=True)
    plain = keras.layers.BatchNormalization(axis=1)
    plain.build(x.shape)
    assert not fused_batch_norm.fusable(plain, x, training=True)


def test_recipes_fuse_unless_the_config_says_not_to():
    from simclrv2.recipes import PretrainConfig, networks

    for setting in (True, False):
        model = zoo.build("r18_0.125x_sk0", input_shape=(32, 32, 3))
        networks.fuse_batch_norm(PretrainConfig(fused_batch_norm=setting), model)
        marks = {getattr(layer, "_simclrv2_fused", False)
                 for layer in fused_batch_norm._batch_norm_layers(model)}
        assert marks == {setting}
