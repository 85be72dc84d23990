"""Verified exports of SimCLRv2 models: SavedModel (TF Serving signatures), ONNX and .keras.

    from simclrv2.export import export_model
    report = export_model(model_or_path, "exports/my_model")

See docs/export.md. TensorFlow is imported only when an export runs.
"""

from simclrv2.export.exporter import (FORMATS, RTOL, ExportError, VerificationError,
                                      export_model, preprocess_encoded)

__all__ = ["FORMATS", "RTOL", "ExportError", "VerificationError", "export_model",
           "preprocess_encoded"]
