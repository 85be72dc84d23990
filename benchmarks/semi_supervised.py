"""The SimCLRv2 paper's semi-supervised comparison in miniature, on the Fashion-MNIST test set.

    python benchmarks/semi_supervised.py                      # the documented 90-minute budget
    python benchmarks/semi_supervised.py --budget-minutes 8 --seeds 1   # a smoke version

As in the paper, each width is pretrained once (seed 0) and everything downstream runs for every
one of `--seeds` seeds on that network (seed s draws its own label subsets and initial heads):
- baselines: multinomial logistic regression on raw pixels (L-BFGS, L2); the same ResNet
  (projection layer 1 included) trained supervised from scratch on 1%, 10% and 100% of the
  labels, for the fine-tuning step count of the same fraction (FRACTION_STEP_WEIGHTS: the 10%
  runs train 2x and the 100% run 4x the steps of the 1% runs; said so in the table);
- SimCLR: linear evaluation on all labels (the pixel baseline's classifier on the frozen,
  standardised features; deterministic, so one run per width), fine-tuning on 1% and 10% from
  projection layer 1 (and on 1% from layer 0), self-distillation of the 1% teacher and
  distillation of the widest 1% teacher into the narrowest width, on the unlabeled images;
- for every width in `--widths` (ResNet-18, CIFAR stem, `--image-size` px).
Each target of the brief is printed as met or missed; everything goes to
benchmarks/results/semi_supervised-<time>.json with the machine, versions, step plan and wall
time, with a plot of top-1 against the label fraction beside it (`.png`). `--report RESULT.json`
redraws the plot of a finished run and prints its table as Markdown (the table of
docs/benchmarks.md).

Budget: the step counts are planned from step costs measured at the start of the run (a few
steps of each kind of stage run at each width, which also measures the fixed cost of a stage
run: building, tracing, evaluating). What is left of the budget after the fixed costs is split
between pretraining, supervised runs and distillation by PLAN_SHARES; the plan and the measured
costs are printed and kept in the JSON, and the report says whether the run kept its budget.
The recipes' values (learning rates, temperature, augmentation) are the main job's, which were
chosen on a validation split (docs/main_job.md); this benchmark reads the test split once.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE_MINUTES = 90.0
# How the step time left after the fixed costs is shared out.
PLAN_SHARES = {"pretrain": 0.40, "supervised": 0.32, "distill": 0.28}
MIN_STEPS = 2
# The main job's image size, at which its recipes were chosen on the validation split. (The run
# of 2026-12-02T08:22 used 16 px and widths 0.125x / 0.25x: all a host without native bfloat16
# could afford in 90 minutes.)
IMAGE_SIZE = 28
CALIBRATION_STEPS = 8
SUPERVISED_KEYS = ("scratch_1pct", "scratch_10pct", "scratch_100pct", "finetune_1pct_layer1",
                   "finetune_10pct_layer1", "finetune_1pct_layer0")
# Steps of a supervised run, in units of the 1% runs' steps: more labels need more steps to be
# seen (with equal steps, 10% got half an epoch and lost to 1%; scratch on 100% lost to 10%).
# Fine-tuned and from-scratch runs on the same fraction train for the same steps.
FRACTION_STEP_WEIGHTS = {1: 1, 10: 2, 100: 4}


def supervised_steps(steps_1pct, percent):
    """Steps of a supervised run on `percent`% of the labels."""
    return steps_1pct * FRACTION_STEP_WEIGHTS[percent]


def _percent(key):
    return int(key.split("_")[1][:-3])


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-minutes", type=float, default=BASE_MINUTES,
                   help="planned wall time; step counts follow from measured step costs "
                        "(default 90)")
    p.add_argument("--widths", default="0.25,0.5",
                   help="ResNet-18 widths (default 0.25,0.5: the main job's student and "
                        "teacher)")
    p.add_argument("--seeds", type=int, default=3, help="seeds of every downstream stage "
                   "(default 3); pretraining runs once per width")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"image side (default {IMAGE_SIZE})")
    p.add_argument("--eval-examples", type=int, default=0,
                   help="test images per evaluation (0 = all 10,000)")
    p.add_argument("--work-dir", default=None, help="where the runs go (default: a temp dir)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--report", metavar="RESULT_JSON", default=None,
                   help="only redraw the plot of a finished run and print its Markdown table")
    args = p.parse_args(argv)
    try:
        args.widths = sorted(float(w) for w in args.widths.split(","))
    except ValueError:
        p.error(f"--widths {args.widths!r}: expected ResNet-18 widths such as 0.25,0.5")
    if args.budget_minutes <= 0 or args.seeds < 1 or not args.widths:
        p.error("--budget-minutes > 0, --seeds >= 1 and at least one width are needed")
    if args.image_size is None:
        args.image_size = IMAGE_SIZE
    return args


def _arch(width):
    from simclrv2.main_job.plan import architecture

    return architecture(width)


def stage_runs(widths, seeds):
    """[(kind, width, seed)] of every stage run after calibration; for distill, width is the
    (teacher width, student width) pair."""
    runs = [("pretrain", w, 0) for w in widths] + [("linear", w, 0) for w in widths]
    for seed in range(seeds):
        for w in widths:
            runs += [("supervised", w, seed)] * len(SUPERVISED_KEYS)
            runs.append(("distill", (w, w), seed))
        runs += [("distill", (wide, widths[0]), seed) for wide in widths[1:]]
    return runs


def plan_steps(costs, budget_s, widths, seeds):
    """Step counts from measured costs: {"pretrain": {width: steps}, "supervised": steps,
    "distill": steps}. costs: {"fixed": s per stage run, "linear": s per linear eval,
    ("pretrain", w) / ("supervised", w): s per step, ("distill", teacher w, student w): s per
    step}. Every supervised run (fine-tuned or from scratch, any width) trains for the same
    number of steps per label fraction (`supervised` is the 1% count; see
    FRACTION_STEP_WEIGHTS), and every distillation the same, so that rows compare at equal
    steps. What is left after the fixed costs is shared out by PLAN_SHARES (simclrv2.budget)."""
    from simclrv2 import budget

    runs = stage_runs(widths, seeds)
    fixed = sum(costs["linear"] if kind == "linear" else costs["fixed"] for kind, _, _ in runs)
    # Every (width, seed) runs each of SUPERVISED_KEYS once, so the weights average out.
    weight = (sum(FRACTION_STEP_WEIGHTS[_percent(k)] for k in SUPERVISED_KEYS)
              / len(SUPERVISED_KEYS))
    cost = {("pretrain", w): costs[("pretrain", w)] for w in widths}
    cost["supervised"] = weight * sum(costs[("supervised", w)] for kind, w, _ in runs
                                      if kind == "supervised")
    cost["distill"] = sum(costs[("distill", *pair)] for kind, pair, _ in runs
                          if kind == "distill")
    share = {("pretrain", w): PLAN_SHARES["pretrain"] / len(widths) for w in widths}
    share.update(supervised=PLAN_SHARES["supervised"], distill=PLAN_SHARES["distill"])
    # A base plan whose steps take each kind's share of one second: scaled to fit, each kind
    # gets its share of the time left.
    base = {kind: share[kind] / cost[kind] for kind in cost}
    scale, _ = budget.fit_scale(budget_s, fixed, base, cost)
    steps = {kind: budget.scaled(n, max(scale, 0.0), MIN_STEPS, rounding=math.floor)
             for kind, n in base.items()}
    return {"pretrain": {w: steps[("pretrain", w)] for w in widths},
            "supervised": steps["supervised"], "distill": steps["distill"]}


class Runner:
    def __init__(self, args, work):
        self.args, self.work = args, pathlib.Path(work)
        self.seconds = {}  # stage run name -> wall seconds, kept in the JSON
        self.common = dict(dataset="fashion_mnist", image_size=args.image_size, log_steps=50,
                           eval_batch_size=500, num_eval_examples=args.eval_examples,
                           progress_bar=False, checkpoint_steps=10_000)

    def stage(self, recipe_kind, name, **values):
        """A stage run from the main job's recipe file of that kind (simclrv2.main_job.settings),
        with this benchmark's common values and the run's own on top."""
        import keras

        from simclrv2.main_job import settings
        from simclrv2.recipes import config as C
        from simclrv2.recipes import stages

        started = time.time()
        kind = settings.recipe_stage(recipe_kind)
        config = C.from_dict(kind, {**settings.recipe(recipe_kind), **self.common,
                                    "model_dir": str(self.work / name), **values})
        result = stages.STAGE_FUNCTIONS[kind](config)
        result.pop("model", None)
        keras.backend.clear_session()
        top1 = result.get("test_top1")
        top1 = result.get("knn_top1") if top1 is None else top1
        self.seconds[name] = round(time.time() - started, 1)
        print(f"  {name:<36} top-1 {100 * top1:6.2f}%  {self.seconds[name]:6.0f}s", flush=True)
        return top1

    def supervised(self, name, seed, fraction, steps, **values):
        """Fine-tuning (with `checkpoint`) or the same run from scratch (with `model`): both at
        the fine-tuning recipe's learning rate, so that the two differ only in the start."""
        return self.stage("finetune", name, **{**dict(
            checkpoint="", seed=seed, label_seed=seed, label_fraction=fraction, train_steps=steps,
            ft_proj_selector=1), **values})

    def pretrain(self, name, width, steps, **values):
        return self.stage("pretrain", name, **{**dict(
            model=_arch(width), seed=0, train_steps=steps, lineareval_while_pretraining=False,
            knn_steps=0, knn_bank_size=5000), **values})

    def linear(self, name, pretrained):
        return self.stage("lineareval", name, checkpoint=str(self.work / pretrained / "model.keras"),
                          label_fraction=1.0)

    def distill(self, name, teacher, student_width, seed, steps, **values):
        return self.stage("distill", name, teacher=str(self.work / teacher),
                          student=_arch(student_width), seed=seed, train_steps=steps, **values)


def calibrate(runner, widths):
    """Step costs and fixed costs measured with a few steps of each kind of stage run."""
    from simclrv2.budget import step_seconds

    n, costs, fixed = CALIBRATION_STEPS, {}, []
    quick = dict(log_steps=1, num_eval_examples=500)

    def timed(key, function, *a, **kw):
        started = time.time()
        function(*a, **kw)
        name = a[0]
        costs[key] = step_seconds(runner.work / name / "metrics.jsonl")
        fixed.append(time.time() - started - n * costs[key])

    for w in widths:
        timed(("pretrain", w), runner.pretrain, f"calibrate_pretrain_w{w:g}", w, n, **quick,
              knn_bank_size=500)
        timed(("supervised", w), runner.supervised, f"calibrate_supervised_w{w:g}", 0, 0.1, n,
              model=_arch(w), **quick)
    for wide in widths:
        for student in sorted({wide, widths[0]}):
            timed(("distill", wide, student), runner.distill,
                  f"calibrate_distill_w{wide:g}_to_w{student:g}",
                  f"calibrate_supervised_w{wide:g}", student, 0, n, **quick)
    started = time.time()
    runner.linear(f"calibrate_linear_w{widths[-1]:g}", f"calibrate_pretrain_w{widths[-1]:g}")
    costs["linear"] = time.time() - started
    # Calibration evaluates on 500 images; the real runs on the whole test split.
    costs["fixed"] = float(sorted(fixed)[len(fixed) // 2]) + (
        10.0 if not runner.args.eval_examples else 0.0)
    return costs


def run_all(runner, widths, seeds, steps):
    """Every stage run: rows[width][key] = [top-1 of each seed]."""
    rows = {w: {} for w in widths}

    def add(width, key, value):
        rows[width].setdefault(key, []).append(value)

    for w in widths:
        pre = f"pretrain_w{w:g}"
        add(w, "knn", runner.pretrain(pre, w, steps["pretrain"][w]))
        add(w, "linear_eval_100pct", runner.linear(f"linear_w{w:g}", pre))
    n = steps["supervised"]
    for seed in range(seeds):
        for w in widths:
            tag, pre = f"w{w:g}_s{seed}", str(runner.work / f"pretrain_w{w:g}")
            for pct in (1, 10, 100):
                add(w, f"scratch_{pct}pct", runner.supervised(
                    f"scratch_{pct}pct_{tag}", seed, pct / 100, supervised_steps(n, pct),
                    model=_arch(w), zero_init_logits_layer=False))
            for pct, layer in ((1, 1), (10, 1), (1, 0)):
                add(w, f"finetune_{pct}pct_layer{layer}", runner.supervised(
                    f"finetune_{pct}pct_layer{layer}_{tag}", seed, pct / 100,
                    supervised_steps(n, pct), checkpoint=pre, ft_proj_selector=layer))
            add(w, "self_distill_from_1pct", runner.distill(
                f"selfdistill_{tag}", f"finetune_1pct_layer1_{tag}", w, seed, steps["distill"]))
        narrow = widths[0]
        for w in widths[1:]:
            add(w, "distill_to_narrowest_from_1pct", runner.distill(
                f"distill_w{w:g}_to_w{narrow:g}_s{seed}", f"finetune_1pct_layer1_w{w:g}_s{seed}",
                narrow, seed, steps["distill"]))
    return rows


def _mean(values):
    return sum(values) / len(values)


def targets(summary, widths, logreg):
    """(description, met, figures) for each target of the brief, on seed means."""
    def m(width, key):
        return summary[str(width)][key]["mean"]

    out = []
    wide, narrow = widths[-1], widths[0]
    best = max(widths, key=lambda w: m(w, "linear_eval_100pct"))
    le = m(best, "linear_eval_100pct")
    out.append((f"linear eval >= 88% and >= raw pixels + 2 points at the best width ({best:g}x)",
                le >= 0.88 and le >= logreg + 0.02, {"linear_eval": le, "pixels": logreg}))
    for w in widths:
        ft, sc = m(w, "finetune_1pct_layer1"), m(w, "scratch_1pct")
        out.append((f"fine-tuned 1% >= scratch 1% + 5 points ({w:g}x)", ft >= sc + 0.05,
                    {"finetune_1pct": ft, "scratch_1pct": sc}))
        l1, l0 = m(w, "finetune_1pct_layer1"), m(w, "finetune_1pct_layer0")
        out.append((f"fine-tune from projection layer 1 >= layer 0 at 1% ({w:g}x)", l1 >= l0,
                    {"layer1": l1, "layer0": l0}))
        sd, t = m(w, "self_distill_from_1pct"), m(w, "finetune_1pct_layer1")
        out.append((f"self-distilled >= its 1% teacher - 0.5 points ({w:g}x)", sd >= t - 0.005,
                    {"self_distilled": sd, "teacher": t}))
    if len(widths) > 1:
        gain = {w: m(w, "finetune_1pct_layer1") - m(w, "scratch_1pct") for w in (narrow, wide)}
        out.append((f"{wide:g}x gains more from pretraining at 1% than {narrow:g}x",
                    gain[wide] > gain[narrow], {f"gain_{w:g}x": g for w, g in gain.items()}))
        st, own = m(wide, "distill_to_narrowest_from_1pct"), m(narrow, "finetune_1pct_layer1")
        out.append((f"distilled {narrow:g}x student (from {wide:g}x 1% teacher) > the same "
                    f"student fine-tuned on 1%", st > own, {"distilled": st, "finetuned_1pct": own}))
    return out


# Rows of the report: (result key, method, labels used).
ROWS = (
    ("scratch_1pct", "supervised from scratch (the 1% fine-tuning steps)", "1%"),
    ("scratch_10pct", "supervised from scratch (the 10% fine-tuning steps)", "10%"),
    ("scratch_100pct", "supervised from scratch (2x the 10% steps)", "100%"),
    ("knn", "SimCLR kNN monitor (k=200)", "5,000 (bank)"),
    ("linear_eval_100pct", "SimCLR linear eval (L-BFGS, one run)", "100%"),
    ("finetune_1pct_layer0", "SimCLRv2 fine-tuned from projection layer 0", "1%"),
    ("finetune_1pct_layer1", "SimCLRv2 fine-tuned from projection layer 1", "1%"),
    ("finetune_10pct_layer1", "SimCLRv2 fine-tuned from projection layer 1", "10%"),
    ("self_distill_from_1pct", "self-distilled from the 1% teacher (unlabeled images)", "1%"),
    ("distill_to_narrowest_from_1pct", "distilled into the narrowest width from this 1% teacher",
     "1%"),
)


def _figures_text(figures: dict) -> str:
    return ", ".join(f"{k} {100 * v:.2f}%" for k, v in figures.items())


def markdown_report(result: dict) -> str:
    """The result's table (mean +- std over seeds, one column per width) and its targets."""
    widths = sorted(result["results"], key=float)
    seeds = result["options"]["seeds"]
    head = " | ".join(f"r18 {float(w):g}x" for w in widths)
    lines = [f"| method | labels | {head} |", "| --- | --- |" + " --- |" * len(widths)]
    for key, method, labels in ROWS:
        cells = []
        for w in widths:
            v = result["results"][w].get(key)
            cells.append("-" if v is None else f"{100 * v['mean']:.2f} +- {100 * v['std']:.2f}")
        if any(c != "-" for c in cells):
            lines.append(f"| {method} | {labels} | {' | '.join(cells)} |")
    lr = result["logistic_regression_pixels"]["mean"]
    lines.append(f"| logistic regression on raw pixels | 100% | {100 * lr:.2f} (all widths) |"
                 + " |" * (len(widths) - 1))
    lines += ["", f"Test top-1 (%) on {result['test_examples']:,} Fashion-MNIST test images, "
              f"mean +- std over {seeds} seeds; wall time {result['wall_time_s'] / 60:.1f} min.", ""]
    for t in result["targets"]:
        if t["met"] is None:
            continue
        lines.append(f"- **{'met' if t['met'] else 'missed'}**: {t['target']} "
                     f"({_figures_text(t['figures'])})")
    return "\n".join(lines) + "\n"


def plot(result: dict, path) -> None:
    """Top-1 against the fraction of labels, one colour per width (the paper's Figure 1 axes)."""
    from simclrv2.plotting import label_fraction_axes, save_label_fraction_plot

    fig, ax, plt = label_fraction_axes(figsize=(6.4, 4.4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, w in enumerate(sorted(result["results"], key=float)):
        r, c = result["results"][w], colours[i % len(colours)]

        def mean(key):
            return 100 * r[key]["mean"] if key in r else None

        ax.plot([1, 10, 100], [mean(f"scratch_{p}pct") for p in (1, 10, 100)], "o:", color=c,
                label=f"{float(w):g}x supervised from scratch")
        ax.plot([1, 10, 100], [mean("finetune_1pct_layer1"), mean("finetune_10pct_layer1"),
                               mean("linear_eval_100pct")], "s-", color=c,
                label=f"{float(w):g}x SimCLRv2 fine-tuned (1%, 10%), linear eval (100%)")
        ax.plot([1], [mean("self_distill_from_1pct")], "*", color=c, markersize=12,
                label=f"{float(w):g}x self-distilled (1% teacher)")
        if "distill_to_narrowest_from_1pct" in r:
            ax.plot([1], [mean("distill_to_narrowest_from_1pct")], "P", color="black",
                    markersize=9, label=f"distilled from {float(w):g}x into the narrowest")
    ax.axhline(100 * result["logistic_regression_pixels"]["mean"], color="gray", linestyle="--",
               label="logistic regression on raw pixels (100%)")
    save_label_fraction_plot(
        fig, ax, path, xlabel="fraction of Fashion-MNIST labels used",
        title=(f"SimCLRv2 in miniature: ResNet-18, {result['options']['image_size']} px, "
               f"{result['wall_time_s'] / 60:.0f} min on {result['machine']['cpus']} CPUs"),
        title_size=9, legend_size=6.5)


def report(json_path) -> int:
    result = json.loads(pathlib.Path(json_path).read_text())
    png = pathlib.Path(json_path).with_suffix(".png")
    plot(result, png)
    print(markdown_report(result), end="")
    print(f"plot: {png}")
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report:
        return report(args.report)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(min(os.cpu_count() or 2, 16))
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    import numpy as np

    from simclrv2 import baselines
    from simclrv2.dir_lock import DirectoryLock
    from simclrv2.recipes import data_io

    started = time.time()
    work = args.work_dir or tempfile.mkdtemp(prefix="simclrv2_semisup_")
    # One benchmark per work directory: the lock is held until this process ends, when the
    # kernel lets go of it (simclrv2/dir_lock.py).
    DirectoryLock(work, option="another --work-dir").acquire()
    runner = Runner(args, work)
    print(f"semi-supervised benchmark: widths {args.widths}, {args.seeds} seed(s) downstream of "
          f"one pretraining per width, {args.image_size} px, budget {args.budget_minutes:g} min, "
          f"runs in {work}", flush=True)
    train, test = data_io.load_labeled("fashion_mnist", "train"), data_io.load_labeled(
        "fashion_mnist", "test")
    limit = args.eval_examples or len(test)
    logreg = baselines.pixel_logistic_regression_top1(
        train.native.images, train.labels, test.native.images[:limit], test.labels[:limit], 10)
    print(f"  logistic regression on pixels         top-1 {100 * logreg:6.2f}%  "
          f"{time.time() - started:6.0f}s", flush=True)
    print("calibration (step costs):", flush=True)
    costs = calibrate(runner, args.widths)
    left = args.budget_minutes * 60 - (time.time() - started)
    steps = plan_steps(costs, left, args.widths, args.seeds)
    print(f"plan: pretrain {steps['pretrain']}, supervised " + ", ".join(
        f"{pct}%: {supervised_steps(steps['supervised'], pct)}" for pct in FRACTION_STEP_WEIGHTS)
        + f", distill {steps['distill']} steps; from costs " + ", ".join(
        f"{k if isinstance(k, str) else '/'.join(str(x) for x in k)} {v:.2f}s"
        for k, v in costs.items()), flush=True)
    per_width = run_all(runner, args.widths, args.seeds, steps)

    summary = {str(w): {k: {"per_seed": v, "mean": _mean(v), "std": float(np.std(v))}
                        for k, v in per_width[w].items()} for w in args.widths}
    checks = targets(summary, args.widths, logreg)
    wall = time.time() - started

    print(f"\nFashion-MNIST test top-1, mean over {args.seeds} seed(s)")
    for w in args.widths:
        print(f"ResNet-18 {w:g}x")
        for k, v in summary[str(w)].items():
            print(f"  {k:<34} {100 * v['mean']:6.2f}% +- {100 * v['std']:.2f}")
    print(f"logistic regression on raw pixels    {100 * logreg:6.2f}%\n")
    for text, met, figures in checks:
        print(f"{'MET   ' if met else 'MISSED'} {text}: {_figures_text(figures)}")
    within = wall <= args.budget_minutes * 60
    print(f"\nwall time {wall / 60:.1f} min ({'within' if within else 'OVER'} the "
          f"{args.budget_minutes:g}-minute budget)")

    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"semi_supervised-{stamp}.json"
    import simclrv2
    from simclrv2.atomic_files import write_json
    result = {
        "benchmark": "semi_supervised", "options": {k: v for k, v in vars(args).items()},
        "steps": {"pretrain": {str(w): n for w, n in steps["pretrain"].items()},
                  "supervised": {f"{pct}pct": supervised_steps(steps["supervised"], pct)
                                 for pct in FRACTION_STEP_WEIGHTS},
                  "distill": steps["distill"]},
        "costs_s": {k if isinstance(k, str) else "/".join(str(x) for x in k): v
                    for k, v in costs.items()},
        "recipes": runner.recipes, "test_examples": limit,
        "logistic_regression_pixels": {"per_seed": [logreg], "mean": logreg},
        "results": summary,
        "targets": [{"target": t, "met": m, "figures": f} for t, m, f in checks],
        "wall_time_s": round(wall, 1), "within_budget": within,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count()},
        "versions": {"simclrv2": getattr(simclrv2, "__version__", "?"),
                     "tensorflow": tf.__version__, "keras": keras.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "stage_seconds": runner.seconds,
    }
    write_json(path, result)
    plot(result, path.with_suffix(".png"))
    print(f"written: {path} and its plot {path.with_suffix('.png').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
