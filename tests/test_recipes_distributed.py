"""Distribution: 2 replicas (MirroredStrategy, sync BN, gathered negatives) == 1 replica on the same
global batch; 2 worker processes (MultiWorkerMirroredStrategy) end with identical weights; when
one of them is killed, the other stops with one line naming the checkpoint to resume from.

Logical devices and TF_CONFIG must be set before TensorFlow starts, so each case runs in a fresh
interpreter.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = dict(dataset="synthetic", image_size=8, model="r18_0.25x_sk0", global_batch_size=8,
            train_steps=1, warmup_epochs=0.0, learning_rate=0.5, weight_decay=1e-4,
            knn_bank_size=32, num_eval_examples=32, eval_batch_size=32, progress_bar=False,
            temperature=0.2, lineareval_while_pretraining=True, global_bn=True,
            # These tests compare runs to 1e-5; bfloat16 (what `auto` picks on a CPU with it)
            # rounds each at 1e-3 and would compare the rounding, not the distribution.
            mixed_precision="float32")


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


def _latest_checkpoint(directory):
    """What tf.train.latest_checkpoint reads from the state file, without importing TF here."""
    text = (directory / "checkpoint").read_text()
    name = re.search(r'^model_checkpoint_path: "([^"]+)"', text, re.M).group(1)
    return name if os.path.isabs(name) else str(directory / name)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _two_workers(directory, tiny):
    """Both workers' (returncode, stdout, stderr), each a fresh process on a fresh port."""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                      "index": index}}),
                   TINY=json.dumps(tiny), MODEL_DIR=str(directory / "run"))
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
    return [(proc.returncode, out, err) for proc, (out, err) in zip(procs, outputs)]


# A worker of TensorFlow 2.21's MultiWorkerMirroredStrategy sometimes dies in native code
# (SIGABRT, "terminate called after throwing an instance of ..."), not in this package; not yet
# diagnosed (docs/development.md). The pair is then run once more, from scratch, in a fresh
# directory: the assertions below hold for a run that finished, never for an aborted one.
NATIVE_ABORT = "terminate called after throwing"


def test_two_workers_end_with_identical_weights(tmp_path):
    tiny = dict(TINY, train_steps=3, checkpoint_steps=2, global_bn=True)
    results = _two_workers(tmp_path, tiny)
    if any(code == -signal.SIGABRT and NATIVE_ABORT in err for code, _, err in results):
        tmp_path = tmp_path / "again"
        tmp_path.mkdir()
        results = _two_workers(tmp_path, tiny)
    for code, _, stderr in results:
        assert code == 0, stderr[-4000:]
    a, b = np.load(tmp_path / "worker0.npz"), np.load(tmp_path / "worker1.npz")
    assert sorted(a.files) == sorted(b.files)
    for path in a.files:
        np.testing.assert_array_equal(a[path], b[path], err_msg=path)
    # The chief kept its checkpoints; the other worker's scratch copy is gone.
    assert (tmp_path / "run" / "checkpoints" / "checkpoint").exists()
    assert not any(p.name.startswith("scratch_") for p in (tmp_path / "run").iterdir())
    metrics = [json.loads(out.split("RESULT")[-1]) for _, out, _ in results]
    assert metrics[0]["loss"] == metrics[1]["loss"]


def test_a_killed_worker_stops_the_others_with_one_line(tmp_path):
    """SIGKILL of worker 1 after the chief's first checkpoint: the chief stops within 60 s with
    one line naming that checkpoint and exit 1 (a run that failed, not a bug's traceback and
    70), and the checkpoint restores: a single-worker run in the same model_dir resumes from it
    and finishes. (Restarting both workers resumes the same way; one worker takes half the time
    on 2 cores, where TensorFlow's start and the first step's tracing dominate.)"""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    model_dir = tmp_path / "run"
    train_steps = 20
    args = ["--dataset=synthetic", "--image-size=8", "--model=r18_0.25x_sk0",
            "--global-batch-size=8", f"--train-steps={train_steps}", "--checkpoint-steps=2",
            "--warmup-epochs=0", "--progress-bar=false", "--knn-bank-size=32",
            "--num-eval-examples=32", "--eval-batch-size=32", f"--model-dir={model_dir}"]
    base_env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    base_env.pop("SIMCLRV2_DEBUG", None)
    procs, stderr_paths = [], []
    try:
        for index in range(2):
            env = dict(base_env, TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}))
            stderr_paths.append(tmp_path / f"worker{index}.err")
            with open(stderr_paths[-1], "w") as err:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "simclrv2", "pretrain", *args, "--strategy=multiworker"],
                    cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err))
        state = model_dir / "checkpoints" / "checkpoint"
        deadline = time.monotonic() + 300
        while not state.exists():
            assert all(p.poll() is None for p in procs), \
                [p.returncode for p in procs] + [p.read_text()[-3000:] for p in stderr_paths]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.1)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        try:
            returncode = procs[0].wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the chief still runs 60 s after worker 1 was killed")
        waited = time.monotonic() - killed
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = stderr_paths[0].read_text()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert returncode == 1, stderr[-4000:]
    assert "Traceback" not in stderr, stderr[-4000:]
    last = lines[-1]
    assert last.startswith("simclrv2 pretrain: lost contact with another worker ("), last
    assert "restart every worker with the same command to resume" in last, last
    assert waited < 60
    named = re.search(r"the last checkpoint is (\S+):", last).group(1)
    assert named == _latest_checkpoint(model_dir / "checkpoints"), last
    assert int(named.rsplit("-", 1)[1]) < train_steps  # killed mid-run
    # The checkpoint restores: one worker (no TF_CONFIG) resumes from it and finishes.
    rerun = subprocess.run([sys.executable, "-m", "simclrv2", "pretrain", *args,
                            "--strategy=default"], cwd=ROOT, env=base_env, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert f"resumed from {named} (step {named.rsplit('-', 1)[1]})" in rerun.stderr
    result = json.loads((model_dir / "result.json").read_text())
    assert (result["status"], result["steps"]) == ("done", train_steps)


def test_only_a_multi_worker_run_reads_a_collective_failure_as_a_lost_worker(tmp_path,
                                                                            monkeypatch, capsys):
    import tensorflow as tf
    from simclrv2 import errors
    from simclrv2.recipes import engine

    reset = tf.errors.UnavailableError(None, None, (
        "Graph execution error:\n\nDetected at node CollectiveReduceV2_101 defined at (most "
        "recent call last):\nCollective ops is aborted by: recvmsg:Connection reset by peer\n"
        "Additional GRPC error information from remote target /job:worker/replica:0/task:0 "
        "while calling /tensorflow.WorkerService/RecvBuf:"))
    unrelated = tf.errors.InternalError(None, None, "a kernel failed for its own reasons")

    def fail(error):
        with engine._peer_failures(tf.distribute.get_strategy(), tmp_path):
            raise error

    with pytest.raises(tf.errors.UnavailableError):  # one process: no peer to lose, a bug
        fail(reset)
    monkeypatch.setattr(engine, "num_workers", lambda strategy: 2)
    with pytest.raises(tf.errors.InternalError):  # an InternalError that says nothing of it
        fail(unrelated)
    with pytest.raises(engine.LostWorkerError) as raised:
        fail(reset)
    assert str(raised.value) == (
        "lost contact with another worker (recvmsg:Connection reset by peer, from "
        "/job:worker/replica:0/task:0); no checkpoint was saved yet: restart every worker with "
        "the same command to start again")

    def main(argv):
        fail(reset)

    assert errors.run("pretrain", main, []) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("simclrv2 pretrain: lost contact"), err
