"""The main job's report: the results table (one row per evaluated model, baselines included),
its aims judged as stated, the plot of top-1 against the label fraction, and what ran it."""

from __future__ import annotations

import os
import pathlib
import platform

from simclrv2 import budget
from simclrv2.recipes import stage_clock
from simclrv2.main_job.run_dir import stage_result
from simclrv2.plotting import label_fraction_axes, save_label_fraction_plot

TRAIN_SIZE = 60000
VALIDATION_SIZE = 5000  # held out of the training images by --validation (the recipes' default)


def top1_of(result):
    """A stage's headline figure: top-1 on the evaluation split, or the kNN monitor's for
    pretraining."""
    for key in ("test_top1", "validation_top1"):
        if result.get(key) is not None:
            return result[key]
    return result.get("knn_top1")


def _labels_used(fraction, args):
    train = TRAIN_SIZE - (VALIDATION_SIZE if args.validation else 0)
    return f"{int(round(fraction * train))} ({fraction * 100:g}%)"


def collect(job, stages, args):
    """The results table: one row per evaluated model, baselines included; `job` is job.json.
    The pretrained network's row is its kNN monitor, which the linear eval measures from its
    features when the pretraining stage did not (plan.py)."""
    walls = job.get("stage_wall_s", {})
    monitor = next((stage_result(values).get("knn_top1") for _, kind, values in stages
                    if kind == "lineareval"), None)
    rows = []
    for name, kind, overrides in stages:
        result = stage_result(overrides)
        fraction = overrides.get("label_fraction", 1.0)
        labels = result.get("num_labeled")
        top1 = top1_of(result)
        if kind == "pretrain" and top1 is None:
            top1 = monitor
        row = dict(stage=name, label_fraction=fraction,
                   labels_used=(f"{labels} ({fraction * 100:g}%)" if labels
                                else _labels_used(fraction, args)),
                   top1=top1, wall_s=walls.get(name))
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
                       label_fraction=0.1, labels_used=_labels_used(0.1, args) + " via teacher")
        else:
            row.update(method=f"baseline: student {args.student_width:g}x on the 10% labels")
        rows.append(row)
    return rows


def training_precision(stages):
    """The pretraining stage's precision record (requested, policy, reason), else the first
    trained stage's; None when no stage has one."""
    for name, kind, overrides in sorted(stages, key=lambda st: st[1] != "pretrain"):
        result = stage_result(overrides)
        if result.get("precision"):
            return result["precision"]
    return None


# Each aim: (statement, stage that must be better, stage it is compared with, required lead in
# points of top-1). The leads are margins over the bare comparison, so that an aim met is met by
# more than the seed-to-seed spread (docs/main_job.md).
AIMS = (
    ("linear eval on 100% of the labels >= logistic regression on raw pixels + 1.5 points",
     "lineareval_100pct", "pixels", 1.5),
    ("fine-tuned on 1% >= from scratch on 1% + 8 points", "finetune_1pct", "scratch_1pct", 8.0),
    ("fine-tuned on 10% >= fine-tuned on 1%", "finetune_10pct", "finetune_1pct", 0.0),
    ("distilled student >= the same student trained on the teacher's 10% labels + 1 point",
     "distill", "student_10pct", 1.0),
)


def aims(rows):
    """For each aim: its statement, met (None when a figure is missing), the two figures, the
    required lead and the margin (points by which the lead beats it; negative when missed)."""
    top1 = {r["stage"]: r["top1"] for r in rows}
    judged = []
    for text, better, other, lead in AIMS:
        figures = {better: top1.get(better), other: top1.get(other)}
        margin = None
        if None not in figures.values():
            margin = round(100 * (figures[better] - figures[other]) - lead, 2)
        judged.append({"aim": text, "met": None if margin is None else margin >= 0,
                       "figures": figures, "required_lead_points": lead,
                       "margin_points": margin})
    return judged


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
        margin = ("" if aim["margin_points"] is None
                  else f" (margin {aim['margin_points']:+.2f} points)")
        print(f"{status} {aim['aim']}: {figures}{margin}")


def _parts(wall_s, steps_s, fixed=None):
    """A stage's time to a tenth of a second, its fixed part what is left of the rounded wall
    time after the rounded steps: the parts add up to the whole, in each stage and in total.
    `fixed`, when known: the fixed part's own parts but `setup` (stage_clock), rounded; `setup`
    is what they leave of the fixed part (the job's overhead around the call included), since
    each part rounded on its own would not add up to the whole."""
    wall, steps = round(wall_s, 1), round(steps_s, 1)
    parts = {"wall_s": wall, "steps_s": steps, "fixed_s": round(wall - steps, 1)}
    if fixed is not None:
        setup = round(max(parts["fixed_s"] - sum(fixed.values()), 0.0), 1)
        parts["fixed_parts_s"] = {"setup": setup, **fixed}
    return parts


def _clocked(wall, times):
    """(training seconds, fixed parts but `setup`) of a stage from its result.json's clock: the
    optimiser's steps and iterations are training, the rest fixed (`_parts` derives `setup`)."""
    training = min(sum(times[part] for part in stage_clock.TRAINING_PARTS), wall)
    fixed = {part: round(times[part], 1) for part in stage_clock.PARTS
             if part not in stage_clock.TRAINING_PARTS and part != "setup"}
    return training, fixed


def _median_stepped(wall, kind, values):
    """Training seconds of a stage whose run recorded no clock (an older run reused): its steps
    times the median step after tracing, from metrics.jsonl."""
    metrics = pathlib.Path(values["model_dir"]) / "metrics.jsonl"
    if kind in ("pixels", "lineareval") or not metrics.is_file():
        return 0.0
    per_step = budget.step_seconds(metrics)
    return min(wall, per_step * values.get("train_steps", 0)) if per_step > 0 else 0.0


def time_split(job, stages):
    """Each stage's wall time split into training (the optimiser's steps: the networks' SGD
    steps, the linear classifiers' L-BFGS iterations) and fixed costs (building, reading data,
    tracing, evaluating, checkpoints, saving), from the clock each stage run records in its
    result.json (simclrv2.recipes.stage_clock); the export is a fixed cost whole."""
    walls = job.get("stage_wall_s", {})
    split = {}
    for name, kind, values in stages:
        wall = walls.get(name)
        if wall is None:
            continue
        times = stage_result(values).get("time_s")
        if times:
            split[name] = _parts(wall, *_clocked(wall, times))
        else:
            split[name] = _parts(wall, _median_stepped(wall, kind, values))
    if "export" in walls:
        split["export"] = _parts(walls["export"], 0.0)
    totals = {key: round(sum(part[key] for part in split.values()), 1)
              for key in ("wall_s", "steps_s", "fixed_s")}
    fixed_parts = {}
    for part in split.values():
        for key, seconds in part.get("fixed_parts_s", {}).items():
            fixed_parts[key] = round(fixed_parts.get(key, 0.0) + seconds, 1)
    if fixed_parts:
        # The export is fixed cost whole: named, so that the total's parts add up to its fixed_s.
        if "export" in split:
            fixed_parts["export"] = split["export"]["fixed_s"]
        totals["fixed_parts_s"] = fixed_parts
    split["total"] = totals
    return split


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


def machine():
    """The host the figures come from: its CPU model and the features that decide the training
    precision (simclrv2.precision)."""
    from simclrv2 import precision

    flags = precision.cpu_flags()
    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "cpu_model": precision.cpu_model(),
            "bfloat16_features": sorted(f for f in ("avx512_bf16", "amx_bf16", "amx_tile")
                                        if f in flags)}


def versions():
    import keras
    import numpy as np
    import tensorflow as tf

    import simclrv2
    return {"simclrv2": getattr(simclrv2, "__version__", "?"), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "python": platform.python_version()}
