"""The objectives and LARS written once in keras.ops (simclrv2.recipes.portable_objectives, lars):
on one fixed batch, NT-Xent (gathered cross-replica negatives included), the distillation loss and
two LARS updates agree across TensorFlow, JAX and PyTorch to 1e-5 in float32; the TF recipes'
own functions are these; Keras fit pretrains with them on JAX and PyTorch (20 steps lower the
loss); under JAX's DataParallel the negatives span every device. The JAX and PyTorch sides run in a child that cannot import TensorFlow
(tests/backend_child.py)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from simclrv2.recipes import lars, objectives, optim, portable_objectives

from conftest import REPO_ROOT

CHILD = REPO_ROOT / "tests" / "backend_child.py"

# Runs on every backend (TensorFlow in this process): the fixed inputs in, the values out.
COMPUTE = r'''
import keras
import numpy as np
from keras import ops
from simclrv2.recipes import lars, portable_objectives as po

def compute(inputs):
    h = ops.convert_to_tensor(inputs["hidden"])
    n = po.l2_normalize(h)
    n1, n2 = n[:8], n[8:]
    # Replica 1 of 2 (4 pairs each): its rows against the negatives of both replicas.
    local, logits_ab, labels = po.nt_xent_gathered(n1[4:], n2[4:], n1, n2, 1, 0.2)
    out = {"nt_xent": po.nt_xent(h, 0.2), "nt_xent_replica1": local, "logits_ab": logits_ab,
           "labels": labels,
           "distillation": po.distillation_loss(inputs["teacher"], inputs["student"], 2.0),
           # The Keras losses that fit uses: targets ignored (NT-Xent), the teacher's logits.
           "nt_xent_keras_loss": po.NTXent(0.2)(ops.zeros((16,)), h),
           "distillation_keras_loss": po.Distillation(2.0)(inputs["teacher"], inputs["student"])}
    dense = keras.layers.Dense(3, name="dense")
    dense.build((None, 4))
    bn = keras.layers.BatchNormalization(name="bn1")
    bn.build((None, 3))
    dense.set_weights([inputs["kernel"], inputs["bias"]])
    variables = [dense.kernel, dense.bias, bn.gamma]
    optimizer = lars.LARS(0.5, momentum=0.9, weight_decay_rate=1e-2, eeta=0.001)
    for step in range(2):
        grads = [ops.convert_to_tensor(inputs[f"grad{step}_{i}"]) for i in range(3)]
        optimizer.apply_gradients(zip(grads, variables))
    out.update({f"lars_{i}": v for i, v in enumerate(variables)})
    out.update({f"momentum_{i}": m for i, m in enumerate(optimizer.momentums)})
    out["excluded"] = np.array(optimizer._excluded)
    return {k: ops.convert_to_numpy(v) for k, v in out.items()}
'''

# 20 steps of Keras fit on one batch of pairs: a small network's projection head under NT-Xent
# and LARS, both views in one batch (batch norm spans both, as upstream).
PRETRAIN = r'''
import json, sys
import keras
import numpy as np
from simclrv2 import zoo
from simclrv2.recipes.lars import LARS
from simclrv2.recipes.portable_objectives import NTXent

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
images = rng.random((8, 32, 32, 3), dtype=np.float32)
second = np.clip(images[:, :, ::-1] + rng.normal(0, 0.05, images.shape), 0, 1).astype(np.float32)
views = np.concatenate([images, second])
net = zoo.build("r18_0.125x_sk0", input_shape=(32, 32, 3), num_classes=None)
projector = keras.Model(net.input, net.output["proj_head_output"])
projector.compile(optimizer=LARS(0.5, weight_decay_rate=1e-6), loss=NTXent(0.2))
history = projector.fit(views, np.zeros(16, np.float32), batch_size=16, epochs=20,
                        shuffle=False, verbose=0)
print("LOSSES " + json.dumps([float(v) for v in history.history["loss"]]))
'''

# JAX with two host devices: NT-Xent under keras.distribution.DataParallel (the batch sharded over
# the devices) against one device, and against what local-only negatives would give.
DATA_PARALLEL = r'''
import json
import jax
import keras
import numpy as np
from simclrv2 import zoo
from simclrv2.recipes.portable_objectives import NTXent, nt_xent

def projector_loss(distribution):
    keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(0)
    net = zoo.build("r18_0.125x_sk0", input_shape=(32, 32, 3), num_classes=None)
    projector = keras.Model(net.input, net.output["proj_head_output"])
    projector.compile(loss=NTXent(0.2))
    rng = np.random.default_rng(0)
    views = rng.random((16, 32, 32, 3), dtype=np.float32)
    loss = projector.evaluate(views, np.zeros(16, np.float32), batch_size=16, verbose=0)
    hidden = keras.ops.convert_to_numpy(projector(views, training=False))
    return loss, hidden

devices = jax.devices()
single, hidden = projector_loss(None)
parallel, _ = projector_loss(keras.distribution.DataParallel(devices=devices))
# What each device would get with only its own rows as negatives (pairs i and i+8 kept together).
local = [float(nt_xent(np.concatenate([hidden[r], hidden[8:][r]]), 0.2))
         for r in (slice(0, 4), slice(4, 8))]
print("DP " + json.dumps({"devices": len(devices), "single": single, "parallel": parallel,
                          "local_only": float(np.mean(local))}))
'''


def fixed_inputs():
    rng = np.random.default_rng(3)
    inputs = {"hidden": rng.normal(size=(16, 12)).astype(np.float32),
              "teacher": rng.normal(size=(6, 5)).astype(np.float32) * 3,
              "student": rng.normal(size=(6, 5)).astype(np.float32) * 3,
              "kernel": rng.normal(size=(4, 3)).astype(np.float32),
              "bias": rng.normal(size=(3,)).astype(np.float32)}
    for step in range(2):
        for index, shape in enumerate(((4, 3), (3,), (3,))):
            inputs[f"grad{step}_{index}"] = rng.normal(size=shape).astype(np.float32)
    return inputs


def run_child(tmp_path, backend, code, **env_vars):
    script = tmp_path / f"{backend}_code.py"
    script.write_text(code)
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=str(REPO_ROOT), **env_vars)
    result = subprocess.run([sys.executable, str(CHILD), "--docs", str(script)], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def tensorflow_values():
    namespace = {"__name__": "compute"}
    exec(compile(COMPUTE, "COMPUTE", "exec"), namespace)  # noqa: S102
    return namespace["compute"](fixed_inputs())


@pytest.fixture(scope="module")
def reference():
    return tensorflow_values()


def test_tensorflow_recipes_use_the_portable_objectives_and_lars():
    assert objectives.nt_xent_gathered is portable_objectives.nt_xent_gathered
    assert objectives.LARGE_NUM == portable_objectives.LARGE_NUM
    assert optim.LARS is lars.LARS and optim.is_excluded is lars.is_excluded
    inputs = fixed_inputs()
    tf_recipe = objectives.distillation_loss(inputs["teacher"], inputs["student"], 2.0)
    np.testing.assert_allclose(float(tf_recipe), float(portable_objectives.distillation_loss(
        inputs["teacher"], inputs["student"], 2.0)), rtol=1e-6)
    loss, _, _ = objectives.nt_xent_loss(inputs["hidden"], temperature=0.2)
    np.testing.assert_allclose(float(loss), float(portable_objectives.nt_xent(
        inputs["hidden"], 0.2)), rtol=1e-6)


def test_values_are_not_trivial(reference):
    """The checks below compare real work: losses away from 0, LARS moved the variables, the
    decayed kernel and the excluded bias and gamma updated differently."""
    inputs = fixed_inputs()
    assert reference["nt_xent"] > 1 and reference["distillation"] > 0.1
    assert not np.isclose(reference["nt_xent_replica1"], reference["nt_xent"])
    np.testing.assert_allclose(reference["nt_xent_keras_loss"], reference["nt_xent"], rtol=1e-6)
    np.testing.assert_allclose(reference["distillation_keras_loss"], reference["distillation"],
                               rtol=1e-6)
    assert list(reference["excluded"]) == [False, True, True]
    assert not np.allclose(reference["lars_0"], inputs["kernel"])
    assert not np.allclose(reference["lars_1"], inputs["bias"])
    # One replica's rows find their positives at columns 4..7 of the gathered batch.
    assert list(np.argmax(reference["labels"], axis=1)) == [4, 5, 6, 7]


@pytest.mark.backends
@pytest.mark.parametrize("backend, module", [("jax", "jax"), ("torch", "torch")])
def test_losses_and_lars_agree_with_tensorflow(tmp_path, reference, backend, module):
    pytest.importorskip(module)
    np.savez(tmp_path / "inputs.npz", **fixed_inputs())
    run_child(tmp_path, backend, COMPUTE + "\nnp.savez('values.npz', "
                                          "**compute(dict(np.load('inputs.npz'))))\n")
    got = np.load(tmp_path / "values.npz")
    assert set(got.files) == set(reference)
    for key, value in reference.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-5,
                                   err_msg=f"{backend}: {key}")


@pytest.mark.backends
@pytest.mark.parametrize("backend, module", [("jax", "jax"), ("torch", "torch")])
def test_twenty_pretraining_steps_lower_the_loss(tmp_path, backend, module):
    pytest.importorskip(module)
    stdout = run_child(tmp_path, backend, PRETRAIN)
    losses = json.loads(next(line for line in stdout.splitlines()
                             if line.startswith("LOSSES "))[len("LOSSES "):])
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05, losses


@pytest.mark.backends
def test_jax_data_parallel_negatives_span_every_device(tmp_path):
    pytest.importorskip("jax")
    stdout = run_child(tmp_path, "jax", DATA_PARALLEL,
                       XLA_FLAGS="--xla_force_host_platform_device_count=2")
    values = json.loads(next(line for line in stdout.splitlines()
                             if line.startswith("DP "))[len("DP "):])
    assert values["devices"] == 2
    np.testing.assert_allclose(values["parallel"], values["single"], rtol=1e-5)
    assert abs(values["local_only"] - values["single"]) > 0.1, values


# Keras fit on JAX fed by simclrv2.data's pipelines (TensorFlow for the input side only):
# pretraining with NT-Xent and LARS, then fine-tuning the same network.
DATA_PIPELINE_FIT = r'''
import json, pathlib
import keras, numpy as np
from PIL import Image
from simclrv2 import data, zoo
from simclrv2.recipes import keras_fit

assert keras.backend.backend() == "jax"
rng = np.random.default_rng(0)
for name in ("a", "b"):
    folder = pathlib.Path("images", "train", name)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
source = data.load_labeled("folder:images")
keras.utils.set_random_seed(0)
net = zoo.build("r18_0.125x_sk0", input_shape=(32, 32, 3), num_classes=2)
stem = keras.ops.convert_to_numpy(net.get_layer("stem").weights[0]).copy()
projector = keras_fit.pretrain_model(net, learning_rate=0.5, temperature=0.2)
pretrain = projector.fit(keras_fit.pretrain_batches(data.pretrain_dataset(source, 8, 32)),
                         steps_per_epoch=10, epochs=2, verbose=0)
classifier = keras_fit.finetune_model(net)
finetune = classifier.fit(data.finetune_dataset(source, 8, 32), steps_per_epoch=4, epochs=1,
                          verbose=0)
print("FIT " + json.dumps({
    "pretrain": [float(v) for v in pretrain.history["loss"]],
    "finetune": [float(v) for v in finetune.history["loss"]],
    "stem_changed": bool(np.abs(keras.ops.convert_to_numpy(net.get_layer("stem").weights[0])
                                - stem).max() > 0)}))
'''


@pytest.mark.backends
def test_keras_fit_on_jax_from_the_data_pipelines(tmp_path):
    pytest.importorskip("jax")
    script = tmp_path / "fit.py"
    script.write_text(DATA_PIPELINE_FIT)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT),
               SIMCLRV2_HOME=str(tmp_path / "home"))
    result = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    values = json.loads(next(line for line in result.stdout.splitlines()
                             if line.startswith("FIT "))[len("FIT "):])
    assert len(values["pretrain"]) == 2 and len(values["finetune"]) == 1
    # The path runs end to end and trains the network; that its loss falls is shown on a fixed
    # batch above (20 fresh random views of noise images need not lower it in 20 steps).
    assert all(np.isfinite(values["pretrain"] + values["finetune"])) and values["stem_changed"]
