"""`simclrv2 pretrain|finetune|lineareval|distill` (simclrv2/recipes/cli.py): one dashed option
per field of the stage's config, the old underscore spellings for one more release, one line
for a bad option, and the exit status of a run stopped early."""

import dataclasses
import json
import os
import subprocess
import sys
import typing

import pytest

from simclrv2 import errors
from simclrv2.recipes import cli
from simclrv2.recipes import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAINS = {"pretrain": cli.pretrain_main, "finetune": cli.finetune_main,
         "lineareval": cli.lineareval_main, "distill": cli.distill_main}


def _run(stage, argv, capsys):
    code = MAINS[stage](argv)
    out, err = capsys.readouterr()
    return code, out, err


def _text(value):
    """A config value as a user would type it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _recipe_for(stage):
    return next(name for name in config_lib.list_recipes()
                if name.startswith("fmnist_") and config_lib.read_recipe(name)["stage"] == stage)


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)


@pytest.mark.parametrize("stage", list(MAINS))
def test_every_field_is_a_dashed_option_that_sets_it(stage, capsys):
    """Every field given as an option, without a recipe, gives the recipe's config: each option
    reaches its field, typed by the field (bools, Optional, floats)."""
    expected = config_lib.to_dict(config_lib.load(stage, _recipe_for(stage)))
    argv = []
    for name, value in expected.items():
        argv += [f"--{name.replace('_', '-')}", _text(value)]
    code, out, err = _run(stage, argv + ["--print-config"], capsys)
    assert (code, err) == (errors.EXIT_DONE, "")
    assert json.loads(out) == expected


def test_option_equals_value_booleans_and_none(capsys):
    code, out, err = _run("pretrain", ["--global-bn=false", "--color-jitter-strength", "0.5",
                                       "--blur-in-train-step", "none", "--train-steps=7",
                                       "--print-config"], capsys)
    assert (code, err) == (errors.EXIT_DONE, "")
    config = json.loads(out)
    assert (config["global_bn"], config["color_jitter_strength"], config["blur_in_train_step"],
            config["train_steps"]) == (False, 0.5, None, 7)
    code, out, _ = _run("finetune", ["--recipe", _recipe_for("finetune"),
                                     "--fine-tune-after-block", "-1", "--print-config"], capsys)
    assert code == errors.EXIT_DONE and json.loads(out)["fine_tune_after_block"] == -1


@pytest.mark.parametrize("stage", list(MAINS))
def test_help_lists_every_option_with_its_type_and_default_and_the_recipes(stage, capsys):
    code, out, err = _run(stage, ["--help"], capsys)
    assert (code, err) == (errors.EXIT_DONE, "")
    lines = out.splitlines()
    cls = config_lib.STAGE_CONFIGS[stage]
    types = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        option = f"--{field.name.replace('_', '-')} "
        at = next(i for i, line in enumerate(lines) if line.strip().startswith(option))
        described = " ".join(lines[at:at + 2])  # argparse wraps a long option's help below it
        assert f"{option}{cli._metavar(types[field.name])} " in described
        assert f"default {_text(field.default) or repr('')}" in described
    assert _recipe_for(stage) in out
    assert "--print-config" in out and "--recipe NAME_OR_FILE" in out
    assert f"{errors.EXIT_PREEMPTED} stopped early" in out


def test_old_underscore_spellings_work_with_one_notice_naming_the_dashed_ones(capsys):
    old = ["--recipe=fmnist_pretrain", "--train_steps=7", "--model_dir", "runs/x",
           "--global_bn=false", "--train_steps", "8", "--print_config"]
    code, out, err = _run("pretrain", old, capsys)
    assert code == errors.EXIT_DONE
    config = json.loads(out)
    assert (config["train_steps"], config["model_dir"], config["global_bn"]) == (8, "runs/x",
                                                                                  False)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("simclrv2 pretrain: deprecated")
    for dashed in ("--train-steps", "--model-dir", "--global-bn", "--print-config"):
        assert dashed in lines[0]
    assert lines[0].count("--train-steps") == 1  # one mention, though given twice
    new = ["--recipe", "fmnist_pretrain", "--train-steps", "8", "--model-dir", "runs/x",
           "--global-bn", "false", "--print-config"]
    assert _run("pretrain", new, capsys) == (errors.EXIT_DONE, out, "")


@pytest.mark.parametrize("argv,words", [
    (["--tempreature", "0.3"], ["unknown option --tempreature", "did you mean --temperature?"]),
    (["--no_such_option=1"], ["unknown option --no-such-option"]),
    (["--train-steps"], ["--train-steps: expected one argument"]),
    (["--train-steps", "many"], ["--train-steps", "'many'", "int"]),
    (["--global-bn", "maybe"], ["--global-bn", "'maybe'", "bool"]),
    (["runs/x"], ["unexpected argument 'runs/x'", "--key value"]),
])
def test_a_bad_option_is_one_line_in_the_dashed_spelling_and_exit_2(argv, words, capsys):
    code, out, err = _run("pretrain", argv + ["--print-config"], capsys)
    assert code == errors.EXIT_MISTAKE and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("simclrv2 pretrain: "), err
    for word in words:
        assert word in lines[0], lines[0]
    assert "_" not in "".join(w for w in lines[0].split() if w.startswith("--")), lines[0]


def test_a_run_stopped_early_exits_3_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    from simclrv2.recipes import stages

    def stopped(config):
        return {"status": "preempted", "steps": 4, "model_dir": config.model_dir}

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "pretrain", stopped)
    code, out, err = _run("pretrain", ["--dataset", "synthetic", "--model-dir",
                                       str(tmp_path / "run")], capsys)
    assert code == errors.EXIT_PREEMPTED
    assert json.loads(out)["status"] == "preempted"
    assert err.strip().splitlines()[-1] == (
        f"simclrv2 pretrain: stopped at step 4 with a checkpoint saved in {tmp_path / 'run'}; "
        "run the same command again to resume")


def test_stop_at_step_pauses_with_a_checkpoint_and_the_same_run_goes_on_without_it(
        tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--dataset", "synthetic", "--model-dir", str(run), "--image-size", "16",
              "--model", "r18_0.125x_sk0", "--global-batch-size", "4", "--log-steps", "1",
              "--lineareval-while-pretraining", "false", "--knn-bank-size", "8",
              "--num-eval-examples", "8", "--eval-batch-size", "8", "--progress-bar", "false",
              "--warmup-epochs", "0", "--train-epochs", "0"]
    code, out, err = _run("pretrain", common + ["--train-steps", "5", "--stop-at-step", "2"],
                          capsys)
    assert code == errors.EXIT_PREEMPTED
    assert (json.loads(out)["status"], json.loads(out)["steps"]) == ("paused", 2)
    assert "paused at step 2 (--stop-at-step)" in err.strip().splitlines()[-1]
    assert (run / "checkpoints" / "ckpt-2.index").is_file()
    # Run again with a longer schedule and no stop: it resumes at step 2 and finishes.
    code, out, err = _run("pretrain", common + ["--train-steps", "3"], capsys)
    assert code == errors.EXIT_DONE and json.loads(out)["steps"] == 3
    assert "resumed from" in err and "(step 2)" in err
    with pytest.raises(Exception, match="stop_at_step must be >= 0"):
        config_lib.load("pretrain", None, {"stop_at_step": "-1"})


# `simclrv2 pretrain` in a process of its own that sends itself SIGTERM once its checkpoint of
# step 2 is written: a known point, where a signal from a parent could come before TensorFlow
# has even started or after the run ended.
SIGTERM_AT_STEP_2 = """
import os, signal, sys
import tensorflow as tf
save = tf.train.CheckpointManager.save
def save_then_sigterm(self, checkpoint_number=None, **kwargs):
    path = save(self, checkpoint_number=checkpoint_number, **kwargs)
    if checkpoint_number == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return path
tf.train.CheckpointManager.save = save_then_sigterm
from simclrv2 import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_sigterm_stops_pretrain_with_a_checkpoint_and_exit_3(tmp_path):
    model_dir = tmp_path / "run"
    argv = ["pretrain", "--dataset", "synthetic", "--image-size", "8", "--model", "r18_0.25x_sk0",
            "--global-batch-size", "8", "--train-steps", "6", "--checkpoint-steps", "2",
            "--knn-bank-size", "32", "--num-eval-examples", "32", "--eval-batch-size", "32",
            "--progress-bar", "false", "--model-dir", str(model_dir)]
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", SIGTERM_AT_STEP_2, *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == errors.EXIT_PREEMPTED, proc.stderr[-4000:]
    assert json.loads(proc.stdout[proc.stdout.index("{"):])["status"] == "preempted"
    assert proc.stderr.strip().splitlines()[-1] == (
        f"simclrv2 pretrain: stopped at step 2 with a checkpoint saved in {model_dir}; "
        "run the same command again to resume")
    saved = (model_dir / "checkpoints" / "checkpoint").read_text()
    assert "ckpt-2" in saved and "ckpt-4" not in saved
