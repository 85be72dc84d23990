"""Stage 2, fine-tuning: the pretrained network (or one from scratch) with a supervised head,
trained on a labeled fraction by softmax cross-entropy."""

from __future__ import annotations

import time

import tensorflow as tf

from simclrv2.artifacts import load_network
from simclrv2.recipes import (data_io, engine, evaluation, networks, objectives, optim,
                              run_lifecycle, weight_updates)


def finetune(config) -> dict:
    started = time.time()
    strategy, model_dir = run_lifecycle.start(config)
    chief = engine.is_chief(strategy)
    train = data_io.training_source(config, labeled=True)
    num_classes = config.num_classes or train.num_classes
    train = data_io.subset(train, config.label_fraction, config.label_seed,
                           run_lifecycle.subset_file(config, model_dir))
    source = load_network(config.checkpoint) if config.checkpoint else None
    with strategy.scope():
        model = networks.finetuning_network(config, source, num_classes)
    schedule, total = weight_updates.schedule(config, config.num_train_examples or len(train))
    with strategy.scope():
        optimizer = weight_updates.optimizer(config, schedule, model.trainable_variables)
    run_lifecycle.record_run(model_dir, "finetune", config,
                             run_lifecycle.model_config_dict(model), chief)
    replicas = strategy.num_replicas_in_sync
    variables = model.trainable_variables

    def replica_step(batch):
        images, labels = batch
        with tf.GradientTape() as tape:
            logits = model(images, training=True)["logits_sup"]
            sup = objectives.supervised_loss(labels, logits, num_classes)
            loss = sup + optim.l2_regularization(config.optimizer, config.weight_decay, variables)
            scaled = weight_updates.scaled(optimizer, loss, replicas)
        weight_updates.apply(tape, optimizer, [(scaled, variables)])
        return {"loss": loss, "sup_loss": sup,
                "sup_acc": objectives.top1_accuracy(logits, labels)}

    metrics, status, step = engine.train_loop(
        config=config, strategy=strategy, model_dir=model_dir, trackables={"model": model},
        optimizer=optimizer, replica_step=replica_step,
        dataset_fn=data_io.finetune_batches(config, train), total_steps=total)
    result = {"status": status, "steps": step, "train_metrics": metrics,
              "num_labeled": len(train)}
    if status == "done":
        result[config.top1_key] = evaluation.eval_top1(config, model, model_dir, step, chief)
        result["eval_split"] = config.eval_split
    return run_lifecycle.finish(config, model_dir, "finetune", result, model, chief, started)
