"""SimCLRv2's pretraining and fine-tuning as Keras `fit` on any backend (JAX, PyTorch, TensorFlow).

The networks are the zoo's, the objectives and LARS the recipes' own keras.ops code
(portable_objectives, lars); the batches come from simclrv2.data's tf.data pipelines, which
Keras' fit reads on every backend (TensorFlow is then needed for the input side only).

    net = zoo.build("r18_0.5x_sk0", input_shape=(32, 32, 3), num_classes=None)
    projector = keras_fit.pretrain_model(net, learning_rate=1.0)
    projector.fit(keras_fit.pretrain_batches(data.pretrain_dataset(source, 256)), steps_per_epoch=...)

This is the minimal path: no checkpoints, resume, schedules or monitors (the stage commands on
tf.distribute have them, and stay the reference for multi-worker and TPU training).
"""

from __future__ import annotations

import keras

from simclrv2.recipes.lars import LARS
from simclrv2.recipes.portable_objectives import NTXent


def pretrain_batches(dataset):
    """simclrv2.data.pretrain_dataset's `((view1, view2), labels)` as fit's `(x, y)`: both views
    in one batch, view 1 first (batch norm spans both, as upstream), targets unused zeros."""
    import tensorflow as tf

    def pair(views, labels):
        return tf.concat(views, axis=0), tf.zeros([2 * tf.shape(labels)[0]], tf.float32)

    return dataset.map(pair, num_parallel_calls=tf.data.AUTOTUNE)


def pretrain_model(model, learning_rate=0.3, temperature=0.1, weight_decay=1e-6, momentum=0.9):
    """images -> projection head output, compiled with NT-Xent and LARS; shares `model`'s
    variables, so `model` holds the pretrained weights after fit."""
    projector = keras.Model(model.input, model.output["proj_head_output"],
                            name=f"{model.name}_projector")
    projector.compile(optimizer=LARS(learning_rate, momentum=momentum,
                                     weight_decay_rate=weight_decay),
                      loss=NTXent(temperature))
    return projector


def finetune_model(model, learning_rate=0.05, weight_decay=0.0, momentum=0.9):
    """images -> logits_sup (the supervised head, on the projection layer the model was built
    to read), compiled with softmax cross-entropy and LARS; shares `model`'s variables."""
    from simclrv2.zoo import classifier_model

    classifier = classifier_model(model)
    classifier.compile(optimizer=LARS(learning_rate, momentum=momentum,
                                      weight_decay_rate=weight_decay),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    return classifier
