"""simclrv2.main_job.sizing: the step counts sized to the budget from a probe of the pretraining
step, the plan a resumed run keeps, and the probe itself."""

import json
import os

import pytest

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def _sized(argv, step_s, run_dir):
    """size_steps with a stand-in probe that reports `step_s` (None: the probe must not run)."""
    from simclrv2.main_job.cli import parse_args
    from simclrv2.main_job.sizing import size_steps

    args = parse_args(["--run-dir", str(run_dir), *argv])

    def probe(_):
        assert step_s is not None, "the plan was re-probed"
        return step_s

    return args, size_steps(args, probe=probe)


def test_step_counts_are_sized_to_the_budget_from_the_probe(tmp_path):
    from simclrv2.main_job.settings import (BUDGET_MINUTES, KEEP_DEFAULTS_WITHIN, REFERENCE,
                                            SCALE_RANGE, defaults)

    DEFAULTS = defaults()

    # The reference host's speed and the default budget give the defaults themselves.
    args, sizing = _sized([], REFERENCE["pretrain_step_s"], tmp_path / "a")
    fitted = (BUDGET_MINUTES * 60 - REFERENCE["fixed_s"]) / REFERENCE["stepped_s"]
    assert sizing["fitted_scale"] == pytest.approx(fitted, abs=1e-3)
    assert abs(fitted - 1) <= KEEP_DEFAULTS_WITHIN and sizing["scale"] == 1.0
    assert (args.steps, args.finetune_steps, args.distill_steps) == (
        DEFAULTS["steps"], DEFAULTS["finetune_steps"], DEFAULTS["distill_steps"])
    # A host 1.5x as slow: the fixed part grows as much, the stepped part shrinks to fit.
    args, sizing = _sized([], 1.5 * REFERENCE["pretrain_step_s"], tmp_path / "b")
    scale = ((BUDGET_MINUTES * 60 - 1.5 * REFERENCE["fixed_s"])
             / (1.5 * REFERENCE["stepped_s"]))
    assert SCALE_RANGE[0] < scale < 1 - KEEP_DEFAULTS_WITHIN
    assert sizing["scale"] == pytest.approx(scale, abs=1e-3)
    assert args.steps == round(DEFAULTS["steps"] * scale)
    assert args.finetune_steps == tuple(round(n * scale) for n in DEFAULTS["finetune_steps"])
    assert args.distill_steps == round(DEFAULTS["distill_steps"] * scale)
    # A budget a slow host cannot fill is clamped, and says so.
    args, sizing = _sized(["--budget-minutes", "1"], 20 * REFERENCE["pretrain_step_s"],
                          tmp_path / "c")
    assert sizing["scale"] == SCALE_RANGE[0] and sizing["fitted_scale"] < SCALE_RANGE[0]
    from simclrv2.main_job.sizing import describe_sizing
    assert "runs over its budget" in describe_sizing(sizing, args)
    # What is given on the command line is kept; only the rest is sized.
    args, sizing = _sized(["--steps", "7", "--budget-minutes", "18"],
                          REFERENCE["pretrain_step_s"], tmp_path / "d")
    assert args.steps == 7 and sizing["sized"] == ["finetune_steps", "distill_steps"]
    assert args.distill_steps > DEFAULTS["distill_steps"]
    # Everything given (or --quick): no probe, no sizing.
    assert _sized(["--steps", "5", "--finetune-steps", "3", "--distill-steps", "2"], None,
                  tmp_path / "e")[1] is None
    assert _sized(["--quick"], None, tmp_path / "f")[1] is None


def test_a_resumed_run_keeps_its_sized_plan(tmp_path):
    from simclrv2.main_job.run_dir import check_run_dir
    from simclrv2.main_job.settings import REFERENCE
    from simclrv2.main_job.sizing import describe_sizing

    run_dir = tmp_path / "run"
    args, sizing = _sized([], 3 * REFERENCE["pretrain_step_s"], run_dir)
    check_run_dir(args, sizing)
    assert "scaled x" in describe_sizing(sizing, args)
    job = json.loads((run_dir / "job.json").read_text())
    assert job["sizing"] == json.loads(json.dumps(sizing))
    # Run again (same command): the plan comes from job.json, not from a new probe.
    again, sizing_again = _sized([], None, run_dir)
    assert (again.steps, again.finetune_steps, again.distill_steps) == (
        args.steps, args.finetune_steps, args.distill_steps)
    check_run_dir(again, sizing_again)  # the same options: accepted
    # Another budget is another run: probed again, then refused for this directory.
    other, other_sizing = _sized(["--budget-minutes", "5"], REFERENCE["pretrain_step_s"], run_dir)
    from simclrv2 import errors
    with pytest.raises(errors.UsageError, match="budget_minutes"):
        check_run_dir(other, other_sizing)


def test_bad_budget_is_refused():
    from simclrv2.main_job.cli import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--budget-minutes", "0"])


@pytest.mark.skipif(not os.path.exists(FMNIST), reason="apt-get install dataset-fashion-mnist")
def test_the_probe_times_real_pretraining_steps_and_leaves_nothing(tmp_path, monkeypatch):
    import tempfile

    from simclrv2.main_job.cli import parse_args, run_stage
    from simclrv2.main_job.sizing import probe_pretrain_step

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the probe's directory goes
    args = parse_args(["--run-dir", str(tmp_path / "run"), "--width", "0.25",
                       "--image-size", "16"])
    seconds = probe_pretrain_step(args, run_stage)
    assert 0 < seconds < 60
    # The probe's directory is gone (TF's autograph leaves its own files in the temp dir), and
    # it made no run directory.
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("simclrv2_probe_")] == []
    assert not (tmp_path / "run").exists()
