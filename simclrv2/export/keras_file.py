"""The .keras format: the Keras model with its heads, for `fit` after `import simclrv2.zoo`."""

from __future__ import annotations

FILE = "model.keras"


def write_keras_file(model, path):
    """Saves `model` with its weights streamed through disk (zoo.keras_file.save_keras_file):
    Keras's own saver would hold them twice more in memory."""
    from simclrv2.zoo.keras_file import save_keras_file

    save_keras_file(model, path)


def read_keras_file(path):
    """The model saved at `path`, as a user loads it (what verification compares)."""
    from simclrv2.zoo.keras_file import load_keras_file  # names a missing or corrupt file

    return load_keras_file(path)
