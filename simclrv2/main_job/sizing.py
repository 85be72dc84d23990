"""The main job's time on this host: its progress line and estimate, and the step counts sized
to a budget when one is asked for (--budget-minutes).

The budget's stage time is modelled as REFERENCE's (settings.py), slowed by the timed pretraining
step over the reference one: the fixed part as it comes, the part in steps scaled with the
default step counts. The arithmetic is simclrv2.budget's, shared with the benchmarks.
"""

from __future__ import annotations

import pathlib
import time

from simclrv2 import budget, errors
from simclrv2.atomic_files import read_json
from simclrv2.main_job import settings
from simclrv2.main_job.plan import plan, with_default_steps


def time_first_steps(args, run_stage):
    """Seconds per pretraining step on this host, from the job's own pretraining stage: it runs
    its first TIMED_STEPS steps (every one logged) and pauses with a checkpoint; the job then
    resumes it for as many steps as the budget allows. Up to the end of the warm-up the schedule
    does not depend on the run's length, so those steps are the ones the sized run would take."""
    print(f"simclrv2 run: timing the first {settings.TIMED_STEPS} pretraining steps to size the "
          f"job to {args.budget_minutes:g} minutes of stage time", flush=True)
    [(_, kind, values)] = plan(with_default_steps(args, only="pretrain"))
    values.update(log_steps=1, stop_at_step=settings.TIMED_STEPS)
    try:
        run_stage(kind, values)
    finally:
        import keras
        keras.backend.clear_session()
    seconds = budget.step_seconds(pathlib.Path(values["model_dir"]) / "metrics.jsonl")
    if not seconds > 0:
        raise errors.UsageError("the first pretraining steps logged too few records to time; "
                                "give --steps, --finetune-steps and --distill-steps instead")
    return seconds


def size_steps(args, time_steps):
    """Fills the step counts left unset for args.budget_minutes of stage time on this host and
    returns how (kept in job.json), or None when every step count was given. `time_steps(args)`
    returns seconds per pretraining step. A run directory that holds a sized run keeps its plan,
    so that resuming does not re-plan."""
    unset = [name for name in settings.STEP_OPTIONS if getattr(args, name) is None]
    if not unset:
        return None
    previous = read_json(pathlib.Path(args.run_dir) / "job.json") or {}
    sizing = previous.get("sizing")
    if sizing and sizing.get("budget_minutes") == args.budget_minutes \
            and sorted(sizing.get("sized", [])) == sorted(unset):
        for name in unset:
            value = sizing["steps"][name]
            setattr(args, name, tuple(value) if isinstance(value, list) else value)
        return sizing
    started = time.time()
    step_s = time_steps(args)
    timing_wall = time.time() - started
    slower = step_s / settings.REFERENCE["pretrain_step_s"]
    # The default plan is one unit whose steps cost the reference's stepped time, slowed down.
    fixed_s, stepped_s = (settings.REFERENCE["fixed_s"] * slower,
                          settings.REFERENCE["stepped_s"] * slower)
    scale, fitted = budget.fit_scale(args.budget_minutes * 60, fixed_s, {"defaults": 1},
                                     {"defaults": stepped_s}, limits=settings.SCALE_RANGE)
    smallest = settings.SCALE_RANGE[0]
    if fitted < smallest * (1 - settings.KEEP_DEFAULTS_WITHIN):
        needed = budget.plan_seconds(fixed_s, {"defaults": smallest}, {"defaults": stepped_s})
        raise errors.UsageError(
            f"--budget-minutes {args.budget_minutes:g} would cut the step counts to "
            f"x{max(fitted, 0):.2f} of the defaults on this host ({step_s:.3f} s per pretraining "
            f"step), below the x{smallest:g} shown to meet the job's aims; the smallest budget "
            f"that does here is {needed / 60:.1f} minutes (or give --steps, --finetune-steps "
            f"and --distill-steps yourself)")
    if abs(scale - 1.0) <= settings.KEEP_DEFAULTS_WITHIN:
        scale = 1.0
    defaults = settings.defaults()
    for name in unset:
        setattr(args, name, budget.scaled(defaults[name], scale))
    return {"budget_minutes": args.budget_minutes, "timed_pretrain_step_s": round(step_s, 4),
            "reference": settings.REFERENCE, "scale": round(scale, 3),
            "fitted_scale": round(fitted, 3), "sized": unset,
            "steps": {name: getattr(args, name) for name in unset},
            "timing_wall_s": round(timing_wall, 1)}


def describe_sizing(sizing, args):
    """The line the job prints about how size_steps sized it."""
    high = settings.SCALE_RANGE[1]
    clamp = ""
    if sizing["fitted_scale"] > high:
        clamp = (f" (the budget asks for x{sizing['fitted_scale']:.2f}; kept at x{high:g}, so "
                 f"the job runs under its budget)")
    elif sizing["scale"] == 1.0 and sizing["fitted_scale"] != 1.0:
        clamp = f" (the budget asks for x{sizing['fitted_scale']:.2f}: close enough)"
    return (f"budget {sizing['budget_minutes']:g} min: a pretraining step takes "
            f"{sizing['timed_pretrain_step_s']:.3f} s here "
            f"({sizing['reference']['pretrain_step_s']:.3f} s on the reference host), so the "
            f"default step counts are scaled x{sizing['scale']:.2f}{clamp}: pretraining "
            f"{args.steps}, fine-tuning {args.finetune_steps[0]} (1%) / {args.finetune_steps[1]} "
            f"(10%), distillation {args.distill_steps}")


def _minutes(seconds):
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _cost_key(name, kind):
    return "student" if name.startswith("student") else kind


class Progress:
    """The whole-job progress line (stage k of n, time elapsed and, once this run has timed its
    pretraining steps, the time left) and the estimate of the whole job on this host."""

    def __init__(self, total, started, stages, args):
        self.total, self.started = total, started
        self.steps = {name: values.get("train_steps", 0) if kind != "lineareval" else 0
                      for name, kind, values in stages}
        self.costs = [(name, _cost_key(name, kind)) for name, kind, _ in stages]
        if not args.no_export:
            self.costs.append(("export", "export"))
        self.step_s = self.cost = None

    def _stage_seconds(self, name, key):
        fixed, per_step = self.cost[key]
        return (fixed + per_step * self.steps.get(name, 0)) * self.step_s

    def seconds_left(self, number):
        """The modelled stage time of stage `number` (from 1) and those after it."""
        return sum(self._stage_seconds(name, key) for name, key in self.costs[number - 1:])

    def measured(self, pretrain_values, policy):
        """The line that reports this host's pretraining step and the whole job's estimate (for
        the precision `policy` the job trains in), once the pretraining stage has logged its
        steps; None when it logged too few to time."""
        step_s = budget.step_seconds(pathlib.Path(pretrain_values["model_dir"]) / "metrics.jsonl")
        if not step_s > 0:
            return None
        self.step_s, self.cost = step_s, settings.stage_cost(policy)
        whole = self.seconds_left(1)
        return (f"this host: {step_s:.3f} s per pretraining step; the whole job comes to about "
                f"{_minutes(whole)} of stage time here")

    def line(self, number):
        """'stage k of n, 1m05s elapsed, about 7m10s left' (the estimate once timed)."""
        text = f"stage {number} of {self.total}, {_minutes(time.time() - self.started)} elapsed"
        if self.step_s:
            left = self.seconds_left(number)
            text += f", about {_minutes(left)} left"
        return text
