"""A run's directory from start to finish: its size checked and its lock taken before anything
is written, created under its strategy, config.json recorded (and checked on resume), the label
subset kept, then result.json and model.keras written at the end; a run that fails before it
saved anything leaves no new directory behind.
"""

from __future__ import annotations

import functools
import json
import pathlib
import time

import tensorflow as tf

from simclrv2 import process_memory
from simclrv2.atomic_files import replacing, write_json
from simclrv2.dir_lock import DirectoryLock
from simclrv2.recipes import engine, memory_estimate, stage_clock
from simclrv2.recipes.config import ConfigError, to_dict

# The directories this process writes, by absolute path, with the lock it holds on each.
_HELD = {}
# What a rerun in the same directory reuses: a finished stage, a checkpoint to resume from.
PROGRESS_FILES = ("result.json", "model.keras", "checkpoints/checkpoint")


def guarded(stage_function):
    """`stage_function(config)` with what every run of a stage needs around it: refused before
    anything is allocated or created when its size cannot fit (memory_estimate.check_fits); the
    directory locks it takes (make_model_dir) let go whatever happens; a new model_dir removed
    when the run fails before it saved a checkpoint or a result; memory that runs out anyway
    reported as one line naming the setting to lower."""
    @functools.wraps(stage_function)
    def run(config):
        memory_estimate.check_fits(config)
        model_dir = pathlib.Path(config.model_dir).absolute()
        new = not model_dir.exists()
        held_before = set(_HELD)
        failed = True
        try:
            with stage_clock.running(), process_memory.collecting_new_objects_only():
                result = stage_function(config)
            failed = False
            return result
        except (tf.errors.ResourceExhaustedError, MemoryError) as error:
            raise memory_estimate.out_of_memory_error(config, error) from error
        finally:
            remove = failed and new and not holds_progress(model_dir)
            for directory in sorted(set(_HELD) - held_before, reverse=True):
                _HELD.pop(directory).release(remove_directory=remove)
    return run


def holds_progress(directory) -> bool:
    """Whether `directory`, a run directory or the main job's (one level up), holds anything a
    rerun would reuse."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return False
    folders = [directory, *(p for p in directory.iterdir() if p.is_dir())]
    return any((folder / name).exists() for folder in folders for name in PROGRESS_FILES)


def start(config):
    """(strategy, model_dir) of a run that trains: TF configured for the config, the
    distribution strategy made, the global batch checked against it, model_dir created and
    locked."""
    engine.configure_tf(config)
    strategy = engine.make_strategy(config)
    engine.check_global_batch(config.global_batch_size, strategy)
    return strategy, make_model_dir(config, strategy)


def make_model_dir(config, strategy=None) -> pathlib.Path:
    """model_dir, created, and this process holding the lock of what it writes there: a single
    process or a multi-worker run's chief locks model_dir itself (a second writer is refused,
    dir_lock.DirectoryInUseError); another worker locks its own scratch directory in it. The
    lock is let go by finish, or by `guarded` when the run ends otherwise."""
    model_dir = pathlib.Path(config.model_dir)
    writes = model_dir
    if strategy is not None and not engine.is_chief(strategy):
        writes = engine.checkpoint_dir(model_dir, strategy).parent
    key = writes.absolute()
    if key not in _HELD:  # held already when an earlier call in this process ended early
        _HELD[key] = DirectoryLock(key, option="another --model-dir").acquire()
    model_dir.mkdir(parents=True, exist_ok=True)
    return model_dir


def _release(model_dir):
    """Lets go of the locks this process holds on model_dir and in it."""
    root = pathlib.Path(model_dir).absolute()
    for directory in sorted(_HELD, reverse=True):
        if directory == root or root in directory.parents:
            _HELD.pop(directory).release()


def record_run(model_dir, stage, config, model_config, chief):
    """config.json: what the run is (so later stages can rebuild the model); refuses to resume a
    model_dir that holds a different architecture."""
    path = model_dir / "config.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous.get("model_config") != model_config or previous.get("stage") != stage:
            raise ConfigError(
                f"{model_dir} holds a {previous.get('stage')} run of another model "
                f"({previous.get('model_config', {}).get('depth')}-layer); use a new model_dir or "
                f"delete that one")
    if chief:
        write_json(path, {"stage": stage, "config": to_dict(config), "model_config": model_config})


def model_config_dict(model):
    """The model's architecture as config.json holds it."""
    values = model.simclr_config.to_dict()
    return json.loads(json.dumps(values))  # tuples -> lists, as they come back from disk


def subset_file(config, model_dir):
    """Where a run keeps its label subset (one index per line), named by fraction and seed so
    that a run dir reused with other settings never trains on a stale list."""
    if config.label_fraction >= 1.0:
        return None
    # Positions index the training images the run may use, which the validation split shrinks.
    held_out = (f"_val{config.validation_examples}" if config.eval_split == "validation" else "")
    return str(pathlib.Path(model_dir) / f"label_subset_{config.label_fraction:g}_"
                                         f"seed{config.label_seed}{held_out}.txt")


def finish(config, model_dir, stage, result, model, chief, started):
    """Completes `result` (wall time, precision, paths, stage), saves a finished run's model as
    model.keras and writes result.json; returns the result with the trained model under "model"
    (in-process callers only: it is not written)."""
    result["wall_time_s"] = round(time.time() - started, 3)
    result["precision"] = engine.precision_of(config).to_dict()
    result["model_dir"] = str(model_dir)
    result["stage"] = stage
    if model is not None and chief and result.get("status") == "done":
        path = model_dir / "model.keras"
        # Into a temporary sibling, then renamed: a kill mid-save must not leave a broken
        # model.keras, which loaders and `simclrv2 export` would take for the result.
        with stage_clock.part("save"), replacing(path) as tmp:
            model.save(tmp)
        result["keras_path"] = str(path)
    clock = stage_clock.current()
    if clock is not None:
        result["time_s"] = clock.summary()
    result["checkpoint"] = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    if chief:
        write_json(model_dir / "result.json", result)
    _release(model_dir)
    result["model"] = model
    return result
