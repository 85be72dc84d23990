"""What the stages report: a network's outputs over an evaluation set, top-1 on the evaluation
split (test, or the validation images held out of training), and the kNN monitor."""

from __future__ import annotations

import functools
import weakref

import numpy as np
import tensorflow as tf

from simclrv2.artifacts import endpoint
from simclrv2.data import release
from simclrv2.recipes import data_io, engine, objectives, stage_clock

# One traced inference function per (model, endpoint): a new tf.function on every call retraced
# the model each time (and TF warned about it).
_PREDICT_FNS = weakref.WeakKeyDictionary()


def _float32_endpoint(network, key, images):
    return tf.cast(endpoint(network, images, key), tf.float32)


def predict(model, key, dataset, limit=0):
    """(outputs[key], labels) of `dataset` in inference mode, as numpy arrays; `model` is a
    Keras model or an ExportedNetwork. With `limit`, its first `limit` examples only."""
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
    with stage_clock.part("evaluation"):
        iterator = iter(dataset)
        for images, y in iterator:
            outs.append(fn(images).numpy())
            labels.append(np.asarray(y))
            seen += len(labels[-1])
            if limit and seen >= limit:
                break
        # Not dropped here: its destruction waits for the pipeline's autotuning thread.
        references = [iterator]
        del iterator
        release.drop_in_background(references)
    outs, labels = np.concatenate(outs), np.concatenate(labels)
    return (outs[:limit], labels[:limit]) if limit else (outs, labels)


def top1(scores, labels) -> float:
    """Top-1 accuracy of class scores [N, classes] against integer labels [N]."""
    return float(objectives.top1_accuracy(scores, labels, dtype=tf.float64))


def eval_batches(config):
    """The batches of the split the config's top-1 is measured on (test or validation)."""
    return data_io.eval_dataset(data_io.evaluation_source(config), config.eval_batch_size,
                                config.image_size)


def eval_top1(config, model, model_dir, step, chief):
    """Top-1 of the supervised head on the evaluation split (test or validation), also logged to
    metrics.jsonl under config.top1_key."""
    with stage_clock.part("evaluation"):
        test_ds = eval_batches(config)
        logits, labels = predict(model, "logits_sup", test_ds, config.num_eval_examples)
        score = top1(logits, labels)
    engine.RunLog(model_dir, chief).write(step, {config.top1_key: score}, "eval")
    return score


def knn_bank_index(config, labeled):
    """Positions in `labeled` of the kNN monitor's memory bank: config.knn_bank_size
    class-balanced examples drawn with config.seed, or all of them."""
    if not config.knn_bank_size or config.knn_bank_size >= len(labeled):
        return np.arange(len(labeled))
    return data_io.subset_indices(labeled, config.knn_bank_size / len(labeled), config.seed)


def knn_bank(config, labeled):
    """The kNN monitor's memory bank (knn_bank_index), batched for inference."""
    return data_io.eval_dataset(data_io.take(labeled, knn_bank_index(config, labeled)),
                                config.eval_batch_size, config.image_size)


def monitor_scores(config, model, bank_ds, test_ds, num_classes, linear):
    """Pretraining's monitors on the evaluation split: kNN top-1 of the pooled features against
    the bank, and the linear head's top-1 when `linear`."""
    with stage_clock.part("evaluation"):
        bank, bank_labels = predict(model, "final_avg_pool", bank_ds)
        query, query_labels = predict(model, "final_avg_pool", test_ds, config.num_eval_examples)
        scores = {"knn_top1": objectives.knn_top1(query, query_labels, bank, bank_labels,
                                                  num_classes, config.knn_k,
                                                  config.knn_temperature)}
        if linear:
            logits, labels = predict(model, "logits_sup", test_ds, config.num_eval_examples)
            scores["linear_top1"] = top1(logits, labels)
    return scores
