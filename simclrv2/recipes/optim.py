"""Optimisers and learning-rate schedule of SimCLRv2 (LARS, momentum SGD, AdamW; warmup + cosine)."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

# LARS and the variables it leaves alone are written in keras.ops (simclrv2.recipes.lars), the
# same code on every backend; they are re-exported here for the recipes.
from simclrv2.recipes.lars import EXCLUDE_PATTERNS, LARS, is_excluded  # noqa: F401
from simclrv2.recipes.lars import variable_path as _path


@keras.saving.register_keras_serializable(package="simclrv2")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak_lr` over `warmup_steps`, then cosine decay to 0 at
    `total_steps` (upstream's WarmupAndDecayScheduler with the scaling done by `scaled_lr`)."""

    def __init__(self, peak_lr, warmup_steps, total_steps):
        if total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], "
                             f"got {warmup_steps}")
        self.peak_lr = float(peak_lr)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.peak_lr * step / float(max(self.warmup_steps, 1))
        decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        progress = tf.clip_by_value((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = 0.5 * self.peak_lr * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {"peak_lr": self.peak_lr, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps}


def scaled_lr(base_lr: float, global_batch: int, scaling: str) -> float:
    """`linear`: base * B / 256 (Goyal et al.); `sqrt`: base * sqrt(B) (SimCLRv2's choice)."""
    if scaling == "linear":
        return base_lr * global_batch / 256.0
    if scaling == "sqrt":
        return base_lr * math.sqrt(global_batch)
    if scaling == "none":
        return base_lr
    raise ValueError(f"learning_rate_scaling must be 'linear', 'sqrt' or 'none', got {scaling!r}")


def build_optimizer(name: str, learning_rate, weight_decay: float = 0.0, momentum: float = 0.9):
    """`lars`, `momentum` (SGD; weight decay is then an L2 loss, see `l2_regularization`) or
    `adamw` (decoupled decay; call `exclude_variables` once the model is built)."""
    if name == "lars":
        return LARS(learning_rate, momentum=momentum, weight_decay_rate=weight_decay)
    if name == "momentum":
        return keras.optimizers.SGD(learning_rate, momentum=momentum)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'lars', 'momentum' or 'adamw', got {name!r}")


def exclude_variables(optimizer, variables):
    """Tells AdamW which variables (by path) get no decay; LARS decides by itself."""
    if isinstance(optimizer, keras.optimizers.AdamW):
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in variables if is_excluded(_path(v))])


def l2_regularization(optimizer_name: str, weight_decay: float, variables):
    """The weight-decay term that goes into the loss, like upstream's add_weight_decay:
    momentum SGD: wd * sum(l2) over the non-excluded variables; LARS: only the supervised head's
    kernel (LARS decays the rest itself and excludes the head); AdamW: none (decoupled)."""
    if not weight_decay or optimizer_name == "adamw":
        return tf.constant(0.0)
    if optimizer_name == "lars":
        chosen = [v for v in variables
                  if "head_supervised" in _path(v) and "bias" not in _path(v)]
    else:
        chosen = [v for v in variables if not is_excluded(_path(v))]
    if not chosen:
        return tf.constant(0.0)
    return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in chosen])
