"""Statistics of each SimCLR transform on real images (Fashion-MNIST), 2,000 draws each."""

import numpy as np
import pytest
import tensorflow as tf

try:  # must run before TensorFlow starts its pools; another test file may have done it already
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:
    pass

from simclrv2.data import AugmentConfig, Source, load_labeled, pretrain_dataset
from simclrv2.data import augment as aug

N = 1000  # images; two views each = 2,000 draws


@pytest.fixture(scope="module")
def tinted():
    """1,000 Fashion-MNIST images tinted so that colour and grayscale differ."""
    src = load_labeled("fashion_mnist", "test")
    gray = src.images[:N].astype(np.float32)
    images = np.clip(gray * np.array([1.0, 0.6, 0.3]), 0, 255).astype(np.uint8)
    return Source(name="tinted", split="test", kind="array", num_examples=N, num_classes=10,
                  image_size=32, images=images, labels=src.labels[:N])


def views(source, cfg, seed=0):
    ds = pretrain_dataset(source, N, seed=seed, config=cfg, shuffle=False)
    (v1, v2), _ = next(iter(ds))
    return np.stack([v1.numpy(), v2.numpy()], axis=1)  # [N, 2, S, S, 3]


ONLY = dict(crop=False, flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)


def test_flip_fraction(tinted):
    out = views(tinted, AugmentConfig(**{**ONLY, "flip_prob": 0.5}))
    x = tinted.images.astype(np.float32)[:, None] / 255.0
    same = np.all(np.abs(out - x) < 1e-5, axis=(2, 3, 4))
    flipped = np.all(np.abs(out - x[:, :, :, ::-1]) < 1e-5, axis=(2, 3, 4))
    assert np.all(same | flipped)  # nothing else happened to the pixels
    symmetric = same & flipped
    frac = flipped[~symmetric].mean()
    assert abs(frac - 0.5) < 0.03, frac


def test_grayscale_fraction(tinted):
    out = views(tinted, AugmentConfig(**{**ONLY, "grayscale_prob": 0.2}))
    is_gray = np.all(np.abs(out[..., 0] - out[..., 1]) < 1e-6, axis=(2, 3))
    assert abs(is_gray.mean() - 0.2) < 0.03, is_gray.mean()
    x = tinted.images.astype(np.float32)[:, None] / 255.0
    untouched = np.all(np.abs(out - x) < 1e-5, axis=(2, 3, 4))
    assert np.all(is_gray ^ untouched)


def test_grayscale_and_brightness_equal_the_tf_image_ops():
    x = tf.random.stateless_uniform([20, 24, 3], seed=[3, 4])
    expected = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(x))
    np.testing.assert_allclose(aug.grayscale_image(x).numpy(), expected.numpy(), atol=1e-6)
    cfg = AugmentConfig(contrast=0.0, saturation=0.0, hue=0.0).resolve(64)
    for factor in (0.3, 1.0, 1.7):
        params = {"jitter": tf.constant(True), "order_keys": tf.constant([0.1, 0.2, 0.3, 0.4]),
                  "brightness": tf.constant(factor)}
        out = aug.color_jitter_image(x, params, cfg).numpy()
        np.testing.assert_allclose(out, np.clip(x.numpy() * factor, 0.0, 1.0), atol=1e-6)


def test_jitter_fraction_and_range(tinted):
    out = views(tinted, AugmentConfig(**{**ONLY, "jitter_prob": 0.8}))
    x = tinted.images.astype(np.float32)[:, None] / 255.0
    changed = np.any(np.abs(out - x) > 1e-3, axis=(2, 3, 4))
    assert abs(changed.mean() - 0.8) < 0.03, changed.mean()
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_blur_fraction_at_64px():
    src = load_labeled("fashion_mnist", "test")
    big = tf.image.resize(src.images[:N], [64, 64], method="nearest").numpy()
    big = np.repeat(big, 3, axis=-1)
    source = Source(name="fm64", split="test", kind="array", num_examples=N, num_classes=10,
                    image_size=64, images=big, labels=src.labels[:N])
    # sigma >= 1 so that every blurred view is visibly blurred at radius 3
    out = views(source, AugmentConfig(**{**ONLY, "blur_prob": 0.5, "blur_sigma": (1.0, 2.0)}))
    x = big.astype(np.float32)[:, None] / 255.0
    blurred = np.any(np.abs(out - x) > 1e-3, axis=(2, 3, 4))
    assert abs(blurred.mean() - 0.5) < 0.03, blurred.mean()


def test_crop_areas_and_aspects_inside_range():
    cfg = AugmentConfig().resolve(224)
    params = tf.stack([aug.element_key(7, p) for p in range(2000)])
    signature = {k: v.dtype for k, v in aug.draw_params(params[0], cfg, 1).items()}
    draws = tf.function(lambda: tf.map_fn(lambda k: aug.draw_params(k, cfg, 1), params,
                                          fn_output_signature=signature))()  # eager map_fn: 30 s
    win = aug.crop_windows({k: v[:, 0] for k, v in draws.items()}, 256, 256, cfg).numpy()
    y, x, h, w = win.T
    area = h * w / 256.0 ** 2
    assert area.min() >= 0.08 - 0.01 and area.max() <= 1.0
    assert area.min() < 0.15 and area.max() > 0.9  # the range is actually covered
    aspect = w / h
    assert aspect.min() >= 0.75 - 0.02 and aspect.max() <= 4 / 3 + 0.02
    assert np.all(y >= 0) and np.all(x >= 0) and np.all(y + h <= 256) and np.all(x + w <= 256)
    # offsets are spread over the free range, not stuck in a corner
    assert 0.3 < np.mean(x / np.maximum(256 - w, 1)) < 0.7


def test_no_box_fits_falls_back_to_centre_crop():
    cfg = AugmentConfig(area_range=(1.0, 1.0), aspect_range=(1.5, 2.0)).resolve(224)
    p = aug.draw_params(aug.element_key(0, 0), cfg, 1)
    win = aug.crop_windows({k: v[0] for k, v in p.items()}, 100, 100, cfg).numpy()
    # widest allowed aspect 2.0 clamps nothing on a square image: a 1.5-wide centre box
    assert list(win) == [17, 0, 67, 100] or (win[2] * win[3] <= 100 * 100 and win[0] > 0)


def test_defaults_follow_image_size():
    small, big = AugmentConfig().resolve(32), AugmentConfig().resolve(224)
    assert small.strength == 0.5 and small.blur_prob == 0.0
    assert big.strength == 1.0 and big.blur_prob == 0.5
    assert big.brightness == pytest.approx(0.8) and big.hue == pytest.approx(0.2)


@pytest.mark.parametrize("field,value", [("flip_prob", 1.5), ("grayscale_prob", -0.1),
                                         ("area_range", (0.5, 0.1)), ("area_range", (0.0, 1.0)),
                                         ("blur_sigma", (0.0, 2.0)), ("crop_attempts", 0)])
def test_bad_config_is_a_clear_error(field, value):
    with pytest.raises(ValueError, match=field):
        AugmentConfig(**{field: value}).resolve(32)


def test_pretrain_views_are_in_unit_range_and_differ(tinted):
    (v1, v2), y = next(iter(pretrain_dataset(tinted, 64, seed=1)))
    assert v1.shape == (64, 32, 32, 3) and v1.dtype == tf.float32
    for v in (v1, v2):
        assert float(tf.reduce_min(v)) >= 0.0 and float(tf.reduce_max(v)) <= 1.0
    assert float(tf.reduce_mean(tf.abs(v1 - v2))) > 0.01
