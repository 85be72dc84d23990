"""`simclrv2 run` (what `make run` runs): the whole SimCLRv2 pipeline on Fashion-MNIST.

pretrain (unlabeled, kNN monitor) -> linear eval and fine-tuning on 1% / 10% of the labels ->
distillation of the 10% teacher into a narrower student on the unlabeled images -> verified export
of the student -> results.json, results.png (top-1 against label fraction) in the run directory.

Every stage runs in its own sub-directory of the run directory and writes result.json when it is
done; a second `simclrv2 run` reuses those and resumes an unfinished stage from its checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

from simclrv2 import errors
from simclrv2.atomic_files import write_json
from simclrv2.plotting import label_fraction_axes, save_label_fraction_plot
from simclrv2.zoo.config import WIDTHS, format_width, parse_name

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = ("Fashion-MNIST is Debian's dataset-fashion-mnist package: `sudo apt-get install "
                f"dataset-fashion-mnist` (files land in {FMNIST_DIR}), or pass --data-dir a "
                "folder holding the four idx .gz files (train-images-idx3-ubyte.gz, ...)")
EXPORT_FORMATS = ("savedmodel", "onnx", "keras")
TRAIN_SIZE = 60000


# The job's settings, chosen on the validation split (5,000 training images held out with a
# fixed seed; `simclrv2 run --validation`), never on the test images: docs/main_job.md shows
# the validation runs behind each choice (benchmarks/tune_main_job.py reruns them).
DEFAULTS = dict(width=0.5, image_size=28, steps=480, finetune_steps=(160, 320), distill_steps=480)
# --quick: a smoke run of every stage and output on a small network at a small size.
QUICK = dict(width=0.25, image_size=16, steps=6, finetune_steps=(4, 4), distill_steps=4)
STEP_OPTIONS = ("steps", "finetune_steps", "distill_steps")
# The job's budget: minutes of stage time. DEFAULTS' step counts fill it on the reference host
# (REFERENCE, measured there with the default options: seconds per pretraining step, and the
# stage time that does not depend on the step counts); elsewhere the step counts not given on
# the command line are scaled from a probe of the pretraining step (see size_steps).
BUDGET_MINUTES = 9.5
# Measured 2026-12-02 on a 2-core Sapphire Rapids VM (bfloat16 under auto, fused batch norm): the
# probe's step (0.385 and 0.414 s in two probes), and the split of the validation run of DEFAULTS
# (runs/val28_w05_fused, 578 s: 426 s in steps by each stage's logged step time, 153 s not) plus
# the export's ~8 s.
REFERENCE = dict(pretrain_step_s=0.40, fixed_s=161.0, stepped_s=426.0)
PROBE_STEPS = 6
# Never scale the plan below a quarter of DEFAULTS (the figures would mean little) or above
# twice (beyond what the settings were chosen for).
SCALE_RANGE = (0.25, 2.0)
# Within this fraction of the defaults they are kept as they are: the probe's few steps vary
# by a few percent from run to run, and the reference host should run the validated plan.
KEEP_DEFAULTS_WITHIN = 0.1
# Recipe values per kind of stage run (benchmarks/semi_supervised.py uses them too).
PRETRAIN = dict(global_batch_size=128, optimizer="lars", learning_rate=0.2,
                learning_rate_scaling="sqrt", warmup_epochs=0.05, weight_decay=1e-6,
                temperature=0.2, crop_area_min=0.08)
# Momentum SGD rather than the paper's LARS for the supervised runs: LARS moves each layer by
# lr x 0.001 of its norm per step, which suits 60 epochs, not a few hundred steps.
SUPERVISED = dict(global_batch_size=64, optimizer="momentum", learning_rate=0.01,
                  learning_rate_scaling="none")
# The from-scratch baselines (teacher and student networks) with their own learning rate.
SCRATCH = dict(SUPERVISED, learning_rate=0.1)
DISTILL = dict(global_batch_size=64, optimizer="momentum", learning_rate=0.1,
               learning_rate_scaling="none", warmup_epochs=0.0, weight_decay=1e-5,
               temperature=1.0, labeled_weight=0.0)
# Linear eval: the raw-pixel baseline's classifier (softmax regression fitted by L-BFGS) on the
# frozen features, so that row and the baseline differ only in what they read.
LINEAR = dict(solver="lbfgs", weight_decay=1e-4, train_steps=300)


def _step_pair(text):
    """'150' -> (150, 150); '150,400' -> (150, 400): steps at 1% and at 10% of the labels."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N or N1,N10") from None
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"{text!r} is not N or N1,N10")
    return values * 2 if len(values) == 1 else values


def _as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="simclrv2 run",
        description="SimCLRv2 end to end on Fashion-MNIST: pretrain, linear eval, fine-tune on "
                    "1% and 10% of the labels, distill, export, beside the baselines they "
                    "must beat (logistic regression on the raw pixels, the same networks "
                    "trained on the labels alone). About 10 minutes on 2 CPU cores (--quick: a "
                    "1-2 minute smoke run with the same stages and outputs). Run it again to "
                    "resume; finished stages are reused.")
    parser.add_argument("--run-dir", default="runs/main", help="where everything goes (default "
                        "runs/main)")
    parser.add_argument("--quick", action="store_true", help="a one-to-two-minute smoke version: "
                        "few steps, small batches, evaluation on 1000 images")
    parser.add_argument("--validation", action="store_true",
                        help="train on 55,000 training images and report top-1 on the other "
                             "5,000 (held out with a fixed seed) instead of the test split: how "
                             "the job's settings were chosen; no export")
    parser.add_argument("--width", type=float, default=None,
                        help=f"ResNet-18 width multiplier of the teacher (default "
                             f"{DEFAULTS['width']:g}, --quick {QUICK['width']:g})")
    parser.add_argument("--student-width", type=float, default=None,
                        help="the distilled student's width (default: half of --width)")
    parser.add_argument("--budget-minutes", type=float, default=BUDGET_MINUTES,
                        help="minutes of stage time the step counts are sized to (default "
                             f"{BUDGET_MINUTES:g}): a probe of {PROBE_STEPS} pretraining steps "
                             "times this host, and the step counts not given below are scaled "
                             "from their defaults to fit; not with --quick")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"contrastive pretraining steps (default {DEFAULTS['steps']} on the "
                             f"reference host, sized to --budget-minutes elsewhere; --quick "
                             f"{QUICK['steps']})")
    parser.add_argument("--finetune-steps", type=_step_pair, default=None, metavar="N1[,N10]",
                        help="steps of each fine-tuning and from-scratch run on 1%% and on 10%% "
                             "of the labels (one number: both; default {},{}, sized like "
                             "--steps; --quick {})".format(*DEFAULTS["finetune_steps"],
                                                         QUICK["finetune_steps"][0]))
    parser.add_argument("--distill-steps", type=int, default=None,
                        help=f"distillation steps (default {DEFAULTS['distill_steps']}, sized "
                             f"like --steps; --quick {QUICK['distill_steps']})")
    parser.add_argument("--image-size", type=int, default=None,
                        help=f"side the 32 px (padded) images are read at (default "
                             f"{DEFAULTS['image_size']}, --quick {QUICK['image_size']})")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                        dest="settings",
                        help="override one recipe value of the stages whose name starts with "
                             "STAGE (pretrain, lineareval, finetune, scratch, distill, student), "
                             "e.g. --set pretrain.temperature=0.5; repeatable")
    parser.add_argument("--data-dir", default=None,
                        help=f"folder with the Fashion-MNIST idx .gz files (default {FMNIST_DIR})")
    parser.add_argument("--only", default=None, metavar="STAGE,STAGE",
                        help="run just these stages (their inputs must exist or be listed too), "
                             "e.g. pixels,pretrain,lineareval_100pct when tuning pretraining")
    parser.add_argument("--no-export", action="store_true", help="skip the export stage")
    args = parser.parse_args(argv)
    for name in ("width", "image_size"):
        if getattr(args, name) is None:
            setattr(args, name, (QUICK if args.quick else DEFAULTS)[name])
    if args.quick:  # a fixed smoke plan: nothing is sized
        for name in STEP_OPTIONS:
            if getattr(args, name) is None:
                setattr(args, name, QUICK[name])
    args.student_width = args.student_width or args.width / 2
    for name in STEP_OPTIONS + ("image_size",):
        if getattr(args, name) is not None and min(_as_tuple(getattr(args, name))) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not args.budget_minutes > 0:
        parser.error(f"--budget-minutes must be > 0 (got {args.budget_minutes:g})")
    if args.image_size < 8:
        parser.error("--image-size must be >= 8 (the exported model needs 8 px or more)")
    for option, width in (("--width", args.width), ("--student-width", args.student_width)):
        try:
            parse_name(_arch(width))
        except ValueError:
            default = " (by default half of --width)" if option == "--student-width" else ""
            parser.error(f"{option} {width:g}{default}: the zoo has no ResNet-18 of that width; "
                         f"valid widths: {', '.join(format_width(w) for w in WIDTHS)}")
    if os.path.exists(args.run_dir) and not os.path.isdir(args.run_dir):
        parser.error(f"--run-dir {args.run_dir} is a file; give a folder (new, or a run to "
                     f"resume)")
    for setting in args.settings:
        target, _, value = setting.partition("=")
        stage, _, key = target.partition(".")
        if not (stage and key and value):
            parser.error(f"--set {setting!r}: expected STAGE.KEY=VALUE, e.g. "
                         f"pretrain.temperature=0.5")
        if not stage.startswith(SETTABLE):
            parser.error(f"--set {setting!r}: STAGE must be one of {', '.join(SETTABLE)}")
    if args.validation:
        args.no_export = True
    if args.only:
        # Checked here, with the other arguments, so that a wrong name writes nothing.
        known = [name for name, _, _ in plan(_with_default_steps(args, only=None))]
        unknown = sorted(set(args.only.split(",")) - set(known))
        if unknown:
            parser.error(f"--only names unknown stages {unknown}; stages: {', '.join(known)}")
    return args


SETTABLE = ("pretrain", "lineareval", "finetune", "scratch", "distill", "student")


def _with_default_steps(args, **changes):
    """A copy of args for plan() before the step counts are sized: those still unset take
    DEFAULTS' values; `changes` replace others."""
    unset = {n: DEFAULTS[n] for n in STEP_OPTIONS if getattr(args, n) is None}
    return argparse.Namespace(**{**vars(args), **unset, **changes})


def _arch(width):
    return f"r18_{width:g}x_sk0"


def _setting_value(text):
    """A --set value as JSON when it parses (0.5, true, 300), else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _merged(*parts):
    """One dict from several, later values winning."""
    out = {}
    for part in parts:
        out.update(part)
    return out


def plan(args):
    """[(stage name, kind, overrides)], in running order. Every value that shapes a result is
    here, so job.json (which records args) identifies what a run directory holds."""
    run = pathlib.Path(args.run_dir)
    quick = args.quick
    common = dict(dataset="fashion_mnist", image_size=args.image_size, log_steps=10,
                  eval_batch_size=500, num_eval_examples=1000 if quick else 0, seed=0,
                  progress_bar=True, eval_split="validation" if args.validation else "test")
    if args.data_dir:
        common["data_dir"] = args.data_dir
    teacher, student = _arch(args.width), _arch(args.student_width)
    pre_dir = run / "pretrain"
    # --quick fits the baseline to the first 10,000 training images for 30 iterations.
    stages = [("pixels", "pixels", dict(
        common, model_dir=str(run / "pixels"), max_iterations=30 if quick else 300,
        max_train_examples=10_000 if quick else 0))]
    stages.append(("pretrain", "pretrain", _merged(
        common, PRETRAIN, dict(model=teacher, model_dir=str(pre_dir), train_steps=args.steps,
                               lineareval_while_pretraining=False, knn_steps=0,
                               knn_bank_size=5000,
                               checkpoint_steps=max(1, min(50, args.steps // 2))),
        dict(global_batch_size=32, warmup_epochs=0.0, knn_bank_size=500) if quick else {})))
    # Linear eval on all the labels (the aim); --quick reads 10% of them instead, since all 60k
    # cost a forward pass over the training set.
    for pct in ((10,) if quick else (100,)):
        stages.append((f"lineareval_{pct}pct", "lineareval", _merged(
            common, LINEAR, dict(checkpoint=str(pre_dir / "model.keras"),
                                 model_dir=str(run / f"lineareval_{pct}pct"),
                                 label_fraction=pct / 100),
            dict(train_steps=30) if quick else {})))

    def supervised(name, pct, recipe=SUPERVISED, **values):
        # 10% of the labels is ten times the images: it gets more steps than 1% (epochs of
        # 600 images pass quickly), so that more labels are not judged at fewer epochs.
        steps = dict(zip((1, 10), args.finetune_steps))[pct]
        return (name, "finetune", _merged(
            common, recipe, dict(model_dir=str(run / name), label_fraction=pct / 100,
                                     train_steps=steps, ft_proj_selector=1,
                                     checkpoint_steps=max(1, min(50, steps))),
            values, dict(global_batch_size=32) if quick else {}))

    for pct in (1, 10):
        stages.append(supervised(f"finetune_{pct}pct", pct, checkpoint=str(pre_dir)))
    # The baselines: the very same network (projection layer 1 included) and label subsets
    # (same label_seed), from random weights, at the same steps.
    for pct in (1, 10):
        stages.append(supervised(f"scratch_{pct}pct", pct, SCRATCH, model=teacher,
                                 zero_init_logits_layer=False))
    stages.append(("distill", "distill", _merged(
        common, DISTILL, dict(teacher=str(run / "finetune_10pct"), student=student,
                              model_dir=str(run / "distill"), train_steps=args.distill_steps,
                              checkpoint_steps=max(1, min(50, args.distill_steps))),
        dict(global_batch_size=32) if quick else {})))
    # What the student's labels alone give: the student network trained on the teacher's 10%.
    stages.append(supervised("student_10pct", 10, SCRATCH, model=student,
                             zero_init_logits_layer=False))

    for setting in args.settings:
        target, _, value = setting.partition("=")
        prefix, _, key = target.partition(".")
        for _, _, overrides in [st for st in stages if st[0].startswith(prefix)]:
            overrides[key] = _setting_value(value)
    if args.only:
        wanted = set(args.only.split(","))  # names checked by parse_args
        stages = [stage for stage in stages if stage[0] in wanted]
    return stages


def _read_json(path):
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None


def _job_identity(args):
    """The options as they read back from job.json (tuples become lists)."""
    return json.loads(json.dumps({k: v for k, v in sorted(vars(args).items())
                                  if k not in ("run_dir",)}))


def step_seconds(metrics_path, skip=2):
    """Median seconds per step between consecutive logged training steps of a run's
    metrics.jsonl, after the first `skip` records (tracing); nan when too few were logged."""
    import numpy as np

    records = [json.loads(line) for line in open(metrics_path) if '"kind": "train"' in line]
    pairs = [(b["time"] - a["time"]) / (b["step"] - a["step"])
             for a, b in zip(records[skip:], records[skip + 1:]) if b["step"] > a["step"]]
    return float(np.median(pairs)) if pairs else float("nan")


def probe_pretrain_step(args):
    """Seconds per pretraining step with the job's settings on this host: PROBE_STEPS steps of
    the pretraining stage in a temporary directory (removed after)."""
    import shutil
    import tempfile

    print(f"simclrv2 run: timing {PROBE_STEPS} pretraining steps to size the job to "
          f"{args.budget_minutes:g} minutes of stage time", flush=True)
    probe_dir = tempfile.mkdtemp(prefix="simclrv2_probe_")
    try:
        [(_, kind, overrides)] = plan(_with_default_steps(
            args, steps=PROBE_STEPS, only="pretrain", run_dir=probe_dir))
        overrides.update(log_steps=1, checkpoint_steps=10 ** 6, progress_bar=False,
                         knn_bank_size=500, num_eval_examples=500)
        run_stage(kind, overrides)
        seconds = step_seconds(pathlib.Path(probe_dir) / "pretrain" / "metrics.jsonl")
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
        import keras
        keras.backend.clear_session()
    if not seconds > 0:
        raise errors.UsageError("the probe of the pretraining step logged too few steps to time; "
                                "give --steps, --finetune-steps and --distill-steps instead")
    return seconds


def _scaled_steps(value, scale):
    return tuple(max(1, round(v * scale)) for v in value) if isinstance(value, tuple) \
        else max(1, round(value * scale))


def size_steps(args, probe=probe_pretrain_step):
    """Fills the step counts left unset for args.budget_minutes of stage time on this host and
    returns how (kept in job.json), or None when every step count was given. The stage time is
    modelled as REFERENCE's, slowed by the probed pretraining step over the reference one: the
    fixed part as it comes, the part in steps scaled with DEFAULTS' step counts. A run directory
    that holds a sized run keeps its plan, so that resuming does not re-plan."""
    unset = [name for name in STEP_OPTIONS if getattr(args, name) is None]
    if not unset:
        return None
    previous = _read_json(pathlib.Path(args.run_dir) / "job.json") or {}
    sizing = previous.get("sizing")
    if sizing and sizing.get("budget_minutes") == args.budget_minutes \
            and sorted(sizing.get("sized", [])) == sorted(unset):
        for name in unset:
            value = previous["options"][name]
            setattr(args, name, tuple(value) if isinstance(value, list) else value)
        return sizing
    started = time.time()
    step_s = probe(args)
    probe_wall = time.time() - started
    slower = step_s / REFERENCE["pretrain_step_s"]
    fitted = ((args.budget_minutes * 60 - REFERENCE["fixed_s"] * slower)
              / (REFERENCE["stepped_s"] * slower))
    scale = min(max(fitted, SCALE_RANGE[0]), SCALE_RANGE[1])
    if abs(scale - 1.0) <= KEEP_DEFAULTS_WITHIN:
        scale = 1.0
    for name in unset:
        setattr(args, name, _scaled_steps(DEFAULTS[name], scale))
    return {"budget_minutes": args.budget_minutes, "probe_pretrain_step_s": round(step_s, 4),
            "reference": REFERENCE, "scale": round(scale, 3), "fitted_scale": round(fitted, 3),
            "sized": unset, "probe_wall_s": round(probe_wall, 1)}


def describe_sizing(sizing, args):
    """The line the job prints about how size_steps sized it."""
    clamp = ""
    if not SCALE_RANGE[0] <= sizing["fitted_scale"] <= SCALE_RANGE[1]:
        clamp = (f" (the budget asks for x{sizing['fitted_scale']:.2f}; kept within "
                 f"{SCALE_RANGE[0]:g}-{SCALE_RANGE[1]:g}x, so the job runs "
                 f"{'over' if sizing['fitted_scale'] < 1 else 'under'} its budget)")
    elif sizing["scale"] == 1.0 and sizing["fitted_scale"] != 1.0:
        clamp = f" (the budget asks for x{sizing['fitted_scale']:.2f}: close enough)"
    return (f"budget {sizing['budget_minutes']:g} min: a pretraining step takes "
            f"{sizing['probe_pretrain_step_s']:.3f} s here "
            f"({sizing['reference']['pretrain_step_s']:.3f} s on the reference host), so the "
            f"default step counts are scaled x{sizing['scale']:.2f}{clamp}: pretraining "
            f"{args.steps}, fine-tuning {args.finetune_steps[0]} (1%) / {args.finetune_steps[1]} "
            f"(10%), distillation {args.distill_steps}")


def check_run_dir(args, sizing=None):
    """Refuses a run directory that holds a run with other settings (reusing its stages would
    mix results); writes job.json for a new one (with how its step counts were sized)."""
    run = pathlib.Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    identity = _job_identity(args)
    previous = _read_json(run / "job.json")
    if previous is not None and previous.get("options") != identity:
        changed = sorted(k for k in set(identity) | set(previous.get("options", {}))
                         if identity.get(k) != previous.get("options", {}).get(k))
        raise errors.UsageError(f"{run} holds a run with other options ({', '.join(changed)} "
                                f"differ); use another --run-dir or delete {run}")
    if previous is None:
        write_json(run / "job.json", {"options": identity, "stage_wall_s": {},
                                      "sizing": sizing})


def _add_wall(run, stage, seconds):
    job = _read_json(run / "job.json")
    job["stage_wall_s"][stage] = round(job["stage_wall_s"].get(stage, 0.0) + seconds, 2)
    write_json(run / "job.json", job)


def check_data(args):
    import simclrv2.data as data

    try:
        data.load_labeled("fashion_mnist", "test", args.data_dir)
    except data.DataNotFoundError as error:
        raise errors.UsageError(f"{str(error).partition('; ')[0]}; {INSTALL_HINT}") from None


def _export_module():
    """simclrv2.export.export_model when the export package provides it, else None."""
    try:
        import simclrv2.export as export
    except ImportError:
        return None
    return export if hasattr(export, "export_model") else None


def run_pixels(overrides):
    """The raw-pixel baseline: logistic regression (L-BFGS) on every training label."""
    import types

    import numpy as np

    from simclrv2 import baselines
    from simclrv2.recipes import data_io

    started = time.time()
    split = types.SimpleNamespace(**{k: overrides.get(k) for k in (
        "dataset", "data_dir", "eval_split")}, validation_examples=5000)
    train, evaluation = data_io.training_source(split), data_io.evaluation_source(split)
    limit = overrides["num_eval_examples"] or len(evaluation)
    if overrides.get("max_train_examples"):
        train = data_io.take(train, np.arange(min(len(train), overrides["max_train_examples"])))
    top1 = baselines.pixel_logistic_regression_top1(
        train.native.images, train.labels, evaluation.native.images[:limit],
        evaluation.labels[:limit], train.num_classes,
        max_iterations=overrides["max_iterations"], seed=overrides["seed"])
    key = f"{overrides['eval_split']}_top1"
    result = {"status": "done", key: top1, "eval_split": overrides["eval_split"],
              "num_labeled": len(train), "max_iterations": overrides["max_iterations"],
              "wall_time_s": round(time.time() - started, 3)}
    directory = pathlib.Path(overrides["model_dir"])
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "result.json", result)
    return result


def run_stage(kind, overrides):
    if kind == "pixels":
        return run_pixels(overrides)
    from simclrv2.recipes import config as config_lib
    from simclrv2.recipes import stages

    config = config_lib.from_dict(kind, {k: v for k, v in overrides.items()})
    result = stages.STAGE_FUNCTIONS[kind](config)
    result.pop("model", None)
    return result


def run_export(run, args):
    export = _export_module()
    out = run / "export"
    if export is None:
        print("export: skipped - simclrv2.export.export_model is not available in this checkout")
        return {"status": "unavailable"}
    if (out / "config.json").is_file():  # export_model places the directory atomically
        return {**_read_json(out / "config.json"), "status": "done", "reused": True,
                "out_dir": str(out)}
    report = export.export_model(
        str(run / "distill" / "model.keras"), str(out), formats=EXPORT_FORMATS, stage="distilled",
        provenance={"job": "simclrv2 run", "teacher": str(run / "finetune_10pct"),
                    "dataset": "fashion_mnist",
                    "class_names": ["t-shirt/top", "trouser", "pullover", "dress", "coat",
                                    "sandal", "shirt", "sneaker", "bag", "ankle boot"]},
        overwrite=True)
    return {**report, "status": "done", "reused": False}


def _top1_of(result):
    """A stage's headline figure: top-1 on the evaluation split, or the kNN monitor's for
    pretraining."""
    for key in ("test_top1", "validation_top1"):
        if result.get(key) is not None:
            return result[key]
    return result.get("knn_top1")


def _labels_used(fraction):
    return f"{int(round(fraction * TRAIN_SIZE))} ({fraction * 100:g}%)"


def collect(run, stages, args):
    """The results table: one row per evaluated model, baselines included."""
    job = _read_json(run / "job.json")
    walls = job.get("stage_wall_s", {})
    rows = []
    for name, kind, overrides in stages:
        result = _read_json(pathlib.Path(overrides["model_dir"]) / "result.json") or {}
        fraction = overrides.get("label_fraction", 1.0)
        labels = result.get("num_labeled")
        row = dict(stage=name, label_fraction=fraction,
                   labels_used=(f"{labels} ({fraction * 100:g}%)" if labels
                                else _labels_used(fraction)),
                   top1=_top1_of(result), wall_s=walls.get(name))
        if result.get("precision"):  # the trained stages: which dtype policy they ran in
            row["precision"] = result["precision"]["policy"]
        if kind == "pixels":
            row.update(method="baseline: logistic regression on raw pixels")
            if labels and overrides.get("max_train_examples"):
                row["labels_used"] = f"{labels} (--quick)"
        elif kind == "pretrain":
            row.update(method=f"kNN monitor (k=200) on SimCLR features, {overrides['model']}",
                       label_fraction=0.0,
                       labels_used=f"{overrides['knn_bank_size']} (kNN bank only)")
        elif kind == "lineareval":
            row.update(method=f"SimCLR linear eval, {args.width:g}x")
        elif name.startswith("finetune"):
            row.update(method=f"SimCLRv2 fine-tuned (teacher), {args.width:g}x")
        elif name.startswith("scratch"):
            row.update(method=f"baseline: same network from scratch, {args.width:g}x")
        elif kind == "distill":
            row.update(method=f"distilled student {args.student_width:g}x (10% teacher)",
                       label_fraction=0.1, labels_used=_labels_used(0.1) + " via teacher")
        else:
            row.update(method=f"baseline: student {args.student_width:g}x on the 10% labels")
        rows.append(row)
    return rows


def training_precision(stages):
    """The pretraining stage's precision record (requested, policy, reason), else the first
    trained stage's; None when no stage has one."""
    for name, kind, overrides in sorted(stages, key=lambda st: st[1] != "pretrain"):
        result = _read_json(pathlib.Path(overrides["model_dir"]) / "result.json") or {}
        if result.get("precision"):
            return result["precision"]
    return None


def aims(rows):
    """(aim, met or None when a figure is missing, figures) for each aim of the job."""
    top1 = {r["stage"]: r["top1"] for r in rows}

    def judged(text, figures, test):
        missing = any(v is None for v in figures.values())
        return {"aim": text, "met": None if missing else bool(test(figures)), "figures": figures}

    return [
        judged("linear eval on 100% of the labels >= logistic regression on raw pixels",
               {"linear_eval_100pct": top1.get("lineareval_100pct"), "pixels": top1.get("pixels")},
               lambda f: f["linear_eval_100pct"] >= f["pixels"]),
        judged("fine-tuned on 1% >= from scratch on 1% + 5 points",
               {"finetune_1pct": top1.get("finetune_1pct"), "scratch_1pct": top1.get("scratch_1pct")},
               lambda f: f["finetune_1pct"] >= f["scratch_1pct"] + 0.05),
        judged("fine-tuned on 10% >= fine-tuned on 1%",
               {"finetune_10pct": top1.get("finetune_10pct"),
                "finetune_1pct": top1.get("finetune_1pct")},
               lambda f: f["finetune_10pct"] >= f["finetune_1pct"]),
        judged("distilled student >= the same student trained on the teacher's 10% labels",
               {"distilled": top1.get("distill"), "student_10pct": top1.get("student_10pct")},
               lambda f: f["distilled"] >= f["student_10pct"]),
    ]


def print_table(rows, eval_name):
    print(f"\nFashion-MNIST top-1 on {eval_name}")
    header = f"{'method':<52} {'labels used':<24} {'top-1':>7} {'wall':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        top1 = "-" if r["top1"] is None else f"{100 * r['top1']:.2f}%"
        wall = "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}s"
        print(f"{r['method']:<52} {r['labels_used']:<24} {top1:>7} {wall:>8}")


def print_aims(judged):
    print()
    for aim in judged:
        status = {True: "MET   ", False: "MISSED", None: "n/a   "}[aim["met"]]
        figures = ", ".join(f"{k} {'-' if v is None else f'{100 * v:.2f}%'}"
                            for k, v in aim["figures"].items())
        print(f"{status} {aim['aim']}: {figures}")


def plot(rows, path, title, ylabel):
    fig, ax, _ = label_fraction_axes(figsize=(6.4, 4.4))

    def curve(prefix):
        return sorted((r["label_fraction"] * 100, r["top1"] * 100) for r in rows
                      if r["stage"].startswith(prefix) and r["top1"] is not None)

    for prefix, label, style in (("finetune", "SimCLRv2 fine-tuned", "s-"),
                                 ("lineareval", "SimCLR linear eval", "o--"),
                                 ("scratch", "same network from scratch", "v:")):
        points = curve(prefix)
        if points:
            ax.plot(*zip(*points), style, label=label)
    for r in rows:
        if r["top1"] is None:
            continue
        if r["stage"] == "distill":
            ax.plot([10], [r["top1"] * 100], "r*", markersize=12, label=r["method"])
        elif r["stage"] == "student_10pct":
            ax.plot([10], [r["top1"] * 100], "kx", markersize=9, label=r["method"][10:])
        elif r["stage"] == "pixels":
            ax.axhline(r["top1"] * 100, color="gray", linestyle="--",
                       label="logistic regression on raw pixels (100%)")
    save_label_fraction_plot(fig, ax, path, xlabel="fraction of labels used", title=title,
                             title_size=9, legend_size=7, ylabel=ylabel)


def _versions():
    import keras
    import numpy as np
    import tensorflow as tf

    import simclrv2
    return {"simclrv2": getattr(simclrv2, "__version__", "?"), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "python": platform.python_version()}


@errors.command("run")
def main(argv=None):
    """Failures are reported by simclrv2.errors (one line, exit 2, for bad options, a missing or
    corrupt dataset or a run directory of other settings); an interrupted run exits 130."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.time()
    run = pathlib.Path(args.run_dir)

    import tensorflow as tf
    try:
        # Measured on 2 cores: TF's default pools cost ~35% on these small models.
        tf.config.threading.set_intra_op_parallelism_threads(min(os.cpu_count() or 2, 16))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    check_data(args)  # before the run directory: a missing dataset leaves nothing behind
    sizing = size_steps(args)
    check_run_dir(args, sizing)
    if sizing is not None:
        print(describe_sizing(sizing, args))

    stages = plan(args)
    total = len(stages) + (0 if args.no_export else 1)
    print(f"simclrv2 run: {total} stages into {run}/ (ResNet-18 {args.width:g}x teacher, "
          f"{args.student_width:g}x student, {args.image_size} px{', quick' if args.quick else ''}"
          f"{', evaluated on the validation split' if args.validation else ''})")
    import keras

    try:
        for number, (name, kind, overrides) in enumerate(stages, start=1):
            done = _read_json(pathlib.Path(overrides["model_dir"]) / "result.json") or {}
            if done.get("status") == "done":
                top1 = _top1_of(done)
                print(f"[{number}/{total}] {name}: done before, reused (top-1 "
                      f"{'-' if top1 is None else f'{100 * top1:.2f}%'})")
                continue
            print(f"[{number}/{total}] {name}", flush=True)
            stage_start = time.time()
            try:
                result = run_stage(kind, overrides)
            finally:
                _add_wall(run, name, time.time() - stage_start)
                keras.backend.clear_session()  # each stage builds its own models
            if result.get("status") != "done":
                print(f"\nsimclrv2 run: stopped during {name} (checkpoint saved); run the same "
                      f"command again to resume.", file=sys.stderr)
                return 130
            top1 = _top1_of(result)
            print(f"[{number}/{total}] {name}: top-1 {100 * top1:.2f}%, "
                  f"{result['wall_time_s']:.0f}s", flush=True)
        export_report = {"status": "skipped (--no-export)"}
        if not args.no_export:
            print(f"[{total}/{total}] export of the distilled student "
                  f"({', '.join(EXPORT_FORMATS)}, verified)", flush=True)
            t = time.time()
            export_report = run_export(run, args)
            if export_report["status"] == "done" and not export_report["reused"]:
                _add_wall(run, "export", time.time() - t)
    except KeyboardInterrupt:
        print("\nsimclrv2 run: interrupted; finished stages are kept and the current one resumes "
              "from its last checkpoint when you run the same command again.", file=sys.stderr)
        return 130

    rows = collect(run, stages, args)
    eval_examples = 1000 if args.quick else (5000 if args.validation else 10000)
    eval_name = (f"{eval_examples} validation images (held out of the training set)"
                 if args.validation else f"{eval_examples} test images")
    print_table(rows, eval_name)
    judged = aims(rows)
    print_aims(judged)
    job = _read_json(run / "job.json")
    export_summary = {"status": export_report.get("status")}
    if export_report.get("status") == "done":
        verification = export_report.get("verification", {})
        export_summary.update(out_dir=str(run / "export"), formats=export_report.get("formats"),
                              max_relative_difference=verification.get("max_relative_difference"),
                              tolerance=verification.get("tolerance"))
    precision = training_precision(stages)
    if precision:
        print(f"training precision: {precision['policy']} ({precision['requested']}: "
              f"{precision['reason']})")
    results = {"rows": rows, "options": job["options"], "stage_wall_s": job["stage_wall_s"],
               "sizing": job.get("sizing"),
               "training_precision": precision,
               "total_stage_wall_s": round(sum(job["stage_wall_s"].values()), 1),
               "this_invocation_wall_s": round(time.time() - started, 1),
               "eval_split": "validation" if args.validation else "test",
               "eval_examples": eval_examples, "aims": judged, "export": export_summary,
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
               "versions": _versions()}
    write_json(run / "results.json", results)
    plot(rows, run / "results.png",
         f"SimCLRv2 on Fashion-MNIST, ResNet-18 {args.width:g}x, {args.image_size} px"
         f"{' (quick)' if args.quick else ''}",
         ylabel=f"{'validation' if args.validation else 'test'} top-1 (%)")
    print(f"\nwall time: {results['this_invocation_wall_s']:.0f}s this invocation, "
          f"{results['total_stage_wall_s']:.0f}s of stage time in all")
    print(f"results:  {run / 'results.json'}\nplot:     {run / 'results.png'}")
    for name, kind, overrides in stages:
        files = {"pixels": "result.json", "lineareval": "result.json, metrics.jsonl"}.get(
            kind, "result.json, metrics.jsonl, model.keras")
        print(f"{name + ':':<20}{overrides['model_dir']}  ({files})")
    if export_summary["status"] == "done":
        print(f"{'export:':<20}{run / 'export'}  (saved_model/, model.onnx, model.keras, "
              f"config.json; max relative difference "
              f"{export_summary['max_relative_difference']:.2g} <= {export_summary['tolerance']:g})")
    else:
        print(f"{'export:':<20}{export_summary['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
