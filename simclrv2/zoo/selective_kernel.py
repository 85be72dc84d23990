"""Selective-kernel convolution (Li et al. 2019, arXiv:1903.06586) in the SimCLRv2 form.

One 3x3 convolution produces two streams (the two halves of its 2f channels); a small gating
network on their pooled sum decides, per channel, how much of each stream to keep. Reusable by
any model: it only needs the block's filters, stride and sk_ratio.
"""

import keras
from keras import ops

from simclrv2.zoo.config import SK_MIN_DIM, SK_RATIO
from simclrv2.zoo.layers import FixedPaddingConv2D, batch_norm, conv_initializer


@keras.saving.register_keras_serializable(package="simclrv2")
class SelectiveKernelConv(keras.layers.Layer):
    """3x3 conv to 2f -> BN-ReLU -> two streams mixed by a softmax gate -> f channels."""

    def __init__(self, filters, strides=1, sk_ratio=SK_RATIO, min_dim=SK_MIN_DIM,
                 sync_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)
        self.sk_ratio = float(sk_ratio)
        self.min_dim = int(min_dim)
        self.sync_batch_norm = bool(sync_batch_norm)
        self.mid_dim = max(int(self.filters * self.sk_ratio), self.min_dim)
        self.conv = FixedPaddingConv2D(2 * self.filters, 3, self.strides, name="conv")
        self.bn = batch_norm("bn", synchronized=self.sync_batch_norm)
        self.reduce_conv = keras.layers.Conv2D(self.mid_dim, 1, use_bias=False,
                                               kernel_initializer=conv_initializer(),
                                               name="reduce_conv")
        self.reduce_bn = batch_norm("reduce_bn", synchronized=self.sync_batch_norm)
        self.mixing_conv = keras.layers.Conv2D(2 * self.filters, 1, use_bias=False,
                                               kernel_initializer=conv_initializer(),
                                               name="mixing_conv")

    def build(self, input_shape):
        self.conv.build(input_shape)
        streams_shape = self.conv.compute_output_shape(input_shape)
        self.bn.build(streams_shape)
        pooled_shape = (input_shape[0], 1, 1, self.filters)
        self.reduce_conv.build(pooled_shape)
        self.reduce_bn.build((input_shape[0], 1, 1, self.mid_dim))
        self.mixing_conv.build((input_shape[0], 1, 1, self.mid_dim))

    def call(self, inputs, training=None):
        streams = ops.relu(self.bn(self.conv(inputs), training=training))
        stream_a, stream_b = streams[..., :self.filters], streams[..., self.filters:]
        pooled = ops.mean(stream_a + stream_b, axis=(1, 2), keepdims=True)
        gate = ops.relu(self.reduce_bn(self.reduce_conv(pooled), training=training))
        gate = self.mixing_conv(gate)
        # The softmax over the two streams' gate logits, written as the sigmoid of their
        # difference (softmax([x, y])[0] == sigmoid(x - y)): the same gate without stacking the
        # streams on a new axis, which exported graphs turned into transposes, squeezes and
        # layout changes around every SK block (docs/export.md measures what it saved).
        weight_a = ops.sigmoid(gate[..., :self.filters] - gate[..., self.filters:])
        # weight_a * a + (1 - weight_a) * b, with one product of full-size tensors instead of two.
        return stream_b + weight_a * (stream_a - stream_b)

    def compute_output_shape(self, input_shape):
        shape = self.conv.compute_output_shape(input_shape)
        return tuple(shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, strides=self.strides, sk_ratio=self.sk_ratio,
                      min_dim=self.min_dim, sync_batch_norm=self.sync_batch_norm)
        return config
