"""Batch norm through TensorFlow's fused kernel (FusedBatchNormV3), in training and in inference.

Keras 3's BatchNormalization trains as a chain of small ops: a cast of the whole activation to
float32 under bfloat16, two reductions for the moments, the normalisation as five element-wise
ops, a cast back, and the gradients of all of them, each a pass over the activation.
TensorFlow's fused kernel does the statistics and the normalisation in one pass each way, reads
bfloat16 directly and keeps its statistics in float32 (docs/training.md, "Speed", has the
profile and the step rates of both on `benchmarks/train_step.py`).

`fuse(model)` routes each call of the model's BatchNormalization layers through that kernel.
The layers keep their class, config and variables, so checkpoints, .keras files and exports do
not change (an export traces Keras's own call: `fuse` changes the instance, not the class). In
inference (every evaluation, a distillation teacher, a frozen block) Keras normalises with the
moving statistics in five element-wise ops and two casts under bfloat16; the kernel does it in
one pass, which oneDNN's graph rewrite can also fold into the convolution before it. The fused
call computes what Keras's does (tests/test_recipes_fused_batch_norm.py compares outputs,
gradients and moving statistics), with one difference undone: in training the kernel's batch
variance carries Bessel's correction n/(n-1), which Keras's moving variance does not. Where it
would not compute the same, the layer's own call runs: a mask, renorm, a channel axis other than
the last, inputs of other than 2 or 4 dimensions, or (in training) synchronized batch norm across
more than one replica (the kernel sees only its replica's batch).
"""

from __future__ import annotations

import types

import keras
import tensorflow as tf

_FUSED_DTYPES = (tf.float32, tf.bfloat16, tf.float16)


def _batch_norm_layers(model):
    # _flatten_layers reaches the layers nested in custom layers (the SK conv's, the heads').
    return [layer for layer in model._flatten_layers(include_self=True, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


def _replicas_in_sync():
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def _fusable_shape(layer, inputs, mask) -> bool:
    rank = len(inputs.shape)
    return bool(mask is None and not layer.renorm and rank in (2, 4)
                and layer.axis in (-1, rank - 1) and inputs.shape[-1] is not None)


def fusable(layer, inputs, training, mask=None) -> bool:
    """Whether the fused kernel computes exactly this training-mode call of `layer`."""
    return bool(training and layer.trainable and _fusable_shape(layer, inputs, mask)
                and not (layer.synchronized and _replicas_in_sync() > 1))


def fusable_inference(layer, inputs, training, mask=None) -> bool:
    """Whether this call normalises with the moving statistics (inference, or a frozen layer,
    Keras's rule) and the fused kernel computes exactly that."""
    return bool(not (training and layer.trainable) and _fusable_shape(layer, inputs, mask))


def _normalize(layer, inputs, is_training):
    """(y, batch mean, batch variance) of FusedBatchNormV3 on `inputs` as NHWC."""
    x = inputs if inputs.dtype in _FUSED_DTYPES else tf.cast(inputs, tf.float32)
    channels = x.shape[-1]
    if len(x.shape) == 2:
        x = tf.reshape(x, [-1, 1, 1, channels])
    gamma = tf.cast(layer.gamma, tf.float32) if layer.scale else tf.ones([channels])
    beta = tf.cast(layer.beta, tf.float32) if layer.center else tf.zeros([channels])
    if is_training:
        mean = variance = tf.constant([], tf.float32)
    else:
        mean = tf.cast(layer.moving_mean, tf.float32)
        variance = tf.cast(layer.moving_variance, tf.float32)
    y, batch_mean, batch_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=x, scale=gamma, offset=beta, mean=mean, variance=variance, epsilon=layer.epsilon,
        exponential_avg_factor=1.0, data_format="NHWC", is_training=is_training)
    if len(inputs.shape) == 2:
        y = tf.reshape(y, tf.shape(inputs))
    return tf.cast(y, layer.compute_dtype), batch_mean, batch_variance, x


def _fused_call(layer, keras_call):
    def call(self, inputs, training=None, mask=None):
        if fusable_inference(self, inputs, training, mask):
            return _normalize(self, inputs, is_training=False)[0]
        if not fusable(self, inputs, training, mask):
            return keras_call(inputs, training=training, mask=mask)
        y, mean, variance, x = _normalize(self, inputs, is_training=True)
        count = tf.cast(tf.size(x) // x.shape[-1], tf.float32)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)  # undo n/(n-1)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(
            self.moving_variance * momentum + variance * (1.0 - momentum))
        return y

    return types.MethodType(call, layer)


def fuse(model) -> int:
    """Routes the calls of `model`'s batch-norm layers through the fused kernel;
    returns how many layers were routed. Calling it again changes nothing."""
    count = 0
    for layer in _batch_norm_layers(model):
        if getattr(layer, "_simclrv2_fused", False):
            continue
        keras_call = layer.call
        layer.call = _fused_call(layer, keras_call)
        layer._simclrv2_fused = True
        count += 1
    return count
