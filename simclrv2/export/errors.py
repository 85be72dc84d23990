"""The export's exceptions: bad input (a ValueError, so that `simclrv2 export` reports it in one
line and exits 2) and an artifact that does not reproduce the Keras model (its own exit 1)."""


class ExportError(ValueError):
    """Bad input to the exporter (model, out_dir, formats...); the message says how to fix it."""


class VerificationError(RuntimeError):
    """An exported artifact does not reproduce the Keras model; nothing was written."""


class QuantizationError(VerificationError):
    """The int8 model lost more top-1 than allowed; nothing was written."""
