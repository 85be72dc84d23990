"""Sizing the main job's step counts to its budget of stage time on this host.

The stage time is modelled as REFERENCE's (settings.py), slowed by the probed pretraining step
over the reference one: the fixed part as it comes, the part in steps scaled with the default
step counts. The arithmetic is simclrv2.budget's, shared with the benchmarks.
"""

from __future__ import annotations

import pathlib
import shutil
import tempfile
import time

from simclrv2 import budget, errors
from simclrv2.atomic_files import read_json
from simclrv2.main_job import settings
from simclrv2.main_job.plan import plan, with_default_steps


def probe_pretrain_step(args, run_stage):
    """Seconds per pretraining step with the job's settings on this host: PROBE_STEPS steps of
    the pretraining stage (run by `run_stage(kind, settings)`) in a temporary directory, removed
    after."""
    print(f"simclrv2 run: timing {settings.PROBE_STEPS} pretraining steps to size the job to "
          f"{args.budget_minutes:g} minutes of stage time", flush=True)
    probe_dir = tempfile.mkdtemp(prefix="simclrv2_probe_")
    try:
        [(_, kind, values)] = plan(with_default_steps(
            args, steps=settings.PROBE_STEPS, only="pretrain", run_dir=probe_dir))
        values.update(log_steps=1, checkpoint_steps=10 ** 6, progress_bar=False,
                      knn_bank_size=500, num_eval_examples=500)
        run_stage(kind, values)
        seconds = budget.step_seconds(pathlib.Path(probe_dir) / "pretrain" / "metrics.jsonl")
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
        import keras
        keras.backend.clear_session()
    if not seconds > 0:
        raise errors.UsageError("the probe of the pretraining step logged too few steps to time; "
                                "give --steps, --finetune-steps and --distill-steps instead")
    return seconds


def size_steps(args, probe):
    """Fills the step counts left unset for args.budget_minutes of stage time on this host and
    returns how (kept in job.json), or None when every step count was given. `probe(args)`
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
            value = previous["options"][name]
            setattr(args, name, tuple(value) if isinstance(value, list) else value)
        return sizing
    started = time.time()
    step_s = probe(args)
    probe_wall = time.time() - started
    slower = step_s / settings.REFERENCE["pretrain_step_s"]
    # The default plan is one unit whose steps cost the reference's stepped time, slowed down.
    scale, fitted = budget.fit_scale(
        args.budget_minutes * 60, settings.REFERENCE["fixed_s"] * slower, {"defaults": 1},
        {"defaults": settings.REFERENCE["stepped_s"] * slower}, limits=settings.SCALE_RANGE)
    if abs(scale - 1.0) <= settings.KEEP_DEFAULTS_WITHIN:
        scale = 1.0
    defaults = settings.defaults()
    for name in unset:
        setattr(args, name, budget.scaled(defaults[name], scale))
    return {"budget_minutes": args.budget_minutes, "probe_pretrain_step_s": round(step_s, 4),
            "reference": settings.REFERENCE, "scale": round(scale, 3),
            "fitted_scale": round(fitted, 3), "sized": unset, "probe_wall_s": round(probe_wall, 1)}


def describe_sizing(sizing, args):
    """The line the job prints about how size_steps sized it."""
    low, high = settings.SCALE_RANGE
    clamp = ""
    if not low <= sizing["fitted_scale"] <= high:
        clamp = (f" (the budget asks for x{sizing['fitted_scale']:.2f}; kept within "
                 f"{low:g}-{high:g}x, so the job runs "
                 f"{'over' if sizing['fitted_scale'] < 1 else 'under'} its budget)")
    elif sizing["scale"] == 1.0 and sizing["fitted_scale"] != 1.0:
        clamp = f" (the budget asks for x{sizing['fitted_scale']:.2f}: close enough)"
    return (f"budget {sizing['budget_minutes']:g} min: a pretraining step takes "
            f"{sizing['probe_pretrain_step_s']:.3f} s here "
            f"({sizing['reference']['pretrain_step_s']:.3f} s on the reference host), so the "
            f"default step counts are scaled x{sizing['scale']:.2f}{clamp}: pretraining "
            f"{args.steps}, fine-tuning {args.finetune_steps[0]} (1%) / {args.finetune_steps[1]} "
            f"(10%), distillation {args.distill_steps}")
