"""The main job's stages in running order, each a recipe file's settings plus the job's links.

plan(args) -> [(stage name, kind of stage run, settings)]; the settings are what
`simclrv2.recipes.config.from_dict` reads, so every stage is the same code path as the
`simclrv2 pretrain|finetune|lineareval|distill` commands.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from simclrv2.main_job import settings
from simclrv2.recipes.config import PretrainConfig
from simclrv2.zoo.config import model_name

# The kNN monitor's settings, which the linear eval takes from the pretraining stage.
MONITOR_KEYS = ("knn_k", "knn_temperature", "knn_bank_size")


def architecture(width):
    """The job's network at a width: ResNet-18 without selective kernels."""
    return model_name(18, width, False)


def with_default_steps(args, **changes):
    """A copy of args for plan() before the step counts are sized: those still unset take the
    default plan's values; `changes` replace others."""
    defaults = settings.defaults()
    unset = {n: defaults[n] for n in settings.STEP_OPTIONS if getattr(args, n) is None}
    return argparse.Namespace(**{**vars(args), **unset, **changes})


def setting_value(text):
    """A --set value as JSON when it parses (0.5, true, 300), else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _checkpoint_steps(steps, share=1.0):
    return max(1, min(50, int(steps * share)))


def plan(args):
    """[(stage name, kind, settings)], in running order. Every value that shapes a result is
    here or in the recipe files, so job.json (which records args) identifies what a run
    directory holds."""
    run = pathlib.Path(args.run_dir)
    quick = args.quick
    common = dict(image_size=args.image_size, progress_bar=True, seed=args.seed,
                  mixed_precision=args.precision,
                  eval_split="validation" if args.validation else "test")
    if quick:  # every step logged, so that even a few steps time the host
        common.update(num_eval_examples=1000, log_steps=1)
    if args.data_dir:
        common["data_dir"] = args.data_dir
    teacher, student = architecture(args.width), architecture(args.student_width)
    pre_dir = run / "pretrain"

    def stage(name, kind, *parts):
        values = settings.recipe(kind)
        for part in (common, dict(model_dir=str(run / name))) + parts:
            values.update(part)
        if "label_fraction" in values:
            values["label_seed"] = args.seed  # fine-tuned rows and their baselines: same subsets
        return name, kind, values

    # --quick fits the baseline to the first 10,000 training images for 30 iterations.
    stages = [stage("pixels", "pixels",
                    dict(max_iterations=30, max_train_examples=10_000) if quick else {})]
    # The kNN monitor's top-1 comes from the linear eval's features (its bank and evaluation
    # images are among the images the linear eval reads): one pass over them, not two.
    stages.append(stage(
        "pretrain", "pretrain",
        dict(model=teacher, train_steps=args.steps, final_monitor=False,
             checkpoint_steps=_checkpoint_steps(args.steps, 0.5)),
        dict(global_batch_size=32, warmup_epochs=0.0, knn_bank_size=500) if quick else {}))
    # Linear eval on all the labels (the aim); --quick reads 10% of them instead, since all 60k
    # cost a forward pass over the training set.
    for pct in ((10,) if quick else (100,)):
        stages.append(stage(
            f"lineareval_{pct}pct", "lineareval",
            dict(checkpoint=str(pre_dir / "model.keras"), label_fraction=pct / 100),
            dict(train_steps=30) if quick else {}))

    def supervised(name, pct, kind, **values):
        steps = dict(zip((1, 10), args.finetune_steps))[pct]
        return stage(name, kind, dict(label_fraction=pct / 100, train_steps=steps,
                                      checkpoint_steps=_checkpoint_steps(steps)),
                     values, dict(global_batch_size=32) if quick else {})

    for pct in (1, 10):
        stages.append(supervised(f"finetune_{pct}pct", pct, "finetune", checkpoint=str(pre_dir)))
    # The baselines: the very same network (projection layer 1 included) and label subsets
    # (same label_seed), from random weights, at the same steps.
    for pct in (1, 10):
        stages.append(supervised(f"scratch_{pct}pct", pct, "scratch", model=teacher))
    stages.append(stage(
        "distill", "distill",
        dict(teacher=str(run / "finetune_10pct"), student=student, train_steps=args.distill_steps,
             checkpoint_steps=_checkpoint_steps(args.distill_steps)),
        dict(global_batch_size=32) if quick else {}))
    # What the student's labels alone give: the student network trained on the teacher's 10%.
    stages.append(supervised("student_10pct", 10, "scratch", model=student))

    for setting in args.settings:
        target, _, value = setting.partition("=")
        prefix, _, key = target.partition(".")
        for _, _, values in [st for st in stages if st[0].startswith(prefix)]:
            values[key] = setting_value(value)
    # The linear eval measures the pretraining stage's monitor, with its settings (--set
    # included; a --set lineareval.knn_* wins).
    pretrain = next(values for _, kind, values in stages if kind == "pretrain")
    for _, kind, values in stages:
        if kind == "lineareval":
            for key in MONITOR_KEYS:
                values.setdefault(key, pretrain.get(key, getattr(PretrainConfig, key)))
    if args.only:
        wanted = set(args.only.split(","))  # names checked by parse_args
        stages = [st for st in stages if st[0] in wanted]
    return stages
