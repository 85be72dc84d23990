"""simclrv2.zoo: every SimCLRv2 ResNet as a Keras 3 model, and the released checkpoints.

    import simclrv2.zoo as zoo
    model = zoo.build("r50_1x_sk1", num_classes=1000)            # random init
    features = zoo.features_model(model)                          # images -> 2048-d vector
    zoo.list_models(); zoo.list_checkpoints(stage="finetuned_10pct")
    model = zoo.load("r50_2x_sk1", stage="finetuned_10pct")       # download + import + cache

Model code uses only `keras` and `keras.ops`, so the models run on the TensorFlow, JAX and
PyTorch backends. Importing the package registers the model classes with Keras, so
`keras.saving.load_model("model.keras")` works after `import simclrv2.zoo`; the registry,
download and importer modules load on first use.
"""

import importlib

# Registers SimCLRv2Model and its layers with Keras' serialisation (safe-mode .keras loading).
from simclrv2.zoo import model as _model  # noqa: F401

# public name -> submodule that defines it
_EXPORTS = {
    "ModelConfig": "config", "parse_name": "config",
    "OFFICIAL_PARAMS_M": "architectures", "SIMCLRV1_PARAMS_M": "architectures",
    "list_models": "architectures",
    "count_parameters": "param_count",
    "SelectiveKernelConv": "selective_kernel",
    "ProjectionHead": "heads",
    "BACKBONE_ENDPOINTS": "resnet",
    "SimCLRv2Model": "model", "ResNet": "model", "build": "model",
    "features_model": "model", "classifier_model": "model",
    "Checkpoint": "checkpoints", "STAGES": "checkpoints", "list_checkpoints": "checkpoints",
    "get_checkpoint": "checkpoints",
    "download_checkpoint": "download", "CheckpointDownloadError": "download",
    "cache_dir": "download",
    "import_saved_model": "importer", "convert_saved_model": "importer",
    "ImportMismatchError": "importer",
    "load": "pretrained",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'simclrv2.zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"simclrv2.zoo.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
