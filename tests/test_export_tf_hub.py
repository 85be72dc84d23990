"""The exported saved_model/ used as a TF Hub module: `hub.load` and its signatures, and
`hub.KerasLayer` (a signature with output_key, frozen; the callable root, trainable=True) in a
tf-keras model trained with fit, from a plain local directory as kagglehub returns one.

tf-keras and Keras 3 can't share a process: the export is made here (Keras 3) and TF Hub runs
in a subprocess with TF_USE_LEGACY_KERAS=1, which writes its outputs and a summary back."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow_hub") is None:
    pytest.skip("tensorflow_hub is not installed (make setup installs it; by hand: pip install "
                "--no-deps 'tf-keras>=2.21,<2.22' 'tensorflow-hub>=0.16,<0.17', see "
                "docs/tf_hub.md)", allow_module_level=True)

import keras  # noqa: E402

import simclrv2.zoo as zoo  # noqa: E402
from simclrv2.export import export_model  # noqa: E402

SIZE = 32
TOL = 1e-4

# Run with TF_USE_LEGACY_KERAS=1: tf.keras is tf-keras (Keras 2), as TF Hub users have it.
HUB_SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import tensorflow_hub as hub

    path, data, result_path = sys.argv[1:4]
    x = np.load(data)["x"]
    y = np.arange(len(x)) % 10
    assert tf.keras.__name__.startswith("tf_keras"), tf.keras.__name__
    summary, outputs = {}, {}

    # hub.load: the signatures as TF Serving calls them, and the callable root.
    module = hub.load(path)
    summary["signatures"] = sorted(module.signatures)
    images = tf.constant(x)
    for name in ("serving_default", "features", "projection", "hidden", "finetune"):
        for key, value in module.signatures[name](images=images).items():
            outputs[f"{name}/{key}"] = value.numpy()
    outputs["distill/soft_targets"] = module.signatures["distill"](
        images=images, temperature=tf.constant(2.0))["soft_targets"].numpy()
    outputs["__call__/logits"] = module(images)["logits"].numpy()
    summary["root"] = {"variables": len(module.variables),
                       "trainable_variables": len(module.trainable_variables)}

    # A signature with output_key, frozen, under a new head trained with fit.
    features = hub.KerasLayer(path, signature="features", output_key="final_avg_pool",
                              trainable=False)
    head = tf.keras.layers.Dense(10)
    inputs = tf.keras.Input((x.shape[1], x.shape[2], 3))
    model = tf.keras.Model(inputs, head(features(inputs)))
    model.compile(optimizer="adam",
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    frozen = [w.numpy().copy() for w in features.weights]
    kernel = head.kernel.numpy().copy()
    history = model.fit(x, y, batch_size=len(x), epochs=2, verbose=0)
    outputs["KerasLayer[features]/final_avg_pool"] = features(images).numpy()
    summary["frozen"] = {
        "loss": history.history["loss"], "trainable_weights": len(features.trainable_weights),
        "layer_weights_unchanged": all(np.array_equal(a, w.numpy())
                                       for a, w in zip(frozen, features.weights)),
        "head_changed": not np.allclose(kernel, head.kernel.numpy())}

    # trainable=True through a signature: TF Hub refuses it.
    try:
        hub.KerasLayer(path, signature="features", output_key="final_avg_pool",
                       trainable=True)(images)
        summary["trainable_signature_error"] = None
    except ValueError as e:
        summary["trainable_signature_error"] = str(e)

    # trainable=True on the callable root (the finetune logits): the exported head trains.
    tuned = hub.KerasLayer(path, output_key="logits", trainable=True)
    model = tf.keras.Model(inputs, tuned(inputs))
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.numpy().copy() for w in tuned.trainable_weights]
    fixed = [w.numpy().copy() for w in tuned.non_trainable_weights]
    history = model.fit(x, y, batch_size=len(x), epochs=2, verbose=0)
    summary["trainable"] = {
        "loss": history.history["loss"],
        "trainable_weights": sorted(w.name.split(":")[0] for w in tuned.trainable_weights),
        "all_trained": all(not np.allclose(a, w.numpy())
                           for a, w in zip(before, tuned.trainable_weights)),
        "rest_unchanged": all(np.array_equal(a, w.numpy())
                              for a, w in zip(fixed, tuned.non_trainable_weights))}
    np.savez(result_path + ".npz", **outputs)
    with open(result_path + ".json", "w") as f:
        json.dump(summary, f)
''')


def _rel(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-12)


def _softmax(x, t=1.0):
    e = np.exp((x - x.max(-1, keepdims=True)) / t)
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def hub_run(tmp_path_factory):
    """(summary, hub outputs, Keras outputs, export report): a 10-class ResNet-18 0.25x with
    the CIFAR stem at 32 px, exported here and used through TF Hub in a subprocess."""
    tmp = tmp_path_factory.mktemp("hub")
    keras.utils.set_random_seed(0)
    model = zoo.build("r18_0.25x_sk0", num_classes=10, input_shape=(SIZE, SIZE, 3),
                      cifar_stem=True)
    report = export_model(model, tmp / "export", formats="savedmodel")
    x = np.random.default_rng(3).uniform(0, 1, (8, SIZE, SIZE, 3)).astype(np.float32)
    expected = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    np.savez(tmp / "data.npz", x=x)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("KERAS_BACKEND", None)
    # A plain local directory, as kagglehub.model_download returns.
    proc = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, str(tmp / "export" / "saved_model"),
         str(tmp / "data.npz"), str(tmp / "result")],
        env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((tmp / "result.json").read_text())
    with np.load(tmp / "result.npz") as got:
        outputs = dict(got)
    return summary, outputs, expected, report


def test_hub_load_signatures_match_the_keras_model(hub_run):
    summary, got, ref, report = hub_run
    assert summary["signatures"] == sorted(report["signatures"]) == [
        "distill", "features", "finetune", "hidden", "projection", "serving_bytes",
        "serving_default"]
    logits = ref["logits_sup"]
    pairs = {"serving_default/logits": logits, "serving_default/probabilities": _softmax(logits),
             "finetune/logits": logits, "__call__/logits": logits,
             "distill/soft_targets": _softmax(logits, 2.0),
             "features/final_avg_pool": ref["final_avg_pool"],
             "projection/proj_head_output": ref["proj_head_output"],
             **{f"hidden/{k}": ref[k] for k in zoo.BACKBONE_ENDPOINTS}}
    for key, expected in pairs.items():
        assert _rel(got[key], expected) <= TOL, key


def test_keras_layer_on_a_signature_frozen_under_a_new_head_fits(hub_run):
    summary, got, ref, _ = hub_run
    assert _rel(got["KerasLayer[features]/final_avg_pool"], ref["final_avg_pool"]) <= TOL
    frozen = summary["frozen"]
    assert all(np.isfinite(frozen["loss"])) and len(frozen["loss"]) == 2
    assert frozen["trainable_weights"] == 0 and frozen["layer_weights_unchanged"]
    assert frozen["head_changed"]
    # TF Hub itself refuses trainable=True on a signature: training goes through the root.
    assert "unsupported when calling a SavedModel signature" in summary[
        "trainable_signature_error"]


def test_keras_layer_trainable_trains_exactly_the_exported_finetune_head(hub_run):
    summary, _, _, report = hub_run
    assert summary["root"]["trainable_variables"] == len(report["finetune_trainable_variables"])
    trainable = summary["trainable"]
    # ft_proj_selector=1: projection layer 0 (kernel, gamma, beta) and the supervised head.
    assert trainable["trainable_weights"] == sorted(
        p.replace("/", "__") for p in report["finetune_trainable_variables"])
    assert all(np.isfinite(trainable["loss"])) and len(trainable["loss"]) == 2
    assert trainable["all_trained"] and trainable["rest_unchanged"]
