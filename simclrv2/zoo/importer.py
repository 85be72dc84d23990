"""Official SimCLRv2 TF2 SavedModels -> simclrv2 Keras models, checked endpoint by endpoint.

    from simclrv2.zoo.importer import import_saved_model, convert_saved_model
    model, report = import_saved_model("r50_1x_sk1/saved_model")
    convert_saved_model("r50_1x_sk1/saved_model", "r50_1x_sk1.keras")

Steps: read the variables' structural paths and shapes (official_format), infer the architecture
from the shapes, run the original module on a probe batch and release it, build the zoo model,
copy each official variable into the layer its path names, one read at a time, then run the Keras
model on the probe batch and compare every endpoint the original returned. Nothing is returned
or written unless all of them agree. The weights are in memory once at any time (the original
module's, then the Keras model's), plus one variable; the .keras file is written with its
weights streamed through disk (zoo.keras_file): docs/pretrained_models.md has the peaks.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import warnings

import numpy as np

from simclrv2 import process_memory
from simclrv2.atomic_files import replacing, write_text
from simclrv2.zoo import official_format
from simclrv2.zoo.config import DEPTHS, WIDTHS, ModelConfig, parse_name

CONVERTER_VERSION = "2"
RTOL = 1e-4  # the largest rel_diff an imported or exported output may have from its reference

_RESNET = "model/resnet_model/"
_PROJ = "model/_projection_head/linear_layers/"
_SUP = "model/supervised_head/linear_layer/dense/"
_BN_VARS = ("gamma", "beta", "moving_mean", "moving_variance")


class ImportMismatchError(ValueError):
    """The SavedModel's variables or outputs don't match the Keras model they're loaded into."""


# --------------------------------------------------------------------------- architecture

def _shape(arrays, path):
    """The shape of one variable, without reading it when `arrays` can say (Variables)."""
    shapes = getattr(arrays, "shapes", None)
    return tuple(shapes[path]) if shapes is not None else tuple(arrays[path].shape)


def _groups(arrays):
    """{group index: {block index: 'basic'|'bottleneck'}} from block_groups/<g>/layers/<b>/..."""
    found = {}
    pat = re.compile(_RESNET + r"block_groups/(\d+)/layers/(\d+)/(conv2d_bn_layers|conv_relu_dropblock_layers)/")
    for path in arrays:
        m = pat.match(path)
        if m:
            kind = "basic" if m[3] == "conv2d_bn_layers" else "bottleneck"
            found.setdefault(int(m[1]), {})[int(m[2])] = kind
    return found


def infer_config(arrays, input_shape=None) -> ModelConfig:
    """The zoo ModelConfig whose variables these are (ft_proj_selector: best guess from shapes;
    the importer settles it by running the model)."""
    groups = _groups(arrays)
    if sorted(groups) != [0, 1, 2, 3]:
        raise official_format.NotAnOfficialSavedModel(
            f"expected 4 block groups under {_RESNET}block_groups/, found {sorted(groups)}: "
            "not a SimCLR ResNet in the official TF2 layout")
    kinds = {k for g in groups.values() for k in g.values()}
    counts = tuple(len(groups[g]) for g in range(4))
    depth = [d for d, (kind, blocks) in DEPTHS.items() if blocks == counts and {kind} == kinds]
    if len(depth) != 1:
        raise official_format.NotAnOfficialSavedModel(
            f"blocks per group {counts} of kind {sorted(kinds)} match no ResNet depth "
            f"{ {d: b for d, b in DEPTHS.items()} }")
    depth = depth[0]
    bottleneck = kinds == {"bottleneck"}
    first = _RESNET + "block_groups/0/layers/0/" + (
        "conv_relu_dropblock_layers/0/conv2d/kernel" if bottleneck else
        "conv2d_bn_layers/0/conv2d/kernel")
    width = _shape(arrays, first)[-1] / 64
    if width not in WIDTHS:
        raise official_format.NotAnOfficialSavedModel(
            f"{first} has {_shape(arrays, first)[-1]} channels: width {width:g} is not one of "
            f"{list(WIDTHS)}")
    stem = sorted(int(m[1]) for p in arrays
                  for m in [re.match(_RESNET + r"initial_conv_relu_max_pool/(\d+)/conv2d/kernel$", p)]
                  if m)
    if not stem:
        raise official_format.NotAnOfficialSavedModel(
            f"no stem convolution under {_RESNET}initial_conv_relu_max_pool/")
    sk = len(stem) == 3 or any("/conv2d_0/kernel" in p for p in arrays) or any(
        re.search(r"block_groups/0/layers/0/(projection|shortcut)_layers/1/conv2d/kernel$", p)
        for p in arrays)
    stem_kernel = _shape(arrays, f"{_RESNET}initial_conv_relu_max_pool/{stem[0]}/conv2d/kernel")
    cifar_stem = len(stem) == 1 and stem_kernel[0] == 3

    proj_layers = sorted({int(m[1]) for p in arrays
                          for m in [re.match(_PROJ + r"(\d+)/dense/kernel$", p)] if m})
    include_proj = bool(proj_layers)
    num_proj_layers = len(proj_layers) if include_proj else 3
    proj_out_dim = (_shape(arrays, f"{_PROJ}{proj_layers[-1]}/dense/kernel")[-1]
                    if include_proj else 128)
    num_classes = None
    selector = 0
    if _SUP + "kernel" in arrays:
        kernel_shape = _shape(arrays, _SUP + "kernel")
        num_classes = int(kernel_shape[-1])
        feature_dim = int(64 * width * 2 ** 3 * (4 if bottleneck else 1))
        if include_proj and kernel_shape[0] != feature_dim:
            selector = num_proj_layers  # only the last projection layer has another width
        elif include_proj:
            selector = 1
    if input_shape is None:
        input_shape = (None, None, 3)  # any size, like the official module
    return ModelConfig(depth=depth, width=width, sk=sk, cifar_stem=cifar_stem,
                       num_classes=num_classes, include_projection_head=include_proj,
                       num_proj_layers=num_proj_layers, proj_out_dim=int(proj_out_dim),
                       ft_proj_selector=selector, input_shape=tuple(input_shape))


# --------------------------------------------------------------------------- path mapping

def _bn(official, ours, center=True):
    names = _BN_VARS if center else ("gamma", "moving_mean", "moving_variance")
    return [(f"{official}/bn/{v}", f"{ours}/{v}") for v in names]


def _conv(official, ours):
    return [(f"{official}/conv2d/kernel", f"{ours}/kernel")]


def _shortcut(prefix, ours, sk, strides):
    # ResNet-D puts a (padding and) average pool before the conv; they hold no weights but
    # take list slots: conv at 1 (stride 1, pool only) or 2 (pad + pool).
    at = (2 if strides > 1 else 1) if sk else 0
    return _conv(f"{prefix}/{at}", f"{ours}/shortcut_conv") + _bn(f"{prefix}/{at + 1}",
                                                                  f"{ours}/shortcut_bn")


def official_to_keras_paths(config: ModelConfig):
    """[(official structural path, our variable path)] in network order, for `config`."""
    pairs = []
    stem = _RESNET + "initial_conv_relu_max_pool"
    if config.sk and not config.cifar_stem:
        slots = [(0, "conv1"), (1, "bn1"), (2, "conv2"), (3, "bn2"), (4, "conv3"), (6, "bn3")]
    else:
        slots = [(0, "conv1"), (2, "bn1")]
    for index, name in slots:
        fn = _conv if name.startswith("conv") else _bn
        pairs += fn(f"{stem}/{index}", f"stem/{name}")
    bottleneck = config.block_kind == "bottleneck"
    for g, blocks in enumerate(config.blocks_per_group):
        for b in range(blocks):
            off = f"{_RESNET}block_groups/{g}/layers/{b}"
            ours = f"block_group{g + 1}/block{b + 1}"
            strides = (1, 2, 2, 2)[g] if b == 0 else 1
            main = []
            if bottleneck:
                layers = f"{off}/conv_relu_dropblock_layers"
                main += _conv(f"{layers}/0", f"{ours}/conv1") + _bn(f"{layers}/1", f"{ours}/bn1")
                if config.sk:
                    sk = f"{layers}/3"
                    main += [(f"{sk}/conv2d_fixed_padding/conv2d/kernel", f"{ours}/sk_conv/conv/kernel")]
                    main += _bn(f"{sk}/batch_norm_relu", f"{ours}/sk_conv/bn")
                    main += [(f"{sk}/conv2d_0/kernel", f"{ours}/sk_conv/reduce_conv/kernel")]
                    main += _bn(f"{sk}/batch_norm_relu_1", f"{ours}/sk_conv/reduce_bn")
                    main += [(f"{sk}/conv2d_1/kernel", f"{ours}/sk_conv/mixing_conv/kernel")]
                    main += _conv(f"{layers}/5", f"{ours}/conv3") + _bn(f"{layers}/6", f"{ours}/bn3")
                else:
                    main += _conv(f"{layers}/3", f"{ours}/conv2") + _bn(f"{layers}/4", f"{ours}/bn2")
                    main += _conv(f"{layers}/6", f"{ours}/conv3") + _bn(f"{layers}/7", f"{ours}/bn3")
                shortcut_list = f"{off}/projection_layers"
            else:
                layers = f"{off}/conv2d_bn_layers"
                main += _conv(f"{layers}/0", f"{ours}/conv1") + _bn(f"{layers}/1", f"{ours}/bn1")
                main += _conv(f"{layers}/2", f"{ours}/conv2") + _bn(f"{layers}/3", f"{ours}/bn2")
                shortcut_list = f"{off}/shortcut_layers"
            short = _shortcut(shortcut_list, ours, config.sk, strides) if b == 0 else []
            pairs += short + main
    if config.include_projection_head:
        for j in range(config.num_proj_layers):
            last = j == config.num_proj_layers - 1
            pairs += [(f"{_PROJ}{j}/dense/kernel", f"proj_head/dense{j}/kernel")]
            pairs += _bn(f"{_PROJ}{j}/bn_relu", f"proj_head/bn{j}", center=not last)
    if config.num_classes:
        pairs += [(_SUP + "kernel", "head_supervised/kernel"), (_SUP + "bias", "head_supervised/bias")]
    return pairs


def _check_shapes(arrays, config, shapes):
    """ImportMismatchError naming the first official variable that doesn't fit `config`;
    shapes: {our variable path: shape}."""
    pairs = official_to_keras_paths(config)
    mapped = set()
    for official, ours in pairs:
        if ours not in shapes:
            raise ImportMismatchError(
                f"internal: {config.name} has no variable {ours} (for {official}); the zoo's "
                "variable paths changed, see docs/CONTRACTS.md")
        expected = tuple(shapes[ours])
        if official not in arrays:
            raise ImportMismatchError(
                f"first mismatching variable: {official} is missing from the SavedModel "
                f"(expected shape {expected} for {config.name} {ours}); the SavedModel is "
                "another architecture: pass architecture=None to infer it")
        found = _shape(arrays, official)
        if found != expected:
            raise ImportMismatchError(
                f"first mismatching variable: {official}: expected shape {expected} "
                f"({config.name} {ours}), found {found}; the SavedModel is another "
                "architecture: pass architecture=None to infer it")
        mapped.add(official)
    extra = [p for p in arrays if p not in mapped]
    if extra:
        raise ImportMismatchError(
            f"first mismatching variable: {extra[0]} (shape {_shape(arrays, extra[0])}) has "
            f"no place in {config.name} ({len(extra)} unmapped in all); the SavedModel is "
            "another architecture or has layers the zoo lacks")
    return pairs


def assign_weights(model, arrays, config=None):
    """Copies official arrays into `model`, one at a time (`arrays` may read each on demand:
    official_format.Variables); ImportMismatchError names the first mismatch."""
    config = config or model.simclr_config
    by_path = {v.path: v for v in model.variables}
    pairs = _check_shapes(arrays, config, {p: tuple(v.shape) for p, v in by_path.items()})
    for official, ours in pairs:
        # asarray: no copy of what is float32 already (one big kernel is 170 MB in r152_3x).
        by_path[ours].assign(np.asarray(arrays[official], np.float32))
    return pairs


# --------------------------------------------------------------------------- verification

def rel_diff(ours, ref):
    """max |ours - ref| / max |ref|: how far an output is from its reference, relative to the
    reference's scale (what RTOL bounds here and in the export's verification); inf for another
    shape or a non-finite output."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        return float("inf")
    if not ref.size:
        return 0.0
    if not np.all(np.isfinite(ours)):
        return float("inf")
    scale = max(float(np.max(np.abs(ref))), 1e-12)
    return float(np.max(np.abs(ours - ref))) / scale


def probe_batch(input_shape, batch=2, seed=0, default_side=224):
    """Random images of `input_shape`; a side left open (None) gets `default_side`."""
    h, w, c = input_shape
    h, w = h or default_side, w or default_side
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, (batch, h, w, c)).astype(np.float32)


def _run_original(saved_model_dir, images):
    """The original module's endpoints on `images`; the module (a copy of every weight) is
    released before this returns, so that the Keras model is built in the memory it held."""
    import tensorflow as tf

    try:
        module = tf.saved_model.load(os.fspath(saved_model_dir))
    except (tf.errors.OpError, IndexError) as e:
        # A variables file cut short reads as IndexError ("Read less bytes than requested") or
        # DataLossError; other damage (the graph) as another OpError.
        cut_short = isinstance(e, (IndexError, tf.errors.DataLossError))
        what = "can't read the variables of" if cut_short else "can't load"
        raise official_format.NotAnOfficialSavedModel(
            f"{what} {saved_model_dir}: {e}; {official_format._DAMAGED}") from e
    try:
        out = module(tf.constant(images), trainable=False)
        return {k: np.array(v) for k, v in out.items()}
    except Exception as e:  # signature mismatch: not callable the official way
        raise official_format.NotAnOfficialSavedModel(
            f"{saved_model_dir} can't be called as module(images, trainable=False): {e}") from e
    finally:
        del module
        process_memory.release()


def _projection_hiddens(arrays, features, config):
    """The projection head's hiddens (index = ft_proj_selector) computed in numpy from the
    official arrays and the original's final_avg_pool: lets the wiring be chosen before the
    Keras model is built (the full comparison afterwards checks this arithmetic too)."""
    hiddens = [np.asarray(features, np.float64)]
    if not config.include_projection_head:
        return hiddens
    for j in range(config.num_proj_layers):
        base = f"{_PROJ}{j}"
        x = hiddens[-1] @ arrays[f"{base}/dense/kernel"]
        bn = f"{base}/bn_relu/bn/"
        x = (x - arrays[bn + "moving_mean"]) / np.sqrt(arrays[bn + "moving_variance"] + 1e-5)
        x = x * arrays[bn + "gamma"] + (arrays[bn + "beta"] if bn + "beta" in arrays else 0.0)
        if j < config.num_proj_layers - 1:
            x = np.maximum(x, 0.0)
        hiddens.append(x)
    return hiddens


def choose_selector(arrays, reference, config):
    """(ft_proj_selector, {selector: relative difference}) whose logits match the original's.

    Nothing in the variables says which hidden feeds the supervised head (for ResNet-50 1x
    the backbone output and projection layer 0's output are both 2048 wide): every wiring
    of the right width is tried against the original's logits_sup.
    """
    if not config.num_classes or "logits_sup" not in reference:
        return config.ft_proj_selector, {}
    if "final_avg_pool" not in reference:
        raise official_format.NotAnOfficialSavedModel(
            "the SavedModel returns logits_sup but no final_avg_pool endpoint")
    kernel, bias = arrays[_SUP + "kernel"], arrays[_SUP + "bias"]
    diffs = {}
    for selector, h in enumerate(_projection_hiddens(arrays, reference["final_avg_pool"], config)):
        if h.shape[-1] == kernel.shape[0]:
            diffs[selector] = rel_diff(h @ kernel + bias, reference["logits_sup"])
    if not diffs:
        raise ImportMismatchError(
            f"no hidden of {config.name} is {kernel.shape[0]} wide, the supervised head's input")
    best = min(diffs, key=diffs.get)
    if diffs[best] > RTOL:
        listed = ", ".join(f"ft_proj_selector={s}: {d:.3g}" for s, d in diffs.items())
        raise ImportMismatchError(
            f"logits_sup of the SavedModel matches no supervised-head wiring within {RTOL:g} "
            f"relative (largest difference {max(diffs.values()):.3g}, smallest "
            f"{diffs[best]:.3g}; {listed}); refusing to import")
    return best, diffs


def _call(model, images):
    # Keras warns that a bare array doesn't match the ['images'] input structure; it is the
    # documented way to call a one-input functional model, so the warning is noise here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The structure of `inputs`")
        return model(images, training=False)


def compare_endpoints(model, reference, images):
    """{endpoint: max |ours - original| / max |original|} over the endpoints the original has."""
    ours = _call(model, images)
    missing = [k for k in reference if k not in ours]
    if missing:
        raise ImportMismatchError(
            f"the SavedModel returns {missing} but {model.name} does not; refusing to import")
    return {k: rel_diff(ours[k], v) for k, v in reference.items()}


# --------------------------------------------------------------------------- entry points

def import_saved_model(saved_model_dir, architecture=None, input_shape=None, verify=True,
                       probe_images=None, ft_proj_selector=None):
    """(model, report): the zoo model holding the SavedModel's weights, verified.

    architecture: a zoo name (`r50_1x_sk1`) to insist on; None infers it from the variables.
    input_shape: of the Keras model (default (None, None, 3): any image size, as the official
      module; verification then probes at 224 px, 32 px for a CIFAR stem).
    verify: run the original on a probe batch and compare every endpoint (needs TensorFlow).
      It also decides which hidden feeds the supervised head; without it that wiring is
      `ft_proj_selector` (default: 1 where the widths allow, as in the fine-tuned releases).
    """
    import simclrv2.zoo as zoo

    arrays = official_format.Variables(saved_model_dir)  # shapes now, each array when copied
    records = arrays.records
    config = infer_config(arrays, input_shape)
    if architecture is not None:
        wanted = parse_name(architecture)
        config = config.replace(depth=wanted.depth, width=wanted.width, sk=wanted.sk)
    if ft_proj_selector is not None:
        config = config.replace(ft_proj_selector=int(ft_proj_selector))
    report = {"architecture": config.name, "verified": False, "num_variables": len(records)}
    if verify:
        images = probe_batch(config.input_shape, default_side=32 if config.cifar_stem else 224
                             ) if probe_images is None else np.asarray(
            probe_images, np.float32)
        reference = _run_original(saved_model_dir, images)
        selector, selector_diffs = choose_selector(arrays, reference, config)
        config = config.replace(ft_proj_selector=selector)
    model = zoo.build(config)
    assign_weights(model, arrays, config)
    del arrays
    report["config"] = config.to_dict()
    if not verify:
        return model, report
    diffs = compare_endpoints(model, reference, images)
    worst = max(diffs, key=diffs.get)
    if diffs[worst] > RTOL:
        raise ImportMismatchError(
            f"endpoint {worst} differs from the SavedModel's by {diffs[worst]:.3g} (max abs "
            f"difference / max abs value; tolerance {RTOL:g}); all: "
            + ", ".join(f"{k} {v:.3g}" for k, v in sorted(diffs.items())) + "; refusing to import")
    report.update(verified=True,
                  ft_proj_selector=selector,
                  selector_differences={str(k): v for k, v in selector_diffs.items()},
                  endpoint_differences=diffs, probe_shape=list(images.shape))
    return model, report


def save_model_atomic(model, out_path):
    out_path = os.fspath(out_path)
    if not out_path.endswith(".keras"):
        raise ValueError(f"out_path must end in .keras, got {out_path!r}")
    from simclrv2.zoo.keras_file import save_keras_file

    with replacing(out_path) as tmp:
        save_keras_file(model, tmp)


def provenance_path(out_path):
    return os.fspath(out_path)[:-len(".keras")] + ".json"


def convert_saved_model(saved_model_dir, out_path, architecture=None, input_shape=None,
                        verify=True, provenance=None):
    """Imports (and verifies) a SavedModel, writes `out_path` (.keras) plus a JSON beside it.

    The JSON (same name, .json) records the source, the architecture, the converter version,
    the sha256 of every source file and the per-endpoint differences found by verification;
    `provenance` adds fields (URL, stage). Both files appear whole or not at all. Returns the
    Keras model.
    """
    from simclrv2.zoo.download import sha256_of_files

    model, report = import_saved_model(saved_model_dir, architecture, input_shape, verify)
    meta = {
        "source": os.path.abspath(os.fspath(saved_model_dir)),
        "source_sha256": sha256_of_files(saved_model_dir),
        "converter_version": CONVERTER_VERSION,
        "converted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **report,
        **(provenance or {}),
    }
    save_model_atomic(model, out_path)
    # The JSON last: a .keras without its JSON is treated as not converted.
    write_text(provenance_path(out_path), json.dumps(meta, indent=2, sort_keys=True))
    return model


__all__ = ["CONVERTER_VERSION", "ImportMismatchError", "RTOL", "assign_weights",
           "convert_saved_model", "choose_selector", "import_saved_model", "infer_config",
           "official_to_keras_paths", "rel_diff"]
