"""simclrv2.zoo: every SimCLRv2 ResNet as a Keras 3 model, and the released checkpoints.

    import simclrv2.zoo as zoo
    model = zoo.build("r50_1x_sk1", num_classes=1000)            # random init
    features = zoo.features_model(model)                          # images -> 2048-d vector
    zoo.list_models(); zoo.list_checkpoints(stage="finetuned_10pct")
    model = zoo.load("r50_2x_sk1", stage="finetuned_10pct")       # download + import + cache

Model code uses only `keras` and `keras.ops`, so the models run on the TensorFlow, JAX and
PyTorch backends. `keras.saving.load_model("model.keras")` works after `import simclrv2.zoo`:
the model classes are registered with Keras as soon as Keras is imported (at once if it
already is). Importing the package does not import Keras itself, so the registry
(`simclrv2.zoo.checkpoints`), the download code and `simclrv2 zoo list` stay light; the
model, download and importer modules load on first use.
"""

import importlib
import importlib.abc
import importlib.util
import sys


def _register_model_classes():
    """Registers SimCLRv2Model and its layers with Keras' serialisation (safe-mode .keras
    loading): the decorators in simclrv2.zoo.model do it when the module runs."""
    importlib.import_module("simclrv2.zoo.model")


class _RegisterAfterKeras(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds nothing itself: when `keras` is first imported, it lets the usual finder find it
    and registers the model classes right after Keras has run. So a process that never
    imports Keras (`simclrv2 zoo list`, `simclrv2 pretrain --print-config`) never pays for
    it, and one that does can load .keras files of these models straight away."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)  # one use; and find_spec below must not come back here
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            self._loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # Keras sees its own loader (importlib.resources and friends read through it).
        module.__spec__.loader = module.__loader__ = self._loader
        self._loader.exec_module(module)
        _register_model_classes()


if "keras" in sys.modules:
    _register_model_classes()
elif not any(isinstance(finder, _RegisterAfterKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKeras())

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
