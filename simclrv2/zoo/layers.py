"""The building bricks shared by every SimCLRv2 ResNet: convolutions and batch norm as upstream."""

import keras

BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.9


def conv_initializer():
    # VarianceScaling() with its defaults: scale 1, fan_in, truncated normal (upstream).
    return keras.initializers.VarianceScaling(scale=1.0, mode="fan_in", distribution="truncated_normal")


def batch_norm(name, *, zero_gamma=False, center=True, synchronized=False):
    return keras.layers.BatchNormalization(
        axis=-1,
        momentum=BATCH_NORM_MOMENTUM,
        epsilon=BATCH_NORM_EPSILON,
        center=center,
        gamma_initializer="zeros" if zero_gamma else "ones",
        synchronized=synchronized,
        name=name,
    )


@keras.saving.register_keras_serializable(package="simclrv2")
class FixedPaddingConv2D(keras.layers.Conv2D):
    """Conv without bias; stride > 1 pads explicitly (k-1 split begin/end) then uses VALID.

    SAME padding with stride 2 on an even input puts the extra row at the end only, which shifts
    features by half a pixel against the official checkpoints; explicit padding matches them.
    """

    def __init__(self, filters, kernel_size, strides=1, **kwargs):
        for fixed in ("padding", "use_bias", "kernel_initializer"):
            kwargs.pop(fixed, None)
        strides = int(strides[0] if isinstance(strides, (tuple, list)) else strides)
        kernel_size = int(kernel_size[0] if isinstance(kernel_size, (tuple, list)) else kernel_size)
        super().__init__(filters, kernel_size, strides=strides,
                         padding="valid" if strides > 1 else "same", use_bias=False,
                         kernel_initializer=conv_initializer(), **kwargs)
        pad_total = kernel_size - 1
        self._pad = (pad_total // 2, pad_total - pad_total // 2) if strides > 1 else None

    def call(self, inputs):
        if self._pad is not None:
            inputs = keras.ops.pad(inputs, [(0, 0), self._pad, self._pad, (0, 0)])
        return super().call(inputs)

    def compute_output_shape(self, input_shape):
        if self._pad is not None:
            input_shape = list(input_shape)
            for axis in (1, 2):
                if input_shape[axis] is not None:
                    input_shape[axis] += sum(self._pad)
        return super().compute_output_shape(tuple(input_shape))
