"""The main job's run directory: job.json (its options, sizing and stage wall times), the guard
against mixing runs of other options, and the checks made before anything is written (the data
is there, every stage's size fits in memory)."""

from __future__ import annotations

import json
import pathlib

from simclrv2 import errors
from simclrv2.atomic_files import read_json, write_json
from simclrv2.main_job import settings
from simclrv2.main_job.plan import plan, with_default_steps


def job_identity(args):
    """The options as they read back from job.json (tuples become lists)."""
    return json.loads(json.dumps({k: v for k, v in sorted(vars(args).items())
                                  if k not in ("run_dir",)}))


def check_run_dir(args):
    """Refuses a run directory that holds a run with other settings (reusing its stages would
    mix results); writes job.json for a new one."""
    run = pathlib.Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    identity = job_identity(args)
    previous = read_json(run / "job.json")
    if previous is not None and previous.get("options") != identity:
        changed = sorted(k for k in set(identity) | set(previous.get("options", {}))
                         if identity.get(k) != previous.get("options", {}).get(k))
        raise errors.UsageError(f"{run} holds a run with other options ({', '.join(changed)} "
                                f"differ); use another --run-dir or delete {run}")
    if previous is None:
        write_json(run / "job.json", {"options": identity, "stage_wall_s": {}, "sizing": None})


def record_sizing(run, sizing):
    """How --budget-minutes sized the step counts, kept in job.json: a resumed run reuses it."""
    job = read_json(pathlib.Path(run) / "job.json")
    job["sizing"] = sizing
    write_json(pathlib.Path(run) / "job.json", job)


def add_wall(run, stage, seconds):
    job = read_json(pathlib.Path(run) / "job.json")
    job["stage_wall_s"][stage] = round(job["stage_wall_s"].get(stage, 0.0) + seconds, 2)
    write_json(pathlib.Path(run) / "job.json", job)


def stage_result(values):
    """The result.json of a planned stage, or {} before it has finished."""
    return read_json(pathlib.Path(values["model_dir"]) / "result.json") or {}


def check_data(args):
    """Fashion-MNIST is read before the run directory is made: a missing dataset leaves
    nothing behind, and the message says how to install it."""
    import simclrv2.data as data

    data.load_labeled("fashion_mnist", "test", args.data_dir)


def check_sizes(args):
    """Every planned stage's estimated peak memory against what this process may use, before
    the run directory is made: a size that cannot fit (--image-size, a --set batch) is refused
    in one line naming the stage, whose own check would come only after the stages before it."""
    from simclrv2.recipes import config as config_lib
    from simclrv2.recipes import memory_estimate

    for name, kind, values in plan(with_default_steps(args, only=None)):
        config = config_lib.from_dict(settings.recipe_stage(kind), values)
        try:
            memory_estimate.check_fits(config)
        except memory_estimate.DoesNotFitError as error:
            raise memory_estimate.DoesNotFitError(f"stage {name}: {error}") from None
