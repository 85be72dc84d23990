"""The reference every learned feature has to beat: logistic regression on the raw pixels.

Multinomial logistic regression (softmax, L2) on the pixel values in [0, 1], fitted with
L-BFGS to convergence on all the labels given (docs/main_job.md reports its Fashion-MNIST
figure).
"""

from __future__ import annotations

import numpy as np


def _with_bias(features) -> np.ndarray:
    x = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    return np.hstack([x, np.ones((len(x), 1), np.float32)])


def pixels(images) -> np.ndarray:
    """[N, H, W, C] uint8 -> [N, H*W*C] float32 in [0, 1]."""
    images = np.asarray(images)
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def fit_logistic_regression(features, labels, num_classes: int, l2: float = 1e-4,
                            max_iterations: int = 300, seed: int = 0) -> np.ndarray:
    """Weights [D + 1, classes] of softmax regression on [N, D] features (bias last, not
    penalised), by L-BFGS on the mean cross-entropy + l2/2 |W|^2. The same classifier serves
    the raw-pixel baseline and the linear evaluation of learned features.

    Columns that are constant over the training set (the zero padding around Fashion-MNIST's
    digits) are left out of the fit and get zero weight, which is their exact optimum under
    the L2 penalty (the bias already carries any constant); the products run in float32. Both
    only make each of the few hundred iterations cheaper."""
    from scipy.optimize import minimize

    features = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    y = np.asarray(labels, dtype=np.int64)
    if len(features) != len(y) or np.any(y < 0) or np.any(y >= num_classes):
        raise ValueError("logistic regression needs one label in [0, classes) per example")
    varying = np.flatnonzero(features.max(0) > features.min(0))
    x = np.hstack([features[:, varying], np.ones((len(y), 1), np.float32)])
    d, k = x.shape[1], int(num_classes)
    onehot = np.eye(k, dtype=np.float32)[y]

    def loss_and_grad(flat):
        w = flat.reshape(d, k)
        z = x @ w.astype(np.float32)
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        loss = (-np.mean(np.log(p[np.arange(len(y)), y].astype(np.float64) + 1e-12))
                + 0.5 * l2 * np.sum(w[:-1] ** 2))
        grad = (x.T @ (p - onehot)).astype(np.float64) / len(y)
        grad[:-1] += l2 * w[:-1]
        return loss, grad.ravel()

    start = np.random.default_rng(seed).normal(0, 1e-3, d * k)
    fitted = minimize(loss_and_grad, start, jac=True, method="L-BFGS-B",
                      options={"maxiter": int(max_iterations)}).x.reshape(d, k)
    weights = np.zeros((features.shape[1] + 1, k))
    weights[varying] = fitted[:-1]
    weights[-1] = fitted[-1]
    return weights


def predict(weights, features) -> np.ndarray:
    """Class scores [N, classes] of fitted weights."""
    return _with_bias(features) @ weights


def pixel_logistic_regression_top1(train_images, train_labels, eval_images, eval_labels,
                                   num_classes: int, max_iterations: int = 300,
                                   seed: int = 0) -> float:
    """Top-1 on the evaluation images of the regression fitted on the training images' pixels."""
    w = fit_logistic_regression(pixels(train_images), train_labels, num_classes,
                                max_iterations=max_iterations, seed=seed)
    scores = predict(w, pixels(eval_images))
    return float(np.mean(np.argmax(scores, 1) == np.asarray(eval_labels)))
