"""simclrv2/recipes/run_lifecycle.py: a run directory's config.json, label subset file and
result.json / model.keras."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from simclrv2.recipes import config as C
from simclrv2.recipes import run_lifecycle

TINY = dict(dataset="synthetic", image_size=8, model="r18_0.25x_sk0", global_batch_size=8,
            progress_bar=False)


def test_record_run_refuses_a_model_dir_of_another_model_or_stage(tmp_path):
    import simclrv2.zoo as zoo

    config = C.from_dict("pretrain", dict(TINY, model_dir=str(tmp_path)))
    small = run_lifecycle.model_config_dict(zoo.build("r18_0.125x_sk0", input_shape=(8, 8, 3)))
    run_lifecycle.record_run(tmp_path, "pretrain", config, small, chief=True)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["stage"] == "pretrain" and written["model_config"] == small
    assert written["config"]["model_dir"] == str(tmp_path)
    run_lifecycle.record_run(tmp_path, "pretrain", config, small, chief=True)  # a resume
    other = dict(small, depth=50)
    with pytest.raises(C.ConfigError, match=r"holds a pretrain run of another model \(18-layer\); "
                                            r"use a new model_dir"):
        run_lifecycle.record_run(tmp_path, "pretrain", config, other, chief=True)
    with pytest.raises(C.ConfigError, match="holds a pretrain run"):
        run_lifecycle.record_run(tmp_path, "finetune", config, small, chief=True)
    # A worker that is not the chief checks but never writes.
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    run_lifecycle.record_run(elsewhere, "pretrain", config, small, chief=False)
    assert not (elsewhere / "config.json").exists()


def test_subset_file_names_fraction_seed_and_held_out_images(tmp_path):
    def path(**values):
        return run_lifecycle.subset_file(C.from_dict("finetune", dict(TINY, **values)), tmp_path)

    assert path(label_fraction=1.0) is None
    assert path(label_fraction=0.1, label_seed=3) == str(tmp_path / "label_subset_0.1_seed3.txt")
    assert path(label_fraction=0.01, eval_split="validation", validation_examples=500) == str(
        tmp_path / "label_subset_0.01_seed0_val500.txt")


def test_final_model_save_never_leaves_a_broken_model_keras(tmp_path):
    import zipfile

    import simclrv2.zoo as zoo
    from simclrv2.recipes import run_lifecycle

    class Killed(BaseException):
        """Stands in for a SIGKILL arriving while the zip is being written."""

    class KilledMidSave:
        def save(self, path):
            with open(path, "wb") as f:
                f.write(b"PK\x03\x04 the first bytes of a zip")
            raise Killed

    config = C.from_dict("pretrain", dict(TINY, model_dir=str(tmp_path)))
    with pytest.raises(Killed):
        run_lifecycle.finish(config, tmp_path, "pretrain", {"status": "done"}, KilledMidSave(), True,
                       time.time())
    assert not (tmp_path / "model.keras").exists() and list(tmp_path.iterdir()) == []
    model = zoo.build("r18_0.125x_sk0", num_classes=2, input_shape=(16, 16, 3))
    result = run_lifecycle.finish(config, tmp_path, "pretrain", {"status": "done"}, model, True,
                            time.time())
    assert zipfile.is_zipfile(result["keras_path"])
    before = (tmp_path / "model.keras").read_bytes()
    with pytest.raises(Killed):
        run_lifecycle.finish(config, tmp_path, "pretrain", {"status": "done"}, KilledMidSave(), True,
                       time.time())
    assert (tmp_path / "model.keras").read_bytes() == before  # the earlier one stays whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "result.json"]


# One writer per run directory (simclrv2/dir_lock.py, taken by make_model_dir): a `simclrv2
# pretrain` that pauses right after saving a given checkpoint, until a file appears.
PAUSING = """
import os, sys, time
import tensorflow as tf
go, pause_at = sys.argv[1], int(sys.argv[2])
save = tf.train.CheckpointManager.save
def save_then_wait(self, checkpoint_number=None, **kwargs):
    path = save(self, checkpoint_number=checkpoint_number, **kwargs)
    if checkpoint_number == pause_at:
        print("paused", flush=True)
        while not os.path.exists(go):
            time.sleep(0.05)
    return path
tf.train.CheckpointManager.save = save_then_wait
from simclrv2 import cli
sys.exit(cli.main(sys.argv[3:]))
"""
PRETRAIN = ["pretrain", "--dataset", "synthetic", "--image-size", "8", "--model",
            "r18_0.125x_sk0", "--global-batch-size", "8", "--train-steps", "4",
            "--checkpoint-steps", "2", "--log-steps", "1", "--knn-bank-size", "32",
            "--num-eval-examples", "32", "--eval-batch-size", "32", "--progress-bar", "false",
            "--lineareval-while-pretraining", "false"]


def _env():
    from conftest import REPO_ROOT

    return dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")


def _pausing(model_dir, go, pause_at):
    from conftest import REPO_ROOT

    process = subprocess.Popen(
        [sys.executable, "-c", PAUSING, str(go), str(pause_at), *PRETRAIN, "--model-dir",
         str(model_dir)], cwd=REPO_ROOT, env=_env(), text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    line = process.stdout.readline()
    assert line.strip() == "paused", process.communicate()[1][-3000:]
    return process


def _pretrain(model_dir):
    from conftest import REPO_ROOT

    return subprocess.run([sys.executable, "-m", "simclrv2", *PRETRAIN, "--model-dir",
                           str(model_dir)], cwd=REPO_ROOT, env=_env(), text=True,
                          capture_output=True, timeout=600)


def test_a_second_writer_is_refused_and_the_first_run_is_complete(tmp_path):
    run, go = tmp_path / "run", tmp_path / "go"
    first = _pausing(run, go, pause_at=2)
    try:
        second = _pretrain(run)
        assert second.returncode == 2 and second.stdout == "", second.stderr[-3000:]
        assert second.stderr.count("\n") == 1, second.stderr
        assert second.stderr.startswith(f"simclrv2 pretrain: {run} is in use: pid {first.pid} "
                                        f"on this machine since ")
        assert second.stderr.rstrip().endswith("or choose another --model-dir")
    finally:
        go.touch()
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "done" and result["steps"] == 4
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == [1, 2, 3, 4]  # one writer: no step twice
    assert not (run / ".simclrv2.lock").exists()


def test_a_killed_writer_leaves_no_lock_and_the_rerun_resumes(tmp_path):
    run, go = tmp_path / "run", tmp_path / "go"
    killed = _pausing(run, go, pause_at=2)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert json.loads((run / ".simclrv2.lock").read_text())["pid"] == killed.pid  # stale file
    rerun = _pretrain(run)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from" in rerun.stderr and "ckpt-2 (step 2)" in rerun.stderr
    assert json.loads((run / "result.json").read_text())["steps"] == 4
    assert not (run / ".simclrv2.lock").exists()


def _failing_stage(error):
    """A stage that takes its directory, writes its config.json, then fails with `error`."""
    def stage(config):
        model_dir = run_lifecycle.make_model_dir(config)
        (model_dir / "config.json").write_text("{}")
        raise error
    return run_lifecycle.guarded(stage)


def test_a_failed_run_leaves_a_new_directory_removed_and_an_old_one_as_it_was(tmp_path):
    import tensorflow as tf

    from simclrv2.recipes import memory_estimate

    config = C.from_dict("pretrain", dict(TINY, model_dir=str(tmp_path / "new" / "run")))
    with pytest.raises(C.ConfigError, match="no such dataset"):
        _failing_stage(C.ConfigError("no such dataset"))(config)
    assert list(tmp_path.iterdir()) == []  # nothing saved: the folders it made are gone
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    (old / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"\n')
    (old / "config.json").write_text('{"stage": "pretrain"}')
    config = C.from_dict("pretrain", dict(TINY, model_dir=str(old), global_batch_size=64))
    oom = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
    with pytest.raises(memory_estimate.DoesNotFitError,
                       match=r"^ran out of memory \(r18_0.25x_sk0, 64 images \(128 views\) .*"
                             r"OOM when allocating tensor; (lower|set) --"):
        _failing_stage(oom)(config)
    assert sorted(p.name for p in old.iterdir()) == ["checkpoints", "config.json"]
    assert run_lifecycle._HELD == {}  # every lock let go
