"""The one way from what a user names to a model: `resolve(source)`.

Every command that takes a model (`simclrv2 export`, the stages' --checkpoint and --teacher, the
main job) passes it here. Each kind of source is known by one check, tried in this order:

    keras_object         a SimCLRv2Model object                   -> itself
    keras_file           a file ending in .keras                  -> the model in it
    export_dir           a folder whose config.json says           -> its model.keras, else its
                         "format": "simclrv2-export"                  saved_model/ (as below)
    run_dir              a folder whose config.json or result.json -> a finished run's model.keras
                         names a recipe stage                         (result.json status "done"),
                                                                      else its latest checkpoint
    exported_savedmodel  a SavedModel with a `features` signature  -> an ExportedNetwork
                         (the saved_model/ of `simclrv2 export`)
    official_savedmodel  a SavedModel whose object graph holds     -> the Keras model the importer
                         model/resnet_model (a SimCLRv2 release)      builds and checks
    registry             a name without a path separator           -> the released checkpoint
                                                                      (`stage`, default pretrained)

Anything else (another SavedModel, another file, an empty folder) is refused with one line
saying what it is and what is accepted. TensorFlow and Keras are imported only when a model is
loaded: the CLI that imports this module stays light.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Optional

from simclrv2.atomic_files import read_json

EXPORT_FORMAT = "simclrv2-export"  # config.json's "format" in a `simclrv2 export` directory
ACCEPTED = ("a .keras file, a run's model_dir, a `simclrv2 export` directory, a SavedModel "
            "(an export's saved_model/ or an official SimCLRv2 release) or a registry name "
            "(`simclrv2 zoo list`)")
# The official release's root object holds the network as model.resnet_model (docs/tf_hub.md).
OFFICIAL_ROOT_PATH = ("model", "resnet_model")


class ArtifactError(ValueError):
    """A source that names no model simclrv2 can load; the message says what was found."""


@dataclasses.dataclass
class Artifact:
    """A resolved model and where it came from.

    kind: one of the kinds in the module docstring; source: the absolute path or URL read (None
    for an object); stage: what the source says it is (or the caller's `stage`), "unknown" when
    nothing says; provenance: what the source records about itself (recorded by exports)."""

    kind: str
    source: Optional[str]
    stage: str
    provenance: dict
    model: Any


def is_export_config(meta) -> bool:
    """Whether a parsed config.json is one `simclrv2 export` wrote. Exports made before the
    "format" marker are known by format_version 1 with the exporter's own fields."""
    if not isinstance(meta, dict):
        return False
    if meta.get("format") == EXPORT_FORMAT:
        return True
    return meta.get("format_version") == 1 and "simclrv2_version" in meta and \
        "verification" in meta and "format" not in meta


def resolve(source, stage: Optional[str] = None, image_size: Optional[int] = None) -> Artifact:
    """The model `source` names, with its provenance (see the module docstring).

    stage: for a registry name, which released stage to load (default "pretrained"); for any
      other source it overrides the stage the source records.
    image_size: the square input side to build a model at where the source leaves it open (an
      official SavedModel, a registry checkpoint); other sources keep their own input.
    """
    from simclrv2.zoo.model import SimCLRv2Model

    if isinstance(source, SimCLRv2Model):
        return Artifact("keras_object", None, stage or "unknown", {}, source)
    if not isinstance(source, (str, os.PathLike)):
        if hasattr(source, "signatures"):
            raise ArtifactError("a loaded SavedModel can't be used again as a model; pass its "
                                "directory, or the .keras model it came from")
        raise ArtifactError(f"a model must be a SimCLRv2Model, a path or a registry name, got "
                            f"{type(source).__name__}")
    path = pathlib.Path(os.path.expanduser(os.fspath(source)))
    if path.is_file():
        return _keras_file(path, stage)
    if path.is_dir():
        return _directory(path, stage, image_size)
    text = os.fspath(source)
    if os.sep in text or "/" in text or text.endswith(".keras") or text.startswith("."):
        raise ArtifactError(f"{text} does not exist; give {ACCEPTED}")
    return _registry(text, stage, image_size)


def peek_config(source):
    """The ModelConfig `source` holds, read without loading a weight (a .keras file's
    config.json, a run's or an export's record, an official SavedModel's variable shapes), or
    None where that cannot be known cheaply (a registry name, anything unreadable): what a
    caller decides sizes from before resolve() loads the model."""
    from simclrv2.zoo.config import ModelConfig
    from simclrv2.zoo.model import SimCLRv2Model

    if isinstance(source, SimCLRv2Model):
        return source.simclr_config
    if not isinstance(source, (str, os.PathLike)):
        return None
    path = pathlib.Path(os.path.expanduser(os.fspath(source)))
    try:
        if path.is_file() and path.suffix == ".keras":
            return _keras_file_config(path)
        if path.is_dir():
            for keras_path in (path / "model.keras",):
                if keras_path.is_file():
                    return _keras_file_config(keras_path)
            meta = read_json(path / "config.json")
            if isinstance(meta, dict) and isinstance(meta.get("model_config"), dict):
                return ModelConfig.from_dict(meta["model_config"])
            if (path / "saved_model.pb").is_file() and \
                    saved_model_kind(path) == "official_savedmodel":
                from simclrv2.zoo import importer, official_format

                return importer.infer_config(official_format.Variables(path))
    except (ValueError, KeyError, TypeError, OSError):
        return None  # resolve() names what is wrong
    return None


def _keras_file_config(path):
    import json
    import zipfile

    from simclrv2.zoo.config import ModelConfig

    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    return ModelConfig.from_dict(config["config"]["config"])


def _keras_file(path, stage):
    if path.suffix != ".keras":
        raise ArtifactError(f"{path} is a file but not a .keras model; give {ACCEPTED}")
    side = read_json(path.with_suffix(".json")) or {}  # `simclrv2 convert`'s record
    run = read_json(path.parent / "result.json") or {}
    provenance = {k: side[k] for k in ("url", "source", "source_sha256", "converter_version")
                  if k in side}
    return Artifact("keras_file", str(path.resolve()),
                    stage or side.get("stage") or run.get("stage") or "unknown", provenance,
                    _load_keras(path))


def _directory(path, stage, image_size):
    config = read_json(path / "config.json")
    if is_export_config(config):
        return _export_dir(path, config, stage, image_size)
    result = read_json(path / "result.json")
    if _names_a_stage(config) or _names_a_stage(result):
        return _run_dir(path, config, result or {}, stage)
    if (path / "saved_model.pb").is_file():
        return _saved_model(path, stage, image_size)
    raise ArtifactError(f"{path} is a directory but holds no model simclrv2 reads: no "
                        f"config.json of an export or a recipe run, no saved_model.pb; give "
                        f"{ACCEPTED}")


def _names_a_stage(meta):
    return isinstance(meta, dict) and isinstance(meta.get("stage"), str)


def _export_dir(path, config, stage, image_size):
    stage = stage or config.get("stage") or "unknown"
    if (path / "model.keras").is_file():
        return Artifact("export_dir", str(path.resolve()), stage, {},
                        _load_keras(path / "model.keras"))
    if (path / "saved_model" / "saved_model.pb").is_file():
        found = _saved_model(path / "saved_model", stage, image_size)
        return dataclasses.replace(found, kind="export_dir", source=str(path.resolve()))
    raise ArtifactError(f"the export {path} holds neither model.keras nor saved_model/; "
                        f"export it again with --formats keras or savedmodel")


def _run_dir(path, config, result, stage):
    """A finished run's model.keras; a run in progress's latest checkpoint (a run resumed
    after it finished has a model.keras older than its checkpoints: its result.json is not
    "done" until it finishes again)."""
    stage = stage or result.get("stage") or (config or {}).get("stage") or "unknown"
    if result.get("status") == "done" and (path / "model.keras").is_file():
        provenance = {k: result[k] for k in ("model_dir", "test_top1", "checkpoint")
                      if k in result}
        return Artifact("run_dir", str(path.resolve()), stage, provenance,
                        _load_keras(path / "model.keras"))
    if not _names_a_stage(config) or "model_config" not in config:
        raise ArtifactError(f"{path} is an unfinished run without the config.json that says "
                            f"which network its checkpoints hold; give the run's own model_dir")
    checkpoint = _latest_checkpoint(path / "checkpoints")
    if checkpoint is None:
        raise ArtifactError(f"{path} holds no checkpoint yet (checkpoints/ is empty)")
    return Artifact("run_dir", str(path.resolve()), stage,
                    {"checkpoint_dir": str(path / "checkpoints")},
                    _restore(config["model_config"], checkpoint))


def _latest_checkpoint(directory):
    import tensorflow as tf

    return tf.train.latest_checkpoint(str(directory))


def _restore(model_config, checkpoint):
    """The network of `model_config` with the model variables of a training checkpoint."""
    import tensorflow as tf

    import simclrv2.zoo as zoo
    from simclrv2.recipes import engine

    network = zoo.build(model_config)
    status = tf.train.Checkpoint(model=engine.model_variables(network)).restore(checkpoint)
    status.expect_partial()  # the optimizer's slots are not wanted here
    status.assert_existing_objects_matched()
    return network


def _load_keras(path):
    from simclrv2.zoo.keras_file import load_keras_file  # names a missing or corrupt file
    from simclrv2.zoo.model import SimCLRv2Model

    model = load_keras_file(path)
    if not isinstance(model, SimCLRv2Model):
        raise ArtifactError(f"{path} holds a {type(model).__name__}, not a simclrv2 "
                            f"SimCLRv2Model; give a model from simclrv2.zoo, a recipe run or "
                            f"`simclrv2 convert`")
    return model


def _registry(name, stage, image_size):
    from simclrv2.zoo import checkpoints
    from simclrv2.zoo.pretrained import load

    wanted = stage or "pretrained"
    try:
        found = checkpoints.get_checkpoint(name, wanted)
    except ValueError as error:
        raise ArtifactError(f"{name!r} is neither an existing path nor a released checkpoint at "
                            f"stage {wanted!r} ({error}); `simclrv2 zoo list` lists names and "
                            f"stages") from None
    model = load(name, stage=found.stage, input_shape=_input_shape(image_size))
    return Artifact("registry", found.url, found.stage, {"name": found.name, "url": found.url},
                    model)


def _input_shape(image_size):
    return (image_size, image_size, 3) if image_size else None


# --------------------------------------------------------------------------- SavedModels

def saved_model_kind(path) -> str:
    """"exported_savedmodel" or "official_savedmodel" for a SavedModel directory, read from its
    saved_model.pb alone (nothing is loaded); any other SavedModel is refused in one line."""
    signatures, graph = _read_saved_model_proto(path)
    if "features" in signatures:
        return "exported_savedmodel"
    if graph is not None and _has_path(graph, OFFICIAL_ROOT_PATH):
        return "official_savedmodel"
    named = ", ".join(sorted(signatures)) if signatures else "none"
    raise ArtifactError(f"{path} is a SavedModel simclrv2 does not read (signatures: {named}): "
                        f"not a `simclrv2 export` (no `features` signature) nor an official "
                        f"SimCLRv2 release (no {'/'.join(OFFICIAL_ROOT_PATH)} object); give "
                        f"{ACCEPTED}")


def _saved_model(path, stage, image_size):
    if saved_model_kind(path) == "exported_savedmodel":
        return Artifact("exported_savedmodel", str(path.resolve()), stage or "unknown", {},
                        _load_exported(path))
    return _official(path, stage, image_size)


def _read_saved_model_proto(path):
    """(signature names, object graph or None) of saved_model.pb, without loading the model."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((pathlib.Path(path) / "saved_model.pb").read_bytes())
    except Exception as error:  # protobuf's DecodeError is a plain Exception subclass
        raise ArtifactError(f"{path}/saved_model.pb can't be parsed ({error}); the SavedModel is "
                            f"truncated or corrupt: export, copy or download it again") from None
    if not proto.meta_graphs:
        return set(), None
    meta = proto.meta_graphs[0]
    graph = meta.object_graph_def if meta.HasField("object_graph_def") else None
    # "__saved_model_init_op" and the like are TensorFlow's own, not signatures to call.
    return {name for name in meta.signature_def if not name.startswith("__")}, graph


def _has_path(graph, names):
    node = 0
    for name in names:
        node = next((ref.node_id for ref in graph.nodes[node].children
                     if ref.local_name == name), None)
        if node is None:
            return False
    return True


def _official(path, stage, image_size):
    from simclrv2 import precision as precision_lib
    from simclrv2.zoo import importer

    # In float32 whatever the caller's precision: the importer checks the Keras model against
    # the SavedModel to 1e-4, which a bfloat16 model cannot meet (1e-2: refused). Stages that
    # train it build their own model under the run's policy and copy these weights.
    with precision_lib.float32_policy():
        model, report = importer.import_saved_model(str(path), input_shape=_input_shape(
            image_size))
    provenance = {"import_" + k: v for k, v in report.items() if k != "config"}
    return Artifact("official_savedmodel", str(path.resolve()), stage or "unknown", provenance,
                    model)


def _load_exported(path):
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, IndexError, ValueError, tf.errors.OpError) as error:
        # A truncated variables file surfaces as IndexError("Read less bytes than requested").
        raise ArtifactError(f"cannot read the SavedModel {path} ({_first_line(error)}); it is "
                            f"truncated or corrupt: export or copy it again") from None
    return ExportedNetwork(loaded)


def _first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


class ExportedNetwork:
    """The saved_model/ of `simclrv2 export`, used where the stages use a SimCLRv2 Keras model:
    each endpoint comes from the signature that returns it (features: final_avg_pool; hidden:
    the backbone's endpoints; projection: proj_head_output; finetune: logits, as logits_sup)."""

    def __init__(self, loaded):
        self.loaded = loaded  # the signatures hold only weak references to its variables
        signatures = loaded.signatures
        sources = {}
        if "hidden" in signatures:
            sources.update({k: ("hidden", k) for k in signatures["hidden"].structured_outputs})
        sources["final_avg_pool"] = ("features", "final_avg_pool")
        if "projection" in signatures:
            sources["proj_head_output"] = ("projection", "proj_head_output")
        self.num_classes = None
        if "finetune" in signatures:
            sources["logits_sup"] = ("finetune", "logits")
            self.num_classes = int(signatures["finetune"].structured_outputs["logits"].shape[-1])
        self._sources = sources
        images = signatures["features"].structured_input_signature[1]["images"]
        self.input_size = tuple(images.shape[1:3])

    @property
    def endpoints(self):
        return sorted(self._sources)

    def endpoint(self, images, key):
        import tensorflow as tf

        signature, output = self._sources[key]
        return self.loaded.signatures[signature](images=tf.cast(images, tf.float32))[output]


# --------------------------------------------------------------------------- networks

def load_network(source, image_size: Optional[int] = None):
    """The network `source` names (a Keras model or an ExportedNetwork), for the stages. With
    `image_size`, a network whose input is fixed at another size is refused: the images would
    not fit it."""
    network = resolve(source, image_size=image_size).model
    if image_size:
        check_input_size(network, image_size, source)
    return network


def endpoint(network, images, key):
    """outputs[key] of a Keras model or an ExportedNetwork, in inference mode."""
    if isinstance(network, ExportedNetwork):
        return network.endpoint(images, key)
    return network(images, training=False)[key]


def endpoints(network):
    return network.endpoints if isinstance(network, ExportedNetwork) else sorted(network.output)


def check_endpoint(network, key, what):
    if key not in endpoints(network):
        raise ArtifactError(f"{what} has no output {key!r}; its outputs: "
                            f"{', '.join(endpoints(network))}")


def check_input_size(network, image_size, source):
    """Refuses a network fixed at another input size, before any image reaches it."""
    if isinstance(network, ExportedNetwork):
        fixed = network.input_size
    else:
        fixed = tuple(network.input_shape[1:3])
    if None not in fixed and fixed != (image_size, image_size):
        raise ArtifactError(f"{source} takes {fixed[0]}x{fixed[1]} images, not the {image_size} "
                            f"px of image_size; pass --image-size {fixed[0]}")


def num_classes(network):
    """Classes of a network's supervised head (None without one)."""
    if isinstance(network, ExportedNetwork):
        return network.num_classes
    return network.simclr_config.num_classes
