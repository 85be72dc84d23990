"""Verified exports of SimCLRv2 models: SavedModel (TF Serving signatures), ONNX and .keras.

    from simclrv2.export import export_model
    report = export_model(model_or_path, "exports/my_model")

One module per concern: errors, options, signatures (with the serving preprocessing of
simclrv2.data), one module per format (saved_model, onnx with onnx_graph, keras_file, int8),
verification, output_dir (the directory's life cycle), model_card (README.md and SHA256SUMS),
and exporter, which runs them. See docs/export.md. TensorFlow is imported only when an export
runs.
"""

from simclrv2.export.errors import ExportError, VerificationError
from simclrv2.export.exporter import export_model
from simclrv2.export.options import FORMATS
from simclrv2.export.signatures import preprocess_encoded
from simclrv2.zoo.importer import RTOL

__all__ = ["FORMATS", "RTOL", "ExportError", "VerificationError", "export_model",
           "preprocess_encoded"]
