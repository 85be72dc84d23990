"""simclrv2.budget: the planner the main job and the benchmarks size their step counts with."""

import json
import math

import pytest

from simclrv2 import budget


def test_the_fitted_plan_fills_the_budget_exactly():
    base, cost = {"pretrain": 480, "finetune": 160}, {"pretrain": 0.4, "finetune": 0.1}
    scale, fitted = budget.fit_scale(600.0, 100.0, base, cost)
    assert scale == fitted
    planned = budget.plan_seconds(100.0, {k: n * scale for k, n in base.items()}, cost)
    assert planned == pytest.approx(600.0)
    # Twice the step cost: half the steps.
    half, _ = budget.fit_scale(600.0, 100.0, base, {k: 2 * c for k, c in cost.items()})
    assert half == pytest.approx(scale / 2)


def test_limits_clamp_the_scale_but_report_the_fitted_one():
    scale, fitted = budget.fit_scale(50.0, 100.0, {"a": 10}, {"a": 1.0}, limits=(0.25, 2.0))
    assert fitted < 0 and scale == 0.25
    scale, fitted = budget.fit_scale(1e6, 0.0, {"a": 10}, {"a": 1.0}, limits=(0.25, 2.0))
    assert fitted > 2 and scale == 2.0
    with pytest.raises(ValueError, match="positive cost"):
        budget.fit_scale(10.0, 0.0, {"a": 10}, {"a": 0.0})


def test_scaled_counts_round_keep_a_minimum_and_follow_tuples():
    assert budget.scaled(480, 0.82) == 394
    assert budget.scaled((160, 320), 0.5) == (80, 160)
    assert budget.scaled(3, 0.01, minimum=2) == 2
    assert budget.scaled(10, 0.99, rounding=math.floor) == 9


def _write_metrics(path, times):
    with open(path, "w") as f:
        for step, t in times:
            f.write(json.dumps({"kind": "train", "step": step, "time": t}) + "\n")
            f.write(json.dumps({"kind": "eval", "step": step, "time": t + 0.5}) + "\n")


def test_step_seconds_is_the_median_after_tracing(tmp_path):
    path = tmp_path / "metrics.jsonl"
    # The first records include tracing (slow); evaluation records are not steps.
    _write_metrics(path, [(1, 0.0), (2, 30.0), (3, 31.0), (4, 32.0), (6, 34.0), (7, 35.5)])
    assert budget.step_seconds(path, skip=2) == pytest.approx(1.0)  # of 1.0, 1.0, 1.5
    assert budget.step_seconds(path, skip=0) == pytest.approx(1.0)  # 30 (tracing) is an outlier
    _write_metrics(path, [(1, 0.0), (2, 30.0)])
    assert math.isnan(budget.step_seconds(path))
