"""`load()`: a released SimCLRv2 model as a Keras model ready for `fit`, converted once, cached.

    from simclrv2.zoo.pretrained import load
    model = load("r50_1x_sk1", stage="finetuned_10pct")     # download, convert, verify, cache
    model = load("r50_1x_sk1", stage="finetuned_10pct")     # cached .keras: fast and offline
    model = load(weights="path/to/saved_model")              # a local SavedModel

The conversion (simclrv2.zoo.importer) runs the original SavedModel next to the Keras model
and refuses to return weights that don't reproduce its outputs. The converted model is cached
as `<name>_<stage>_<h>x<w>.keras` (`_any.keras` for the default, any size) plus a `.json` with
its provenance (URL, stage, sha256 of the source files, converter version) under
`<cache_dir>/converted/`.
"""

from __future__ import annotations

import hashlib
import json
import os

from simclrv2.zoo import checkpoints, download, importer
from simclrv2.zoo.config import parse_name


def _local_key(saved_model_dir):
    # saved_model.pb and variables.index identify a SavedModel: the index stores a checksum of
    # every tensor in the data shards, so hashing these two small files is enough to tell
    # two SavedModels apart without reading gigabytes on every load.
    digest = hashlib.sha256()
    for rel in ("saved_model.pb", os.path.join("variables", "variables.index")):
        path = os.path.join(saved_model_dir, rel)
        if not os.path.isfile(path):
            raise importer.official_format.NotAnOfficialSavedModel(
                f"{saved_model_dir} is not a SavedModel: missing {rel}. Pass weights= the "
                "directory holding saved_model.pb and variables/")
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def _architecture(name, stage):
    """(architecture or None, registry Checkpoint or None) for a name given with weights=."""
    if name is None:
        return None, None
    try:
        ckpt = checkpoints.get_checkpoint(name, stage)
        return ckpt.architecture, ckpt
    except ValueError:
        pass
    try:
        return parse_name(name).name, None
    except ValueError:
        raise ValueError(
            f"name {name!r} is neither a released checkpoint at stage {stage!r} nor a zoo "
            "architecture (r50_1x_sk1, ...); pass name=None to infer the architecture from "
            "weights=") from None


def _cached(keras_path, expect):
    """The cached model if its JSON says it's what `expect` describes, else None."""
    from simclrv2.zoo.keras_file import load_keras_file

    meta_path = importer.provenance_path(keras_path)
    if not (os.path.isfile(keras_path) and os.path.isfile(meta_path)):
        return None
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if any(meta.get(k) != v for k, v in expect.items()):
        return None
    return load_keras_file(keras_path)  # its weights through disk, not a copy in memory


def converted_path(cache_root, name, stage, input_shape, local_key=None):
    sides = tuple(input_shape[:2]) if input_shape else (None, None)
    shape = "any" if sides == (None, None) else "x".join(str(s or "any") for s in sides)
    sub = f"local/{local_key}" if local_key else f"{stage}"
    return os.path.join(cache_root, "converted", sub, f"{name or 'model'}_{stage}_{shape}.keras")


def load(name=None, stage="pretrained", weights=None, cache_dir=None, verify=True,
         input_shape=None, progress=True):
    """A released (or local) SimCLRv2 SavedModel as a simclrv2 Keras model with its heads.

    name: a released checkpoint (`r50_1x_sk1`, `simclrv1_r50_4x`; see
      simclrv2.zoo.checkpoints.list_checkpoints()) or, with weights=, a zoo architecture to
      insist on; None with weights= infers the architecture.
    stage: pretrained, finetuned_1pct, finetuned_10pct, finetuned_100pct, supervised, ...
    weights: a local SavedModel directory to use instead of downloading.
    cache_dir: root of the downloads and converted models (default: simclrv2.zoo.download's).
    verify: compare every endpoint against the original SavedModel while converting.
    input_shape: of the Keras model (default (None, None, 3): any image size; give e.g.
      (224, 224, 3) for a fixed-size graph).

    The model outputs the dict of endpoints (logits_sup with the supervised head); for `fit`
    use simclrv2.zoo.classifier_model(model) or features_model(model).
    """
    root = os.path.expanduser(os.fspath(cache_dir)) if cache_dir is not None else str(
        download.cache_dir())
    stage = checkpoints.canonical_stage(stage)
    if weights is not None:
        source = os.fspath(weights)
        architecture, ckpt = _architecture(name, stage)
        key = _local_key(source)
        out = converted_path(root, name, stage, input_shape, key)
        expect = {"converter_version": importer.CONVERTER_VERSION, "source_key": key}
        provenance = {"source_key": key, "stage": stage,
                      "url": ckpt.url if ckpt is not None else None}
    else:
        if name is None:
            raise ValueError("pass a checkpoint name (e.g. 'r50_1x_sk1') or weights= a local "
                             "SavedModel directory")
        ckpt = checkpoints.get_checkpoint(name, stage)
        architecture = ckpt.architecture
        out = converted_path(root, name, stage, input_shape)
        expect = {"converter_version": importer.CONVERTER_VERSION, "url": ckpt.url,
                  "stage": ckpt.stage}
        provenance = {"url": ckpt.url, "stage": ckpt.stage, "name": ckpt.name}
    if verify:
        expect["verified"] = True
    model = _cached(out, expect)
    if model is not None:
        return model
    if weights is None:
        # Only now: a cached conversion needs neither the network nor the SavedModel.
        source = download.download_checkpoint(name, stage, cache_dir=root, progress=progress)
    return importer.convert_saved_model(source, out, architecture=architecture,
                                        input_shape=input_shape, verify=verify,
                                        provenance=provenance)
