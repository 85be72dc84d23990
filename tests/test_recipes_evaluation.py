"""simclrv2/recipes/evaluation.py: inference over an evaluation set, top-1, the kNN monitor."""

import numpy as np
import pytest
import tensorflow as tf

from simclrv2.recipes import config as C
from simclrv2.recipes import evaluation


def test_top1_counts_the_highest_score_first_on_a_tie_and_is_exact():
    scores = np.array([[0.1, 0.9, 0.0], [2.0, 2.0, 1.0], [0.0, 0.0, 5.0], [1.0, 3.0, 3.0]])
    # Row 1 ties classes 0 and 1 (the first counts), row 3 ties 1 and 2.
    assert evaluation.top1(scores, np.array([1, 0, 2, 1])) == 1.0
    assert evaluation.top1(scores, np.array([1, 1, 2, 2])) == 0.5
    # The exact ratio, as a float64 count would give, not float32's nearest value.
    labels = np.zeros(10_000, np.int64)
    labels[:8461] = 1
    assert evaluation.top1(np.tile([[0.0, 1.0]], (10_000, 1)), labels) == 0.8461


def test_eval_top1_scores_the_supervised_head_and_logs_it(tmp_path):
    import json

    import simclrv2.zoo as zoo

    config = C.from_dict("finetune", dict(dataset="synthetic", model="r18_0.125x_sk0",
                                          image_size=8, num_eval_examples=40,
                                          eval_batch_size=16, model_dir=str(tmp_path)))
    model = zoo.build("r18_0.125x_sk0", num_classes=10, input_shape=(8, 8, 3))
    dataset = evaluation.eval_batches(config)
    logits, labels = evaluation.predict(model, "logits_sup", dataset, limit=40)
    assert logits.shape == (40, 10) and len(labels) == 40
    score = evaluation.eval_top1(config, model, tmp_path, 7, chief=True)
    assert score == float(np.mean(np.argmax(logits, 1) == labels))
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 7 and record["kind"] == "eval" and record["test_top1"] == score


def test_knn_bank_holds_the_configured_number_of_examples():
    from simclrv2.recipes import data_io

    config = C.from_dict("pretrain", dict(dataset="synthetic", image_size=8, knn_bank_size=100,
                                          eval_batch_size=1000))
    labeled = data_io.training_source(config)
    (images, labels), = list(evaluation.knn_bank(config, labeled))
    assert len(labels) == 100 and np.bincount(labels).tolist() == [10] * 10
    everything = C.from_dict("pretrain", dict(dataset="synthetic", image_size=8, knn_bank_size=0,
                                              eval_batch_size=4096))
    (_, all_labels), = list(evaluation.knn_bank(everything, labeled))
    assert len(all_labels) == len(labeled)


def test_inference_traces_each_new_model_once_without_retracing_warnings_and_lets_it_go():
    """A process running several stages (the main job, the semi-supervised benchmark) evaluates
    many models: each is traced once, TF does not warn about retracing, and the trace cache does
    not keep a model alive."""
    import gc
    import logging
    import weakref

    import tensorflow as tf

    import simclrv2.zoo as zoo
    from simclrv2.recipes import evaluation

    images = np.random.default_rng(0).uniform(0, 1, (4, 16, 16, 3)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(4))).batch(4)
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    models = []
    try:
        for _ in range(6):  # TF warns from 5 traces among its last calls of one function
            model = zoo.build("r18_0.125x_sk0", num_classes=3, input_shape=(16, 16, 3))
            logits, labels = evaluation.predict(model, "logits_sup", dataset)
            assert logits.shape == (4, 3) and logits.dtype == np.float32
            np.testing.assert_array_equal(labels, np.arange(4))
            again, _ = evaluation.predict(model, "logits_sup", dataset)
            np.testing.assert_array_equal(again, logits)
            assert evaluation._PREDICT_FNS[model]["logits_sup"].experimental_get_tracing_count() == 1
            models.append(weakref.ref(model))
            del model
    finally:
        logger.removeHandler(handler)
    assert not [m for m in messages if "retracing" in m], messages
    gc.collect()
    assert [ref() for ref in models] == [None] * 6
