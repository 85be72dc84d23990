"""Loading a .keras file with its problems named: missing, not a zip archive, corrupt; and
saving and loading one without a second copy of the weights in memory.

`keras.saving.load_model` reports a truncated or non-zip file as "File not found" and a damaged
one as a bare zipfile error; the recipes and the exporter load through here instead, so the
message says which file is wrong and what to do.

Keras's saver writes model.weights.h5 into a BytesIO and then copies its value into the zip
whenever it judges the free memory sufficient (saving_lib.is_memory_sufficient): the weights
held twice more beside the model. Its loader likewise reads the whole weights file into memory.
Both have a disk path, a temporary file beside the .keras, taken here always.
"""

from __future__ import annotations

import contextlib
import os
import zipfile


class KerasFileError(ValueError):
    """A .keras path that does not hold a readable Keras model; the message says what to do."""


def load_keras_file(path, compile=False):
    """The model in the .keras file at `path` (SimCLRv2 models need no custom_objects)."""
    import keras

    import simclrv2.zoo  # noqa: F401  (registers the model classes with Keras)

    path = os.fspath(path)
    if not os.path.exists(path):
        raise KerasFileError(f"{path} does not exist; check the path")
    if os.path.isdir(path):
        raise KerasFileError(f"{path} is a folder, not a .keras file; give the file itself")
    if not zipfile.is_zipfile(path):
        raise KerasFileError(f"{path} is not a .keras file (a .keras file is a zip archive; this "
                             f"one is truncated or of another format); save or copy it again")
    try:
        with weights_through_disk():
            return keras.saving.load_model(path, compile=compile)
    except (zipfile.BadZipFile, EOFError) as error:
        raise KerasFileError(f"{path} is corrupt ({error}); save or copy it again") from None


@contextlib.contextmanager
def weights_through_disk():
    """Keras saves and loads a .keras file's weights through a temporary file beside it rather
    than a copy in memory, while this is active."""
    from unittest import mock

    from keras.src.saving import saving_lib

    with mock.patch.object(saving_lib, "is_memory_sufficient", lambda model: False):
        yield


def save_keras_file(model, path):
    """Saves `model` at `path` (.keras) with its weights streamed through a temporary file."""
    with weights_through_disk():
        model.save(os.fspath(path))
