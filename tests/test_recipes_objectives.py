"""Losses, LARS and the schedule against plain numpy references."""

import math

import numpy as np
import pytest
import tensorflow as tf

tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402

from simclrv2.recipes import objectives, optim  # noqa: E402


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def nt_xent_numpy(z1, z2, temperature):
    """Textbook NT-Xent: 2N anchors, each against the 2N-1 others; mean over the N pairs of the
    two directions' losses summed (SimCLR's normalisation)."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z1)
    sim = z @ z.T / temperature
    np.fill_diagonal(sim, -np.inf)
    logp = _log_softmax(np.where(np.isinf(sim), -1e300, sim))
    pos = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    per_anchor = -logp[np.arange(2 * n), pos]
    return (per_anchor[:n] + per_anchor[n:]).mean()


def test_nt_xent_matches_numpy():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    for temperature in (0.1, 0.5):
        loss, logits_ab, labels = objectives.nt_xent_loss(
            tf.constant(np.concatenate([z1, z2]), tf.float32), temperature)
        np.testing.assert_allclose(loss.numpy(), nt_xent_numpy(z1, z2, temperature), rtol=1e-5)
    assert logits_ab.shape == (6, 6) and labels.shape == (6, 12)


def test_nt_xent_cross_replica_form_equals_global_batch():
    """Replica r with its local rows and the gathered batch: the mean of the per-replica losses is
    the loss of the whole batch, so N replicas behave as one batch of N*B."""
    rng = np.random.default_rng(1)
    replicas, per_replica = 3, 4
    z1 = rng.normal(size=(replicas * per_replica, 8)).astype(np.float32)
    z2 = rng.normal(size=(replicas * per_replica, 8)).astype(np.float32)
    n1 = tf.math.l2_normalize(z1, axis=1)
    n2 = tf.math.l2_normalize(z2, axis=1)
    losses = []
    for r in range(replicas):
        rows = slice(r * per_replica, (r + 1) * per_replica)
        loss, _, _ = objectives.nt_xent_gathered(n1[rows], n2[rows], n1, n2, r, 0.2)
        losses.append(loss.numpy())
    np.testing.assert_allclose(np.mean(losses), nt_xent_numpy(z1, z2, 0.2), rtol=1e-5)
    # A wrong replica offset points the positives elsewhere and must change the loss.
    wrong, _, _ = objectives.nt_xent_gathered(n1[:per_replica], n2[:per_replica], n1, n2, 1, 0.2)
    assert abs(wrong.numpy() - losses[0]) > 1e-3


def test_contrastive_metrics_perfect_and_uniform():
    eye = tf.eye(4) * 100.0
    labels = tf.one_hot(tf.range(4), 8)
    acc, entropy = objectives.contrastive_metrics(eye, labels)
    assert acc.numpy() == 1.0 and entropy.numpy() < 1e-3
    acc, entropy = objectives.contrastive_metrics(tf.zeros((4, 4)), labels)
    np.testing.assert_allclose(entropy.numpy(), math.log(4), rtol=1e-5)


def test_distillation_loss_matches_numpy():
    rng = np.random.default_rng(2)
    teacher, student = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    for tau in (0.1, 1.0, 2.0):
        p = np.exp(_log_softmax(teacher / tau))
        expected = tau ** 2 * (-(p * _log_softmax(student / tau)).sum(axis=1)).mean()
        got = objectives.distillation_loss(tf.constant(teacher), tf.constant(student), tau)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        objectives.distillation_loss(tf.zeros((1, 2)), tf.zeros((1, 2)), 0.0)


def test_distillation_gradient_only_reaches_student():
    teacher = tf.Variable(tf.random.normal((3, 4)))
    student = tf.Variable(tf.random.normal((3, 4)))
    with tf.GradientTape() as tape:
        loss = objectives.distillation_loss(teacher, student, 1.0)
    g_teacher, g_student = tape.gradient(loss, [teacher, student])
    assert g_teacher is None and g_student is not None


def test_partially_labeled_cross_entropy_is_a_per_image_sum_over_the_labeled_rows():
    """The label loss of distillation at a label fraction: each labeled row weighs 1/B, as in
    the paper's sums over the data set, not 1/(labeled rows)."""
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(8, 5)).astype(np.float32)
    labels = np.array([-1, 2, -1, -1, 4, -1, -1, -1])
    ce = -_log_softmax(logits.astype(np.float64))[[1, 4], [2, 4]]
    got = objectives.partially_labeled_cross_entropy(tf.constant(labels), tf.constant(logits))
    np.testing.assert_allclose(got.numpy(), ce.sum() / 8, rtol=1e-5)
    all_labeled = np.arange(8) % 5
    np.testing.assert_allclose(
        objectives.partially_labeled_cross_entropy(tf.constant(all_labeled), tf.constant(logits)),
        objectives.supervised_loss(all_labeled, logits, 5), rtol=1e-6)
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = objectives.partially_labeled_cross_entropy(tf.constant(labels), variable)
    grad = tape.gradient(loss, variable).numpy()
    assert np.all(grad[labels < 0] == 0) and np.all(np.abs(grad[labels >= 0]).sum(1) > 0)
    assert float(objectives.partially_labeled_cross_entropy(
        tf.constant(np.full(8, -1)), tf.constant(logits))) == 0.0


def test_knn_weighted_vote():
    bank = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.2, 0.8]], np.float32)
    bank_labels = np.array([0, 0, 1, 1, 1])
    query = np.array([[1, 0.05], [0.05, 1]], np.float32)
    # k=5: every bank entry votes, but the similarity weights let the 2 close class-0 entries beat
    # the 3 far class-1 entries for the first query.
    pred = objectives.knn_predict(query, bank, bank_labels, 2, k=5, temperature=0.1)
    assert pred.numpy().tolist() == [0, 1]
    # Numpy reference of the weighted vote.
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    w = np.exp(q @ b.T / 0.1)
    scores = np.stack([w[:, bank_labels == c].sum(1) for c in range(2)], 1)
    assert pred.numpy().tolist() == scores.argmax(1).tolist()
    assert objectives.knn_top1(query, [0, 1], bank, bank_labels, 2, k=5) == 1.0


def _lars_reference(w, g, v, lr, momentum, wd, eeta, excluded):
    if wd and not excluded:
        g = g + wd * w
    trust = 1.0
    if not excluded:
        wn, gn = np.linalg.norm(w), np.linalg.norm(g)
        trust = eeta * wn / gn if wn > 0 and gn > 0 else 1.0
    v = momentum * v + lr * trust * g
    return w - v, v


def test_lars_matches_hand_computation():
    rng = np.random.default_rng(3)
    kernel0 = rng.normal(size=(4, 3)).astype(np.float32)
    gamma0 = rng.normal(size=(3,)).astype(np.float32)
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, use_bias=False, name="dense0")(inputs)
    h = keras.layers.BatchNormalization(name="bn0")(h)
    model = keras.Model(inputs, h)
    model.get_layer("dense0").kernel.assign(kernel0)
    model.get_layer("bn0").gamma.assign(gamma0)
    opt = optim.LARS(learning_rate=0.5, momentum=0.9, weight_decay_rate=1e-2, eeta=0.001)
    variables = model.trainable_variables
    grads = [tf.constant(rng.normal(size=v.shape).astype(np.float32)) for v in variables]
    paths = [v.path for v in variables]
    assert [optim.is_excluded(p) for p in paths] == [False, True, True], paths
    state = {p: (v.numpy().astype(np.float64), np.zeros(v.shape)) for p, v in zip(paths, variables)}
    for _ in range(2):  # two steps: the second uses the momentum slot
        opt.apply_gradients(zip(grads, variables))
        for p, g in zip(paths, grads):
            w, v = state[p]
            state[p] = _lars_reference(w, g.numpy(), v, 0.5, 0.9, 1e-2, 0.001, optim.is_excluded(p))
    for p, v in zip(paths, variables):
        np.testing.assert_allclose(v.numpy(), state[p][0], rtol=1e-5, atol=1e-7)
    # The trust ratio changed the kernel's step by orders of magnitude: a plain SGD step would not.
    assert np.abs(variables[0].numpy() - kernel0).max() < 0.01


def test_exclusion_patterns_follow_zoo_names():
    assert optim.is_excluded("model/stem/bn1/gamma")
    assert optim.is_excluded("block_group2/block1/shortcut_bn/beta")
    assert optim.is_excluded("block_group2/block1/sk_conv/bn/gamma")
    assert optim.is_excluded("proj_head/bn2/gamma")
    assert optim.is_excluded("head_supervised/kernel")
    assert not optim.is_excluded("block_group2/block1/conv1/kernel")
    assert not optim.is_excluded("proj_head/dense0/kernel")
    assert not optim.is_excluded("block_group1/block1/sk_conv/mixing_conv/kernel")


def test_warmup_cosine_schedule_and_config():
    sched = optim.WarmupCosine(peak_lr=2.0, warmup_steps=10, total_steps=110)
    assert float(sched(0)) == 0.0
    np.testing.assert_allclose(float(sched(5)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(sched(10)), 2.0, rtol=1e-6)
    np.testing.assert_allclose(float(sched(60)), 1.0, rtol=1e-6)  # half-way through the cosine
    np.testing.assert_allclose(float(sched(110)), 0.0, atol=1e-6)
    clone = optim.WarmupCosine.from_config(sched.get_config())
    assert float(clone(37)) == float(sched(37))
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.WarmupCosine(1.0, 20, 10)


def test_lr_scaling():
    assert optim.scaled_lr(0.3, 512, "linear") == pytest.approx(0.6)
    assert optim.scaled_lr(0.1, 4096, "sqrt") == pytest.approx(6.4)  # the paper's 6.4
    with pytest.raises(ValueError, match="learning_rate_scaling"):
        optim.scaled_lr(0.1, 256, "cubic")


def test_accuracy_is_one_rule_for_steps_and_reports():
    logits = tf.constant([[0.2, 0.7, 0.1], [1.0, 1.0, 0.0], [0.0, 0.3, 0.2]], tf.bfloat16)
    labels = tf.constant([1, 1, 2], tf.int64)
    # Row 1 ties classes 0 and 1: the first wins, so it counts as wrong here.
    in_step = objectives.top1_accuracy(logits, labels)
    assert in_step.dtype == tf.float32 and float(in_step) == pytest.approx(1 / 3)
    reported = objectives.top1_accuracy(logits, labels, dtype=tf.float64)
    assert reported.dtype == tf.float64 and float(reported) == 1 / 3
    assert float(objectives.accuracy(np.array([3, 1, 4, 1]), np.array([3, 1, 0, 0]))) == 0.5
