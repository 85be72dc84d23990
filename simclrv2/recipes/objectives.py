"""Losses and monitors of the SimCLRv2 stages, accuracy included.

Everything here is plain TensorFlow on tensors, so it can be checked against numpy and runs the
same in any replica context. NT-Xent's core and the distillation loss are written once in
keras.ops (simclrv2.recipes.portable_objectives, shared with the JAX and PyTorch backends); this
module gathers the negatives across tf.distribute replicas around them.
"""

from __future__ import annotations

import tensorflow as tf

from simclrv2.recipes import portable_objectives as portable
from simclrv2.recipes.portable_objectives import LARGE_NUM, nt_xent_gathered  # noqa: F401


def _replica_info():
    """(num_replicas, replica_id) of the current replica context (1, 0 outside any strategy)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:  # cross-replica context: the caller is not inside strategy.run
        return 1, 0
    return ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group


def nt_xent_loss(hidden, temperature=0.1, hidden_norm=True):
    """SimCLR's contrastive loss on `hidden` = concat([view1, view2]) of the local batch.

    Inside `strategy.run` with several replicas the views of every replica are gathered
    (`ReplicaContext.all_gather`, whose gradient sums back to the owning replica), so N replicas of
    per-replica batch B see the same negatives as one batch of N*B. The returned loss is the mean
    over local rows; summing `loss / N` over replicas gives the global-batch mean.
    """
    portable.check_temperature(temperature)
    hidden = tf.cast(hidden, tf.float32)  # the softmax over thousands of logits needs float32
    if hidden_norm:
        hidden = portable.l2_normalize(hidden, axis=-1)
    h1, h2 = tf.split(hidden, 2, axis=0)
    num_replicas, replica_id = _replica_info()
    if num_replicas > 1:
        ctx = tf.distribute.get_replica_context()
        h1_all = ctx.all_gather(h1, axis=0)
        h2_all = ctx.all_gather(h2, axis=0)
    else:
        h1_all, h2_all = h1, h2
    return nt_xent_gathered(h1, h2, h1_all, h2_all, replica_id, temperature)


def accuracy(predictions, labels, dtype=tf.float32):
    """The fraction of predicted class ids equal to their labels, as a `dtype` scalar: float32
    inside a training step (TPUs compute no float64), float64 for a reported figure, which is
    then the exact ratio of counts."""
    hits = tf.equal(tf.cast(predictions, tf.int32), tf.cast(labels, tf.int32))
    return tf.reduce_mean(tf.cast(hits, dtype))


def top1_accuracy(logits, labels, dtype=tf.float32):
    """`accuracy` of the highest-scoring class (the first one on a tie)."""
    return accuracy(tf.argmax(logits, axis=-1, output_type=tf.int32), labels, dtype)


def contrastive_metrics(logits_ab, labels):
    """(accuracy of finding the positive among view-2 candidates, mean entropy of that softmax)."""
    width = tf.shape(logits_ab)[1]
    acc = top1_accuracy(logits_ab, tf.argmax(labels[:, :width], axis=1))
    prob = tf.nn.softmax(logits_ab)
    entropy = -tf.reduce_mean(tf.reduce_sum(prob * tf.math.log(prob + 1e-8), axis=-1))
    return acc, entropy


def supervised_loss(labels, logits, num_classes):
    """Mean softmax cross-entropy; `labels` are integer class ids."""
    onehot = tf.one_hot(tf.cast(labels, tf.int32), num_classes)
    return tf.reduce_mean(
        tf.nn.softmax_cross_entropy_with_logits(onehot, tf.cast(logits, tf.float32)))


def partially_labeled_cross_entropy(labels, logits):
    """Softmax cross-entropy of the examples labeled >= 0, summed and divided by the whole
    batch's size (the rows labeled -1 count as zero).

    Distillation with labels (the paper's Table 2) sums the label loss over the labeled images
    and the distillation loss over all of them; per image of a batch that is this sum over the
    batch size. Dividing by the number of labeled rows instead would give each labeled image the
    weight of a whole batch at a small label fraction, and its noisy gradient then swamps the
    teacher's.
    """
    labels = tf.cast(labels, tf.int32)
    mask = tf.cast(labels >= 0, tf.float32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(labels, 0),
                                                        tf.cast(logits, tf.float32))
    return tf.reduce_sum(ce * mask) / tf.cast(tf.shape(labels)[0], tf.float32)


def distillation_loss(teacher_logits, student_logits, temperature=1.0):
    """tau^2 * CE(softmax(teacher / tau), softmax(student / tau)), averaged over the batch; the
    teacher's side carries no gradient (portable_objectives.distillation_loss)."""
    return portable.distillation_loss(teacher_logits, student_logits, temperature)


def knn_predict(query, bank, bank_labels, num_classes, k=200, temperature=0.1, chunk=1024):
    """Weighted kNN vote (Wu et al. 2018, InstDisc): class score = sum over the k most cosine-similar
    bank entries of exp(sim / temperature). Returns predicted class ids of `query`."""
    bank = tf.math.l2_normalize(tf.cast(bank, tf.float32), axis=-1)
    bank_labels = tf.cast(bank_labels, tf.int32)
    k = int(min(k, int(bank.shape[0])))
    preds = []
    for start in range(0, int(query.shape[0]), chunk):  # bounded memory: chunk x bank similarities
        q = tf.math.l2_normalize(tf.cast(query[start:start + chunk], tf.float32), axis=-1)
        sim = tf.matmul(q, bank, transpose_b=True)
        top_sim, top_idx = tf.math.top_k(sim, k=k)
        weights = tf.exp(top_sim / temperature)
        votes = tf.one_hot(tf.gather(bank_labels, top_idx), num_classes) * weights[..., None]
        preds.append(tf.argmax(tf.reduce_sum(votes, axis=1), axis=-1, output_type=tf.int32))
    return tf.concat(preds, axis=0)


def knn_top1(query, query_labels, bank, bank_labels, num_classes, k=200, temperature=0.1):
    """Top-1 accuracy (0..1) of `knn_predict`."""
    pred = knn_predict(query, bank, bank_labels, num_classes, k=k, temperature=temperature)
    return float(accuracy(pred, query_labels))
