"""Gradient caching (Gao et al. 2021, arXiv:2101.06983): the gradient of the contrastive loss of
a whole batch, computed with the activation memory of one micro-batch.

Gradient accumulation does not give it: each chunk would see only its own negatives. Instead
the step
1. embeds every micro-batch with no tape, so that its activations are freed once used;
2. computes the whole batch's loss from those embeddings (the other replicas' negatives
   included: objectives.nt_xent_loss gathers them) and its gradient with respect to them;
3. runs each micro-batch again under a tape and back-propagates its share of that cached
   gradient through the surrogate sum(embedding * cached gradient), whose parameter gradient is
   the micro-batch's share of the whole batch's; the shares add up to one update.

Batch norm normalises each micro-batch by its own statistics: micro-batch i is the 2m images
[view1[i*m:(i+1)*m]; view2[i*m:(i+1)*m]], as one replica's batch is without synchronized batch
norm. Both passes of a micro-batch see the same images and, the weights being unchanged until
the update, the same statistics. The moving averages move once per micro-batch, in the second
pass: the first pass's updates are undone before the second begins.
"""

from __future__ import annotations

import typing

import tensorflow as tf

from simclrv2.recipes.config import ConfigError


def check_size(micro_batch_size, global_batch_size, replicas):
    """Refuses, in one line, a micro-batch that does not divide each replica's batch."""
    per_replica = global_batch_size // replicas
    if micro_batch_size and per_replica % micro_batch_size:
        fits = max(d for d in range(1, min(micro_batch_size, per_replica) + 1)
                   if per_replica % d == 0)
        raise ConfigError(
            f"micro_batch_size={micro_batch_size} does not divide the per-replica batch of "
            f"{per_replica} pairs (global_batch_size={global_batch_size} over {replicas} "
            f"replicas); use a divisor of {per_replica}, e.g. {fits}")


def micro_batches(view1, view2, labels, size):
    """(images, labels) by micro-batch: images[i] is the first views of pairs i*size to
    (i+1)*size - 1 then their second views, labels[i] their labels twice."""
    count = int(view1.shape[0]) // size

    def split(tensor):
        return tf.reshape(tensor, [count, size] + list(tensor.shape[1:]))

    return (tf.concat([split(view1), split(view2)], 1),
            tf.concat([split(labels), split(labels)], 1))


class Outputs(typing.NamedTuple):
    """What the step computed, for its metrics: the whole batch's contrastive loss with its
    logits and labels (objectives.nt_xent_loss's), the penalties, and with a supervised head
    its loss (mean over the micro-batches), logits and labels in micro-batch order."""

    contrastive_loss: tf.Tensor
    logits_ab: tf.Tensor
    contrastive_labels: tf.Tensor
    encoder_penalty: tf.Tensor
    supervised_loss: typing.Optional[tf.Tensor] = None
    logits_sup: typing.Optional[tf.Tensor] = None
    sup_labels: typing.Optional[tf.Tensor] = None
    head_penalty: typing.Optional[tf.Tensor] = None


def _synchronized_across_replicas(model) -> bool:
    context = tf.distribute.get_replica_context()
    return bool(context is not None and context.num_replicas_in_sync > 1 and any(
        getattr(layer, "synchronized", False)
        for layer in model._flatten_layers(include_self=False, recursive=True)))


def _one_at_a_time(count, body, initial, unrolled):
    """body(i, *state) -> (i + 1, *state) over the micro-batches, one after another, so that a
    micro-batch's activations are freed before the next one's exist.

    A tf.while_loop running one iteration at a time, whose body is one graph whatever the
    count. Synchronized batch norm across replicas cannot run in a loop body (its merge_call
    would cross it), so there the loop is unrolled, each micro-batch's operations waiting for
    the previous one's results: without that wait TensorFlow's executor may start every
    micro-batch's forward pass at once, and hold all their activations."""
    if not unrolled:
        return tf.while_loop(lambda i, *_: i < count, body, (tf.constant(0),) + tuple(initial),
                             parallel_iterations=1, maximum_iterations=count)[1:]
    state = tuple(initial)
    for i in range(count):
        previous = [x.flow if isinstance(x, tf.TensorArray) else x
                    for x in tf.nest.flatten(state)]
        with tf.control_dependencies(previous):
            state = body(tf.constant(i), *state)[1:]
    return state


def gradients(model, micro, *, contrastive, scale, encoder_vars, encoder_penalty,
              supervised=None, head_vars=(), head_penalty=None):
    """The gradients of one step over `micro` (micro_batches' pair) and its Outputs.

    contrastive(hidden) -> (loss, logits_ab, labels) on the projections of the whole batch,
    hidden = [first views; second views]; supervised(logits, labels) -> the mean loss of one
    micro-batch (None: no supervised head); the penalties are callables of no argument (the
    weight decay terms); scale(loss) -> what to differentiate (weight_updates.scaled).
    Contrastive loss and encoder penalty reach `encoder_vars` only, the supervised loss and
    head penalty `head_vars` only (the head learns from the features without moving them).
    Returns ([(gradient, variable)] for each variable some loss reaches, Outputs).
    """
    images, labels = micro
    count, rows = int(images.shape[0]), int(images.shape[1])
    unrolled = _synchronized_across_replicas(model)
    moving = model.non_trainable_variables
    before = [tf.identity(v.value) for v in moving]

    def embed(i, projections):
        out = model(images[i], training=True)
        return i + 1, projections.write(i, tf.cast(out["proj_head_output"], tf.float32))

    projections, = _one_at_a_time(count, embed, [tf.TensorArray(tf.float32, count)], unrolled)
    projections = projections.stack()
    # The tf.function orders this after the loop, which reads and updates the same variables.
    for variable, value in zip(moving, before):
        variable.assign(value)

    with tf.GradientTape() as tape:
        tape.watch(projections)
        first, second = tf.split(projections, 2, axis=1)
        views = count * rows // 2
        con_loss, logits_ab, con_labels = contrastive(
            tf.concat([tf.reshape(first, [views, -1]), tf.reshape(second, [views, -1])], 0))
        scaled_con = scale(con_loss)
    cached = tape.gradient(scaled_con, projections)

    head_vars = list(head_vars) if supervised is not None else []
    variables = list(encoder_vars) + head_vars
    reached = [False] * len(variables)  # filled in while the loop's body is traced

    def train(i, totals, sup_total, logits):
        with tf.GradientTape(persistent=True) as tape:
            out = model(images[i], training=True)
            surrogate = tf.reduce_sum(tf.cast(out["proj_head_output"], tf.float32) * cached[i])
            if supervised is not None:
                sup_loss = supervised(out["logits_sup"], labels[i])
                scaled_sup = scale(sup_loss / count)
        grads = tape.gradient(surrogate, encoder_vars)
        if head_vars:
            grads += tape.gradient(scaled_sup, head_vars)
            sup_total += sup_loss
            logits = logits.write(i, tf.cast(out["logits_sup"], tf.float32))
        del tape
        for k, grad in enumerate(grads):
            reached[k] = reached[k] or grad is not None
        totals = [t if g is None else t + tf.convert_to_tensor(g) for t, g in zip(totals, grads)]
        return i + 1, totals, sup_total, logits

    with tf.control_dependencies([cached]):  # no second pass before the first is done
        zeros = [tf.zeros(v.shape, v.dtype) for v in variables]
    totals, sup_total, logits = _one_at_a_time(
        count, train, [zeros, tf.constant(0.0), tf.TensorArray(tf.float32, count)], unrolled)

    with tf.GradientTape(persistent=True) as tape:
        encoder_l2 = encoder_penalty()
        head_l2 = head_penalty() if head_vars else None
        penalties = [(scale(encoder_l2), list(encoder_vars))]
        if head_vars:
            penalties.append((scale(head_l2), head_vars))
    grads = []
    for scaled_penalty, group in penalties:
        grads += tape.gradient(scaled_penalty, group)
    del tape
    # Variables no loss reaches (projection layers above ft_proj_selector) have no gradient and
    # are left alone, as weight_updates.apply leaves them.
    pairs = []
    for total, grad, variable, in_loop in zip(totals, grads, variables, reached):
        if in_loop or grad is not None:
            pairs.append((total + grad if grad is not None else total, variable))
    outputs = Outputs(con_loss, logits_ab, con_labels, encoder_l2)
    if head_vars:
        outputs = outputs._replace(
            supervised_loss=sup_total / count,
            logits_sup=tf.reshape(logits.stack(), [count * rows, -1]),
            sup_labels=tf.reshape(labels, [-1]), head_penalty=head_l2)
    return pairs, outputs
