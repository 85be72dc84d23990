"""Loading a .keras file with its problems named: missing, not a zip archive, corrupt.

`keras.saving.load_model` reports a truncated or non-zip file as "File not found" and a damaged
one as a bare zipfile error; the recipes and the exporter load through here instead, so the
message says which file is wrong and what to do.
"""

from __future__ import annotations

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
        return keras.saving.load_model(path, compile=compile)
    except (zipfile.BadZipFile, EOFError) as error:
        raise KerasFileError(f"{path} is corrupt ({error}); save or copy it again") from None
