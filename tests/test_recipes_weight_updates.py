"""simclrv2/recipes/weight_updates.py: the schedule and optimiser a config asks for, the scaled
loss and the update that skips variables the loss does not reach."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simclrv2.recipes import config as C
from simclrv2.recipes import optim, weight_updates


def _config(**values):
    return C.from_dict("pretrain", dict(dict(mixed_precision="float32"), **values))


def test_schedule_peaks_at_the_scaled_rate_after_warmup():
    config = _config(learning_rate=0.3, global_batch_size=512, train_epochs=2.0,
                     warmup_epochs=1.0)
    schedule, total = weight_updates.schedule(config, num_examples=5120)
    assert total == 5120 * 2 // 512 + 1  # upstream's rule
    assert schedule.warmup_steps == 10
    assert float(schedule(10)) == pytest.approx(0.6)  # 0.3 * 512 / 256
    _, fixed = weight_updates.schedule(_config(train_steps=7), num_examples=5120)
    assert fixed == 7


@pytest.mark.parametrize("precision,scaled", [("float32", False), ("mixed_float16", True)])
def test_optimizer_is_built_and_loss_scaled_only_under_float16(precision, scaled):
    variables = [tf.Variable(np.ones((3, 2), np.float32), name="kernel")]
    opt = weight_updates.optimizer(_config(optimizer="momentum", mixed_precision=precision),
                                   0.1, variables)
    assert isinstance(opt, keras.optimizers.LossScaleOptimizer) is scaled
    assert opt.built  # so a checkpoint restores its slots before the first step
    inner = opt.inner_optimizer if scaled else opt
    assert isinstance(inner, keras.optimizers.SGD)
    loss = tf.constant(8.0)
    expected = 8.0 / 4 * (float(opt.dynamic_scale) if scaled else 1.0)
    assert float(weight_updates.scaled(opt, loss, num_replicas=4)) == pytest.approx(expected)


def test_apply_updates_every_group_and_leaves_unreached_variables_alone():
    reached = tf.Variable([1.0, 2.0], name="reached")
    head = tf.Variable([3.0], name="head")
    untouched = tf.Variable([5.0], name="untouched")
    opt = weight_updates.optimizer(_config(optimizer="momentum", momentum=0.0,
                                           weight_decay=0.0), 0.5,
                                   [reached, head, untouched])
    with tf.GradientTape(persistent=True) as tape:
        encoder_loss = tf.reduce_sum(reached ** 2)
        head_loss = 2.0 * head[0]
    weight_updates.apply(tape, opt, [(encoder_loss, [reached, untouched]), (head_loss, [head]),
                                     (head_loss, [])])
    np.testing.assert_allclose(reached.numpy(), [1.0 - 0.5 * 2, 2.0 - 0.5 * 4])
    np.testing.assert_allclose(head.numpy(), [3.0 - 0.5 * 2])
    np.testing.assert_allclose(untouched.numpy(), [5.0])


def test_adamw_is_told_which_variables_get_no_decay():
    kernel = keras.Variable(np.ones((2, 2), np.float32), name="kernel")
    bias = keras.Variable(np.ones(2, np.float32), name="bias")
    opt = weight_updates.optimizer(_config(optimizer="adamw", weight_decay=0.1), 0.01,
                                   [kernel, bias])
    assert isinstance(opt, keras.optimizers.AdamW)
    assert [optim.is_excluded(v.path) for v in (kernel, bias)] == [False, True]
    assert opt._use_weight_decay(kernel) and not opt._use_weight_decay(bias)
