"""SimCLRv2's objectives written once in `keras.ops`: the same code on TensorFlow, JAX and PyTorch.

The TensorFlow recipes (simclrv2.recipes.objectives) call these on their tensors, inside
tf.distribute replicas that gather the negatives themselves; a Keras `fit` on JAX or PyTorch
calls them as an ordinary Keras loss (`NTXent`, `Distillation`). Nothing here imports
TensorFlow.
"""

from __future__ import annotations

import keras
from keras import ops

# Subtracted from the self-similarity logits so that exp() sends them to 0; a large finite number
# rather than -inf keeps the softmax free of NaNs under float16/bfloat16 too.
LARGE_NUM = 1e9


def l2_normalize(x, axis=-1, epsilon=1e-12):
    """x / max(|x|, sqrt(epsilon)), as tf.math.l2_normalize."""
    squares = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squares, epsilon))


def _softmax_cross_entropy(labels, logits):
    return ops.categorical_crossentropy(labels, logits, from_logits=True)


def nt_xent_gathered(h1, h2, h1_all, h2_all, replica_id, temperature):
    """NT-Xent of the local pairs (h1, h2) against the negatives of the whole global batch.

    `h1_all`/`h2_all` are the concatenation over replicas (replica order) of the L2-normalised
    views; the positives of local row i are at column `replica_id * B + i` of the gathered batch.
    With one replica, h1_all is h1 and replica_id 0. Returns (mean loss over the local rows,
    logits_ab, one-hot labels over 2 * global columns).
    """
    batch = ops.shape(h1)[0]
    enlarged = ops.shape(h1_all)[0]
    idx = ops.arange(batch, dtype="int32") + ops.cast(replica_id, "int32") * batch
    labels = ops.one_hot(idx, enlarged * 2, dtype=h1.dtype)
    # A view must not count its own copy as a negative.
    masks = ops.one_hot(idx, enlarged, dtype=h1.dtype)
    logits_aa = ops.matmul(h1, ops.transpose(h1_all)) / temperature - masks * LARGE_NUM
    logits_bb = ops.matmul(h2, ops.transpose(h2_all)) / temperature - masks * LARGE_NUM
    logits_ab = ops.matmul(h1, ops.transpose(h2_all)) / temperature
    logits_ba = ops.matmul(h2, ops.transpose(h1_all)) / temperature
    loss_a = _softmax_cross_entropy(labels, ops.concatenate([logits_ab, logits_aa], axis=1))
    loss_b = _softmax_cross_entropy(labels, ops.concatenate([logits_ba, logits_bb], axis=1))
    return ops.mean(loss_a + loss_b), logits_ab, labels


def check_temperature(temperature, what="temperature"):
    if temperature <= 0:
        raise ValueError(f"{what} must be > 0, got {temperature}")


def nt_xent(hidden, temperature=0.1, hidden_norm=True):
    """SimCLR's contrastive loss on `hidden` = concat([view1, view2]) of the whole batch, in
    float32. Under JAX's keras.distribution.DataParallel the batch is the global one, so every
    device's rows meet the negatives of all devices, as the TF recipes' gathered negatives."""
    check_temperature(temperature)
    hidden = ops.cast(hidden, "float32")  # the softmax over thousands of logits needs float32
    if hidden_norm:
        hidden = l2_normalize(hidden)
    h1, h2 = ops.split(hidden, 2, axis=0)
    return nt_xent_gathered(h1, h2, h1, h2, 0, temperature)[0]


def distillation_loss(teacher_logits, student_logits, temperature=1.0):
    """tau^2 * CE(softmax(teacher / tau), softmax(student / tau)), averaged over the batch.

    The tau^2 factor keeps the gradient scale independent of tau (Hinton et al. 2015); the
    teacher's side carries no gradient.
    """
    check_temperature(temperature, "distillation temperature")
    teacher = ops.stop_gradient(ops.softmax(ops.cast(teacher_logits, "float32") / temperature))
    ce = _softmax_cross_entropy(teacher, ops.cast(student_logits, "float32") / temperature)
    return ops.mean(ce) * temperature ** 2


@keras.saving.register_keras_serializable(package="simclrv2")
class NTXent(keras.losses.Loss):
    """NT-Xent as a Keras loss for `fit`: y_pred is the projection output of concat([view1,
    view2]) (the model sees both views as one batch, so batch norm spans both, as upstream);
    y_true is not read (give zeros)."""

    def __init__(self, temperature=0.1, name="nt_xent", **kwargs):
        super().__init__(name=name, **kwargs)
        check_temperature(temperature)
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        return nt_xent(y_pred, self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="simclrv2")
class Distillation(keras.losses.Loss):
    """`distillation_loss` as a Keras loss: y_true holds the teacher's logits."""

    def __init__(self, temperature=1.0, name="distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        check_temperature(temperature, "distillation temperature")
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        return distillation_loss(y_true, y_pred, self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
