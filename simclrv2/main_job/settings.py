"""The main job's settings: the recipe files it runs each kind of stage from, and the step plan.

Every value that shapes a stage (learning rates, batch sizes, augmentation, network, image size,
step counts) is read from the shipped recipe files through the same loader as `simclrv2
pretrain --recipe NAME`: the job sets only what ties its stages together (directories, which
checkpoint feeds which stage, label fractions, widths and step counts given on its command line).
"""

from __future__ import annotations

import functools

from simclrv2.zoo.config import parse_name

# Kind of stage run -> the recipe it starts from.
RECIPES = {"pixels": "fmnist_pixels", "pretrain": "fmnist_pretrain",
           "lineareval": "fmnist_lineareval", "finetune": "fmnist_finetune",
           "scratch": "fmnist_scratch", "distill": "fmnist_distill"}
# The 1% fine-tuning (and from-scratch) run gets this share of the 10% run's steps: 600 images
# are seen often in fewer steps, and more labels should not be judged at fewer epochs.
ONE_PERCENT_STEP_SHARE = 0.5
STEP_OPTIONS = ("steps", "finetune_steps", "distill_steps")
# --quick: a smoke run of every stage and output on a small network at a small size.
QUICK = dict(width=0.25, image_size=16, steps=6, finetune_steps=(4, 4), distill_steps=4)
# The stage names --set may address (a prefix of the planned stages' names).
SETTABLE = ("pixels", "pretrain", "lineareval", "finetune", "scratch", "distill", "student")
# What each stage costs, in pretraining steps of the same host: (fixed, per step of its own),
# for the precision the job trains in. The whole-job estimate multiplies them by the
# pretraining step this run measured; they come from runs of the job with their stage times split
# into steps and fixed costs (docs/main_job.md, "Time"). A stage's cost in pretraining steps
# differs between the precisions: float32 slows the pretraining step more than the evaluations,
# the logistic regression on pixels not at all.
STAGE_COST = {
    "mixed_bfloat16": {"pixels": (48.0, 0.0), "pretrain": (9.0, 1.0), "lineareval": (85.0, 0.0),
                       "finetune": (16.0, 0.31), "scratch": (14.0, 0.28),
                       "distill": (11.0, 0.25), "student": (8.0, 0.07), "export": (12.0, 0.0)},
    "float32": {"pixels": (30.0, 0.0), "pretrain": (6.0, 1.0), "lineareval": (85.0, 0.0),
                "finetune": (13.5, 0.26), "scratch": (13.5, 0.27), "distill": (7.5, 0.155),
                "student": (6.5, 0.06), "export": (8.5, 0.0)},
}


def stage_cost(policy):
    """`STAGE_COST` for the job's training precision; a policy no job was timed in (a GPU's
    mixed_float16) takes the bfloat16 table, the other mixed policy."""
    return STAGE_COST.get(policy, STAGE_COST["mixed_bfloat16"])


# The job's budget (only with --budget-minutes): minutes of stage time. The default step counts
# fill it on the reference host (REFERENCE, measured there with the default options: seconds per
# pretraining step, and the stage time that does not depend on the step counts;
# docs/main_job.md); with --budget-minutes the step counts not given on the command line are
# scaled from timed pretraining steps.
REFERENCE = dict(pretrain_step_s=0.40, fixed_s=161.0, stepped_s=426.0)
# With --budget-minutes, the pretraining stage's first steps are timed (and then continued): no
# more than the warm-up, whose schedule does not depend on the run's length.
TIMED_STEPS = 20
# A budget may scale the default plan within these bounds: below, no plan has been shown to meet
# the job's aims (the validation runs behind the defaults, docs/main_job.md), so a smaller budget
# is refused; above, the settings were not chosen for that many steps.
SCALE_RANGE = (1.0, 2.0)
# Within this fraction of the defaults they are kept as they are: the probe's few steps vary
# by a few percent from run to run, and the reference host should run the validated plan.
KEEP_DEFAULTS_WITHIN = 0.1


@functools.lru_cache(maxsize=None)
def _recipe_file(kind):
    from simclrv2.recipes import config as config_lib

    return config_lib.read_recipe(RECIPES[kind])


def recipe(kind) -> dict:
    """The settings of a kind of stage run, from its recipe file (annotations left out)."""
    return {k: v for k, v in _recipe_file(kind).items() if k != "stage" and not k.startswith("_")}


def recipe_stage(kind) -> str:
    """The recipes' stage a kind of run is (scratch runs are fine-tuning runs)."""
    return _recipe_file(kind)["stage"]


def width_of(architecture) -> float:
    return parse_name(architecture).width


def defaults() -> dict:
    """The default plan, from the recipes: the teacher's width, image size and step counts (the
    student's width is half the teacher's, as the distillation recipe's is)."""
    finetune = recipe("finetune")["train_steps"]
    return dict(width=width_of(recipe("pretrain")["model"]),
                image_size=recipe("pretrain")["image_size"],
                steps=recipe("pretrain")["train_steps"],
                finetune_steps=(max(1, round(finetune * ONE_PERCENT_STEP_SHARE)), finetune),
                distill_steps=recipe("distill")["train_steps"])
