"""The SavedModel format: saved_model/ with the ExportGraph's signatures, and the call of each
signature the way TF Serving makes it (what verification compares)."""

from __future__ import annotations

import numpy as np

DIRECTORY = "saved_model"


def write_saved_model(graph, path):
    """Saves `graph` (an ExportGraph) to `path` with every one of its functions as a signature."""
    import tensorflow as tf

    root = tf.__internal__.tracking.AutoTrackable()
    # hub.KerasLayer / TFSMLayer conventions: these lists decide what `trainable=True` trains.
    root.variables = graph.trainable + graph.non_trainable
    root.trainable_variables = [v for v in graph.trainable if v.trainable]
    root.non_trainable_variables = [v for v in root.variables if not v.trainable]
    root.regularization_losses = []
    for name, f in graph.functions.items():
        setattr(root, name, f)
    # Callable root for hub.KerasLayer: the fine-tune logits when there are any.
    root.__call__ = graph.functions.get("finetune", graph.functions["features"])
    signatures = {name: f.get_concrete_function() for name, f in graph.functions.items()}
    tf.saved_model.save(root, str(path), signatures=signatures)


def run_saved_model(saved_model_dir, images, encoded, temperatures):
    """{signature: {output: array}} from the SavedModel's signatures as TF Serving calls them;
    distill once per temperature, under the name `distill[temperature=T]`."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model_dir))
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
