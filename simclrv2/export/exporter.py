"""One self-describing, verified export directory: SavedModel, ONNX and .keras of a SimCLRv2 model.

    from simclrv2.export import export_model
    report = export_model(model, "exports/r50_1x_sk1")     # or a .keras / run dir / SavedModel path

Everything is written into a temporary sibling of `out_dir`, reloaded from there and compared
with the Keras model on a probe batch; only when every SavedModel signature, every ONNX output
and the reloaded .keras agree is the directory renamed into place. See docs/export.md.

What is replaced and what is cleaned up is narrow on purpose: `overwrite` replaces only an
earlier export (config.json with `"format": "simclrv2-export"`, nothing but export files), and
the temporary folders that killed exports leave (`.NAME.tmp-PID-XXXXXXXX`) are removed by the
next export into the same parent only once their process is gone and they are an hour old.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pathlib
import re
import shutil
import time
import uuid
import warnings

import numpy as np

from simclrv2 import precision as precision_lib
from simclrv2.artifacts import EXPORT_FORMAT, is_export_config
from simclrv2.atomic_files import read_json

FORMATS = ("savedmodel", "onnx", "keras")
FORMAT_VERSION = 1
# Everything an export directory holds at its top level (all formats).
EXPORT_ENTRIES = frozenset({"saved_model", "model.onnx", "model.int8.onnx", "model.keras",
                            "config.json", "README.md", "SHA256SUMS"})
QUANTIZATIONS = ("int8",)
STALE_AFTER_S = 3600  # see remove_stale_temporaries
RTOL = 1e-4  # max |ours - keras| / max |keras|, per output, as simclrv2.zoo.importer
ONNX_OPSET = 17
ONNX_MAX_BYTES = 2 * 1024 ** 3 - 64 * 1024 ** 2  # protobuf's 2 GiB limit, with room for the graph
PROBE_BATCH = 3  # not the batch of 1 or 2 that a fixed-batch bug could pass with
DISTILL_PROBE_TEMPERATURES = (0.5, 1.0, 4.0)

LOGIT_SIGNATURES = ("serving_default", "finetune", "distill", "serving_bytes")


class ExportError(ValueError):
    """Bad input to the exporter (model, out_dir, formats...); the message says how to fix it."""


class VerificationError(RuntimeError):
    """An exported artifact does not reproduce the Keras model; nothing was written."""


# --------------------------------------------------------------------------- model resolution

def _load_keras(path):
    from simclrv2.artifacts import resolve

    return resolve(path).model


def resolve_model(model, stage=None, image_size=None):
    """(SimCLRv2Model, info) from simclrv2.artifacts.resolve: a model object, a path or a
    registry name. info: {"source", "source_kind", "stage", "provenance"}."""
    from simclrv2.artifacts import ArtifactError, resolve
    from simclrv2.zoo.model import SimCLRv2Model

    try:
        found = resolve(model, stage, image_size)
    except ArtifactError as error:
        raise ExportError(str(error)) from None
    if not isinstance(found.model, SimCLRv2Model):
        raise ExportError(f"{found.source} is the saved_model/ of a simclrv2 export, which holds "
                          f"no Keras model to export again; export the model.keras it came "
                          f"from, or export with --formats keras too")
    return found.model, {"source": found.source, "source_kind": found.kind, "stage": found.stage,
                         "provenance": found.provenance}


def _at_size(model, image_size):
    """The model with a fixed square input of `image_size`, computing in float32 (a copy, under
    the caller's float32 policy, when it is not already that)."""
    import simclrv2.zoo as zoo

    config = model.simclr_config
    if (tuple(config.input_shape[:2]) == (image_size, image_size)
            and precision_lib.is_float32(model)):
        return model
    resized = zoo.build(config.replace(input_shape=(image_size, image_size, 3)))
    resized.set_weights(model.get_weights())
    return resized


# --------------------------------------------------------------------------- preprocessing

def eval_crop_proportion(image_size):
    from simclrv2.data import augment as aug

    return 1.0 if image_size <= aug.SMALL_IMAGE else aug.CROP_PROPORTION


def preprocess_encoded(encoded, image_size):
    """One JPEG/PNG/BMP/GIF string -> float32 [S, S, 3] in [0, 1]: the evaluation preprocessing
    of simclrv2.data.eval_dataset (centre crop of 0.875 of the shorter side, none at <= 32 px;
    bicubic resize; clip, since bicubic overshoots)."""
    import tensorflow as tf

    from simclrv2.data import augment as aug
    from simclrv2.data.sources import decode_image

    image = decode_image(encoded)
    shape = tf.shape(image)
    y, x, h, w = tf.unstack(aug.center_crop_window(shape[0], shape[1], image_size,
                                                   eval_crop_proportion(image_size)))
    image = tf.image.convert_image_dtype(image[y:y + h, x:x + w], tf.float32)
    image = tf.image.resize(image, [image_size, image_size], method="bicubic")
    return tf.clip_by_value(image, 0.0, 1.0)


def preprocessing_description(image_size):
    crop = eval_crop_proportion(image_size)
    return {
        "input": "float32 NHWC RGB in [0, 1]; no mean/std normalisation (as upstream SimCLRv2)",
        "eval": (f"decode to RGB uint8, centre crop {crop:g} of the shorter side, bicubic resize to "
                 f"{image_size}x{image_size}, scale to [0, 1], clip"),
        "crop_proportion": crop,
        "resize": "bicubic",
        "image_size": image_size,
        "in_graph": "serving_bytes",
    }


# --------------------------------------------------------------------------- export graph

def finetune_variable_paths(config):
    """Paths (prefixes) of the fine-tune head: projection layers 0..ft_proj_selector-1 and the
    supervised head; the only variables exported as trainable."""
    prefixes = ["head_supervised/"]
    if config.include_projection_head:
        for i in range(config.ft_proj_selector):
            prefixes += [f"proj_head/dense{i}/", f"proj_head/bn{i}/"]
    return tuple(prefixes)


class _Graph:
    """tf.Variables holding a snapshot of the model's weights, and the tf.functions of the export.

    The snapshot lets the SavedModel mark exactly the fine-tune head trainable (a Keras variable's
    tf.Variable keeps the trainable flag it was created with); `stateless_call` runs the Keras
    graph on these variables, so the functions compute what the Keras model computes.
    """

    def __init__(self, model, image_size, temperature):
        import keras
        import tensorflow as tf

        self.model, self.size, self.temperature = model, image_size, float(temperature)
        config = model.simclr_config
        self.has_logits = bool(config.num_classes)
        self.has_projection = bool(config.include_projection_head)
        head = finetune_variable_paths(config) if self.has_logits else ()

        def snapshot(v, trainable):
            return tf.Variable(v.numpy(), trainable=trainable, name=v.path.replace("/", "__"))

        self.trainable = [snapshot(v, v.path.startswith(head) and v.trainable)
                          for v in model.trainable_variables]
        self.non_trainable = [snapshot(v, False) for v in model.non_trainable_variables]
        self._snapshot = {id(v): s for v, s in zip(
            model.trainable_variables + model.non_trainable_variables,
            self.trainable + self.non_trainable)}
        self.head_paths = sorted(v.path for v in model.trainable_variables
                                 if v.path.startswith(head) and v.trainable) if head else []
        self.images_spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32,
                                         name="images")
        # One traced sub-network per part, called by the signatures: each signature captures
        # only the variables it reads (so TFSMLayer(features) holds no head weights), and the
        # backbone is traced 3 times rather than once per signature (saving was 2x slower).
        from simclrv2.zoo.resnet import BACKBONE_ENDPOINTS

        outputs = model.output
        parts = {"backbone": [k for k in BACKBONE_ENDPOINTS if k in outputs]}
        if self.has_projection:
            parts["projection"] = ["proj_head_output"]
        if self.has_logits:
            parts["logits"] = ["logits_sup"]
        self.parts = {}
        for part, keys in parts.items():
            sub = keras.Model(model.inputs, {k: outputs[k] for k in keys}, name=f"export_{part}")
            self.parts[part] = tf.function(
                lambda images, sub=sub: self._run(sub, images),
                input_signature=[self.images_spec], autograph=False)
        self.functions, self.skipped = self._functions()

    def _run(self, sub, images):
        import tensorflow as tf

        trainable = [self._snapshot[id(v)] for v in sub.trainable_variables]
        non_trainable = [self._snapshot[id(v)] for v in sub.non_trainable_variables]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The structure of `inputs`")
            out, _ = sub.stateless_call(trainable, non_trainable, images, training=False)
        return {k: tf.cast(v, tf.float32) for k, v in out.items()}

    def _functions(self):
        import tensorflow as tf

        spec = self.images_spec
        fns, skipped = {}, {}

        def fn(signature):
            return lambda f: tf.function(f, input_signature=signature, autograph=False)

        if self.has_logits:
            @fn([spec])
            def serving_default(images):
                logits = self.parts["logits"](images)["logits_sup"]
                return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

            @fn([spec])
            def finetune(images):
                return {"logits": self.parts["logits"](images)["logits_sup"]}

            @fn([spec, tf.TensorSpec([], tf.float32, name="temperature")])
            def distill(images, temperature):
                check = tf.debugging.assert_positive(
                    temperature, message="distill: temperature must be > 0")
                with tf.control_dependencies([check]):
                    logits = self.parts["logits"](images)["logits_sup"]
                    return {"soft_targets": tf.nn.softmax(logits / temperature)}

            @fn([tf.TensorSpec([None], tf.string, name="image_bytes")])
            def serving_bytes(image_bytes):
                images = tf.map_fn(lambda b: preprocess_encoded(b, self.size), image_bytes,
                                   fn_output_signature=tf.TensorSpec(
                                       [self.size, self.size, 3], tf.float32))
                return serving_default(images)

            fns.update(serving_default=serving_default, finetune=finetune, distill=distill,
                       serving_bytes=serving_bytes)
        else:
            for name in LOGIT_SIGNATURES:
                skipped[name] = "the model has no supervised head (a pretrained model): no logits"

        @fn([spec])
        def features(images):
            return {"final_avg_pool": self.parts["backbone"](images)["final_avg_pool"]}

        fns["features"] = features
        if self.has_projection:
            @fn([spec])
            def projection(images):
                return {"proj_head_output": self.parts["projection"](images)["proj_head_output"]}

            fns["projection"] = projection
        else:
            skipped["projection"] = "the model has no projection head"

        @fn([spec])
        def hidden(images):
            return dict(self.parts["backbone"](images))

        fns["hidden"] = hidden
        return fns, skipped

    def onnx_function(self):
        import keras
        import tensorflow as tf

        keys = ["final_avg_pool"] + ["proj_head_output"] * self.has_projection + [
            "logits_sup"] * self.has_logits
        # One network with every output: ONNX Runtime would not merge the backbones of parts.
        whole = keras.Model(self.model.inputs, {k: self.model.output[k] for k in keys},
                            name="export_onnx")

        @tf.function(input_signature=[self.images_spec], autograph=False)
        def onnx_outputs(images):
            out = self._run(whole, images)
            result = {"final_avg_pool": out["final_avg_pool"]}
            if self.has_logits:
                result.update(logits=out["logits_sup"],
                              probabilities=tf.nn.softmax(out["logits_sup"]))
            if self.has_projection:
                result["proj_head_output"] = out["proj_head_output"]
            return result

        return onnx_outputs

    def save(self, path):
        import tensorflow as tf

        root = tf.__internal__.tracking.AutoTrackable()
        # hub.KerasLayer / TFSMLayer conventions: these lists decide what `trainable=True` trains.
        root.variables = self.trainable + self.non_trainable
        root.trainable_variables = [v for v in self.trainable if v.trainable]
        root.non_trainable_variables = [v for v in root.variables if not v.trainable]
        root.regularization_losses = []
        for name, f in self.functions.items():
            setattr(root, name, f)
        # Callable root for hub.KerasLayer: the fine-tune logits when there are any.
        root.__call__ = self.functions.get("finetune", self.functions["features"])
        signatures = {name: f.get_concrete_function() for name, f in self.functions.items()}
        tf.saved_model.save(root, path, signatures=signatures)


# --------------------------------------------------------------------------- verification

def rel_diff(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        return float("inf")
    if not ref.size:
        return 0.0
    if not np.all(np.isfinite(ours)):
        return float("inf")
    scale = max(float(np.max(np.abs(ref))), 1e-12)
    return float(np.max(np.abs(ours - ref))) / scale


def _softmax(x, temperature=1.0):
    x = np.asarray(x, np.float64) / temperature
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def probe_inputs(image_size, seed=0):
    """(float images [B, S, S, 3], encoded PNG strings of other sizes, their decoded images)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 1.0, (PROBE_BATCH, image_size, image_size, 3)).astype(np.float32)
    # Non-square and larger than the model input, so the crop and the resize both run.
    shapes = [(image_size + 9, image_size + 3), (image_size, image_size + 17),
              (2 * image_size, image_size + 1)]
    encoded = [tf.io.encode_png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).numpy()
               for h, w in shapes]
    decoded = np.stack([preprocess_encoded(tf.constant(e), image_size).numpy() for e in encoded])
    return images, np.array(encoded, dtype=object), decoded


def _keras_outputs(model, images):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The structure of `inputs`")
        out = model(images, training=False)
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def expected_outputs(model, images, bytes_images, temperature):
    """{signature: {output: reference array}} from the Keras model itself."""
    from simclrv2.zoo.resnet import BACKBONE_ENDPOINTS

    out = _keras_outputs(model, images)
    expected = {"features": {"final_avg_pool": out["final_avg_pool"]},
                "hidden": {k: out[k] for k in BACKBONE_ENDPOINTS if k in out}}
    if "proj_head_output" in out:
        expected["projection"] = {"proj_head_output": out["proj_head_output"]}
    if "logits_sup" in out:
        logits = out["logits_sup"]
        expected["serving_default"] = {"logits": logits, "probabilities": _softmax(logits)}
        expected["finetune"] = {"logits": logits}
        for t in sorted({*DISTILL_PROBE_TEMPERATURES, float(temperature)}):
            expected[f"distill[temperature={t:g}]"] = {"soft_targets": _softmax(logits, t)}
        from_bytes = _keras_outputs(model, bytes_images)["logits_sup"]
        expected["serving_bytes"] = {"logits": from_bytes, "probabilities": _softmax(from_bytes)}
    return expected


def run_saved_model(saved_model_dir, images, encoded, temperatures):
    """{signature: {output: array}} from the SavedModel's signatures as TF Serving calls them."""
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model_dir)
    sigs, got = loaded.signatures, {}
    x = tf.constant(images)
    for name in sigs:
        if name == "distill":
            for t in temperatures:
                got[f"distill[temperature={t:g}]"] = sigs[name](
                    images=x, temperature=tf.constant(t, tf.float32))
        elif name == "serving_bytes":
            got[name] = sigs[name](image_bytes=tf.constant(list(encoded), tf.string))
        else:
            got[name] = sigs[name](images=x)
    return {s: {k: np.asarray(v) for k, v in o.items()} for s, o in got.items()}


def onnx_session_options(threads=None):
    """onnxruntime.SessionOptions for the exported models (what the verification, the benchmark
    and docs/export.md use): every graph optimisation, `threads` intra-op threads (default: all
    cores) and one inter-op thread with sequential execution, since the graph is one chain of
    convolutions."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    return options


def run_onnx(onnx_path, images):
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_path, onnx_session_options(),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"images": images})))


def _compare(got, expected, what):
    diffs, missing = {}, []
    for sig, outputs in expected.items():
        for key, ref in outputs.items():
            if key not in got.get(sig, {}):
                missing.append(f"{sig}/{key}")
                continue
            diffs[f"{sig}/{key}"] = rel_diff(got[sig][key], ref)
    if missing:
        raise VerificationError(f"the {what} lacks outputs {missing}; refusing to export")
    return diffs


def verify(tmp, formats, model, image_size, temperature, seed=0):
    """{format: {signature/output: relative difference}}; raises VerificationError past RTOL."""
    images, encoded, bytes_images = probe_inputs(image_size, seed)
    expected = expected_outputs(model, images, bytes_images, temperature)
    temperatures = sorted({*DISTILL_PROBE_TEMPERATURES, float(temperature)})
    figures = {}
    if "savedmodel" in formats:
        got = run_saved_model(os.path.join(tmp, "saved_model"), images, encoded, temperatures)
        figures["saved_model"] = _compare(got, expected, "SavedModel")
    if "onnx" in formats:
        got = run_onnx(os.path.join(tmp, "model.onnx"), images)
        ref = expected["serving_default"] if "serving_default" in expected else {}
        want = {**ref, **expected["features"], **expected.get("projection", {})}
        figures["onnx"] = _compare({"onnx": got}, {"onnx": want}, "ONNX model")
        figures["onnx"] = {k.split("/", 1)[1]: v for k, v in figures["onnx"].items()}
    if "keras" in formats:
        reloaded = _load_keras(os.path.join(tmp, "model.keras"))
        out = _keras_outputs(reloaded, images)
        ref = _keras_outputs(model, images)
        figures["keras"] = {k: rel_diff(out.get(k, np.zeros(0)), v) for k, v in ref.items()}
    bad = [(fmt, k, v) for fmt, d in figures.items() for k, v in d.items() if not v <= RTOL]
    if bad:
        listed = ", ".join(f"{fmt} {k}: {v:.3g}" for fmt, k, v in bad)
        raise VerificationError(
            f"exported outputs differ from the Keras model beyond {RTOL:g} (max abs difference / "
            f"max abs value on a probe batch of {PROBE_BATCH}): {listed}; nothing was written")
    return figures, list(images.shape)


# --------------------------------------------------------------------------- writers

# tf2onnx's switch for its optimizer loop: unset, it deep-copies the whole graph, weights
# included, before each optimizer it applies (in every round), so that a failing optimizer can
# be skipped; that copying was 21 s of r50_1x_sk1's 50 s conversion. tf2onnx 1.17 turns the
# copies off when the variable is set at all (it compares the variable's name, not its value, to
# "TRUE"); "FALSE" also says so to a tf2onnx that reads the value. An optimizer that fails then
# fails the export with tf2onnx's error, instead of leaving a graph it did not finish optimizing.
TF2ONNX_CATCH_ERRORS = ("TF2ONNX_CATCH_ERRORS", "FALSE")


def _optimize_without_proto_updates(optimize_graph):
    """tf2onnx's optimize_graph, with Graph.update_proto a no-op while it runs. Each optimizer
    (12 of them, three rounds) ends by rewriting every node's protobuf from its Python object,
    the weights of every constant included: 20 s of r50_1x_sk1's conversion. The optimizers read
    and edit the Python objects only, and make_graph, which builds the model after them, runs
    update_proto itself; the export's verification would catch a graph that came out wrong."""
    from unittest import mock

    from tf2onnx.graph import Graph

    def optimize(*args, **kwargs):
        with mock.patch.object(Graph, "update_proto", lambda self, *a, **k: None):
            return optimize_graph(*args, **kwargs)

    return optimize


def write_onnx(graph, path, metadata):
    from unittest import mock

    import onnx
    import tf2onnx
    import tf2onnx.optimizer
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    from simclrv2.export.onnx_graph import keep_batch_in_reshapes

    patch_tf2onnx()  # tf2onnx 1.17 still uses numpy<2 names; Keras ships this fix
    fast_optimize = _optimize_without_proto_updates(tf2onnx.optimizer.optimize_graph)
    with mock.patch.dict(os.environ, dict([TF2ONNX_CATCH_ERRORS])), warnings.catch_warnings(), \
            mock.patch.object(tf2onnx.optimizer, "optimize_graph", fast_optimize):
        warnings.simplefilter("ignore", FutureWarning)
        proto, _ = tf2onnx.convert.from_function(
            graph.onnx_function(), input_signature=[graph.images_spec], opset=ONNX_OPSET)
    # tf2onnx names the batch dimension after the TF tensor (unk__N); a plain name documents it.
    for value in list(proto.graph.input) + list(proto.graph.output):
        dim = value.type.tensor_type.shape.dim
        if dim and not dim[0].HasField("dim_value"):
            dim[0].dim_param = "batch"
    keep_batch_in_reshapes(proto)  # after naming the batch: it carries that name through
    onnx.helper.set_model_props(proto, {k: str(v) for k, v in metadata.items()})
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    return [o.name for o in proto.graph.output]


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(root):
    """SHA256SUMS in `sha256sum -c` format for every file below root."""
    lines = []
    for path in sorted(pathlib.Path(root).rglob("*")):
        if path.is_file() and path.name != "SHA256SUMS":
            lines.append(f"{_sha256(path)}  {path.relative_to(root).as_posix()}")
    pathlib.Path(root, "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return len(lines)


def model_card(report):
    cfg = report["model_config"]
    lines = [
        f"# {report['architecture']} ({report['stage']})", "",
        "SimCLRv2 ResNet exported by `simclrv2 export` (Chen et al., *Big Self-Supervised Models "
        "are Strong Semi-Supervised Learners*, NeurIPS 2020).", "",
        f"- Architecture: ResNet-{cfg['depth']} {cfg['width']}x, selective kernels "
        f"{'on' if cfg['sk'] else 'off'}, {'CIFAR' if cfg['cifar_stem'] else 'ImageNet'} stem; "
        f"projection head {'yes' if cfg['include_projection_head'] else 'no'}; "
        f"classes: {report['classes']['num_classes'] or 'none (pretrained, no supervised head)'}",
        f"- Input: {report['input']['description']}, "
        f"{report['image_size']}x{report['image_size']}, any batch size",
        f"- Preprocessing: {report['preprocessing']['eval']}", "",
        "| file | what |", "|---|---|",
    ]
    if "savedmodel" in report["formats"]:
        sigs = ", ".join(f"`{s}`" for s in report["signatures"])
        lines.append(f"| `saved_model/` | TF SavedModel; signatures {sigs} |")
    if "onnx" in report["formats"]:
        outs = ", ".join(f"`{o}`" for o in report["onnx"]["outputs"])
        lines.append(f"| `model.onnx` | ONNX opset {report['onnx']['opset']}, input `images`, "
                     f"outputs {outs} |")
    if report.get("int8"):
        q = report["int8"]
        lines.append(f"| `{q['file']}` | the ONNX model quantized to int8 (QDQ, onnxruntime); "
                     f"{q['gate']} {q.get('top1_drop_points', q.get('disagreement_points'))} "
                     f"points on {q['check_examples']} images (allowed {q['max_drop_points']:g}) |")
    if "keras" in report["formats"]:
        lines.append("| `model.keras` | Keras 3 model with its heads, for `fit` "
                     "(`import simclrv2.zoo` first) |")
    lines += ["| `config.json` | everything below, machine-readable |",
              "| `SHA256SUMS` | `sha256sum -c SHA256SUMS` |", ""]
    if report["skipped_signatures"]:
        lines.append("Not exported: " + "; ".join(
            f"`{k}` ({v})" for k, v in report["skipped_signatures"].items()) + ".")
        lines.append("")
    worst = report["verification"]["max_relative_difference"]
    lines += [f"Verified against the Keras model on a probe batch of {PROBE_BATCH}: largest "
              f"relative difference {worst:.2g} (tolerance {RTOL:g}); per output in config.json.",
              ""]
    if report.get("source"):
        lines.append(f"Source: `{report['source']}` ({report['source_kind']}).")
    lines.append(f"Exported {report['exported_at']} with simclrv2 {report['simclrv2_version']}.")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- entry point

def _check_replaceable(out, overwrite):
    """Refuses to replace a non-empty `out` unless asked and unless it is an earlier export
    holding nothing else: `overwrite` deletes it, so it must not hold anyone's files."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ExportError(f"--out {out} exists and is not empty; pass --overwrite "
                          "(overwrite=True) to replace it, or choose a new directory")
    if not is_export_config(read_json(out / "config.json")):
        raise ExportError(f"--out {out} is not an earlier simclrv2 export (no config.json with "
                          f"\"format\": \"{EXPORT_FORMAT}\"), and --overwrite only replaces "
                          "an earlier export; choose a new directory, or empty this one yourself")
    extra = sorted(p.name for p in out.iterdir() if p.name not in EXPORT_ENTRIES)
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise ExportError(f"--out {out} is an earlier export but also holds {shown}, which "
                          "--overwrite would delete; move them out or choose a new directory")


def _check_out_dir(out_dir, overwrite, source):
    out = pathlib.Path(os.path.expanduser(os.fspath(out_dir))).absolute()
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; pass a directory path")
    _check_replaceable(out, overwrite)
    if source:
        src = pathlib.Path(source).resolve()
        if out.resolve() == src or out.resolve() in src.parents:
            raise ExportError(f"--out {out} contains the model being exported ({src}); "
                              "choose another directory")
    return out


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?:(?P<pid>\d+)-)?[0-9a-f]{8}$")


def _temporary_name(out, kind):
    """`.NAME.tmp-PID-XXXXXXXX`: the PID lets a later export tell a live export's folder from
    a killed one's (remove_stale_temporaries)."""
    return out.parent / f".{out.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid):
    if os.name == "nt":
        return True  # os.kill(pid, 0) would send Ctrl-C there; keep the folder
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _newest_mtime(path):
    newest = path.lstat().st_mtime
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
            except OSError:
                pass
    return newest


def remove_stale_temporaries(parent, max_age_s=STALE_AFTER_S):
    """Removes what killed exports left in `parent`; returns the removed paths.

    A folder goes only when all of these hold, so that nothing but an abandoned folder of ours
    is ever deleted:
    - its name is one this exporter gives (`.NAME.tmp-PID-XXXXXXXX`, or `.NAME.old-...` for an
      earlier export moved aside; also `.NAME.tmp-XXXXXXXX` from before names held a PID) and it
      holds nothing but export files;
    - the PID in its name runs no process here: a live export on this machine is never touched,
      however long it takes;
    - nothing in it changed for `max_age_s` (an hour): a PID means nothing on another machine
      writing to the same shared disk, and no export leaves its files untouched that long;
    - an `.old-` folder goes only once NAME exists again: until then it is the only copy of the
      export it was moved aside from (the process died between the two renames), and it is kept
      for the user to rename back.
    """
    parent = pathlib.Path(parent)
    now, removed = time.time(), []
    for path in sorted(parent.iterdir()):
        m = _TEMPORARY.match(path.name)
        if not m or path.is_symlink() or not path.is_dir():
            continue
        if any(p.name not in EXPORT_ENTRIES for p in path.iterdir()):
            continue
        if m["pid"] is not None and _pid_alive(int(m["pid"])):
            continue
        if now - _newest_mtime(path) < max_age_s:
            continue
        if m["kind"] == "old" and not (parent / m["name"]).exists():
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(str(path))
    return removed


def _check_formats(formats):
    if isinstance(formats, str):
        formats = [f for f in formats.split(",") if f.strip()]
    formats = tuple(dict.fromkeys(f.strip().lower() for f in formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"unknown export format(s) {unknown or formats}; valid: "
                          f"{','.join(FORMATS)}")
    return formats


def export_model(model, out_dir, formats=FORMATS, image_size=None, stage=None, provenance=None,
                 overwrite=False, temperature=1.0, quantize=None, calibration=None,
                 calibration_examples=300, check_examples=1000, max_int8_drop=1.0,
                 data_dir=None) -> dict:
    """Exports `model` to `out_dir`, verified; returns the report also written to config.json.

    model: a SimCLRv2Model, a .keras path, a recipe run directory, an export directory, an
      official SimCLRv2 SavedModel directory, or a registry name (with `stage`).
    formats: any of "savedmodel", "onnx", "keras" (list or comma-separated string).
    image_size: the square input side of every artifact (default: the model's input size).
    stage: recorded in config.json; for a registry name, which released stage to load.
    provenance: extra fields recorded under config.json's "provenance".
    overwrite: replace out_dir when it is an earlier export (config.json with the
      "simclrv2-export" format marker, nothing else in it); any other non-empty out_dir is
      refused, with or without it.
    temperature: the distill signature's default, recorded in config.json (the signature takes
      it as an input).
    quantize="int8": also model.int8.onnx, onnxruntime's static QDQ quantization of model.onnx
      (needs "onnx" in formats and a supervised head), calibrated on `calibration_examples`
      images of `calibration` (a dataset name, an image folder, or an array of images / a tuple
      (images, labels); see simclrv2.export.quantize.calibration_set, `data_dir` as for the
      recipes) and checked on up to `check_examples` other ones: refused (QuantizationError,
      nothing written) when its top-1 drop, or without labels its disagreement with the float
      model, exceeds `max_int8_drop` points.
    Raises ExportError for bad input, VerificationError when an artifact doesn't match; either
    way nothing is left at out_dir.
    """
    # Exports are float32 whatever precision the model was trained in (a bfloat16 run's
    # variables are float32 already; only its layers compute in bfloat16), and verified against
    # float32 Keras models: everything below is built under a float32 policy.
    with precision_lib.float32_policy():
        return _export_model(model, out_dir, formats, image_size, stage, provenance, overwrite,
                             temperature, quantize, calibration, calibration_examples,
                             check_examples, max_int8_drop, data_dir)


def _export_model(model, out_dir, formats, image_size, stage, provenance, overwrite, temperature,
                  quantize, calibration, calibration_examples, check_examples, max_int8_drop,
                  data_dir) -> dict:
    """export_model's work, under its float32 policy; the arguments are export_model's."""
    import simclrv2

    started = time.monotonic()
    formats = _check_formats(formats)
    if not float(temperature) > 0:
        raise ExportError(f"temperature must be > 0, got {temperature}")
    if image_size is not None and (int(image_size) != image_size or image_size < 8):
        raise ExportError(f"image_size must be an integer >= 8, got {image_size!r}")
    if provenance is not None and not isinstance(provenance, dict):
        raise ExportError("provenance must be a dict of JSON-serialisable fields")
    if quantize is not None:
        if quantize not in QUANTIZATIONS:
            raise ExportError(f"unknown quantization {quantize!r}; valid: {', '.join(QUANTIZATIONS)}")
        if "onnx" not in formats:
            raise ExportError("quantize='int8' quantizes model.onnx: add onnx to the formats "
                              "(--formats ...,onnx)")
        if calibration is None:
            raise ExportError("quantize='int8' needs calibration images: a dataset name "
                              "(--calibration fashion_mnist), an image folder or an array")
        if not float(max_int8_drop) >= 0:
            raise ExportError(f"max_int8_drop must be >= 0 points, got {max_int8_drop}")
    source_hint = None if not isinstance(model, (str, os.PathLike)) else os.fspath(model)
    if source_hint and os.path.exists(os.path.expanduser(source_hint)):
        source_hint = os.path.expanduser(source_hint)
    else:
        source_hint = None
    out = _check_out_dir(out_dir, overwrite, source_hint)

    keras_model, info = resolve_model(model, stage, image_size)
    config = keras_model.simclr_config
    if image_size is None:
        # An any-size model is exported at the size its stem was made for.
        image_size = config.input_shape[0] or (32 if config.cifar_stem else 224)
    image_size = int(image_size)
    keras_model = _at_size(keras_model, image_size)
    config = keras_model.simclr_config
    weight_bytes = sum(int(np.prod(v.shape)) * 4 for v in keras_model.weights)
    if "onnx" in formats and weight_bytes > ONNX_MAX_BYTES:
        raise ExportError(f"{config.name} has {weight_bytes / 1e9:.1f} GB of weights, over the 2 GB "
                          "limit of a single-file ONNX model; export with --formats "
                          "savedmodel,keras")

    int8_images = None
    if quantize:
        from simclrv2.export import quantize as quantize_lib

        if not config.num_classes:
            raise ExportError(f"{config.name} has no supervised head: the int8 model is checked "
                              "by its top-1, so quantize a fine-tuned or distilled model")
        # Read before anything is exported, so that bad calibration images fail fast.
        int8_images = quantize_lib.calibration_set(
            calibration, image_size, config.num_classes, calibration_examples, check_examples,
            data_dir=data_dir)
    graph = _Graph(keras_model, image_size, temperature)
    report = {
        "format": EXPORT_FORMAT,
        "format_version": FORMAT_VERSION,
        "simclrv2_version": simclrv2.__version__,
        "architecture": config.name,
        "model_config": config.to_dict(),
        "stage": info["stage"],
        "classes": {"num_classes": config.num_classes, "names": None},
        "image_size": image_size,
        "input": {"name": "images", "dtype": "float32", "layout": "NHWC",
                  "shape": [None, image_size, image_size, 3], "range": [0.0, 1.0],
                  "description": "float32 RGB images in [0, 1], NHWC, no mean/std normalisation"},
        "preprocessing": preprocessing_description(image_size),
        "formats": list(formats),
        "signatures": {}, "skipped_signatures": {}, "onnx": None,
        "finetune_trainable_variables": graph.head_paths,
        "distill_default_temperature": float(temperature),
        "source": info["source"], "source_kind": info["source_kind"],
        "provenance": {**info["provenance"], **(provenance or {})},
    }
    if provenance and "class_names" in provenance:
        report["classes"]["names"] = list(provenance["class_names"])

    out.parent.mkdir(parents=True, exist_ok=True)
    stale = remove_stale_temporaries(out.parent)
    tmp = _temporary_name(out, "tmp")
    tmp.mkdir()
    try:
        if "savedmodel" in formats:
            graph.save(str(tmp / "saved_model"))
            for name, f in graph.functions.items():
                cf = f.get_concrete_function()
                report["signatures"][name] = {
                    "inputs": [s.name for s in cf.structured_input_signature[0]],
                    "outputs": sorted(cf.structured_outputs)}
            report["skipped_signatures"] = dict(graph.skipped)
        if "onnx" in formats:
            meta = {"architecture": config.name, "stage": info["stage"],
                    "num_classes": config.num_classes or 0, "image_size": image_size,
                    "input_range": "[0, 1]", "input_layout": "NHWC float32 RGB",
                    "preprocessing": report["preprocessing"]["eval"],
                    "simclrv2_version": simclrv2.__version__}
            names = write_onnx(graph, str(tmp / "model.onnx"), meta)
            report["onnx"] = {"file": "model.onnx", "opset": ONNX_OPSET, "input": "images",
                              "outputs": names, "metadata_props": meta}
        if "keras" in formats:
            keras_model.save(str(tmp / "model.keras"))
        figures, probe_shape = verify(str(tmp), formats, keras_model, image_size, temperature)
        worst = max((v for d in figures.values() for v in d.values()), default=0.0)
        report["verification"] = {"tolerance": RTOL, "probe_shape": probe_shape,
                                  "metric": "max |exported - keras| / max |keras| per output",
                                  "max_relative_difference": worst, **figures}
        report["int8"] = None
        if quantize:
            report["int8"] = quantize_lib.quantize_int8(
                tmp / "model.onnx", tmp / quantize_lib.INT8_FILE, int8_images,
                float(max_int8_drop))
            report["int8"]["calibration"] = int8_images.description
        report["exported_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds")
        report["export_wall_s"] = round(time.monotonic() - started, 2)
        (tmp / "config.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(report))
        write_checksums(tmp)
        _place(tmp, out, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    report["out_dir"] = str(out)
    report["removed_stale"] = stale
    report["files"] = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    return report


def _place(tmp, out, overwrite):
    """Renames tmp to out; an existing out is moved aside first and removed only afterwards.
    It is checked again here: files may have appeared in it while the export ran."""
    old = None
    if out.exists():
        _check_replaceable(out, overwrite)
        old = _temporary_name(out, "old")
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
