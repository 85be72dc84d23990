"""Step counts that fit a time budget: the main job's planner for `--budget-minutes`.

A plan is a step count per kind of training run (pretraining, fine-tuning, ...). Its time is
modelled as a fixed part (building, tracing, evaluating, reading data: the same whatever the
counts) plus each kind's steps times its seconds per step. `fit_scale` finds the factor that
stretches or shrinks a base plan uniformly to fill a budget; `scaled` applies it. The step costs
come from steps the caller timed (`step_seconds` reads them from a run's metrics.jsonl).
"""

from __future__ import annotations

import json
import math


def step_seconds(metrics_path, skip=2):
    """Median seconds per step between consecutive logged training steps of a run's
    metrics.jsonl, after the first `skip` records (tracing); nan when too few were logged."""
    records = []
    with open(metrics_path) as lines:
        for line in lines:
            record = json.loads(line)
            if record.get("kind") == "train":
                records.append(record)
    per_step = sorted((b["time"] - a["time"]) / (b["step"] - a["step"])
                      for a, b in zip(records[skip:], records[skip + 1:]) if b["step"] > a["step"])
    if not per_step:
        return float("nan")
    middle = len(per_step) // 2
    if len(per_step) % 2:
        return float(per_step[middle])
    return float(per_step[middle - 1] + per_step[middle]) / 2


def plan_seconds(fixed_s, steps, step_cost_s):
    """The modelled time of a plan: fixed_s + sum of steps[kind] * step_cost_s[kind]."""
    return fixed_s + sum(steps[kind] * step_cost_s[kind] for kind in steps)


def fit_scale(budget_s, fixed_s, base_steps, step_cost_s, limits=(0.0, math.inf)):
    """(scale, fitted): `fitted` makes the modelled time of base_steps * fitted equal budget_s
    (negative when the fixed part alone is over budget); `scale` is fitted kept within `limits`."""
    stepped = plan_seconds(0.0, base_steps, step_cost_s)
    if not stepped > 0:
        raise ValueError("a plan needs at least one kind of step with a positive cost")
    fitted = (budget_s - fixed_s) / stepped
    return min(max(fitted, limits[0]), limits[1]), fitted


def scaled(count, scale, minimum=1, rounding=round):
    """A step count (or a tuple of them) times scale, rounded (math.floor: never over the
    budget), never below `minimum`."""
    if isinstance(count, tuple):
        return tuple(scaled(c, scale, minimum, rounding) for c in count)
    return max(minimum, int(rounding(count * scale)))
