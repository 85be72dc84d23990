"""Training-loop guarantees: exact resume after SIGKILL, NaN stop keeping the last good checkpoint,
config validation."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from simclrv2.recipes import config as C

from conftest import checkpoint_values

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = dict(dataset="synthetic", image_size=8, model="r18_0.25x_sk0", global_batch_size=8,
            warmup_epochs=0.0, learning_rate=0.5, knn_bank_size=32, num_eval_examples=32,
            eval_batch_size=32, progress_bar=False, deterministic=True, temperature=0.2)

RUN = """
import json, sys
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
from simclrv2.recipes import config as C, stages
values = json.loads(sys.argv[1])
kill_before_saving = values.pop("kill_before_saving", None)
if kill_before_saving is not None:
    # SIGKILL at a known point (its step trained and logged, its checkpoint not yet written)
    # rather than whenever a polling parent got to it: on a busy host the run had finished first.
    import os, signal
    save = tf.train.CheckpointManager.save
    def save_or_die(self, checkpoint_number=None, **kwargs):
        if checkpoint_number == kill_before_saving:
            os.kill(os.getpid(), signal.SIGKILL)
        return save(self, checkpoint_number=checkpoint_number, **kwargs)
    tf.train.CheckpointManager.save = save_or_die
stages.pretrain(C.from_dict("pretrain", values))
"""


def _start(values):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen([sys.executable, "-c", RUN, json.dumps(values)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    steps = dict(TINY, train_steps=8, checkpoint_steps=2, keep_checkpoints=10)
    straight = _start(dict(steps, model_dir=str(tmp_path / "straight")))
    killed = _start(dict(steps, model_dir=str(tmp_path / "killed"), checkpoint_steps=3,
                         kill_before_saving=6))
    _, err = killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL, err[-4000:]
    # Killed after step 6, before its checkpoint: the resumed run goes back to step 3.
    saved = (tmp_path / "killed" / "checkpoints" / "checkpoint").read_text()
    assert "ckpt-3" in saved and "ckpt-6" not in saved and "ckpt-8" not in saved
    resumed = _start(dict(steps, model_dir=str(tmp_path / "killed"), checkpoint_steps=3))
    for proc in (straight, resumed):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-4000:]
    path_a, a = checkpoint_values(tmp_path / "straight")
    path_b, b = checkpoint_values(tmp_path / "killed")
    assert path_a.endswith("ckpt-8") and path_b.endswith("ckpt-8")
    assert sorted(a) == sorted(b)
    assert any("iter" in name for name in a)  # optimizer step saved, hence the schedule position
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-6, atol=1e-7, err_msg=name)
    records = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").open()]
    assert records[-1]["kind"] == "eval" and "knn_top1" in records[-1]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    import tensorflow as tf
    from simclrv2.recipes import engine, stages

    values = dict(TINY, train_steps=30, checkpoint_steps=1, optimizer="momentum",
                  learning_rate=1e25, deterministic=False, lineareval_while_pretraining=False,
                  model_dir=str(tmp_path / "nan"))
    with pytest.raises(engine.NonFiniteLossError, match=r"loss is (nan|inf).*last good checkpoint"):
        stages.pretrain(C.from_dict("pretrain", values))
    latest = tf.train.latest_checkpoint(str(tmp_path / "nan" / "checkpoints"))
    assert latest is not None
    reader = tf.train.load_checkpoint(latest)
    for name, _ in tf.train.list_variables(latest):
        value = reader.get_tensor(name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), f"{name} in the kept checkpoint is not finite"
    assert not (tmp_path / "nan" / "model.keras").exists()


def test_resume_walks_back_past_a_damaged_checkpoint(tmp_path, capfd):
    import tensorflow as tf
    from simclrv2.recipes import engine, stages

    values = dict(TINY, train_steps=4, checkpoint_steps=2, keep_checkpoints=5,
                  lineareval_while_pretraining=False, model_dir=str(tmp_path / "run"))
    stages.pretrain(C.from_dict("pretrain", values))
    checkpoints = tmp_path / "run" / "checkpoints"
    assert tf.train.latest_checkpoint(str(checkpoints)).endswith("ckpt-4")

    def cut(number):  # as a kill part-way through writing it, or a full disk, would leave it
        data = checkpoints / f"ckpt-{number}.data-00000-of-00001"
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])

    cut(4)
    capfd.readouterr()
    result = stages.pretrain(C.from_dict("pretrain", dict(values, train_steps=6)))
    err = capfd.readouterr().err
    resumed = [line for line in err.splitlines() if line.startswith("resumed from")]
    assert len(resumed) == 1, err[-3000:]
    assert resumed[0].startswith(f"resumed from {checkpoints / 'ckpt-2'} (step 2); skipped "
                                 "damaged ckpt-4 (")
    assert result["status"] == "done" and result["steps"] == 6
    assert tf.train.latest_checkpoint(str(checkpoints)).endswith("ckpt-6")
    for number in (2, 4, 6):
        cut(number)
    with pytest.raises(engine.DamagedCheckpointsError,
                       match=r"none of the 3 checkpoints in .* reads back \(ckpt-6: .*ckpt-2: .*"
                             r"move that directory aside"):
        stages.pretrain(C.from_dict("pretrain", dict(values, train_steps=8)))


def test_recipes_validate_and_errors_name_the_key(tmp_path):
    for name in C.list_recipes():
        values = C.read_recipe(name)
        C.from_dict(values["stage"], values)
    with pytest.raises(C.ConfigError, match="unknown key 'tempreature'"):
        C.from_dict("pretrain", {"tempreature": 0.1})
    with pytest.raises(C.ConfigError, match="global_batch_size must be a int"):
        C.from_dict("pretrain", {"global_batch_size": "64"})
    with pytest.raises(C.ConfigError, match="global_bn must be a bool"):
        C.from_dict("pretrain", {"global_bn": 1})
    with pytest.raises(C.ConfigError, match="--train-steps 'x': expected int"):
        C.from_dict("pretrain", {}, {"train_steps": "x"})
    with pytest.raises(C.ConfigError, match="not `simclrv2 finetune`"):
        C.from_dict("finetune", C.read_recipe("fmnist_pretrain"))
    cfg = C.load("pretrain", "fmnist_pretrain", {"train_steps": "7", "global_bn": "false"})
    assert cfg.train_steps == 7 and cfg.global_bn is False
    for stage, required in (("finetune", {"model": "r18_0.25x_sk0"}),
                            ("lineareval", {"checkpoint": "m.keras"}), ("distill", {"teacher": "t"})):
        with pytest.raises(C.ConfigError, match=r"label_fraction must be in \(0, 1\], got 1.5"):
            C.from_dict(stage, dict(required, label_fraction=1.5))
    own = tmp_path / "mine.json"
    own.write_text(json.dumps({"stage": "distill", "teacher": "x", "_source": "mine"}))
    assert C.load("distill", str(own)).teacher == "x"


def test_cli_rejects_unknown_option_without_starting_tensorflow(capsys):
    from simclrv2.recipes import cli
    assert cli.pretrain_main(["--recipe", "fmnist_pretrain", "--bogus=1"]) == 2
    assert "unknown option --bogus" in capsys.readouterr().err
    assert cli.finetune_main(["--recipe=fmnist_finetune", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["ft_proj_selector"] == 1
