"""Each stage's network: built from the zoo (fine-tuning: in the architecture of the network it
starts from, whose weights it copies), frozen up to a block, batch norm routed through the fused
kernel, synchronised across replicas when the config says so."""

from __future__ import annotations

import keras
import tensorflow as tf

import simclrv2.zoo as zoo
from simclrv2.recipes import fused_batch_norm
from simclrv2.recipes.config import ConfigError


def _input_shape(config):
    return (config.image_size, config.image_size, 3)


def pretraining_network(config, num_classes):
    """The encoder with its projection head, and a linear head on `num_classes` when the config
    evaluates linearly while pretraining."""
    model = zoo.build(
        config.model, num_classes=num_classes if config.lineareval_while_pretraining else None,
        input_shape=_input_shape(config), num_proj_layers=config.num_proj_layers,
        proj_out_dim=config.proj_out_dim, ft_proj_selector=config.ft_proj_selector,
        sync_batch_norm=config.global_bn)
    fuse_batch_norm(config, model)
    return model


def finetuning_network(config, source, num_classes):
    """The network fine-tuning trains: `source`'s architecture (stem included) and weights with a
    new supervised head, or config.model from scratch when `source` is None."""
    if source is not None and not hasattr(source, "simclr_config"):
        raise ConfigError(f"{config.checkpoint} is not a SimCLRv2 Keras model; fine-tuning needs "
                          f"a run's model_dir or a .keras file (`simclrv2 convert` makes one)")
    options = dict(num_classes=num_classes, ft_proj_selector=config.ft_proj_selector,
                   sync_batch_norm=config.global_bn, input_shape=_input_shape(config))
    if config.ft_proj_selector > 0:
        options["include_projection_head"] = True
    model = zoo.build(source.simclr_config if source is not None else config.model, **options)
    if source is not None:
        copy_weights(source, model)
    if config.zero_init_logits_layer:
        for variable in model.get_layer("head_supervised").weights:
            variable.assign(tf.zeros_like(variable))
    freeze(model, config.fine_tune_after_block)
    fuse_batch_norm(config, model)
    return model


def student_network(config, num_classes):
    """Distillation's student: config.student with a supervised head (and a projection head,
    read from its first layer, when config.student_proj_head)."""
    student = zoo.build(config.student, num_classes=num_classes,
                        include_projection_head=config.student_proj_head,
                        ft_proj_selector=1 if config.student_proj_head else 0,
                        input_shape=_input_shape(config), sync_batch_norm=config.global_bn)
    fuse_batch_norm(config, student)
    return student


def copy_weights(source, target):
    """Copies every variable of `target` but its supervised head (new, for the new classes) from
    the same path in `source`."""
    by_path = {v.path: v for v in source.weights}
    missing = []
    for variable in target.weights:
        if "head_supervised" in variable.path:
            continue
        origin = by_path.get(variable.path)
        if origin is None or tuple(origin.shape) != tuple(variable.shape):
            missing.append(variable.path)
            continue
        variable.assign(origin.numpy())
    if missing:
        raise ConfigError(f"the checkpoint lacks {len(missing)} variables the model needs, e.g. "
                          f"{missing[:3]}; is it the same architecture (with a projection head "
                          f"when ft_proj_selector > 0)?")


def freeze(model, after_block):
    """fine_tune_after_block=k: stem and block groups 1..k stop training (and their BN layers
    switch to inference mode, Keras' rule for frozen BN)."""
    if after_block < 0:
        return
    model.get_layer("stem").trainable = False
    for group in range(1, after_block + 1):
        model.get_layer(f"block_group{group}").trainable = False


def fuse_batch_norm(config, model):
    """Batch norm runs through TensorFlow's fused kernel unless config.fused_batch_norm is
    false (fused_batch_norm.py says what it computes and where Keras's call stays)."""
    # An ExportedNetwork (a SavedModel) has its graph fixed: only Keras models are routed.
    if config.fused_batch_norm and isinstance(model, keras.Model):
        fused_batch_norm.fuse(model)
