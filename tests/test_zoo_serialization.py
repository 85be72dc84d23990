"""Saving, configs and backends: the same model everywhere, bit for bit where it must be."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from simclrv2 import zoo

from conftest import REPO_ROOT


def randomize_batch_norm(model, seed=0):
    """Non-trivial BN statistics and gammas, so that inference-mode outputs exercise them."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        name = variable.path.rsplit("/", 1)[-1]
        if name in ("gamma", "moving_mean", "beta"):
            variable.assign(rng.normal(0.0 if name != "gamma" else 1.0, 0.2, variable.shape)
                            .astype(np.float32))
        elif name == "moving_variance":
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(np.float32))


@pytest.fixture(scope="module")
def small_sk_model():
    model = zoo.build("r50_0.125x_sk1", input_shape=(32, 32, 3), num_classes=5)
    randomize_batch_norm(model)
    return model


def numpy_outputs(model, images):
    return {k: keras.ops.convert_to_numpy(v) for k, v in model(images, training=False).items()}


def test_keras_file_round_trip_is_bit_identical(tmp_path, small_sk_model):
    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    path = tmp_path / "model.keras"
    small_sk_model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, zoo.SimCLRv2Model)
    assert loaded.simclr_config == small_sk_model.simclr_config
    before, after = numpy_outputs(small_sk_model, images), numpy_outputs(loaded, images)
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)


def test_get_config_from_config_round_trip(small_sk_model):
    config = small_sk_model.get_config()
    json.dumps(config)  # plain JSON, no objects
    clone = zoo.SimCLRv2Model.from_config(config)
    assert [v.path for v in clone.weights] == [v.path for v in small_sk_model.weights]
    clone.set_weights(small_sk_model.get_weights())
    images = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    for key, value in numpy_outputs(small_sk_model, images).items():
        np.testing.assert_array_equal(value, numpy_outputs(clone, images)[key])
    assert zoo.ModelConfig.from_dict(config["config"]) == small_sk_model.simclr_config


JAX_SCRIPT = r"""
import os, sys, json
os.environ["KERAS_BACKEND"] = "jax"
import keras, numpy as np
assert keras.backend.backend() == "jax"
from simclrv2 import zoo

# load_weights() replaces every initial value; JAX would otherwise compile one random-init
# program per kernel shape (about a second each here), which dominated this test.
for initializer in (keras.initializers.VarianceScaling, keras.initializers.RandomNormal):
    initializer.__call__ = lambda self, shape, dtype=None: keras.ops.zeros(shape, dtype)

for spec in json.loads(sys.argv[1]):
    model = zoo.build(spec["name"], input_shape=tuple(spec["build_shape"]), num_classes=5,
                      cifar_stem=spec["cifar_stem"])
    model.load_weights(spec["weights"])
    out = model.predict_on_batch(np.load(spec["images"]))  # one jitted program, not op by op
    np.savez(spec["out"], **{k: np.asarray(v) for k, v in out.items()})
"""

# SK + ResNet-D (stem, stride-1 SAME average pool, stride-2 pads) built for any size, and the
# plain basic block at a fixed size.
BACKEND_CASES = [("r50_0.125x_sk1", (64, 64, 3), False, (None, None, 3)),
                 ("r18_0.125x_sk0", (32, 32, 3), True, (32, 32, 3))]


def test_same_outputs_under_tensorflow_and_jax(tmp_path):
    pytest.importorskip("jax")
    specs, expected = [], {}
    for index, (name, shape, cifar_stem, build_shape) in enumerate(BACKEND_CASES):
        model = zoo.build(name, input_shape=build_shape, num_classes=5, cifar_stem=cifar_stem)
        randomize_batch_norm(model, seed=4)
        images = np.random.default_rng(5).random((2,) + shape, dtype=np.float32)
        model.save_weights(tmp_path / f"w{index}.weights.h5")
        np.save(tmp_path / f"images{index}.npy", images)
        specs.append({"name": name, "build_shape": build_shape, "cifar_stem": cifar_stem,
                      "weights": str(tmp_path / f"w{index}.weights.h5"),
                      "images": str(tmp_path / f"images{index}.npy"),
                      "out": str(tmp_path / f"out{index}.npz")})
        expected[index] = numpy_outputs(model, images)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", JAX_SCRIPT, json.dumps(specs)], check=True, env=env,
                   cwd=REPO_ROOT, timeout=300)
    for index, spec in enumerate(specs):
        jax_out = np.load(spec["out"])
        assert set(jax_out.files) == set(expected[index])
        for key, value in expected[index].items():
            scale = max(1.0, float(np.abs(value).max()))
            np.testing.assert_allclose(jax_out[key], value, atol=1e-5 * scale, rtol=1e-5,
                                       err_msg=f"{spec['name']}:{key}")


def test_features_model_fits(tmp_path):
    model = zoo.build("r18_0.125x_sk0", input_shape=(32, 32, 3))
    features = zoo.features_model(model)
    assert features.output.shape[-1] == model.simclr_config.feature_dim == 64
    classifier = keras.Sequential([features, keras.layers.Dense(3)])
    classifier.compile(optimizer="sgd",
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(6)
    x, y = rng.random((8, 32, 32, 3), dtype=np.float32), rng.integers(0, 3, 8)
    before = keras.ops.convert_to_numpy(model.get_layer("stem").weights[0]).copy()
    history = classifier.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.array_equal(before, keras.ops.convert_to_numpy(model.get_layer("stem").weights[0]))
    with pytest.raises(ValueError, match="supervised head"):
        zoo.classifier_model(model)


def test_keras_file_loads_in_a_fresh_process_after_importing_the_zoo(tmp_path):
    model = zoo.build("r18_0.125x_sk0", input_shape=(32, 32, 3), num_classes=3)
    path = tmp_path / "fresh.keras"
    model.save(path)
    script = ("import keras, simclrv2.zoo\n"
              f"m = keras.saving.load_model({str(path)!r}, safe_mode=True)\n"
              "print(type(m).__name__, m.simclr_config.name)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["SimCLRv2Model", "r18_0.125x_sk0"]
