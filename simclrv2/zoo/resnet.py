"""Post-activation ResNet v1 of SimCLRv2 (official tf2/resnet.py), as nested Keras 3 layers.

Every layer is named after its role so that variable paths read like
``block_group2/block1/sk_conv/mixing_conv/kernel``: the importer addresses weights by them.
"""

import keras
from keras import ops

from simclrv2.zoo.config import GROUP_STRIDES, ModelConfig, scaled_channels
from simclrv2.zoo.layers import FixedPaddingConv2D, batch_norm
from simclrv2.zoo.selective_kernel import SelectiveKernelConv

BACKBONE_ENDPOINTS = ("initial_conv", "initial_max_pool", "block_group1", "block_group2",
                      "block_group3", "block_group4", "final_avg_pool")


@keras.saving.register_keras_serializable(package="simclrv2")
class Stem(keras.layers.Layer):
    """Returns (initial_conv, initial_max_pool): the last stem conv before its BN, and the stem output.

    ImageNet: 7x7/2 conv -> BN-ReLU -> 3x3/2 max-pool. With SK (ResNet-D): three 3x3 convs
    (32w/2, 32w, 64w), each followed by BN-ReLU, then the max-pool. CIFAR: 3x3/1 conv -> BN-ReLU.
    """

    def __init__(self, width=1, sk=False, cifar_stem=False, sync_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.width, self.sk, self.cifar_stem = width, bool(sk), bool(cifar_stem)
        self.sync_batch_norm = bool(sync_batch_norm)
        filters = scaled_channels(64, width)
        if cifar_stem:
            specs = [(filters, 3, 1)]
        elif sk:
            half = scaled_channels(32, width)
            specs = [(half, 3, 2), (half, 3, 1), (filters, 3, 1)]
        else:
            specs = [(filters, 7, 2)]
        self.convs, self.bns = [], []
        for index, (channels, kernel, stride) in enumerate(specs, start=1):
            self.convs.append(FixedPaddingConv2D(channels, kernel, stride, name=f"conv{index}"))
            self.bns.append(batch_norm(f"bn{index}", synchronized=self.sync_batch_norm))
        self.max_pool = None if cifar_stem else keras.layers.MaxPooling2D(3, 2, padding="same",
                                                                         name="max_pool")

    # Explicit shapes: without them Keras traces `call` to infer shapes at every nesting level,
    # which made building a ResNet-50 take minutes under the JAX backend.
    def build(self, input_shape):
        shape = input_shape
        for conv, bn in zip(self.convs, self.bns):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            bn.build(shape)
        if self.max_pool is not None:
            self.max_pool.build(shape)

    def compute_output_shape(self, input_shape):
        shape = input_shape
        for conv in self.convs:
            shape = conv.compute_output_shape(shape)
        initial_conv = tuple(shape)
        if self.max_pool is not None:
            shape = self.max_pool.compute_output_shape(shape)
        return initial_conv, tuple(shape)

    def call(self, inputs, training=None):
        x = inputs
        initial_conv = None
        for conv, bn in zip(self.convs, self.bns):
            x = conv(x)
            initial_conv = x
            x = ops.relu(bn(x, training=training))
        if self.max_pool is not None:
            x = self.max_pool(x)
        return initial_conv, x

    def get_config(self):
        config = super().get_config()
        config.update(width=self.width, sk=self.sk, cifar_stem=self.cifar_stem,
                      sync_batch_norm=self.sync_batch_norm)
        return config


def _padded(shape, extra):
    shape = list(shape)
    for axis in (1, 2):
        if shape[axis] is not None:
            shape[axis] += extra
    return tuple(shape)


class _ResidualBlockBase(keras.layers.Layer):
    """The shortcut shared by both block kinds; the first block of a group projects it."""

    expansion = 1

    def __init__(self, filters, strides=1, use_projection=False, sk=False, sk_ratio=0.0625,
                 sync_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.strides = int(filters), int(strides)
        self.use_projection, self.sk, self.sk_ratio = bool(use_projection), bool(sk), float(sk_ratio)
        self.sync_batch_norm = bool(sync_batch_norm)
        self.shortcut_pool = None
        self.shortcut_conv = self.shortcut_bn = None
        if self.use_projection:
            out = self.filters * self.expansion
            if self.sk:
                # ResNet-D: average-pool then a stride-1 1x1 conv, so no activation is skipped.
                # Stride 1 (block_group1) keeps SAME padding, which averages valid pixels only.
                self.shortcut_pool = keras.layers.AveragePooling2D(
                    2, self.strides, padding="valid" if self.strides > 1 else "same",
                    name="shortcut_pool")
                self.shortcut_conv = FixedPaddingConv2D(out, 1, 1, name="shortcut_conv")
            else:
                self.shortcut_conv = FixedPaddingConv2D(out, 1, self.strides, name="shortcut_conv")
            self.shortcut_bn = batch_norm("shortcut_bn", synchronized=self.sync_batch_norm)

    def _main_branch(self):
        """(layer, is_conv) pairs of the residual branch in order, for shape bookkeeping."""
        raise NotImplementedError

    def build(self, input_shape):
        if self.use_projection:
            shape = input_shape
            if self.shortcut_pool is not None:
                if self.strides > 1:
                    shape = _padded(shape, 1)
                self.shortcut_pool.build(shape)
                shape = self.shortcut_pool.compute_output_shape(shape)
            self.shortcut_conv.build(shape)
            self.shortcut_bn.build(self.shortcut_conv.compute_output_shape(shape))
        shape = input_shape
        for layer in self._main_branch():
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def compute_output_shape(self, input_shape):
        shape = input_shape
        for layer in self._main_branch():
            shape = layer.compute_output_shape(shape)
        return tuple(shape)

    def _shortcut(self, inputs, training):
        if not self.use_projection:
            return inputs
        x = inputs
        if self.shortcut_pool is not None:
            if self.strides > 1:
                x = ops.pad(x, [(0, 0), (0, 1), (0, 1), (0, 0)])
            x = self.shortcut_pool(x)
        return self.shortcut_bn(self.shortcut_conv(x), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, strides=self.strides, use_projection=self.use_projection,
                      sk=self.sk, sk_ratio=self.sk_ratio, sync_batch_norm=self.sync_batch_norm)
        return config


@keras.saving.register_keras_serializable(package="simclrv2")
class BasicBlock(_ResidualBlockBase):
    """Two 3x3 convs (ResNet-18/34). SK models keep plain convs here but use ResNet-D shortcuts."""

    expansion = 1

    def __init__(self, filters, strides=1, **kwargs):
        super().__init__(filters, strides, **kwargs)
        sync = self.sync_batch_norm
        self.conv1 = FixedPaddingConv2D(self.filters, 3, self.strides, name="conv1")
        self.bn1 = batch_norm("bn1", synchronized=sync)
        self.conv2 = FixedPaddingConv2D(self.filters, 3, 1, name="conv2")
        # gamma = 0: every residual block starts as the identity (Goyal et al. 2017).
        self.bn2 = batch_norm("bn2", zero_gamma=True, synchronized=sync)

    def _main_branch(self):
        return [self.conv1, self.bn1, self.conv2, self.bn2]

    def call(self, inputs, training=None):
        shortcut = self._shortcut(inputs, training)
        x = ops.relu(self.bn1(self.conv1(inputs), training=training))
        x = self.bn2(self.conv2(x), training=training)
        return ops.relu(x + shortcut)


@keras.saving.register_keras_serializable(package="simclrv2")
class BottleneckBlock(_ResidualBlockBase):
    """1x1 -> 3x3 (or selective kernel) -> 1x1 with 4x expansion (ResNet-50 and deeper)."""

    expansion = 4

    def __init__(self, filters, strides=1, **kwargs):
        super().__init__(filters, strides, **kwargs)
        sync = self.sync_batch_norm
        self.conv1 = FixedPaddingConv2D(self.filters, 1, 1, name="conv1")
        self.bn1 = batch_norm("bn1", synchronized=sync)
        if self.sk:
            self.sk_conv = SelectiveKernelConv(self.filters, self.strides, self.sk_ratio,
                                               sync_batch_norm=sync, name="sk_conv")
        else:
            self.conv2 = FixedPaddingConv2D(self.filters, 3, self.strides, name="conv2")
            self.bn2 = batch_norm("bn2", synchronized=sync)
        self.conv3 = FixedPaddingConv2D(4 * self.filters, 1, 1, name="conv3")
        self.bn3 = batch_norm("bn3", zero_gamma=True, synchronized=sync)

    def _main_branch(self):
        middle = [self.sk_conv] if self.sk else [self.conv2, self.bn2]
        return [self.conv1, self.bn1, *middle, self.conv3, self.bn3]

    def call(self, inputs, training=None):
        shortcut = self._shortcut(inputs, training)
        x = ops.relu(self.bn1(self.conv1(inputs), training=training))
        if self.sk:
            x = self.sk_conv(x, training=training)
        else:
            x = ops.relu(self.bn2(self.conv2(x), training=training))
        x = self.bn3(self.conv3(x), training=training)
        return ops.relu(x + shortcut)


BLOCKS = {"basic": BasicBlock, "bottleneck": BottleneckBlock}


@keras.saving.register_keras_serializable(package="simclrv2")
class BlockGroup(keras.layers.Layer):
    """`num_blocks` residual blocks; the first projects the shortcut and carries the stride."""

    def __init__(self, block_kind, filters, num_blocks, strides, sk=False, sk_ratio=0.0625,
                 sync_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.block_kind, self.filters, self.num_blocks = block_kind, int(filters), int(num_blocks)
        self.strides, self.sk, self.sk_ratio = int(strides), bool(sk), float(sk_ratio)
        self.sync_batch_norm = bool(sync_batch_norm)
        block_class = BLOCKS[block_kind]
        self.blocks = [
            block_class(self.filters, self.strides if i == 0 else 1, use_projection=i == 0,
                        sk=self.sk, sk_ratio=self.sk_ratio, sync_batch_norm=self.sync_batch_norm,
                        name=f"block{i + 1}")
            for i in range(self.num_blocks)
        ]

    def build(self, input_shape):
        shape = input_shape
        for block in self.blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)

    def compute_output_shape(self, input_shape):
        shape = input_shape
        for block in self.blocks:
            shape = block.compute_output_shape(shape)
        return tuple(shape)

    def call(self, inputs, training=None):
        x = inputs
        for block in self.blocks:
            x = block(x, training=training)
        return x

    def get_config(self):
        config = super().get_config()
        config.update(block_kind=self.block_kind, filters=self.filters, num_blocks=self.num_blocks,
                      strides=self.strides, sk=self.sk, sk_ratio=self.sk_ratio,
                      sync_batch_norm=self.sync_batch_norm)
        return config


def backbone_endpoints(images, config: ModelConfig):
    """Applies the backbone to a symbolic tensor; returns the dict of official endpoints."""
    stem = Stem(config.width, config.sk, config.cifar_stem, config.sync_batch_norm, name="stem")
    initial_conv, x = stem(images)
    outputs = {"initial_conv": initial_conv, "initial_max_pool": x}
    for index, (filters, num_blocks, strides) in enumerate(
            zip(config.group_filters, config.blocks_per_group, GROUP_STRIDES), start=1):
        x = BlockGroup(config.block_kind, filters, num_blocks, strides, sk=config.sk,
                       sk_ratio=config.sk_ratio, sync_batch_norm=config.sync_batch_norm,
                       name=f"block_group{index}")(x)
        outputs[f"block_group{index}"] = x
    outputs["final_avg_pool"] = keras.layers.GlobalAveragePooling2D(name="final_avg_pool")(x)
    return outputs
