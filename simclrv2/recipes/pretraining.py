"""Stage 1, contrastive pretraining: NT-Xent on two augmented views of each image, with the kNN
monitor and (by default) a linear head learning from the features as they train."""

from __future__ import annotations

import time

import tensorflow as tf

from simclrv2.recipes import (data_io, engine, evaluation, gradient_cache, networks, objectives,
                              optim, run_lifecycle, weight_updates)


def _blur_in_train_step(config) -> bool:
    if config.blur_in_train_step is not None:
        return bool(config.blur_in_train_step)
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def _metrics(con_loss, logits_ab, con_labels, encoder_loss, head_loss, sup_loss=None,
             logits_sup=None, sup_labels=None):
    acc, entropy = objectives.contrastive_metrics(logits_ab, con_labels)
    metrics = {"loss": encoder_loss + head_loss, "contrastive_loss": con_loss,
               "contrast_acc": acc, "contrast_entropy": entropy}
    if sup_loss is not None:
        metrics["sup_loss"] = sup_loss
        metrics["sup_acc"] = objectives.top1_accuracy(logits_sup, sup_labels)
    return metrics


def pretrain(config) -> dict:
    started = time.time()
    strategy, model_dir = run_lifecycle.start(config)
    gradient_cache.check_size(config.micro_batch_size, config.global_batch_size,
                              strategy.num_replicas_in_sync)
    chief = engine.is_chief(strategy)
    labeled = data_io.training_source(config, labeled=True)
    num_classes = config.num_classes or labeled.num_classes
    # Without the linear head the contrastive loss never sees a label, so it reads the images as
    # unlabeled; the labels serve only the kNN monitor's memory bank.
    train = labeled if config.lineareval_while_pretraining else data_io.training_source(
        config, labeled=False)
    schedule, total = weight_updates.schedule(config, config.num_train_examples or len(train))
    with strategy.scope():
        model = networks.pretraining_network(config, num_classes)
        optimizer = weight_updates.optimizer(config, schedule, model.trainable_variables)
    run_lifecycle.record_run(model_dir, "pretrain", config,
                             run_lifecycle.model_config_dict(model), chief)

    replicas = strategy.num_replicas_in_sync
    encoder_vars = [v for v in model.trainable_variables if "head_supervised" not in v.path]
    head_vars = [v for v in model.trainable_variables if "head_supervised" in v.path]
    linear = config.lineareval_while_pretraining
    defer_blur = _blur_in_train_step(config)

    def views(batch):
        if defer_blur:
            (view1, view2), labels, (sigma1, sigma2) = batch
            return (data_io.apply_deferred_blur(view1, sigma1),
                    data_io.apply_deferred_blur(view2, sigma2), labels)
        (view1, view2), labels = batch
        return view1, view2, labels

    def contrastive(hidden):
        return objectives.nt_xent_loss(hidden, config.temperature, config.hidden_norm)

    def encoder_penalty():
        return optim.l2_regularization(config.optimizer, config.weight_decay, encoder_vars)

    def head_penalty():
        return optim.l2_regularization(config.optimizer, config.weight_decay, head_vars)

    def supervised(logits, labels):
        return objectives.supervised_loss(labels, logits, num_classes)

    def scale(loss):
        return weight_updates.scaled(optimizer, loss, replicas)

    def whole_batch_step(view1, view2, labels):
        with tf.GradientTape(persistent=True) as tape:
            out = model(tf.concat([view1, view2], 0), training=True)
            con_loss, logits_ab, con_labels = contrastive(out["proj_head_output"])
            encoder_loss = con_loss + encoder_penalty()
            head_loss = tf.constant(0.0)
            if linear:
                both = tf.concat([labels, labels], 0)
                sup_loss = supervised(out["logits_sup"], both)
                head_loss = sup_loss + head_penalty()
            groups = [(scale(encoder_loss), encoder_vars)]
            if linear:
                groups.append((scale(head_loss), head_vars))
        # The linear head learns from the features without moving them: its loss only reaches
        # its own variables, which is upstream's stop_gradient on the head's input.
        weight_updates.apply(tape, optimizer, groups)
        del tape
        if not linear:
            return _metrics(con_loss, logits_ab, con_labels, encoder_loss, head_loss)
        return _metrics(con_loss, logits_ab, con_labels, encoder_loss, head_loss, sup_loss,
                        out["logits_sup"], both)

    def micro_batch_step(view1, view2, labels):
        grads, out = gradient_cache.gradients(
            model, gradient_cache.micro_batches(view1, view2, labels, config.micro_batch_size),
            contrastive=contrastive, scale=scale, encoder_vars=encoder_vars,
            encoder_penalty=encoder_penalty, supervised=supervised if linear else None,
            head_vars=head_vars, head_penalty=head_penalty)
        optimizer.apply_gradients(grads)
        encoder_loss = out.contrastive_loss + out.encoder_penalty
        if not linear:
            return _metrics(out.contrastive_loss, out.logits_ab, out.contrastive_labels,
                            encoder_loss, tf.constant(0.0))
        return _metrics(out.contrastive_loss, out.logits_ab, out.contrastive_labels,
                        encoder_loss, out.supervised_loss + out.head_penalty,
                        out.supervised_loss, out.logits_sup, out.sup_labels)

    def replica_step(batch):
        if config.micro_batch_size:
            return micro_batch_step(*views(batch))
        return whole_batch_step(*views(batch))

    def dataset_fn(start_batch):
        return data_io.pretrain_dataset(train, config.global_batch_size, config.image_size,
                                        config.seed, start_batch=start_batch,
                                        color_jitter_strength=config.color_jitter_strength,
                                        defer_blur=defer_blur,
                                        crop_area_min=config.crop_area_min)

    test_ds = evaluation.eval_batches(config)
    bank_ds = evaluation.knn_bank(config, labeled)

    def evaluate():
        return evaluation.monitor_scores(config, model, bank_ds, test_ds, num_classes, linear)

    metrics, status, step = engine.train_loop(
        config=config, strategy=strategy, model_dir=model_dir, trackables={"model": model},
        optimizer=optimizer, replica_step=replica_step, dataset_fn=dataset_fn, total_steps=total,
        eval_fn=evaluate, eval_steps=config.knn_steps)
    result = {"status": status, "steps": step, "train_metrics": metrics}
    if status == "done" and config.final_monitor:
        scores = evaluate()
        engine.RunLog(model_dir, chief).write(step, scores, kind="eval")
        result.update(scores)
        result[config.top1_key] = scores.get("linear_top1")
        result["eval_split"] = config.eval_split
    return run_lifecycle.finish(config, model_dir, "pretrain", result, model, chief, started)
