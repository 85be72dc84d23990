"""LARS, SimCLR's optimizer, written once in `keras.ops`: the same update on TensorFlow, JAX and
PyTorch (the TF recipes get it through simclrv2.recipes.optim). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import re

import keras
from keras import ops

# Variables matched by these patterns (searched in the variable *path*) get neither weight decay
# nor LARS's trust ratio, like upstream's ['batch_normalization', 'bias', 'head_supervised']:
# BN layers are named bn*, *_bn or sk_conv/bn in the zoo (see docs/CONTRACTS.md).
EXCLUDE_PATTERNS = (r"batch_normalization", r"(^|/)([a-z_]*_)?bn\d*(/|$)", r"bias",
                    r"head_supervised")


def is_excluded(path: str, patterns=EXCLUDE_PATTERNS) -> bool:
    return any(re.search(p, path) for p in patterns)


def variable_path(variable) -> str:
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
        self._excluded = [is_excluded(variable_path(v), self.exclude_patterns) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        grad = ops.cast(gradient, variable.dtype)
        index = self._get_variable_index(variable)
        momentum = self.momentums[index]
        excluded = self._excluded[index]
        w = ops.convert_to_tensor(variable)
        if self.weight_decay_rate and not excluded:
            grad = grad + self.weight_decay_rate * w
        scaled_lr = lr
        if not excluded:
            w_norm = ops.sqrt(ops.sum(ops.square(w)))
            g_norm = ops.sqrt(ops.sum(ops.square(grad)))
            ratio = self.eeta * w_norm / ops.maximum(g_norm, 1e-30)
            trust = ops.where(w_norm > 0, ops.where(g_norm > 0, ratio, 1.0), 1.0)
            scaled_lr = lr * ops.cast(trust, variable.dtype)
        next_v = self.momentum * ops.convert_to_tensor(momentum) + scaled_lr * grad
        update = self.momentum * next_v + scaled_lr * grad if self.nesterov else next_v
        self.assign(momentum, next_v)
        self.assign_sub(variable, update)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, weight_decay_rate=self.weight_decay_rate,
                      eeta=self.eeta, nesterov=self.nesterov,
                      exclude_patterns=list(self.exclude_patterns))
        return config
