"""simclrv2.recipes.gradient_cache: a step in micro-batches has the gradient of the whole batch's
NT-Xent (batch norm normalising each micro-batch by its own statistics), moves the moving
statistics once per micro-batch, resumes exactly, distributes like the unchunked step, runs in
bfloat16, and a micro-batch that does not divide the batch is refused in one line."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import simclrv2.zoo as zoo
from simclrv2 import cli, errors
from simclrv2.recipes import config as C
from simclrv2.recipes import fused_batch_norm, gradient_cache, objectives, optim

from conftest import checkpoint_values

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPERATURE = 0.2
DECAY = 1e-3
CLASSES = 5

TINY = dict(dataset="synthetic", image_size=8, model="r18_0.25x_sk0", global_batch_size=8,
            warmup_epochs=0.0, learning_rate=0.5, weight_decay=1e-4, knn_bank_size=32,
            num_eval_examples=32, eval_batch_size=32, progress_bar=False, temperature=0.2,
            lineareval_while_pretraining=True, micro_batch_size=2, deterministic=True,
            # Compared to 1e-5 and better: bfloat16 would compare its rounding.
            mixed_precision="float32")


def _views(pairs, size=16, seed=0):
    rng = np.random.default_rng(seed)
    view1, view2 = (tf.constant(rng.uniform(0, 1, (pairs, size, size, 3)), tf.float32)
                    for _ in range(2))
    return view1, view2, tf.constant(rng.integers(0, CLASSES, pairs), tf.int32)


def _resnet(fused):
    """A small r18 at 16 px whose every batch-norm gamma is non-zero: the zoo's zero-initialised
    ones would hide each block's residual branch, and its batch norm, from the gradient."""
    keras.utils.set_random_seed(1)
    model = zoo.build("r18_0.25x_sk0", num_classes=CLASSES, input_shape=(16, 16, 3),
                      ft_proj_selector=0)
    rng = np.random.default_rng(0)
    for variable in model.weights:
        if variable.path.endswith("gamma"):
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    if fused:
        assert fused_batch_norm.fuse(model) > 0
    return model


def _dense():
    """No batch norm: every example's embedding depends on that example only."""
    keras.utils.set_random_seed(2)
    images = keras.Input((16, 16, 3))
    hidden = keras.layers.Dense(24, activation="relu")(keras.layers.Flatten()(images))
    outputs = {"proj_head_output": keras.layers.Dense(8)(hidden),
               "logits_sup": keras.layers.Dense(CLASSES, name="head_supervised")(hidden)}
    return keras.Model(images, outputs)


def _split_vars(model):
    head = [v for v in model.trainable_variables if "head_supervised" in v.path]
    return [v for v in model.trainable_variables if "head_supervised" not in v.path], head


def _penalty(variables):
    return lambda: optim.l2_regularization("momentum", DECAY, variables)


def _contrastive(hidden):
    return objectives.nt_xent_loss(hidden, TEMPERATURE)


def _supervised(logits, labels):
    return objectives.supervised_loss(labels, logits, CLASSES)


def _cached_gradients(model, view1, view2, labels, micro):
    """gradient_cache.gradients as the recipe runs it, in one tf.function."""
    encoder, head = _split_vars(model)

    @tf.function(autograph=False)
    def step():
        pairs, out = gradient_cache.gradients(
            model, gradient_cache.micro_batches(view1, view2, labels, micro),
            contrastive=_contrastive, scale=lambda loss: loss, encoder_vars=encoder,
            encoder_penalty=_penalty(encoder), supervised=_supervised, head_vars=head,
            head_penalty=_penalty(head))
        return {v.path: g for g, v in pairs}, out.contrastive_loss

    grads, loss = step()
    return {path: g.numpy() for path, g in grads.items()}, float(loss)


def _reference_gradients(model, groups):
    """One tape over the model run on each group of (first views, second views, labels), the
    NT-Xent of every first view against every second view, and the mean supervised loss; in a
    tf.function too, so that both sides round alike."""
    encoder, head = _split_vars(model)

    @tf.function(autograph=False)
    def step():
        with tf.GradientTape(persistent=True) as tape:
            firsts, seconds, sup = [], [], []
            for view1, view2, labels in groups:
                out = model(tf.concat([view1, view2], 0), training=True)
                proj = tf.cast(out["proj_head_output"], tf.float32)
                firsts.append(proj[:len(view1)])
                seconds.append(proj[len(view1):])
                sup.append(_supervised(out["logits_sup"], tf.concat([labels, labels], 0)))
            loss = _contrastive(tf.concat(firsts + seconds, 0))[0]
            encoder_loss = loss + _penalty(encoder)()
            head_loss = tf.add_n(sup) / len(sup) + _penalty(head)()
        grads = dict(zip([v.path for v in encoder], tape.gradient(encoder_loss, encoder)))
        grads.update(zip([v.path for v in head], tape.gradient(head_loss, head)))
        return {p: g for p, g in grads.items() if g is not None}, loss

    grads, loss = step()
    return {path: g.numpy() for path, g in grads.items()}, float(loss)


def _assert_same_gradients(actual, expected):
    assert sorted(actual) == sorted(expected)
    for path, want in expected.items():
        np.testing.assert_allclose(actual[path], want, rtol=1e-5,
                                   atol=1e-5 * float(np.abs(want).max()), err_msg=path)


def _moving(model):
    return {v.path: v.numpy() for v in model.non_trainable_variables}


@pytest.mark.parametrize("fused,unrolled", [(True, False), (False, False), (True, True)],
                         ids=["fused_bn", "keras_bn", "unrolled"])
def test_batch_norm_per_micro_batch_gradient_and_moving_statistics(fused, unrolled, monkeypatch):
    # unrolled: the micro-batches one after another in the graph, as under synchronized batch
    # norm across replicas, instead of a loop.
    monkeypatch.setattr(gradient_cache, "_synchronized_across_replicas", lambda model: unrolled)
    model = _resnet(fused)
    view1, view2, labels = _views(12)
    micro = 4
    groups = [(view1[i:i + micro], view2[i:i + micro], labels[i:i + micro])
              for i in range(0, 12, micro)]
    initial = _moving(model)
    expected, expected_loss = _reference_gradients(model, groups)
    after_groups = _moving(model)  # one training-mode pass per group
    for variable in model.non_trainable_variables:
        variable.assign(initial[variable.path])

    actual, loss = _cached_gradients(model, view1, view2, labels, micro)

    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    _assert_same_gradients(actual, expected)
    assert len(actual) == len(model.trainable_variables)  # the head and the L2 terms included
    moved = _moving(model)
    for path, want in after_groups.items():
        assert not np.allclose(want, initial[path]), f"{path} did not move"
        np.testing.assert_allclose(moved[path], want, rtol=1e-6, atol=1e-7, err_msg=path)
    # With batch norm, the whole batch normalised at once is another computation.
    whole, _ = _reference_gradients(model, [(view1, view2, labels)])
    assert not all(np.allclose(actual[p], whole[p], rtol=1e-3) for p in whole)


def test_without_batch_norm_equals_the_whole_batch_gradient():
    model = _dense()
    view1, view2, labels = _views(12)
    expected, expected_loss = _reference_gradients(model, [(view1, view2, labels)])
    for micro in (3, 12):
        actual, loss = _cached_gradients(model, view1, view2, labels, micro)
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
        _assert_same_gradients(actual, expected)


def test_paused_and_resumed_run_matches_an_uninterrupted_one(tmp_path):
    from simclrv2.recipes import stages

    values = dict(TINY, train_steps=4, checkpoint_steps=100)
    straight = stages.pretrain(C.from_dict("pretrain", dict(values,
                                                            model_dir=str(tmp_path / "straight"))))
    paused = stages.pretrain(C.from_dict("pretrain", dict(values, stop_at_step=2,
                                                          model_dir=str(tmp_path / "paused"))))
    assert paused["status"] == "paused" and paused["steps"] == 2
    resumed = stages.pretrain(C.from_dict("pretrain", dict(values,
                                                           model_dir=str(tmp_path / "paused"))))
    assert straight["status"] == resumed["status"] == "done"
    path_a, a = checkpoint_values(tmp_path / "straight")
    path_b, b = checkpoint_values(tmp_path / "paused")
    assert path_a.endswith("ckpt-4") and path_b.endswith("ckpt-4")
    assert sorted(a) == sorted(b) and any("moving_mean" in name for name in a)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_bfloat16_step_tracks_float32(tmp_path):
    from simclrv2 import precision
    from simclrv2.recipes import stages

    losses = {}
    for policy in ("float32", "mixed_bfloat16"):
        result = stages.pretrain(C.from_dict("pretrain", dict(
            TINY, train_steps=1, learning_rate=0.0, mixed_precision=policy,
            model_dir=str(tmp_path / policy))))
        assert result["precision"]["policy"] == policy
        assert precision.is_float32(result["model"]) == (policy == "float32")
        losses[policy] = result["train_metrics"]
    for key in ("contrastive_loss", "sup_loss"):
        assert np.isfinite(losses["mixed_bfloat16"][key])
        np.testing.assert_allclose(losses["mixed_bfloat16"][key], losses["float32"][key],
                                   rtol=0.03, err_msg=key)


# Logical devices must be set before TensorFlow starts: each device count in its own process.
REPLICAS = """
import json, sys
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(1)
cpu = tf.config.list_physical_devices("CPU")[0]
logical = [tf.config.LogicalDeviceConfiguration()] * {devices}
tf.config.set_logical_device_configuration(cpu, logical)
from simclrv2.recipes import config as C, stages
runs, out = json.loads(sys.argv[1]), {{}}
for name, values in runs.items():
    try:
        result = stages.pretrain(C.from_dict("pretrain", values))
    except C.ConfigError as error:
        out[name] = str(error)
        continue
    out[name] = result["train_metrics"]
    np.savez(values["model_dir"] + ".npz",
             **{{v.path: v.numpy() for v in result["model"].trainable_variables}})
print("RESULT" + json.dumps(out))
"""


def _replicas(devices, runs):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(REPLICAS.format(devices=devices)),
                           json.dumps(runs)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.split("RESULT")[-1])


def test_mirrored_chunked_step_equals_unchunked_step_with_the_same_groups(tmp_path):
    """Global batch 16 in batch-norm groups of 4 pairs: 2 replicas x 2 micro-batches, 1 replica
    x 4 micro-batches and 4 replicas unchunked (no synchronized batch norm) normalise the same
    images together, and each one's NT-Xent has the whole global batch's negatives."""
    values = dict(TINY, global_batch_size=16, micro_batch_size=4, train_steps=1, global_bn=False,
                  deterministic=False)
    # One mirrored run per process: a second MirroredStrategy in the same process reuses the
    # first one's collective instance keys, and TensorFlow aborts the mismatched collectives.
    out = _replicas(2, {
        "uneven": dict(values, strategy="mirrored", global_batch_size=8, micro_batch_size=8,
                       model_dir=str(tmp_path / "uneven")),
        "two": dict(values, strategy="mirrored", model_dir=str(tmp_path / "two"))})
    out.update(_replicas(4, {
        "one": dict(values, model_dir=str(tmp_path / "one")),
        "four": dict(values, strategy="mirrored", micro_batch_size=0,
                     model_dir=str(tmp_path / "four"))}))
    # Synchronized batch norm, the default, gathers micro-batch i's statistics over the replicas.
    out.update(_replicas(2, {
        "synchronized": dict(values, strategy="mirrored", global_bn=True,
                             model_dir=str(tmp_path / "synchronized"))}))
    chunked = np.load(tmp_path / "two.npz")
    # Trainable variables only: without synchronized batch norm each replica keeps moving
    # statistics of its own groups (TensorFlow does not average a variable whose aggregation is
    # NONE), so they differ between these runs by construction.
    for name in ("one", "four"):
        for key in ("contrastive_loss", "sup_loss", "loss"):
            np.testing.assert_allclose(out["two"][key], out[name][key], rtol=1e-5,
                                       err_msg=f"{name} {key}")
        other = np.load(tmp_path / f"{name}.npz")
        assert sorted(chunked.files) == sorted(other.files)
        for path in chunked.files:
            np.testing.assert_allclose(chunked[path], other[path], rtol=1e-5, atol=1e-5,
                                       err_msg=f"{name} {path}")
    assert np.isfinite(out["synchronized"]["loss"])
    assert out["uneven"] == ("micro_batch_size=8 does not divide the per-replica batch of 4 "
                             "pairs (global_batch_size=8 over 2 replicas); use a divisor of 4, "
                             "e.g. 4")


def test_a_micro_batch_that_does_not_divide_the_batch_is_refused_in_one_line(tmp_path, capsys,
                                                                              monkeypatch):
    with pytest.raises(C.ConfigError, match=r"^micro_batch_size=3 must divide "
                                             r"global_batch_size=8 \(0: off\); use one of its "
                                             r"divisors, e.g. 2$"):
        C.from_dict("pretrain", dict(TINY, micro_batch_size=3))
    with pytest.raises(C.ConfigError, match=r"^micro_batch_size must be >= 0 \(0: off\), got -1$"):
        C.from_dict("pretrain", dict(TINY, micro_batch_size=-1))
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    code = cli.main(["pretrain", "--global-batch-size", "1024", "--micro-batch-size", "96",
                     "--model-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert err == ("simclrv2 pretrain: micro_batch_size=96 must divide global_batch_size=1024 "
                   "(0: off); use one of its divisors, e.g. 64")
    assert not (tmp_path / "run").exists()
    with pytest.raises(C.ConfigError, match=r"per-replica batch of 6 pairs .* e\.g\. 3$"):
        gradient_cache.check_size(4, 24, 4)
    gradient_cache.check_size(3, 24, 4)
