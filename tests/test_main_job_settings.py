"""simclrv2.main_job.settings and plan: the main job's settings are the shipped recipe files'
values, read through the same loader as `simclrv2 pretrain --recipe NAME`."""

import pytest

from simclrv2.main_job import settings
from simclrv2.main_job.cli import parse_args
from simclrv2.main_job.plan import plan, with_default_steps
from simclrv2.recipes import config as config_lib

# What the job itself decides for each stage: where it writes, what feeds it, which labels it
# reads, how long it trains (from --steps & co.), how its progress shows, and which stage
# measures the pretrained network's kNN monitor (the linear eval, with pretraining's settings).
JOB_KEYS = {"model_dir", "checkpoint", "teacher", "label_fraction", "checkpoint_steps",
            "progress_bar", "eval_split", "train_steps", "model", "student", "image_size",
            "seed", "label_seed", "mixed_precision", "final_monitor", "knn_k", "knn_temperature",
            "knn_bank_size"}


@pytest.mark.parametrize("name", config_lib.list_recipes())
def test_every_shipped_recipe_loads(name):
    values = config_lib.read_recipe(name)
    config = config_lib.load(values["stage"], name)
    assert config_lib.to_dict(config)["model_dir"]


def test_the_default_plan_runs_the_recipe_files_values():
    stages = plan(with_default_steps(parse_args([])))
    assert [kind for _, kind, _ in stages] == [
        "pixels", "pretrain", "lineareval", "finetune", "finetune", "scratch", "scratch",
        "distill", "scratch"]
    for name, kind, values in stages:
        recipe = settings.recipe(kind)
        config = config_lib.to_dict(config_lib.from_dict(settings.recipe_stage(kind), values))
        for key, value in recipe.items():
            if key not in JOB_KEYS:
                assert config[key] == value, (name, key)
        # Nothing beyond the recipe and the job's own keys.
        assert set(values) <= set(recipe) | JOB_KEYS, (name, set(values) - set(recipe))


def test_the_default_step_counts_and_widths_are_the_recipes():
    defaults = settings.defaults()
    assert defaults["steps"] == settings.recipe("pretrain")["train_steps"]
    assert defaults["distill_steps"] == settings.recipe("distill")["train_steps"]
    assert defaults["finetune_steps"][1] == settings.recipe("finetune")["train_steps"]
    assert defaults["image_size"] == settings.recipe("pretrain")["image_size"]
    by_name = {name: values for name, _, values in plan(parse_args(
        ["--steps", str(defaults["steps"]), "--finetune-steps",
         ",".join(map(str, defaults["finetune_steps"])),
         "--distill-steps", str(defaults["distill_steps"])]))}
    assert by_name["pretrain"]["model"] == settings.recipe("pretrain")["model"]
    assert by_name["distill"]["student"] == settings.recipe("distill")["student"]
    assert by_name["scratch_10pct"]["model"] == settings.recipe("scratch")["model"]
    for name in ("pretrain", "finetune_10pct", "distill"):
        kind = {"finetune_10pct": "finetune"}.get(name, name)
        assert by_name[name]["train_steps"] == settings.recipe(kind)["train_steps"]


def test_the_linear_eval_measures_the_monitor_with_pretrainings_settings():
    by_name = {name: values for name, _, values in plan(with_default_steps(parse_args(
        ["--set", "pretrain.knn_k=50"])))}
    assert by_name["pretrain"]["final_monitor"] is False
    pretrain = config_lib.from_dict("pretrain", by_name["pretrain"])
    linear = config_lib.from_dict("lineareval", by_name["lineareval_100pct"])
    assert (linear.knn_k, linear.knn_temperature, linear.knn_bank_size) == (
        50, pretrain.knn_temperature, pretrain.knn_bank_size)
