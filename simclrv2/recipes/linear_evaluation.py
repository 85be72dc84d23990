"""Linear classifiers on fixed features: the linear evaluation of a trained network's features,
and the baseline every learned feature has to beat, the same regression on the raw pixels."""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from simclrv2 import baselines
from simclrv2.artifacts import check_endpoint, load_network
from simclrv2.recipes import (data_io, engine, evaluation, networks, objectives, optim,
                              run_lifecycle, stage_clock, weight_updates)
from simclrv2.recipes.config import ConfigError


def linear_eval(config) -> dict:
    """Features of the frozen network (no augmentation), then a linear classifier on them (the
    config's optimiser and schedule, or L-BFGS with solver="lbfgs"); reports top-1 on the
    evaluation split. Single device: the features are small, and no checkpoint is kept (it takes
    seconds to redo)."""
    started = time.time()
    engine.configure_tf(config)
    model_dir = run_lifecycle.make_model_dir(config)
    network = load_network(config.checkpoint, config.image_size)
    check_endpoint(network, config.feature, f"checkpoint {config.checkpoint}")
    networks.fuse_batch_norm(config, network)
    train = data_io.training_source(config, labeled=True)
    num_classes = config.num_classes or train.num_classes
    train = data_io.subset(train, config.label_fraction, config.label_seed,
                           run_lifecycle.subset_file(config, model_dir))
    test_ds = evaluation.eval_batches(config)
    features, labels = evaluation.predict(network, config.feature, data_io.eval_dataset(
        train, config.eval_batch_size, config.image_size))
    test_features, test_labels = evaluation.predict(network, config.feature, test_ds,
                                                    config.num_eval_examples)
    knn = {}
    if config.knn_k:
        bank = evaluation.knn_bank_index(config, train)
        with stage_clock.part("evaluation"):
            knn["knn_top1"] = objectives.knn_top1(test_features, test_labels, features[bank],
                                                  labels[bank], num_classes, config.knn_k,
                                                  config.knn_temperature)
    # Standardised with the labeled set's statistics (a fixed affine map, so the classifier is
    # still linear in the features): raw pooled features of a briefly trained network reach the
    # hundreds, where one learning rate cannot suit every checkpoint.
    mean, std = features.mean(0), features.std(0) + 1e-6
    features, test_features = (features - mean) / std, (test_features - mean) / std
    log = engine.RunLog(model_dir, True)
    with stage_clock.part("fit"):
        if config.solver == "lbfgs":
            steps, loss, train_scores, eval_scores = _fit_lbfgs(config, features, labels,
                                                                test_features, num_classes)
        else:
            steps, loss, train_scores, eval_scores = _fit_sgd(config, features, labels,
                                                              test_features, num_classes, log)
    result = {"status": "done", "steps": steps, "train_metrics": {"loss": loss},
              "train_top1": evaluation.top1(train_scores, labels),
              config.top1_key: evaluation.top1(eval_scores, test_labels),
              "eval_split": config.eval_split, "solver": config.solver,
              "feature": config.feature, "feature_standardized": True,
              "num_labeled": len(labels), **knn}
    log.write(steps, {config.top1_key: result[config.top1_key], **knn}, "eval")
    return run_lifecycle.finish(config, model_dir, "lineareval", result, None, True, started)


def _fit_sgd(config, features, labels, test_features, num_classes, log):
    """The config's optimiser over mini-batches: (steps, last loss, train scores, eval scores)."""
    schedule, total = weight_updates.schedule(config, len(labels))
    head = keras.layers.Dense(num_classes, kernel_initializer="zeros", name="head_supervised")
    head.build((None, features.shape[1]))
    optimizer = weight_updates.optimizer(config, schedule, head.trainable_variables)
    ds = tf.data.Dataset.from_tensor_slices((features, labels.astype(np.int32))).repeat().shuffle(
        min(len(labels), 10000), seed=config.seed).batch(config.global_batch_size)

    @tf.function(autograph=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = objectives.supervised_loss(y, head(x), num_classes) + optim.l2_regularization(
                config.optimizer, config.weight_decay, head.trainable_variables)
            scaled = weight_updates.scaled(optimizer, loss, 1)
        weight_updates.apply(tape, optimizer, [(scaled, head.trainable_variables)])
        return loss

    loss = None
    for index, (x, y) in enumerate(ds.take(total), start=1):
        loss = float(step(x, y))
        if not np.isfinite(loss):
            raise engine.NonFiniteLossError(f"linear evaluation loss is {loss} at step {index}; "
                                            f"lower learning_rate ({config.learning_rate})")
        if index % config.log_steps == 0 or index == total:
            log.write(index, {"loss": loss, "lr": float(optimizer.learning_rate)})
    return total, loss, head(features).numpy(), head(test_features).numpy()


def _fit_lbfgs(config, features, labels, test_features, num_classes):
    """Softmax regression fitted to convergence by L-BFGS (train_steps iterations, 300 when 0;
    weight_decay as its L2): (iterations, mean cross-entropy, train scores, eval scores)."""
    iterations = config.train_steps or 300
    weights = baselines.fit_logistic_regression(features, labels, num_classes,
                                                l2=config.weight_decay,
                                                max_iterations=iterations, seed=config.seed)
    train_scores = baselines.predict(weights, features)
    logits = train_scores - train_scores.max(1, keepdims=True)
    loss = float(np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(len(labels)), labels]))
    return iterations, loss, train_scores, baselines.predict(weights, test_features)


def _images_of(source, dataset):
    """The uint8 images [N, H, W, C] of a split held in memory."""
    images = source.images if source.synthetic else source.native.images
    if images is None:
        raise ConfigError(f"the pixel baseline reads images held in memory as arrays; {dataset} "
                          f"is read from image files: give an array dataset (fashion_mnist, "
                          f"cifar10, ...)")
    return images


def pixels(config) -> dict:
    """The raw-pixel baseline: softmax regression fitted by L-BFGS (config.max_iterations,
    weight_decay as its L2) to the pixels of the training images (the first
    max_train_examples of them when set); reports top-1 on the evaluation split. The images
    are read at their stored size, whatever image_size says: no network, no TensorFlow step."""
    started = time.time()
    model_dir = run_lifecycle.make_model_dir(config)
    train = data_io.training_source(config, labeled=True)
    evaluated = data_io.evaluation_source(config)
    if config.max_train_examples:
        train = data_io.take(train, np.arange(min(len(train), config.max_train_examples)))
    limit = config.num_eval_examples or len(evaluated)
    pixels_of_train = baselines.pixels(_images_of(train, config.dataset))
    with stage_clock.part("fit"):
        weights = baselines.fit_logistic_regression(
            pixels_of_train, train.labels, config.num_classes or train.num_classes,
            l2=config.weight_decay, max_iterations=config.max_iterations, seed=config.seed)
    scores = baselines.predict(weights,
                               baselines.pixels(_images_of(evaluated, config.dataset)[:limit]))
    result = {"status": "done", "eval_split": config.eval_split, "num_labeled": len(train),
              "max_iterations": config.max_iterations,
              config.top1_key: evaluation.top1(scores, evaluated.labels[:limit])}
    return run_lifecycle.finish(config, model_dir, "pixels", result, None, True, started)
