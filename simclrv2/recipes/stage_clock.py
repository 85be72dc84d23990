"""Where a stage's wall time goes, recorded in its result.json as `time_s`.

The main job reports each stage's time as training steps and fixed costs (docs/main_job.md);
this clock is what it reads. One clock runs per stage call (run_lifecycle.guarded starts it);
the code that spends the time names the part, so no stage has to pass a timer around:

- `trace`: the first training step, which traces the step function (and runs one step);
- `steps`: the other training steps, waiting for their batches included;
- `fit`: a linear classifier's optimiser iterations (L-BFGS), the training of linear eval and
  of the pixel baseline;
- `evaluation`: inference over evaluation data (features, monitors, top-1), tracing included;
- `checkpoints`: writing checkpoints; `save`: writing model.keras;
- `setup`: the rest (reading data, building and loading networks, optimiser, Python).
"""

from __future__ import annotations

import contextlib
import contextvars
import time

PARTS = ("setup", "trace", "steps", "fit", "evaluation", "checkpoints", "save")
# What the main job counts as time spent training; the other parts are fixed costs.
TRAINING_PARTS = ("steps", "fit")

_CURRENT = contextvars.ContextVar("simclrv2_stage_clock", default=None)


class StageClock:
    def __init__(self):
        self.started = time.perf_counter()
        self.seconds = dict.fromkeys(PARTS[1:], 0.0)
        self._open = None

    def add(self, part: str, seconds: float):
        self.seconds[part] += seconds

    def summary(self) -> dict:
        """Seconds per part to the millisecond, `setup` what the others leave of the wall time,
        so that the parts add up to `wall_s`."""
        wall = time.perf_counter() - self.started
        parts = {name: round(value, 3) for name, value in self.seconds.items()}
        parts["setup"] = round(max(wall - sum(parts.values()), 0.0), 3)
        return {"wall_s": round(wall, 3), **{name: parts[name] for name in PARTS}}


@contextlib.contextmanager
def running():
    """A new clock for the stage run inside this block (the outer one, if any, comes back after:
    a stage may run another in-process)."""
    token = _CURRENT.set(StageClock())
    try:
        yield _CURRENT.get()
    finally:
        _CURRENT.reset(token)


def current():
    """The running stage's clock, or None outside a stage."""
    return _CURRENT.get()


@contextlib.contextmanager
def part(name: str):
    """Counts the block's seconds toward `name` of the running stage's clock (nothing outside a
    stage). Nested parts count once, toward the outermost: an evaluation that saves nothing and
    a checkpoint write inside a step are not counted twice."""
    clock = _CURRENT.get()
    if clock is None or clock._open is not None:
        yield
        return
    clock._open = name
    started = time.perf_counter()
    try:
        yield
    finally:
        clock._open = None
        clock.add(name, time.perf_counter() - started)
