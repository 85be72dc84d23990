"""How a stage's loss becomes a weight update: the schedule and optimiser its config asks for,
the loss scaled for the replicas and the loss scale, the gradients applied in one step."""

from __future__ import annotations

import keras

from simclrv2.recipes import engine, optim


def schedule(config, num_examples):
    """(learning-rate schedule, total steps) of a run over `num_examples` training examples:
    warmup then cosine, peaking at the config's learning rate scaled to the global batch."""
    total = config.total_steps(num_examples)
    peak = optim.scaled_lr(config.learning_rate, config.global_batch_size,
                           config.learning_rate_scaling)
    return optim.WarmupCosine(peak, config.warmup_steps(num_examples, total), total), total


def optimizer(config, learning_rate, variables):
    """The config's optimiser over `variables`, with a loss scale under mixed_float16."""
    opt = optim.build_optimizer(config.optimizer, learning_rate, config.weight_decay,
                                config.momentum)
    optim.exclude_variables(opt, variables)
    if engine.precision_of(config).policy == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    # Built now so a checkpoint restores the slots at once instead of on the first step.
    opt.build(variables)
    return opt


def scaled(opt, loss, num_replicas):
    """What to differentiate (call it inside the tape): the loss over the replica count, because
    the optimizer sums gradients over replicas, times the loss scale under mixed_float16."""
    return opt.scale_loss(loss / num_replicas)


def apply(tape, opt, loss_groups):
    """Gradients of each (scaled loss, variables) group, applied in one step."""
    grads, variables = [], []
    for scaled_loss, group in loss_groups:
        if not group:
            continue
        # Variables the loss does not reach (projection layers above ft_proj_selector) have no
        # gradient; they are left alone, as upstream does.
        for grad, variable in zip(tape.gradient(scaled_loss, group), group):
            if grad is not None:
                grads.append(grad)
                variables.append(variable)
    opt.apply_gradients(zip(grads, variables))
