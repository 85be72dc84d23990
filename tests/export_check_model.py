"""A small random-weight classifier whose top class spreads over random images, and images it is
sure about, for the tests of the runtime exports' top-1 checks (test_export_openvino,
test_export_tflite).

A freshly built network puts nearly every random image in one class (post-ReLU features share
one large mean direction), so a top-1 check on it would test nothing; its supervised head is
re-drawn on the features' deviations from their mean instead. Images whose top class leads the
next by a margin keep a bfloat16 or an int8 run from flipping near-ties by chance."""

import keras
import numpy as np

import simclrv2.zoo as zoo


def random_images(count, side, seed):
    return np.random.default_rng(seed).uniform(0, 1, (count, side, side, 3)).astype(np.float32)


def spread_classifier(name="r18_0.125x_sk0", side=32, num_classes=10, seed=0):
    """zoo.build(name) at `side` px with `num_classes`, its head re-drawn so that the top class
    varies over random images."""
    keras.utils.set_random_seed(seed)
    model = zoo.build(name, num_classes=num_classes, input_shape=(side, side, 3))
    head = model.get_layer("head_supervised")
    hidden = np.asarray(keras.Model(model.inputs, head.input)(
        [random_images(256, side, seed + 100)], training=False))
    mean, spread = hidden.mean(0), hidden.std(0) + 1e-6
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(hidden.shape[1], num_classes)) / spread[:, None]
    kernel /= np.sqrt(hidden.shape[1])
    head.set_weights([kernel.astype(np.float32), (-mean @ kernel).astype(np.float32)])
    return model


def logits(model, images):
    return np.asarray(model(images, training=False)["logits_sup"])


def sure_images(model, count, side, seed=1, margin=0.05):
    """(images, labels = the model's top class) for `count` random images whose top logit leads
    the next one by `margin` of the largest logit magnitude or more."""
    images = random_images(8 * count, side, seed)
    scores = logits(model, images)
    top2 = np.sort(scores, axis=1)[:, -2:]
    sure = (top2[:, 1] - top2[:, 0]) >= margin * np.abs(scores).max()
    if sure.sum() < count:
        raise AssertionError(f"only {sure.sum()} of {len(images)} images have a clear top class")
    return images[sure][:count], scores[sure][:count].argmax(1)


def int8_refusal(model, out, formats, side, count=100, black=50):
    """The message of the QuantizationError that export_model(..., quantize="int8") raises for
    `formats` calibrated on `black` black images and checked on `count` the model is sure about
    (labelled with its own top class): ranges fitted to black images are far too narrow for the
    others, so the int8 model's top class disagrees with the float model's there."""
    from simclrv2.export import export_model
    from simclrv2.export.errors import QuantizationError

    sure, labels = sure_images(model, count, side)
    images = np.concatenate([np.zeros((black, side, side, 3), np.float32), sure])
    labels = np.concatenate([np.zeros(black, np.int64), labels])
    try:
        export_model(model, out, formats=formats, quantize="int8", calibration=(images, labels),
                     calibration_examples=black, check_examples=count, max_int8_drop=0.5)
    except QuantizationError as refusal:
        return str(refusal)
    raise AssertionError(f"the {formats} int8 model calibrated on black images was accepted")
