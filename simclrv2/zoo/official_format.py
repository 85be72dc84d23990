"""Reads an official SimCLRv2 TF2 SavedModel without running it: variables by structural path.

A variable's checkpoint key (`trainable_variables_list/17`, `model/resnet_model/variables/203`)
says nothing about which layer it belongs to; its structural path in the object graph does
(`model/resnet_model/block_groups/0/layers/0/conv_relu_dropblock_layers/3/conv2d/kernel`).
This module joins the two: for each key, the node it names in `saved_model.pb`'s
SavedObjectGraph, then the path that reaches that node through upstream's own attributes.
"""

from __future__ import annotations

import collections
import collections.abc
import dataclasses
import os
import re

import numpy as np

_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"

# Keras 2 adds these children to every layer it serialises; they are aliases of the real
# attributes (and `variables` is how moving statistics get their keys), never structure.
_ALIAS_EDGES = frozenset({
    "variables", "trainable_variables", "non_trainable_variables", "trainable_variables_list",
    "regularization_losses", "layer_regularization_losses", "keras_api", "metrics",
    "layer_metrics", "signatures"})
_KERAS_LAYER_LIST = re.compile(r"^(layers|layer-\d+|layer_with_weights-\d+)$")


_DAMAGED = "the SavedModel is truncated or corrupt: download, copy or export it again"


class NotAnOfficialSavedModel(ValueError):
    """The directory isn't a SavedModel, or not one in the official SimCLRv2 layout."""


@dataclasses.dataclass(frozen=True)
class VariableRecord:
    key: str            # checkpoint key without "/.ATTRIBUTES/VARIABLE_VALUE"
    path: str           # structural object path
    shape: tuple
    trainable: bool
    dtype: str


def _files(saved_model_dir):
    d = os.fspath(saved_model_dir)
    pb = os.path.join(d, "saved_model.pb")
    prefix = os.path.join(d, "variables", "variables")
    if not os.path.isdir(d):
        raise NotAnOfficialSavedModel(f"{d} is not a directory; pass the SavedModel directory "
                                      "(the one holding saved_model.pb and variables/)")
    missing = [p for p in (pb, prefix + ".index") if not os.path.isfile(p)]
    if missing:
        raise NotAnOfficialSavedModel(
            f"{d} is not a SavedModel: missing {', '.join(os.path.relpath(m, d) for m in missing)}."
            " Pass the directory that holds saved_model.pb and variables/variables.index "
            "(for the released models: .../<stage>/<arch>/saved_model/)")
    return pb, prefix


def _unescape_key(key):
    # Checkpoint keys escape '/' inside names as './' and '.' as '.S'.
    parts = re.split(r"(?<!\.)/", key)
    return [p.replace("./", "/").replace(".S", ".") for p in parts]


def read_object_graph(saved_model_dir):
    """The SavedObjectGraph proto of saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb, _ = _files(saved_model_dir)
    sm = saved_model_pb2.SavedModel()
    try:
        with open(pb, "rb") as f:
            sm.ParseFromString(f.read())
    except Exception as e:  # protobuf raises DecodeError, a plain Exception subclass
        raise NotAnOfficialSavedModel(f"{pb} can't be parsed as a SavedModel proto: {e}; "
                                      f"{_DAMAGED}") from e
    if not sm.meta_graphs or not sm.meta_graphs[0].HasField("object_graph_def"):
        raise NotAnOfficialSavedModel(
            f"{pb} has no object graph (a TF1 SavedModel?); the importer reads TF2 SavedModels "
            "as written by google-research/simclr tf2/")
    return sm.meta_graphs[0].object_graph_def


def _structural_paths(graph):
    """node id -> path through upstream attributes (shortest, aliases excluded).

    The only upstream attribute that shares a name with a Keras alias list is
    BlockGroup.layers, so `layers` is followed only right under `block_groups/<n>`.
    """
    nodes = graph.nodes
    paths = {0: ()}
    queue = collections.deque([0])
    while queue:
        nid = queue.popleft()
        here = paths[nid]
        for ref in nodes[nid].children:
            name = ref.local_name
            if name in _ALIAS_EDGES:
                continue
            if _KERAS_LAYER_LIST.match(name) and not (
                    name == "layers" and len(here) >= 2 and here[-2] == "block_groups"):
                continue
            kind = nodes[ref.node_id].WhichOneof("kind")
            if kind not in ("user_object", "variable"):
                continue
            if ref.node_id not in paths:
                paths[ref.node_id] = here + (name,)
                queue.append(ref.node_id)
    return paths


def _resolve(graph, parts):
    nid = 0
    for part in parts:
        for ref in graph.nodes[nid].children:
            if ref.local_name == part:
                nid = ref.node_id
                break
        else:
            return None
    return nid


def read_variable_records(saved_model_dir):
    """[VariableRecord] for every variable of the SavedModel, in checkpoint-key order."""
    import tensorflow as tf

    graph = read_object_graph(saved_model_dir)
    _, prefix = _files(saved_model_dir)
    try:
        keys = [k for k, _ in tf.train.list_variables(prefix)]
    except Exception as e:
        raise NotAnOfficialSavedModel(f"can't read the variables of {saved_model_dir}: {e}; "
                                      f"{_DAMAGED}") from e
    paths = _structural_paths(graph)
    records = []
    for full_key in keys:
        if not full_key.endswith(_VALUE_SUFFIX) or "/.OPTIMIZER_SLOT/" in full_key:
            continue  # the object graph itself, optimizer state: not model weights
        key = full_key[:-len(_VALUE_SUFFIX)]
        nid = _resolve(graph, _unescape_key(key))
        if nid is None or graph.nodes[nid].WhichOneof("kind") != "variable":
            raise NotAnOfficialSavedModel(
                f"checkpoint key {key!r} names no variable of saved_model.pb's object graph: "
                "the variables/ folder does not belong to this saved_model.pb")
        var = graph.nodes[nid].variable
        path = paths.get(nid)
        if path is None:
            raise NotAnOfficialSavedModel(
                f"variable {key!r} is reachable only through alias lists; not the official "
                "SimCLRv2 layout")
        shape = tuple(int(d.size) for d in var.shape.dim)
        records.append(VariableRecord(key, "/".join(path), shape, bool(var.trainable),
                                      tf.dtypes.as_dtype(var.dtype).name))
    return records


def _key_sort(record):
    head, _, idx = record.key.rpartition("/")
    return (head, int(idx) if idx.isdigit() else -1, record.key)


class Variables(collections.abc.Mapping):
    """{structural path: numpy array} of a SavedModel's variables, each read from the checkpoint
    when it is asked for and not kept: one variable in memory at a time, however big the model.
    `shapes` gives every variable's shape without reading any."""

    def __init__(self, saved_model_dir):
        import tensorflow as tf

        self._dir = saved_model_dir
        self.records = sorted(read_variable_records(saved_model_dir), key=_key_sort)
        self._by_path = {}
        for r in self.records:
            if r.path in self._by_path:
                raise NotAnOfficialSavedModel(f"two variables share the structural path {r.path}")
            self._by_path[r.path] = r
        self.shapes = {r.path: r.shape for r in self.records}
        _, prefix = _files(saved_model_dir)
        try:
            self._reader = tf.train.load_checkpoint(prefix)
        except (tf.errors.OpError, IndexError) as e:
            raise NotAnOfficialSavedModel(f"can't read the variables of {saved_model_dir}: {e}; "
                                          f"{_DAMAGED}") from e

    def __getitem__(self, path):
        import tensorflow as tf

        record = self._by_path[path]
        try:
            return np.asarray(self._reader.get_tensor(record.key + _VALUE_SUFFIX))
        except (tf.errors.OpError, IndexError) as e:
            # A truncated variables.data file: TF's reader raises IndexError("Read less bytes
            # than requested"), or DataLossError.
            raise NotAnOfficialSavedModel(f"can't read the variables of {self._dir}: {e}; "
                                          f"{_DAMAGED}") from e

    def __iter__(self):
        return iter(self._by_path)

    def __len__(self):
        return len(self._by_path)

    def __contains__(self, path):
        return path in self._by_path


def read_variables(saved_model_dir):
    """(records, {structural path: numpy array}) for the SavedModel's variables, all read into
    memory (the importer reads them one at a time through `Variables` instead)."""
    variables = Variables(saved_model_dir)
    return variables.records, {path: variables[path] for path in variables}
