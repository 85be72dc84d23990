"""A run's directory from start to finish: created under its strategy, config.json recorded (and
checked on resume), the label subset kept, then result.json and model.keras written at the end.
"""

from __future__ import annotations

import json
import pathlib
import time

import tensorflow as tf

from simclrv2.atomic_files import replacing, write_json
from simclrv2.recipes import engine
from simclrv2.recipes.config import ConfigError, to_dict


def start(config):
    """(strategy, model_dir) of a run that trains: TF configured for the config, the
    distribution strategy made, the global batch checked against it, model_dir created."""
    engine.configure_tf(config)
    strategy = engine.make_strategy(config)
    engine.check_global_batch(config.global_batch_size, strategy)
    return strategy, make_model_dir(config)


def make_model_dir(config) -> pathlib.Path:
    model_dir = pathlib.Path(config.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    return model_dir


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
        with replacing(path) as tmp:
            model.save(tmp)
        result["keras_path"] = str(path)
    result["checkpoint"] = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    if chief:
        write_json(model_dir / "result.json", result)
    result["model"] = model
    return result
