"""Distribution: 2 replicas (MirroredStrategy, sync BN, gathered negatives) == 1 replica on the same
global batch; 2 worker processes (MultiWorkerMirroredStrategy) end with identical weights.

Logical devices and TF_CONFIG must be set before TensorFlow starts, so each case runs in a fresh
interpreter.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = dict(dataset="synthetic", image_size=8, model="r18_0.25x_sk0", global_batch_size=8,
            train_steps=1, warmup_epochs=0.0, learning_rate=0.5, weight_decay=1e-4,
            knn_bank_size=32, num_eval_examples=32, eval_batch_size=32, progress_bar=False,
            temperature=0.2, lineareval_while_pretraining=True, global_bn=True)


def _run(code, env=None, timeout=240):
    full_env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


MIRRORED = """
import json, sys
import numpy as np
import pytest
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(1)
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from simclrv2.recipes import config as C, stages
tiny = json.loads(sys.argv[1]) if len(sys.argv) > 1 else json.loads('''{tiny}''')
out = {{}}
for name, strategy in (("single", "default"), ("mirrored", "mirrored")):
    cfg = C.from_dict("pretrain", dict(tiny, strategy=strategy, model_dir="{tmp}/" + name))
    result = stages.pretrain(cfg)
    out[name] = result["train_metrics"]
    np.savez("{tmp}/" + name + ".npz", **{{v.path: v.numpy() for v in result["model"].weights}})
    if name == "mirrored":
        assert isinstance(tf.distribute.get_strategy(), tf.distribute.Strategy)
# An uneven split is refused before any training (no checkpoint written).
try:
    stages.pretrain(C.from_dict("pretrain", dict(tiny, strategy="mirrored", global_batch_size=7,
                                                   model_dir="{tmp}/uneven")))
    out["uneven"] = "no error"
except C.ConfigError as error:
    out["uneven"] = str(error)
print("RESULT" + json.dumps(out))
"""


def test_two_replicas_equal_one_replica(tmp_path):
    proc = _run(MIRRORED.format(tiny=json.dumps(TINY), tmp=tmp_path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.split("RESULT")[-1])
    single, mirrored = out["single"], out["mirrored"]
    for key in ("contrastive_loss", "sup_loss", "loss"):
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-5, err_msg=key)
    a, b = np.load(tmp_path / "single.npz"), np.load(tmp_path / "mirrored.npz")
    assert sorted(a.files) == sorted(b.files)
    moved = 0
    for path in a.files:  # trainable weights and BN moving statistics alike
        np.testing.assert_allclose(b[path], a[path], rtol=1e-5, atol=1e-5, err_msg=path)
        moved += "moving_mean" in path and np.abs(a[path]).max() > 0
    assert moved, "BN moving means never moved: the step did not run in training mode"
    assert "not divisible by the 2 replicas" in out["uneven"], out["uneven"]
    assert not (tmp_path / "uneven" / "checkpoints").exists()


WORKER = """
import json, os
import numpy as np
import pytest
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
from simclrv2.recipes import config as C, stages
tiny = json.loads(os.environ["TINY"])
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
result = stages.pretrain(C.from_dict("pretrain", dict(tiny, strategy="multiworker",
                                                      model_dir=os.environ["MODEL_DIR"])))
np.savez(os.environ["MODEL_DIR"] + f"/../worker{index}.npz",
         **{v.path: v.numpy() for v in result["model"].weights})
print("RESULT" + json.dumps(result["train_metrics"]))
"""


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_end_with_identical_weights(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    tiny = dict(TINY, train_steps=3, checkpoint_steps=2, global_bn=True)
    procs = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                      "index": index}}),
                   TINY=json.dumps(tiny), MODEL_DIR=str(tmp_path / "run"))
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=300))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (stdout, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr[-4000:]
    a, b = np.load(tmp_path / "worker0.npz"), np.load(tmp_path / "worker1.npz")
    assert sorted(a.files) == sorted(b.files)
    for path in a.files:
        np.testing.assert_array_equal(a[path], b[path], err_msg=path)
    # The chief kept its checkpoints; the other worker's scratch copy is gone.
    assert (tmp_path / "run" / "checkpoints" / "checkpoint").exists()
    assert not any(p.name.startswith("scratch_") for p in (tmp_path / "run").iterdir())
    metrics = [json.loads(out.split("RESULT")[-1]) for out, _ in outputs]
    assert metrics[0]["loss"] == metrics[1]["loss"]
