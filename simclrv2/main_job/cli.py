"""`simclrv2 run`: the main job's command line and its loop over the planned stages.

Every stage runs in its own sub-directory of the run directory and writes result.json when it is
done; a second `simclrv2 run` reuses those and resumes an unfinished stage from its checkpoints.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

from simclrv2 import errors, process_memory
from simclrv2.dir_lock import DirectoryLock
from simclrv2.atomic_files import read_json, write_json
from simclrv2.main_job import report, settings
from simclrv2.precision import PRECISIONS
from simclrv2.main_job.plan import architecture, plan, with_default_steps
from simclrv2.main_job.run_dir import (add_wall, check_data, check_run_dir, check_sizes,
                                       record_sizing, stage_result)
from simclrv2.main_job.sizing import Progress, describe_sizing, size_steps, time_first_steps
from simclrv2.zoo.config import WIDTHS, format_width, parse_name

CLASS_NAMES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
               "sneaker", "bag", "ankle boot"]


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
    defaults = settings.defaults()
    parser = argparse.ArgumentParser(
        prog="simclrv2 run",
        description="SimCLRv2 end to end on Fashion-MNIST: pretrain, linear eval, fine-tune on "
                    "1% and 10% of the labels, distill, export, beside the baselines they "
                    "must beat (logistic regression on the raw pixels, the same networks "
                    "trained on the labels alone), with the same step counts on every host. "
                    "10 to 15 minutes on 2 CPU cores (docs/main_job.md; --quick: a one-minute "
                    "smoke run with the same stages and outputs). Run it again to "
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
                             f"{defaults['width']:g}, --quick {settings.QUICK['width']:g})")
    parser.add_argument("--student-width", type=float, default=None,
                        help="the distilled student's width (default: half of --width)")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="size the step counts not given below to this many minutes of "
                             "stage time on this host, from timed pretraining steps (default: "
                             "no sizing; the same step counts on every host)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="the dtype policy every stage trains in (default auto: bfloat16 "
                             "where the CPU computes it natively, else float32)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of every stage: initial weights, augmentations, label subsets "
                             "(default 0)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"contrastive pretraining steps (default {defaults['steps']}; "
                             f"--quick {settings.QUICK['steps']})")
    parser.add_argument("--finetune-steps", type=_step_pair, default=None, metavar="N1[,N10]",
                        help="steps of each fine-tuning and from-scratch run on 1%% and on 10%% "
                             "of the labels (one number: both; default {},{}; --quick {})".format(*defaults["finetune_steps"],
                                                         settings.QUICK["finetune_steps"][0]))
    parser.add_argument("--distill-steps", type=int, default=None,
                        help=f"distillation steps (default {defaults['distill_steps']}; --quick "
                             f"{settings.QUICK['distill_steps']})")
    parser.add_argument("--image-size", type=int, default=None,
                        help=f"side the 32 px (padded) images are read at (default "
                             f"{defaults['image_size']}, --quick {settings.QUICK['image_size']})")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                        dest="settings",
                        help="override one recipe value of the stages whose name starts with "
                             "STAGE (pretrain, lineareval, finetune, scratch, distill, student), "
                             "e.g. --set pretrain.temperature=0.5; repeatable")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the Fashion-MNIST idx .gz files (default: where "
                             "Debian's dataset-fashion-mnist puts them)")
    parser.add_argument("--only", default=None, metavar="STAGE,STAGE",
                        help="run just these stages (their inputs must exist or be listed too), "
                             "e.g. pixels,pretrain,lineareval_100pct when tuning pretraining")
    parser.add_argument("--no-export", action="store_true", help="skip the export stage")
    args = parser.parse_args(argv)
    for name in ("width", "image_size"):
        if getattr(args, name) is None:
            setattr(args, name, (settings.QUICK if args.quick else defaults)[name])
    if args.quick and args.budget_minutes is not None:
        parser.error("--budget-minutes sizes the full job; --quick has its own fixed steps")
    if args.budget_minutes is None:  # the same step counts on every host
        for name in settings.STEP_OPTIONS:
            if getattr(args, name) is None:
                setattr(args, name, (settings.QUICK if args.quick else defaults)[name])
    args.student_width = args.student_width or args.width / 2
    for name in settings.STEP_OPTIONS + ("image_size",):
        if getattr(args, name) is not None and min(_as_tuple(getattr(args, name))) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.budget_minutes is not None and not args.budget_minutes > 0:
        parser.error(f"--budget-minutes must be > 0 (got {args.budget_minutes:g})")
    if args.image_size < 8:
        parser.error("--image-size must be >= 8 (the exported model needs 8 px or more)")
    for option, width in (("--width", args.width), ("--student-width", args.student_width)):
        try:
            parse_name(architecture(width))
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
        if not stage.startswith(settings.SETTABLE):
            parser.error(f"--set {setting!r}: STAGE must be one of {', '.join(settings.SETTABLE)}")
    if args.validation:
        args.no_export = True
    if args.only:
        # Checked here, with the other arguments, so that a wrong name writes nothing.
        known = [name for name, _, _ in plan(with_default_steps(args, only=None))]
        unknown = sorted(set(args.only.split(",")) - set(known))
        if unknown:
            parser.error(f"--only names unknown stages {unknown}; stages: {', '.join(known)}")
    return args



def run_stage(kind, values):
    """One planned stage through the recipes' loader and stage functions, like the `simclrv2
    pretrain|finetune|lineareval|distill` commands."""
    from simclrv2.recipes import config as config_lib
    from simclrv2.recipes import stages

    stage = settings.recipe_stage(kind)
    config = config_lib.from_dict(stage, values)
    result = stages.STAGE_FUNCTIONS[stage](config)
    result.pop("model", None)
    return result


def run_export(run):
    from simclrv2.export import FORMATS, export_model

    out = run / "export"
    if (out / "config.json").is_file():  # export_model places the directory atomically
        return {**read_json(out / "config.json"), "status": "done", "reused": True,
                "out_dir": str(out)}
    exported = export_model(
        str(run / "distill" / "model.keras"), str(out), formats=FORMATS, stage="distilled",
        provenance={"job": "simclrv2 run", "teacher": str(run / "finetune_10pct"),
                    "dataset": "fashion_mnist", "class_names": CLASS_NAMES},
        overwrite=True)
    return {**exported, "status": "done", "reused": False}


@errors.command("run")
def main(argv=None):
    """Failures are reported by simclrv2.errors (one line, exit 2, for bad options, a missing or
    corrupt dataset, a run directory of other settings or one another process writes, a size
    that cannot fit); a run stopped early (SIGTERM, a first Ctrl-C) exits 3 with its checkpoint
    saved, one interrupted without a clean stop 130 (docs/cli.md)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.time()
    run = pathlib.Path(args.run_dir)

    import tensorflow as tf
    try:
        # One inter-op thread: TF's default pools oversubscribe the cores on these small models
        # (docs/main_job.md).
        tf.config.threading.set_intra_op_parallelism_threads(min(os.cpu_count() or 2, 16))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    check_data(args)  # before the run directory: a missing dataset leaves nothing behind
    check_sizes(args)  # and so does a size that cannot fit
    new_run = not run.exists()
    lock = DirectoryLock(run, option="another --run-dir").acquire()
    # A new run directory goes when the job is refused while it sizes the steps (the timed
    # steps are no run to resume), or fails before any stage saved a checkpoint or result.
    discard = new_run
    try:
        check_run_dir(args)
        sizing = size_steps(args, time_steps=lambda a: time_first_steps(a, run_stage))
        discard = False
        return _job(args, run, started, sizing)
    except BaseException:
        if not discard:
            from simclrv2.recipes.run_lifecycle import holds_progress

            discard = new_run and not holds_progress(run)
        raise
    finally:
        lock.release(remove_directory=discard)


def _job(args, run, started, sizing):
    """The job in its locked run directory, its steps sized: the stages, the export, the
    report."""
    if sizing is not None:
        record_sizing(run, sizing)
        print(describe_sizing(sizing, args))

    stages = plan(args)
    print(f"simclrv2 run: {len(stages) + (not args.no_export)} stages into {run}/ (ResNet-18 "
          f"{args.width:g}x teacher, {args.student_width:g}x student, {args.image_size} px, "
          f"seed {args.seed}{', quick' if args.quick else ''}"
          f"{', evaluated on the validation split' if args.validation else ''}; "
          f"{describe_plan(args)})")
    try:
        with process_memory.collecting_new_objects_only():
            export_report = _run_stages(args, run, stages, started)
    except KeyboardInterrupt:
        print("\nsimclrv2 run: interrupted; finished stages are kept and the current one resumes "
              "from its last checkpoint when you run the same command again.", file=sys.stderr)
        return errors.EXIT_INTERRUPTED
    if export_report is None:
        print("\nsimclrv2 run: stopped (checkpoint saved); run the same command again to "
              "resume.", file=sys.stderr)
        return errors.EXIT_PREEMPTED
    _report(args, run, stages, export_report, started)
    return 0


def describe_plan(args):
    return (f"steps: pretraining {args.steps}, fine-tuning {args.finetune_steps[0]} (1%) / "
            f"{args.finetune_steps[1]} (10%), distillation {args.distill_steps}")


def _run_stages(args, run, stages, started):
    """Runs what is not done yet, with a whole-job progress line before each stage; returns the
    export's report (or what stands in for it), None when a stage stopped early."""
    import keras

    total = len(stages) + (not args.no_export)
    clock = Progress(total, started, stages, args)
    for number, (name, kind, values) in enumerate(stages, start=1):
        done = stage_result(values)
        if done.get("status") == "done":
            top1 = report.top1_of(done)
            print(f"[{number}/{total}] {name}: done before, reused (top-1 "
                  f"{'-' if top1 is None else f'{100 * top1:.2f}%'})")
            continue
        print(f"[{number}/{total}] {name} ({clock.line(number)})", flush=True)
        stage_start = time.time()
        try:
            result = run_stage(kind, values)
        finally:
            add_wall(run, name, time.time() - stage_start)
            keras.backend.clear_session()  # each stage builds its own models
        if result.get("status") != "done":
            return None
        top1 = report.top1_of(result)
        figure = ("trained (its kNN monitor is measured with the linear eval)" if top1 is None
                  else f"top-1 {100 * top1:.2f}%")
        if kind == "lineareval" and result.get("knn_top1") is not None:
            figure += f", kNN monitor {100 * result['knn_top1']:.2f}%"
        print(f"[{number}/{total}] {name}: {figure}, {result['wall_time_s']:.0f}s", flush=True)
        if kind == "pretrain":
            estimate = clock.measured(values, (result.get("precision") or {}).get("policy"))
            if estimate:
                print(estimate, flush=True)
    if args.no_export:
        return {"status": "skipped (--no-export)"}
    print(f"[{total}/{total}] export of the distilled student, every format verified "
          f"({clock.line(total)})", flush=True)
    stage_start = time.time()
    exported = run_export(run)
    if exported["status"] == "done" and not exported["reused"]:
        add_wall(run, "export", time.time() - stage_start)
    return exported


def _report(args, run, stages, export_report, started):
    """The table, the aims with their margins, results.json, results.png and where things are."""
    job = read_json(run / "job.json")
    rows = report.collect(job, stages, args)
    eval_examples = 1000 if args.quick else (5000 if args.validation else 10000)
    eval_name = (f"{eval_examples} validation images (held out of the training set)"
                 if args.validation else f"{eval_examples} test images")
    header = (f"steps sized to {job['sizing']['budget_minutes']:g} minutes: x"
              f"{job['sizing']['scale']:.2f} the defaults" if job.get("sizing")
              else "the default step counts" if _default_steps(args) else "step counts as given")
    report.print_table(rows, f"{eval_name}; {header}: {describe_plan(args)}")
    judged = report.aims(rows)
    report.print_aims(judged)
    export_summary = {"status": export_report.get("status")}
    if export_report.get("status") == "done":
        verification = export_report.get("verification", {})
        export_summary.update(out_dir=str(run / "export"), formats=export_report.get("formats"),
                              max_relative_difference=verification.get("max_relative_difference"),
                              tolerance=verification.get("tolerance"))
    precision = report.training_precision(stages)
    if precision:
        print(f"training precision: {precision['policy']} ({precision['requested']}: "
              f"{precision['reason']})")
    split = report.time_split(job, stages)
    results = {"rows": rows, "options": job["options"], "stage_wall_s": job["stage_wall_s"],
               "stage_time_split": split, "sizing": job.get("sizing"),
               "default_steps": _default_steps(args),
               "training_precision": precision,
               "total_stage_wall_s": round(sum(job["stage_wall_s"].values()), 1),
               "this_invocation_wall_s": round(time.time() - started, 1),
               "eval_split": "validation" if args.validation else "test",
               "eval_examples": eval_examples, "aims": judged, "export": export_summary,
               "machine": report.machine(), "versions": report.versions()}
    write_json(run / "results.json", results)
    report.plot(rows, run / "results.png",
                f"SimCLRv2 on Fashion-MNIST, ResNet-18 {args.width:g}x, {args.image_size} px"
                f"{' (quick)' if args.quick else ''}",
                ylabel=f"{'validation' if args.validation else 'test'} top-1 (%)")
    fixed = split["total"]["fixed_s"] / max(split["total"]["wall_s"], 1e-9)
    parts = split["total"].get("fixed_parts_s", {})
    named = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in
                      sorted(parts.items(), key=lambda item: -item[1]) if seconds >= 0.5)
    print(f"\nwall time: {results['this_invocation_wall_s']:.0f}s this invocation, "
          f"{results['total_stage_wall_s']:.0f}s of stage time in all "
          f"({split['total']['steps_s']:.0f}s training, {100 * fixed:.0f}% fixed costs"
          f"{': ' + named if named else ''})")
    print(f"results:  {run / 'results.json'}\nplot:     {run / 'results.png'}")
    for name, kind, values in stages:
        files = {"pixels": "result.json", "lineareval": "result.json, metrics.jsonl"}.get(
            kind, "result.json, metrics.jsonl, model.keras")
        print(f"{name + ':':<20}{values['model_dir']}  ({files})")
    if export_summary["status"] == "done":
        print(f"{'export:':<20}{run / 'export'}  (saved_model/, model.onnx, model.keras, "
              f"config.json; max relative difference "
              f"{export_summary['max_relative_difference']:.2g} <= {export_summary['tolerance']:g})")
    else:
        print(f"{'export:':<20}{export_summary['status']}")


def _default_steps(args):
    """Whether the job ran the default plan's step counts (the figures docs/main_job.md shows)."""
    defaults = settings.defaults()
    return not args.quick and all(getattr(args, n) == defaults[n]
                                  for n in settings.STEP_OPTIONS)


if __name__ == "__main__":
    sys.exit(main())
