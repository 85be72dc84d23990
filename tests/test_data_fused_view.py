"""The fused view op (simclrv2/data/kernels/augment_view.cc) against the TF ops it replaces."""

import numpy as np
import pytest
import tensorflow as tf

try:  # must run before TensorFlow starts its pools; another test file may have done it already
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:
    pass

from simclrv2.data import AugmentConfig, Source, finetune_dataset, fused_view, pretrain_dataset
from simclrv2.data import augment as aug

# Where a compiler exists the op must build: a broken build fails these tests, not skips them.
pytestmark = pytest.mark.skipif(fused_view.compiler() is None, reason="no C++ compiler on this machine")


def smooth_source(n, side, channels=3, seed=0):
    """Smooth colour images (upsampled 8x8 noise): long runs of near-equal channels, where the
    HSV arithmetic has its edge cases."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 8, 8, channels), dtype=np.uint8)
    images = tf.cast(tf.image.resize(small, [side, side]), tf.uint8).numpy()
    return Source(name=f"smooth{side}", split="test", kind="array", num_examples=n, num_classes=10,
                  image_size=side, images=images, labels=np.zeros(n, np.int64))


def first_batch(make, kernel):
    return [t.numpy() for t in tf.nest.flatten(next(iter(make(kernel))))]


def assert_same_views(make):
    """The fused op and the TF ops give the same batches, to float rounding."""
    for fused, ref in zip(first_batch(make, "fused"), first_batch(make, "tf")):
        if fused.ndim < 4:
            np.testing.assert_array_equal(fused, ref)  # labels, sigmas
        else:
            np.testing.assert_allclose(fused, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size,overrides", [
    (96, dict(jitter_prob=1.0, blur_prob=1.0)),  # every step, blur included
    (96, dict()),                                # the defaults
    (32, dict()),                                # CIFAR-size defaults: strength 0.5, no blur
])
def test_pretrain_views_match_the_tf_ops(size, overrides):
    src = smooth_source(48, 128 if size > 32 else 32)
    assert_same_views(lambda k: pretrain_dataset(src, 48, size, seed=3,
                                                 config=AugmentConfig(kernel=k, **overrides)))


def test_each_step_alone_matches_the_tf_ops():
    src = smooth_source(32, 80)
    steps = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    for step in steps:
        only = {**steps, step: None}
        assert_same_views(lambda k: pretrain_dataset(src, 32, 64, seed=1, config=AugmentConfig(
            kernel=k, jitter_prob=1.0, grayscale_prob=0.0, blur_prob=0.0, **only)))
    assert_same_views(lambda k: pretrain_dataset(src, 32, 64, seed=1, config=AugmentConfig(
        kernel=k, jitter_prob=0.0, grayscale_prob=1.0, blur_prob=0.0)))


def test_deferred_blur_grey_sources_and_finetune_match_the_tf_ops():
    src = smooth_source(32, 96)
    assert_same_views(lambda k: pretrain_dataset(src, 32, 80, seed=2, config=AugmentConfig(kernel=k),
                                                 defer_blur=True))
    grey = smooth_source(32, 40, channels=1)  # upscaled, and one channel made three
    assert_same_views(lambda k: pretrain_dataset(grey, 32, 48, seed=5, config=AugmentConfig(kernel=k)))
    assert_same_views(lambda k: finetune_dataset(src, 32, 64, seed=4, config=AugmentConfig.finetune(kernel=k)))


def test_saturation_equals_tf_image_and_keeps_the_colour_where_tf_greys_it():
    x = tf.random.stateless_uniform([64, 64, 3], seed=[1, 2])
    for factor in (0.2, 1.0, 1.8):
        np.testing.assert_allclose(aug.adjust_saturation(x, factor).numpy(),
                                   tf.image.adjust_saturation(x, factor).numpy(), atol=1e-5)
    reddish = tf.constant([[[0.41843998, 0.22047812, 0.22047813]]])  # hue rounds to 1.0 in TF
    assert np.ptp(tf.image.adjust_saturation(reddish, 1.0).numpy()) < 1e-6  # TF: grey
    np.testing.assert_allclose(aug.adjust_saturation(reddish, 1.0).numpy(), reddish.numpy(), atol=1e-7)


def test_op_rejects_a_window_outside_the_image():
    module = fused_view.load("fused")
    image = tf.zeros([10, 10, 3], tf.uint8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="does not lie inside the 10x10 image"):
        module.simclr_augment_view(image, [5, 5, 8, 2], False, [-1], [1.0, 1.0, 1.0, 0.0], 0.0, size=4)


def test_config_rejects_an_unknown_kernel():
    with pytest.raises(ValueError, match="AugmentConfig.kernel='cuda' must be one of"):
        AugmentConfig(kernel="cuda").resolve(32)


def test_auto_uses_the_op_where_it_builds():
    assert fused_view.load("auto") is not None and fused_view.load("fused") is fused_view.load("auto")


def test_build_is_atomic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMCLRV2_CACHE", str(tmp_path))
    path = fused_view.build()
    assert path.parent == tmp_path / "kernels" and path.exists()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
    mtime = path.stat().st_mtime_ns
    assert fused_view.build() == path and path.stat().st_mtime_ns == mtime  # cached: not rebuilt


def test_without_a_compiler_auto_falls_back_and_fused_says_why(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SIMCLRV2_CACHE", str(tmp_path))  # nothing cached there
    monkeypatch.setattr(fused_view, "compiler", lambda: None)
    monkeypatch.setattr(fused_view, "_loaded", {})
    assert fused_view.load("tf") is None
    assert fused_view.load("auto") is None
    assert "install g++" in caplog.text
    with pytest.raises(fused_view.FusedViewUnavailable, match="no C\\+\\+ compiler"):
        fused_view.load("fused")
    # the pipeline still runs, on the TF ops
    src = smooth_source(8, 40)
    (v1, v2), _ = next(iter(pretrain_dataset(src, 8, 32, config=AugmentConfig(kernel="auto"))))
    assert v1.shape == (8, 32, 32, 3) and 0.0 <= float(tf.reduce_min(v1)) <= float(tf.reduce_max(v1)) <= 1.0
    assert list(tmp_path.rglob("*")) in ([], [tmp_path / "kernels"])  # nothing half-written


def test_a_failed_compile_leaves_nothing_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMCLRV2_CACHE", str(tmp_path))
    monkeypatch.setattr(fused_view, "compiler", lambda: "false")  # a compiler that always fails
    with pytest.raises(fused_view.FusedViewUnavailable, match="building the fused view op failed"):
        fused_view.build()
    assert list((tmp_path / "kernels").iterdir()) == []


def test_a_compiler_that_cannot_run_is_named_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMCLRV2_CACHE", str(tmp_path))
    monkeypatch.setattr(fused_view, "compiler", lambda: str(tmp_path / "no-such-g++"))
    with pytest.raises(fused_view.FusedViewUnavailable, match="could not be run .*install g\\+\\+ or point CXX"):
        fused_view.build()
    assert list((tmp_path / "kernels").iterdir()) == []
