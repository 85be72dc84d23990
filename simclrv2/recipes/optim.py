"""Optimisers and learning-rate schedule of SimCLRv2 (LARS, momentum SGD, AdamW; warmup + cosine)."""

from __future__ import annotations

import math
import re

import keras
import tensorflow as tf

# Variables matched by these patterns (searched in the variable *path*) get neither weight decay
# nor LARS's trust ratio, like upstream's ['batch_normalization', 'bias', 'head_supervised']:
# BN layers are named bn*, *_bn or sk_conv/bn in the zoo (see docs/CONTRACTS.md).
EXCLUDE_PATTERNS = (r"batch_normalization", r"(^|/)([a-z_]*_)?bn\d*(/|$)", r"bias",
                    r"head_supervised")


def is_excluded(path: str, patterns=EXCLUDE_PATTERNS) -> bool:
    return any(re.search(p, path) for p in patterns)


def _path(variable) -> str:
    return getattr(variable, "path", None) or variable.name


@keras.saving.register_keras_serializable(package="simclrv2")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017) with classic momentum, as SimCLR uses it.

    For each variable w with gradient g (weight decay wd added to g unless excluded):
        trust = eeta * |w| / |g|   (1 when either norm is 0 or the variable is excluded)
        v <- momentum * v + lr * trust * g ;  w <- w - v
    Exclusion is by variable path (`exclude_patterns`, regular expressions).
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, weight_decay_rate=0.0, eeta=0.001,
                 nesterov=False, exclude_patterns=EXCLUDE_PATTERNS, name="lars", **kwargs):
        # Keras' own `weight_decay` is decoupled (w -= lr * wd * w) and applied to every variable
        # not excluded by name; LARS needs it inside the gradient before the trust ratio, so the
        # base class gets none and the rate lives here.
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, weight_decay=None, **kwargs)
        if not 0 <= momentum < 1:
            raise ValueError(f"LARS momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.weight_decay_rate = float(weight_decay_rate)
        self.eeta = float(eeta)
        self.nesterov = bool(nesterov)
        self.exclude_patterns = tuple(exclude_patterns)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = [self.add_variable_from_reference(v, "momentum") for v in variables]
        # Decided once per variable from its path; update_step looks them up by index.
        self._excluded = [is_excluded(_path(v), self.exclude_patterns) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        lr = tf.cast(learning_rate, variable.dtype)
        grad = tf.cast(gradient, variable.dtype)
        index = self._get_variable_index(variable)
        momentum = self.momentums[index]
        excluded = self._excluded[index]
        w = tf.convert_to_tensor(variable)
        if self.weight_decay_rate and not excluded:
            grad = grad + self.weight_decay_rate * w
        scaled_lr = lr
        if not excluded:
            w_norm = tf.norm(w)
            g_norm = tf.norm(grad)
            trust = tf.where(w_norm > 0,
                             tf.where(g_norm > 0, self.eeta * w_norm / tf.maximum(g_norm, 1e-30),
                                      1.0),
                             1.0)
            scaled_lr = lr * tf.cast(trust, variable.dtype)
        next_v = self.momentum * tf.convert_to_tensor(momentum) + scaled_lr * grad
        update = self.momentum * next_v + scaled_lr * grad if self.nesterov else next_v
        self.assign(momentum, next_v)
        self.assign_sub(variable, update)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, weight_decay_rate=self.weight_decay_rate,
                      eeta=self.eeta, nesterov=self.nesterov,
                      exclude_patterns=list(self.exclude_patterns))
        return config


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
