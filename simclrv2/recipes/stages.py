"""The four stages as Python functions: pretrain, finetune, linear_eval, distill.

Each takes a validated config (see config.py) and returns a dict with the run's metrics (test
top-1 where there is one), wall time and output paths, written to model_dir/result.json too; the
returned dict also holds the trained Keras model under "model".
"""

from __future__ import annotations

import functools
import json
import pathlib
import time
import weakref

import keras
import numpy as np
import tensorflow as tf

from simclrv2 import precision as precision_lib
from simclrv2.artifacts import ExportedNetwork, load_network
from simclrv2.artifacts import check_endpoint as _check_endpoint
from simclrv2.artifacts import endpoint as _endpoint
from simclrv2.artifacts import endpoints as _endpoints
from simclrv2.artifacts import num_classes as _num_classes
from simclrv2.recipes import data_io, engine, fused_batch_norm, objectives, optim
from simclrv2.atomic_files import write_json
from simclrv2.recipes.config import ConfigError, to_dict


# ---------------------------------------------------------------------------------------------
# shared pieces

def _start(config, stage, model_config=None):
    engine.configure_tf(config)
    strategy = engine.make_strategy(config)
    engine.check_global_batch(config.global_batch_size, strategy)
    model_dir = pathlib.Path(config.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    return strategy, model_dir


def _record_run(model_dir, stage, config, model_config, chief):
    """config.json: what the run is (so later stages can rebuild the model); refuses to resume a
    model_dir that holds a different architecture."""
    path = model_dir / "config.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous.get("model_config") != model_config or previous.get("stage") != stage:
            raise ConfigError(
                f"{model_dir} holds a {previous.get('stage')} run of another model "
                f"({previous.get('model_config', {}).get('depth')}-layer); use a new model_dir or "
                f"delete that one")
    if chief:
        write_json(path, {"stage": stage, "config": to_dict(config),
                                 "model_config": model_config})


def _model_config_dict(model):
    values = model.simclr_config.to_dict()
    return json.loads(json.dumps(values))  # tuples -> lists, as they come back from disk


def _schedule(config, num_examples):
    total = config.total_steps(num_examples)
    peak = optim.scaled_lr(config.learning_rate, config.global_batch_size,
                           config.learning_rate_scaling)
    return optim.WarmupCosine(peak, config.warmup_steps(num_examples, total), total), total


def _optimizer(config, schedule, variables):
    opt = optim.build_optimizer(config.optimizer, schedule, config.weight_decay, config.momentum)
    optim.exclude_variables(opt, variables)
    if engine.precision_of(config).policy == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    # Built now so a checkpoint restores the slots at once instead of on the first step.
    opt.build(variables)
    return opt


def _scaled(optimizer, loss, num_replicas):
    """What to differentiate (call it inside the tape): the loss over the replica count, because
    the optimizer sums gradients over replicas, times the loss scale under mixed_float16."""
    return optimizer.scale_loss(loss / num_replicas)


def _apply(tape, optimizer, loss_groups):
    """Gradients of each (scaled loss, variables) group, applied in one step."""
    grads, variables = [], []
    for scaled, group in loss_groups:
        if not group:
            continue
        # Variables the loss does not reach (projection layers above ft_proj_selector) have no
        # gradient; they are left alone, as upstream does.
        for grad, variable in zip(tape.gradient(scaled, group), group):
            if grad is not None:
                grads.append(grad)
                variables.append(variable)
    optimizer.apply_gradients(zip(grads, variables))


# One traced inference function per (model, endpoint): a new tf.function on every call retraced
# the model each time (and TF warned about it).
_PREDICT_FNS = weakref.WeakKeyDictionary()


def _float32_endpoint(network, key, images):
    return tf.cast(_endpoint(network, images, key), tf.float32)


def _predict(model, key, dataset, limit=0):
    """(outputs[key], labels) of `dataset` in inference mode, as numpy arrays; `model` is a
    Keras model or an ExportedNetwork."""
    fns = _PREDICT_FNS.setdefault(model, {})
    if key not in fns:
        # A partial, not a lambda: TF counts the traces of every tf.function made from one code
        # object together, so each new model's first trace (a process running several stages)
        # read as retracing and TF warned that "tracing is expensive". It holds a weak proxy:
        # a strong reference from the cache's value would keep its key, the model, alive.
        fns[key] = tf.function(functools.partial(_float32_endpoint, weakref.proxy(model), key),
                               reduce_retracing=True, autograph=False)
    fn = fns[key]
    outs, labels, seen = [], [], 0
    for images, y in dataset:
        outs.append(fn(images).numpy())
        labels.append(np.asarray(y))
        seen += len(labels[-1])
        if limit and seen >= limit:
            break
    outs, labels = np.concatenate(outs), np.concatenate(labels)
    return (outs[:limit], labels[:limit]) if limit else (outs, labels)


def _top1(logits, labels):
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def _finetune_batches(config, train):
    """The labeled (fine-tuning / distillation) stream, restartable at any batch."""
    def dataset_fn(start_batch):
        return data_io.finetune_dataset(train, config.global_batch_size, config.image_size,
                                        config.seed, start_batch=start_batch)
    return dataset_fn


def _eval_top1(config, model, model_dir, step, chief):
    """Top-1 of the supervised head on the evaluation split (test or validation), also logged to
    metrics.jsonl under config.top1_key."""
    _, test_ds = _eval_split(config)
    logits, labels = _predict(model, "logits_sup", test_ds, config.num_eval_examples)
    top1 = _top1(logits, labels)
    engine.RunLog(model_dir, chief).write(step, {config.top1_key: top1}, "eval")
    return top1


def _eval_split(config):
    source = data_io.evaluation_source(config)
    return source, data_io.eval_dataset(source, config.eval_batch_size, config.image_size)


def _finish(config, model_dir, stage, result, model, chief, started):
    result["wall_time_s"] = round(time.time() - started, 3)
    result["precision"] = engine.precision_of(config).to_dict()
    result["model_dir"] = str(model_dir)
    result["stage"] = stage
    if model is not None and chief and result.get("status") == "done":
        path = model_dir / "model.keras"
        from simclrv2.atomic_files import replacing

        # Into a temporary sibling, then renamed: a kill mid-save must not leave a broken
        # model.keras, which loaders and `simclrv2 export` would take for the result.
        with replacing(path) as tmp:
            model.save(tmp)
        result["keras_path"] = str(path)
    result["checkpoint"] = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    if chief:
        write_json(model_dir / "result.json", result)
    # In-process callers get the trained network too (not written to result.json).
    result["model"] = model
    return result


def _copy_weights(source, target, skip=("head_supervised",)):
    """Copies every variable of `target` (but `skip`) from the same path in `source`."""
    by_path = {v.path: v for v in source.weights}
    missing = []
    for variable in target.weights:
        if any(s in variable.path for s in skip):
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


def _subset_file(config, model_dir):
    """Where a run keeps its label subset (one index per line), named by fraction and seed so
    that a run dir reused with other settings never trains on a stale list."""
    if config.label_fraction >= 1.0:
        return None
    # Positions index the training images the run may use, which the validation split shrinks.
    held_out = (f"_val{config.validation_examples}" if config.eval_split == "validation" else "")
    return str(pathlib.Path(model_dir) / f"label_subset_{config.label_fraction:g}_"
                                         f"seed{config.label_seed}{held_out}.txt")


def _sync_bn(config, strategy):
    return bool(config.global_bn)


def _fuse_batch_norm(config, model):
    if config.fused_batch_norm:
        fused_batch_norm.fuse(model)


# ---------------------------------------------------------------------------------------------
# stage 1

def _blur_in_train_step(config) -> bool:
    if config.blur_in_train_step is not None:
        return bool(config.blur_in_train_step)
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def pretrain(config) -> dict:
    import simclrv2.zoo as zoo

    started = time.time()
    strategy, model_dir = _start(config, "pretrain")
    chief = engine.is_chief(strategy)
    labeled = data_io.training_source(config, labeled=True)
    num_classes = config.num_classes or labeled.num_classes
    # Without the linear head the contrastive loss never sees a label, so it reads the images as
    # unlabeled; the labels serve only the kNN monitor's memory bank.
    train = labeled if config.lineareval_while_pretraining else data_io.training_source(
        config, labeled=False)
    num_examples = config.num_train_examples or len(train)
    schedule, total = _schedule(config, num_examples)
    with strategy.scope():
        model = zoo.build(
            config.model, num_classes=num_classes if config.lineareval_while_pretraining else None,
            input_shape=(config.image_size, config.image_size, 3),
            num_proj_layers=config.num_proj_layers, proj_out_dim=config.proj_out_dim,
            ft_proj_selector=config.ft_proj_selector, sync_batch_norm=_sync_bn(config, strategy))
        _fuse_batch_norm(config, model)
        optimizer = _optimizer(config, schedule, model.trainable_variables)
    _record_run(model_dir, "pretrain", config, _model_config_dict(model), chief)

    replicas = strategy.num_replicas_in_sync
    encoder_vars = [v for v in model.trainable_variables if "head_supervised" not in v.path]
    head_vars = [v for v in model.trainable_variables if "head_supervised" in v.path]
    linear = config.lineareval_while_pretraining

    defer_blur = _blur_in_train_step(config)

    def replica_step(batch):
        if defer_blur:
            (view1, view2), labels, (sigma1, sigma2) = batch
            view1 = data_io.apply_deferred_blur(view1, sigma1)
            view2 = data_io.apply_deferred_blur(view2, sigma2)
        else:
            (view1, view2), labels = batch
        with tf.GradientTape(persistent=True) as tape:
            out = model(tf.concat([view1, view2], 0), training=True)
            con_loss, logits_ab, con_labels = objectives.nt_xent_loss(
                out["proj_head_output"], config.temperature, config.hidden_norm)
            encoder_loss = con_loss + optim.l2_regularization(
                config.optimizer, config.weight_decay, encoder_vars)
            head_loss = tf.constant(0.0)
            if linear:
                both = tf.concat([labels, labels], 0)
                sup_loss = objectives.supervised_loss(both, out["logits_sup"], num_classes)
                head_loss = sup_loss + optim.l2_regularization(
                    config.optimizer, config.weight_decay, head_vars)
            groups = [(_scaled(optimizer, encoder_loss, replicas), encoder_vars)]
            if linear:
                groups.append((_scaled(optimizer, head_loss, replicas), head_vars))
        # The linear head learns from the features without moving them: its loss only reaches
        # its own variables, which is upstream's stop_gradient on the head's input.
        _apply(tape, optimizer, groups)
        del tape
        acc, entropy = objectives.contrastive_metrics(logits_ab, con_labels)
        metrics = {"loss": encoder_loss + head_loss, "contrastive_loss": con_loss,
                   "contrast_acc": acc, "contrast_entropy": entropy}
        if linear:
            metrics["sup_loss"] = sup_loss
            metrics["sup_acc"] = tf.reduce_mean(tf.cast(tf.equal(
                tf.argmax(out["logits_sup"], 1, output_type=tf.int32),
                tf.cast(both, tf.int32)), tf.float32))
        return metrics

    def dataset_fn(start_batch):
        return data_io.pretrain_dataset(train, config.global_batch_size, config.image_size,
                                        config.seed, start_batch=start_batch,
                                        color_jitter_strength=config.color_jitter_strength,
                                        defer_blur=defer_blur,
                                        crop_area_min=config.crop_area_min)

    test, test_ds = _eval_split(config)
    bank_source = labeled if not config.knn_bank_size else data_io.subset(
        labeled, min(1.0, config.knn_bank_size / len(labeled)), config.seed)
    bank_ds = data_io.eval_dataset(bank_source, config.eval_batch_size, config.image_size)

    def evaluate():
        bank, bank_labels = _predict(model, "final_avg_pool", bank_ds)
        query, query_labels = _predict(model, "final_avg_pool", test_ds, config.num_eval_examples)
        scores = {"knn_top1": objectives.knn_top1(query, query_labels, bank, bank_labels,
                                                  num_classes, config.knn_k,
                                                  config.knn_temperature)}
        if linear:
            logits, labels = _predict(model, "logits_sup", test_ds, config.num_eval_examples)
            scores["linear_top1"] = _top1(logits, labels)
        return scores

    metrics, status, step = engine.train_loop(
        config=config, strategy=strategy, model_dir=model_dir, trackables={"model": model},
        optimizer=optimizer, replica_step=replica_step, dataset_fn=dataset_fn, total_steps=total,
        eval_fn=evaluate, eval_steps=config.knn_steps)
    result = {"status": status, "steps": step, "train_metrics": metrics}
    if status == "done":
        scores = evaluate()
        engine.RunLog(model_dir, chief).write(step, scores, kind="eval")
        result.update(scores)
        result[config.top1_key] = scores.get("linear_top1")
        result["eval_split"] = config.eval_split
    return _finish(config, model_dir, "pretrain", result, model, chief, started)


# ---------------------------------------------------------------------------------------------
# stage 2

def _freeze(model, after_block):
    """fine_tune_after_block=k: stem and block groups 1..k stop training (and their BN layers
    switch to inference mode, Keras' rule for frozen BN)."""
    if after_block < 0:
        return
    model.get_layer("stem").trainable = False
    for group in range(1, after_block + 1):
        model.get_layer(f"block_group{group}").trainable = False


def _supervised_run(config, stage, model, strategy, model_dir, train, num_classes, started):
    """The supervised training loop of fine-tuning (and of distillation's labeled part)."""
    chief = engine.is_chief(strategy)
    schedule, total = _schedule(config, config.num_train_examples or len(train))
    with strategy.scope():
        optimizer = _optimizer(config, schedule, model.trainable_variables)
    _record_run(model_dir, stage, config, _model_config_dict(model), chief)
    replicas = strategy.num_replicas_in_sync
    variables = model.trainable_variables

    def replica_step(batch):
        images, labels = batch
        with tf.GradientTape() as tape:
            logits = model(images, training=True)["logits_sup"]
            sup = objectives.supervised_loss(labels, logits, num_classes)
            loss = sup + optim.l2_regularization(config.optimizer, config.weight_decay, variables)
            scaled = _scaled(optimizer, loss, replicas)
        _apply(tape, optimizer, [(scaled, variables)])
        acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32),
                                              tf.cast(labels, tf.int32)), tf.float32))
        return {"loss": loss, "sup_loss": sup, "sup_acc": acc}

    dataset_fn = _finetune_batches(config, train)

    metrics, status, step = engine.train_loop(
        config=config, strategy=strategy, model_dir=model_dir, trackables={"model": model},
        optimizer=optimizer, replica_step=replica_step, dataset_fn=dataset_fn, total_steps=total)
    result = {"status": status, "steps": step, "train_metrics": metrics,
              "num_labeled": len(train)}
    if status == "done":
        result[config.top1_key] = _eval_top1(config, model, model_dir, step, chief)
        result["eval_split"] = config.eval_split
    return _finish(config, model_dir, stage, result, model, chief, started)


def finetune(config) -> dict:
    import simclrv2.zoo as zoo

    started = time.time()
    strategy, model_dir = _start(config, "finetune")
    train = data_io.training_source(config, labeled=True)
    num_classes = config.num_classes or train.num_classes
    train = data_io.subset(train, config.label_fraction, config.label_seed,
                           _subset_file(config, model_dir))
    source = load_network(config.checkpoint) if config.checkpoint else None
    if source is not None and not hasattr(source, "simclr_config"):
        raise ConfigError(f"{config.checkpoint} is not a SimCLRv2 Keras model; fine-tuning needs "
                          f"a run's model_dir or a .keras file (`simclrv2 convert` makes one)")
    options = dict(num_classes=num_classes, ft_proj_selector=config.ft_proj_selector,
                   sync_batch_norm=_sync_bn(config, strategy),
                   input_shape=(config.image_size, config.image_size, 3))
    if config.ft_proj_selector > 0:
        options["include_projection_head"] = True
    with strategy.scope():
        # From a checkpoint the architecture (stem included) is the checkpoint's own.
        model = zoo.build(source.simclr_config if source is not None else config.model, **options)
        if source is not None:
            _copy_weights(source, model)
        if config.zero_init_logits_layer:
            for variable in model.get_layer("head_supervised").weights:
                variable.assign(tf.zeros_like(variable))
        _freeze(model, config.fine_tune_after_block)
        _fuse_batch_norm(config, model)
    return _supervised_run(config, "finetune", model, strategy, model_dir, train, num_classes,
                           started)


# ---------------------------------------------------------------------------------------------
# linear evaluation (offline)

def linear_eval(config) -> dict:
    """Features of the frozen network (no augmentation), then a linear classifier on them (the
    config's optimiser and schedule, or L-BFGS with solver="lbfgs"); reports top-1 on the
    evaluation split. Single device: the features are small, and no checkpoint is kept (it takes
    seconds to redo)."""
    started = time.time()
    engine.configure_tf(config)
    model_dir = pathlib.Path(config.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    network = load_network(config.checkpoint, config.image_size)
    _check_endpoint(network, config.feature, f"checkpoint {config.checkpoint}")
    train = data_io.training_source(config, labeled=True)
    num_classes = config.num_classes or train.num_classes
    train = data_io.subset(train, config.label_fraction, config.label_seed,
                           _subset_file(config, model_dir))
    _, test_ds = _eval_split(config)
    features, labels = _predict(network, config.feature, data_io.eval_dataset(
        train, config.eval_batch_size, config.image_size))
    test_features, test_labels = _predict(network, config.feature, test_ds,
                                          config.num_eval_examples)
    # Standardised with the labeled set's statistics (a fixed affine map, so the classifier is
    # still linear in the features): raw pooled features of a briefly trained network reach the
    # hundreds, where one learning rate cannot suit every checkpoint.
    mean, std = features.mean(0), features.std(0) + 1e-6
    features, test_features = (features - mean) / std, (test_features - mean) / std
    log = engine.RunLog(model_dir, True)
    if config.solver == "lbfgs":
        steps, loss, train_scores, eval_scores = _linear_lbfgs(config, features, labels,
                                                               test_features, num_classes)
    else:
        steps, loss, train_scores, eval_scores = _linear_sgd(config, features, labels,
                                                             test_features, num_classes, log)
    result = {"status": "done", "steps": steps, "train_metrics": {"loss": loss},
              "train_top1": _top1(train_scores, labels),
              config.top1_key: _top1(eval_scores, test_labels),
              "eval_split": config.eval_split, "solver": config.solver,
              "feature": config.feature, "feature_standardized": True,
              "num_labeled": len(labels)}
    log.write(steps, {config.top1_key: result[config.top1_key]}, "eval")
    return _finish(config, model_dir, "lineareval", result, None, True, started)


def _linear_sgd(config, features, labels, test_features, num_classes, log):
    """The config's optimiser over mini-batches: (steps, last loss, train scores, eval scores)."""
    schedule, total = _schedule(config, len(labels))
    head = keras.layers.Dense(num_classes, kernel_initializer="zeros", name="head_supervised")
    head.build((None, features.shape[1]))
    optimizer = _optimizer(config, schedule, head.trainable_variables)
    ds = tf.data.Dataset.from_tensor_slices((features, labels.astype(np.int32))).repeat().shuffle(
        min(len(labels), 10000), seed=config.seed).batch(config.global_batch_size)

    @tf.function(autograph=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = objectives.supervised_loss(y, head(x), num_classes) + optim.l2_regularization(
                config.optimizer, config.weight_decay, head.trainable_variables)
            scaled = _scaled(optimizer, loss, 1)
        _apply(tape, optimizer, [(scaled, head.trainable_variables)])
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


def _linear_lbfgs(config, features, labels, test_features, num_classes):
    """Softmax regression fitted to convergence (the raw-pixel baseline's classifier)."""
    from simclrv2 import baselines

    iterations = config.train_steps or 300
    weights = baselines.fit_logistic_regression(features, labels, num_classes,
                                                l2=config.weight_decay,
                                                max_iterations=iterations, seed=config.seed)
    train_scores = baselines.predict(weights, features)
    logits = train_scores - train_scores.max(1, keepdims=True)
    loss = float(np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(len(labels)), labels]))
    return iterations, loss, train_scores, baselines.predict(weights, test_features)


# ---------------------------------------------------------------------------------------------
# stage 3

def _teacher_fn(teacher):
    """images -> the teacher's logits; the teacher is a Keras model or an ExportedNetwork."""
    if "logits_sup" not in _endpoints(teacher):
        raise ConfigError("the teacher has no supervised head (logits_sup): distil from a "
                          "fine-tuned model")
    return lambda x: _endpoint(teacher, x, "logits_sup")


def distill(config) -> dict:
    import simclrv2.zoo as zoo

    started = time.time()
    strategy, model_dir = _start(config, "distill")
    chief = engine.is_chief(strategy)
    if config.labeled_weight > 0:
        train = data_io.training_source(config, labeled=True)
    else:
        # The loss is the teacher's soft labels only: the images are read as unlabeled.
        train = data_io.training_source(config, labeled=False)
    num_classes = config.num_classes or train.num_classes
    if config.labeled_weight > 0 and config.label_fraction < 1:
        # Unlabeled examples keep their images but get label -1, which the labeled loss skips.
        keep = np.zeros(len(train), bool)
        keep[data_io.subset_indices(train, config.label_fraction, config.label_seed,
                                    _subset_file(config, model_dir))] = True
        train = data_io.relabel(train, np.where(keep, train.labels, -1))
    with strategy.scope():
        # The teacher computes in float32 under any training precision: its soft labels are
        # the targets, and bfloat16 would round them to 8 bits of mantissa.
        with precision_lib.float32_policy():
            teacher = load_network(config.teacher, config.image_size)
        teacher_logits = _teacher_fn(teacher)
        if not num_classes:
            num_classes = _num_classes(teacher)  # unlabeled folders have no count
        student = zoo.build(config.student, num_classes=num_classes,
                            include_projection_head=config.student_proj_head,
                            ft_proj_selector=1 if config.student_proj_head else 0,
                            input_shape=(config.image_size, config.image_size, 3),
                            sync_batch_norm=_sync_bn(config, strategy))
        _fuse_batch_norm(config, student)
    schedule, total = _schedule(config, config.num_train_examples or len(train))
    with strategy.scope():
        optimizer = _optimizer(config, schedule, student.trainable_variables)
    _record_run(model_dir, "distill", config, _model_config_dict(student), chief)
    replicas = strategy.num_replicas_in_sync
    variables = student.trainable_variables

    def replica_step(batch):
        images, labels = batch
        target = tf.stop_gradient(teacher_logits(images))
        with tf.GradientTape() as tape:
            logits = student(images, training=True)["logits_sup"]
            dist = objectives.distillation_loss(target, logits, config.temperature)
            loss = dist + optim.l2_regularization(config.optimizer, config.weight_decay, variables)
            if config.labeled_weight > 0:
                mask = tf.cast(labels >= 0, tf.float32)
                ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
                    tf.maximum(tf.cast(labels, tf.int32), 0), tf.cast(logits, tf.float32))
                loss += config.labeled_weight * tf.reduce_sum(ce * mask) / tf.maximum(
                    tf.reduce_sum(mask), 1.0)
            scaled = _scaled(optimizer, loss, replicas)
        _apply(tape, optimizer, [(scaled, variables)])
        agree = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1), tf.argmax(target, 1)),
                                       tf.float32))
        return {"loss": loss, "distill_loss": dist, "teacher_agreement": agree}

    dataset_fn = _finetune_batches(config, train)

    metrics, status, step = engine.train_loop(
        config=config, strategy=strategy, model_dir=model_dir, trackables={"model": student},
        optimizer=optimizer, replica_step=replica_step, dataset_fn=dataset_fn, total_steps=total)
    result = {"status": status, "steps": step, "train_metrics": metrics}
    if status == "done":
        result[config.top1_key] = _eval_top1(config, student, model_dir, step, chief)
        result["eval_split"] = config.eval_split
    return _finish(config, model_dir, "distill", result, student, chief, started)


STAGE_FUNCTIONS = {"pretrain": pretrain, "finetune": finetune, "lineareval": linear_eval,
                   "distill": distill}
