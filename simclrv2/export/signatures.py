"""The export's functions: the model's weights as the export's variables and the SavedModel
signatures on them, with the serving preprocessing of simclrv2.data's evaluation pipeline.

Signatures: serving_default, finetune, distill and serving_bytes (logits; only with a supervised
head), features, projection (with a projection head) and hidden. See docs/export.md.
"""

from __future__ import annotations

import warnings

LOGIT_SIGNATURES = ("serving_default", "finetune", "distill", "serving_bytes")


def preprocess_encoded(encoded, image_size):
    """One JPEG/PNG/BMP/GIF string -> float32 [S, S, 3] in [0, 1]: the evaluation preprocessing
    of simclrv2.data.eval_dataset (centre crop of 0.875 of the shorter side, none at <= 32 px;
    bicubic resize; clip, since bicubic overshoots)."""
    from simclrv2.data.pipeline import preprocess_for_eval
    from simclrv2.data.sources import decode_image

    return preprocess_for_eval(decode_image(encoded), image_size)


def preprocessing_description(image_size):
    from simclrv2.data.pipeline import eval_crop_proportion

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


def finetune_variable_paths(config):
    """Paths (prefixes) of the fine-tune head: projection layers 0..ft_proj_selector-1 and the
    supervised head; the only variables exported as trainable."""
    prefixes = ["head_supervised/"]
    if config.include_projection_head:
        for i in range(config.ft_proj_selector):
            prefixes += [f"proj_head/dense{i}/", f"proj_head/bn{i}/"]
    return tuple(prefixes)


def export_variable(variable, trainable, name):
    """A tf.Variable over `variable`'s storage (a Keras variable of the TensorFlow backend) under
    another name and trainable flag: what the SavedModel records for that weight. TensorFlow
    fixes a variable's trainable flag when it is created, and the export marks only the
    fine-tune head trainable; a second variable object on the same resource does that without
    a second copy of the weights. A variable whose storage can't be shared (a distributed one)
    is copied."""
    import tensorflow as tf
    from tensorflow.python.ops import resource_variable_ops

    value = variable.value
    if type(value) is not resource_variable_ops.ResourceVariable:
        return tf.Variable(variable.numpy(), trainable=trainable, name=name)
    return resource_variable_ops.BaseResourceVariable(
        trainable=trainable, shape=value.shape, dtype=value.dtype, handle=value.handle,
        handle_name=name, unique_id=value._unique_id, in_graph_mode=False)


class ExportGraph:
    """The export's tf.Variables (views of the model's weights: export_variable) and its
    tf.functions.

    The export variables let the SavedModel mark exactly the fine-tune head trainable (a Keras
    variable's tf.Variable keeps the trainable flag it was created with); `run` calls the Keras
    graph statelessly on them, so the functions compute what the Keras model computes.
    """

    def __init__(self, model, image_size, temperature):
        import keras
        import tensorflow as tf

        self.model, self.size, self.temperature = model, image_size, float(temperature)
        config = model.simclr_config
        self.has_logits = bool(config.num_classes)
        self.has_projection = bool(config.include_projection_head)
        head = finetune_variable_paths(config) if self.has_logits else ()

        self._head = head
        self._variables = None  # made when a format first needs them
        self.head_paths = sorted(v.path for v in model.trainable_variables
                                 if v.path.startswith(head) and v.trainable) if head else []
        self.images_spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32,
                                         name="images")
        # One traced sub-network per part, called by the signatures: each signature captures
        # only the variables it reads (so TFSMLayer(features) holds no head weights), and the
        # backbone is traced once per part rather than once per signature.
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
                lambda images, sub=sub: self.run(sub, images),
                input_signature=[self.images_spec], autograph=False)
        self.functions, self.skipped = self._functions()

    def _export_variables(self):
        """(trainable, non-trainable, {id(Keras variable): export variable}): every weight as a
        tf.Variable of the export's own name and trainable flag, made once, by the first format
        that traces a function. Each is a second view of the Keras variable's storage, not a
        copy (an export holds the weights once), so the model must not change while it is
        exported: `export_model` owns it until it returns."""
        import tensorflow as tf

        if self._variables is None:
            model, head = self.model, self._head

            def view(v, trainable):
                return export_variable(v, trainable, name=v.path.replace("/", "__"))

            # Out of any function being traced: the first trace is what asks for them.
            with tf.init_scope():
                trainable = [view(v, v.path.startswith(head) and v.trainable)
                             for v in model.trainable_variables]
                non_trainable = [view(v, False) for v in model.non_trainable_variables]
            by_id = {id(v): s for v, s in zip(
                model.trainable_variables + model.non_trainable_variables,
                trainable + non_trainable)}
            self._variables = (trainable, non_trainable, by_id)
        return self._variables

    @property
    def trainable(self):
        return self._export_variables()[0]

    @property
    def non_trainable(self):
        return self._export_variables()[1]

    def run(self, sub, images, replaced=None):
        """The float32 outputs of `sub`, a Keras model on this model's layers, computed with the
        export variables, or, for a Keras variable v with id(v) in `replaced`, that tensor."""
        import tensorflow as tf

        by_id, replaced = self._export_variables()[2], replaced or {}

        def values(variables):
            return [replaced.get(id(v), by_id[id(v)]) for v in variables]

        trainable, non_trainable = values(sub.trainable_variables), values(
            sub.non_trainable_variables)
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

    def signature_report(self):
        """{signature: {"inputs": [names], "outputs": [names]}}, as config.json records them."""
        report = {}
        for name, f in self.functions.items():
            concrete = f.get_concrete_function()
            report[name] = {"inputs": [s.name for s in concrete.structured_input_signature[0]],
                            "outputs": sorted(concrete.structured_outputs)}
        return report
