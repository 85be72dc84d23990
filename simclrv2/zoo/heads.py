"""The heads of SimCLRv2 (official tf2/model.py): the projection head and the supervised head."""

import keras
from keras import ops

from simclrv2.zoo.layers import batch_norm


def head_initializer():
    return keras.initializers.RandomNormal(stddev=0.01)


@keras.saving.register_keras_serializable(package="simclrv2")
class ProjectionHead(keras.layers.Layer):
    """`num_layers` x (Dense without bias -> BN); ReLU on all but the last, whose BN has no beta.

    Returns the outputs of every layer, so that a supervised head can read any of them
    (SimCLRv2 fine-tunes from the first one, `ft_proj_selector=1`).
    """

    def __init__(self, num_layers=3, out_dim=128, sync_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.num_layers, self.out_dim = int(num_layers), int(out_dim)
        self.sync_batch_norm = bool(sync_batch_norm)
        self.denses, self.bns = [], []

    def build(self, input_shape):
        width = int(input_shape[-1])
        for index in range(self.num_layers):
            last = index == self.num_layers - 1
            dense = keras.layers.Dense(self.out_dim if last else width, use_bias=False,
                                       kernel_initializer=head_initializer(), name=f"dense{index}")
            bn = batch_norm(f"bn{index}", center=not last, synchronized=self.sync_batch_norm)
            dense.build((input_shape[0], width))
            bn.build((input_shape[0], self.out_dim if last else width))
            self.denses.append(dense)
            self.bns.append(bn)

    def call(self, inputs, training=None):
        hiddens, x = [], inputs
        for index, (dense, bn) in enumerate(zip(self.denses, self.bns)):
            x = bn(dense(x), training=training)
            if index != self.num_layers - 1:
                x = ops.relu(x)
            hiddens.append(x)
        return tuple(hiddens)

    def compute_output_shape(self, input_shape):
        width = input_shape[-1]
        return tuple((input_shape[0], self.out_dim if i == self.num_layers - 1 else width)
                     for i in range(self.num_layers))

    def get_config(self):
        config = super().get_config()
        config.update(num_layers=self.num_layers, out_dim=self.out_dim,
                      sync_batch_norm=self.sync_batch_norm)
        return config


def supervised_head(num_classes, name="head_supervised"):
    """Linear classifier with bias; the name is what optimizers use to exclude it from LARS decay."""
    return keras.layers.Dense(num_classes, kernel_initializer=head_initializer(),
                              bias_initializer="zeros", name=name)
