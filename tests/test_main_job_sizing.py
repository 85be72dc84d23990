"""simclrv2.main_job.sizing: fixed step counts by default; with --budget-minutes, the step counts
sized from timed pretraining steps, a budget too small refused, the plan a resumed run keeps, and
the timing itself."""

import json
import os

import pytest

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def _sized(argv, step_s, run_dir):
    """size_steps with stand-in timed steps of `step_s` seconds (None: nothing may be timed)."""
    from simclrv2.main_job.cli import parse_args
    from simclrv2.main_job.sizing import size_steps

    args = parse_args(["--run-dir", str(run_dir), *argv])

    def time_steps(_):
        assert step_s is not None, "the plan was timed again"
        return step_s

    return args, size_steps(args, time_steps=time_steps)


def test_the_default_plan_does_not_depend_on_the_host(tmp_path):
    from simclrv2.main_job.settings import defaults

    # Without --budget-minutes nothing is timed: a fast and a slow host get the same counts.
    plans = []
    for step_s in (0.01, 10.0):
        args, sizing = _sized([], None, tmp_path / f"host_{step_s}")
        assert sizing is None
        plans.append((args.steps, args.finetune_steps, args.distill_steps))
    wanted = defaults()
    assert plans[0] == plans[1] == (wanted["steps"], wanted["finetune_steps"],
                                    wanted["distill_steps"])


def test_a_budget_sizes_the_step_counts_from_timed_steps(tmp_path):
    from simclrv2.main_job.settings import KEEP_DEFAULTS_WITHIN, REFERENCE, SCALE_RANGE, defaults

    DEFAULTS = defaults()
    reference_minutes = (REFERENCE["fixed_s"] + REFERENCE["stepped_s"]) / 60
    # The reference host's speed and the reference host's stage time give the defaults.
    args, sizing = _sized(["--budget-minutes", f"{reference_minutes:.3f}"],
                          REFERENCE["pretrain_step_s"], tmp_path / "a")
    assert sizing["fitted_scale"] == pytest.approx(1.0, abs=1e-3) and sizing["scale"] == 1.0
    assert (args.steps, args.finetune_steps, args.distill_steps) == (
        DEFAULTS["steps"], DEFAULTS["finetune_steps"], DEFAULTS["distill_steps"])
    # Twice that budget on a host 1.5x as slow: the fixed part grows as much, the steps fill
    # the rest.
    budget_minutes = 2 * reference_minutes
    args, sizing = _sized(["--budget-minutes", f"{budget_minutes:.3f}"],
                          1.5 * REFERENCE["pretrain_step_s"], tmp_path / "b")
    scale = ((budget_minutes * 60 - 1.5 * REFERENCE["fixed_s"])
             / (1.5 * REFERENCE["stepped_s"]))
    assert 1 + KEEP_DEFAULTS_WITHIN < scale < SCALE_RANGE[1]
    assert sizing["scale"] == pytest.approx(scale, abs=1e-3)
    assert args.steps == round(DEFAULTS["steps"] * scale)
    assert args.finetune_steps == tuple(round(n * scale) for n in DEFAULTS["finetune_steps"])
    assert args.distill_steps == round(DEFAULTS["distill_steps"] * scale)
    from simclrv2.main_job.sizing import describe_sizing
    assert "scaled x" in describe_sizing(sizing, args)
    # What is given on the command line is kept; only the rest is sized.
    args, sizing = _sized(["--steps", "7", "--budget-minutes", "30"],
                          REFERENCE["pretrain_step_s"], tmp_path / "d")
    assert args.steps == 7 and sizing["sized"] == ["finetune_steps", "distill_steps"]
    assert args.distill_steps > DEFAULTS["distill_steps"]


def test_a_budget_too_small_for_the_aims_is_refused_naming_the_smallest(tmp_path):
    from simclrv2 import errors
    from simclrv2.main_job.settings import REFERENCE

    with pytest.raises(errors.UsageError) as refused:
        _sized(["--budget-minutes", "5"], 2 * REFERENCE["pretrain_step_s"], tmp_path / "c")
    message = str(refused.value)
    assert "\n" not in message and "--budget-minutes 5" in message
    smallest = 2 * (REFERENCE["fixed_s"] + REFERENCE["stepped_s"]) / 60
    assert f"the smallest budget that does here is {smallest:.1f} minutes" in message
    assert not (tmp_path / "c").exists()
    # That budget itself is accepted.
    args, sizing = _sized(["--budget-minutes", f"{smallest:.1f}"], 2 * REFERENCE["pretrain_step_s"],
                          tmp_path / "c")
    assert sizing["scale"] == 1.0


def test_quick_and_given_counts_are_not_sized(tmp_path):
    assert _sized(["--steps", "5", "--finetune-steps", "3", "--distill-steps", "2",
                   "--budget-minutes", "10"], None, tmp_path / "e")[1] is None
    assert _sized(["--quick"], None, tmp_path / "f")[1] is None
    from simclrv2.main_job.cli import parse_args
    with pytest.raises(SystemExit):
        parse_args(["--quick", "--budget-minutes", "3"])


def test_a_resumed_run_keeps_its_sized_plan(tmp_path):
    from simclrv2.main_job.run_dir import check_run_dir, record_sizing
    from simclrv2.main_job.settings import REFERENCE
    from simclrv2.main_job.sizing import describe_sizing

    run_dir = tmp_path / "run"
    args, sizing = _sized(["--budget-minutes", "40"], 3 * REFERENCE["pretrain_step_s"], run_dir)
    check_run_dir(args)
    record_sizing(run_dir, sizing)
    assert "scaled x" in describe_sizing(sizing, args)
    job = json.loads((run_dir / "job.json").read_text())
    assert job["sizing"] == json.loads(json.dumps(sizing))
    # Run again (same command): the plan comes from job.json, not from new timing.
    again, sizing_again = _sized(["--budget-minutes", "40"], None, run_dir)
    assert (again.steps, again.finetune_steps, again.distill_steps) == (
        args.steps, args.finetune_steps, args.distill_steps)
    assert sizing_again == json.loads(json.dumps(sizing))
    check_run_dir(again)  # the same options: accepted
    # Another budget is another run: timed again, then refused for this directory.
    other, other_sizing = _sized(["--budget-minutes", "30"], REFERENCE["pretrain_step_s"], run_dir)
    from simclrv2 import errors
    with pytest.raises(errors.UsageError, match="budget_minutes"):
        check_run_dir(other)


def test_bad_budget_is_refused():
    from simclrv2.main_job.cli import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--budget-minutes", "0"])


@pytest.mark.skipif(not os.path.exists(FMNIST), reason="apt-get install dataset-fashion-mnist")
def test_the_budget_times_the_runs_own_first_steps_which_it_then_continues(tmp_path):
    from simclrv2.main_job.cli import parse_args, run_stage
    from simclrv2.main_job.plan import plan
    from simclrv2.main_job.run_dir import check_run_dir
    from simclrv2.main_job.settings import TIMED_STEPS
    from simclrv2.main_job.sizing import time_first_steps

    run_dir = tmp_path / "run"
    args = parse_args(["--run-dir", str(run_dir), "--width", "0.25", "--image-size", "16",
                       "--budget-minutes", "10", "--set", "pretrain.global_batch_size=16",
                       "--set", "pretrain.progress_bar=false"])
    check_run_dir(args)
    seconds = time_first_steps(args, run_stage)
    assert 0 < seconds < 60
    pretrain = run_dir / "pretrain"
    result = json.loads((pretrain / "result.json").read_text())
    assert (result["status"], result["steps"]) == ("paused", TIMED_STEPS)
    records = [json.loads(line) for line in open(pretrain / "metrics.jsonl")]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, TIMED_STEPS + 1))
    # The job's own stage then goes on from there for the steps the budget gave it.
    args.steps, args.finetune_steps, args.distill_steps = TIMED_STEPS + 2, (1, 1), 1
    [(_, kind, values)] = plan(args.__class__(**{**vars(args), "only": "pretrain"}))
    values.update(knn_bank_size=100, num_eval_examples=100)
    result = run_stage(kind, values)
    assert (result["status"], result["steps"]) == ("done", TIMED_STEPS + 2)


# Quiet default runs of the job committed under benchmarks/results, one per precision and seed.
TIMED_RUNS = ["main_job-20261207T221419Z.json", "main_job-test-float32-seed0-20261207T225356Z.json",
              "main_job-test-float32-seed1-20261207T231412Z.json"]


@pytest.mark.parametrize("name", TIMED_RUNS)
def test_the_whole_job_estimate_follows_the_precision_it_trains_in(name, tmp_path):
    """The estimate printed after pretraining, from that run's own pretraining steps and the
    stage costs of its precision, comes within 5% of the run's stage time; the other
    precision's costs would not."""
    from conftest import REPO_ROOT
    from simclrv2.main_job.cli import parse_args
    from simclrv2.main_job.plan import plan
    from simclrv2.main_job.sizing import Progress

    record = json.loads((REPO_ROOT / "benchmarks" / "results" / name).read_text())
    options = record["options"]
    args = parse_args(["--run-dir", str(tmp_path), "--steps", str(options["steps"]),
                       "--finetune-steps", ",".join(map(str, options["finetune_steps"])),
                       "--distill-steps", str(options["distill_steps"])])
    stages = plan(args)
    pretrain = next(values for stage, _, values in stages if stage == "pretrain")
    step_s = record["stage_time_split"]["pretrain"]["steps_s"] / options["steps"]
    os.makedirs(pretrain["model_dir"])
    with open(os.path.join(pretrain["model_dir"], "metrics.jsonl"), "w") as metrics:
        for step in range(0, 101, 10):
            metrics.write(json.dumps({"kind": "train", "step": step, "time": step * step_s}) + "\n")
    policy = record["training_precision"]["policy"]
    estimates = {}
    for assumed in ("mixed_bfloat16", "float32"):
        clock = Progress(len(stages) + 1, 0.0, stages, args)
        line = clock.measured(pretrain, assumed)
        assert line.startswith(f"this host: {step_s:.3f} s per pretraining step")
        estimates[assumed] = clock.seconds_left(1)
    actual = record["total_stage_wall_s"]
    assert abs(estimates[policy] / actual - 1) < 0.05, (estimates, actual)
    other = "float32" if policy == "mixed_bfloat16" else "mixed_bfloat16"
    assert abs(estimates[other] / actual - 1) > 0.05, (estimates, actual)
