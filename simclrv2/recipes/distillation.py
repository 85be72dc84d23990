"""Stage 3, distillation: a student trained on a fine-tuned teacher's soft labels (plus, with
labeled_weight > 0, cross-entropy on the labeled fraction)."""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from simclrv2 import precision as precision_lib
from simclrv2.artifacts import endpoint, endpoints, load_network
from simclrv2.artifacts import num_classes as head_classes
from simclrv2.recipes import (data_io, engine, evaluation, networks, objectives, optim,
                              run_lifecycle, weight_updates)
from simclrv2.recipes.config import ConfigError


def _teacher_fn(teacher):
    """images -> the teacher's logits; the teacher is a Keras model or an ExportedNetwork."""
    if "logits_sup" not in endpoints(teacher):
        raise ConfigError("the teacher has no supervised head (logits_sup): distil from a "
                          "fine-tuned model")
    return lambda x: endpoint(teacher, x, "logits_sup")


def _training_images(config, model_dir):
    """The images the student learns from: labeled when the loss reads labels, with label -1
    (skipped by the labeled loss) outside the labeled fraction."""
    if config.labeled_weight <= 0:
        # The loss is the teacher's soft labels only: the images are read as unlabeled.
        return data_io.training_source(config, labeled=False)
    train = data_io.training_source(config, labeled=True)
    if config.label_fraction < 1:
        keep = np.zeros(len(train), bool)
        keep[data_io.subset_indices(train, config.label_fraction, config.label_seed,
                                    run_lifecycle.subset_file(config, model_dir))] = True
        train = data_io.relabel(train, np.where(keep, train.labels, -1))
    return train


def distill(config) -> dict:
    started = time.time()
    strategy, model_dir = run_lifecycle.start(config)
    chief = engine.is_chief(strategy)
    train = _training_images(config, model_dir)
    num_classes = config.num_classes or train.num_classes
    with strategy.scope():
        # The teacher computes in float32 under any training precision: its soft labels are
        # the targets, and bfloat16 would round them to 8 bits of mantissa.
        with precision_lib.float32_policy():
            teacher = load_network(config.teacher, config.image_size)
        networks.fuse_batch_norm(config, teacher)
        teacher_logits = _teacher_fn(teacher)
        if not num_classes:
            num_classes = head_classes(teacher)  # unlabeled folders have no count
        student = networks.student_network(config, num_classes)
    schedule, total = weight_updates.schedule(config, config.num_train_examples or len(train))
    with strategy.scope():
        optimizer = weight_updates.optimizer(config, schedule, student.trainable_variables)
    run_lifecycle.record_run(model_dir, "distill", config,
                             run_lifecycle.model_config_dict(student), chief)
    replicas = strategy.num_replicas_in_sync
    variables = student.trainable_variables

    def replica_step(batch):
        images, labels = batch
        target = tf.stop_gradient(teacher_logits(images))
        with tf.GradientTape() as tape:
            logits = student(images, training=True)["logits_sup"]
            dist = objectives.distillation_loss(target, logits, config.temperature)
            loss = dist + optim.l2_regularization(config.optimizer, config.weight_decay, variables)
            monitors = {"distill_loss": dist}
            if config.labeled_weight > 0:
                label_loss = objectives.partially_labeled_cross_entropy(labels, logits)
                loss += config.labeled_weight * label_loss
                monitors["label_loss"] = label_loss
            scaled = weight_updates.scaled(optimizer, loss, replicas)
        weight_updates.apply(tape, optimizer, [(scaled, variables)])
        agreement = objectives.top1_accuracy(logits, tf.argmax(target, 1))
        return {"loss": loss, **monitors, "teacher_agreement": agreement}

    metrics, status, step = engine.train_loop(
        config=config, strategy=strategy, model_dir=model_dir, trackables={"model": student},
        optimizer=optimizer, replica_step=replica_step,
        dataset_fn=data_io.finetune_batches(config, train), total_steps=total)
    result = {"status": status, "steps": step, "train_metrics": metrics}
    if status == "done":
        result[config.top1_key] = evaluation.eval_top1(config, student, model_dir, step, chief)
        result["eval_split"] = config.eval_split
    return run_lifecycle.finish(config, model_dir, "distill", result, student, chief, started)
