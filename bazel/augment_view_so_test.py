"""The fused augmentation op as Bazel builds it (//simclrv2/data:augment_view.so) loads into
the virtualenv's TensorFlow and gives the views of the TF ops it replaces, as the package's own
build (simclrv2 build-ops, g++) does in tests/test_data_fused_view.py.

    augment_view_so_test.py PATH_TO_augment_view.so

Both builds register the same op, so only one can be loaded in a process: this one is put where
`fused_view.load` keeps the loaded module, and the package's build is never loaded here.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("TEST_TMPDIR"):  # TensorFlow imports matplotlib; ~/.config is read-only here
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(os.environ["TEST_TMPDIR"], "matplotlib"))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def batches(make, kernel):
    return [t.numpy() for t in tf.nest.flatten(next(iter(make(kernel))))]


def main(argv):
    from simclrv2.data import AugmentConfig, Source, augment, fused_view, pretrain_dataset

    op = tf.load_op_library(os.path.abspath(argv[0]))
    fused_view._loaded.clear()
    fused_view._loaded["module"] = op
    assert fused_view.load("fused") is op

    rng = np.random.default_rng(0)
    image = tf.constant(rng.integers(0, 256, size=[37, 29, 3], dtype=np.uint8))
    for window, flip in (([0, 0, 37, 29], False), ([3, 2, 20, 24], True)):
        view = op.simclr_augment_view(image, window, flip, [-1], [1.0, 1.0, 1.0, 0.0], 0.0, size=16)
        reference = augment.crop_resize_view(image, tf.constant(window), tf.constant(flip), 16)
        np.testing.assert_allclose(view.numpy(), reference.numpy(), atol=1e-5, rtol=0)

    # Every step, blur included, through the data pipeline: fused (this build) against TF ops.
    small = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    images = tf.cast(tf.image.resize(small, [64, 64]), tf.uint8).numpy()
    src = Source(name="smooth64", split="test", kind="array", num_examples=16, num_classes=10,
                 image_size=64, images=images, labels=np.zeros(16, np.int64))
    make = lambda kernel: pretrain_dataset(src, 16, 48, seed=3, config=AugmentConfig(  # noqa: E731
        kernel=kernel, jitter_prob=1.0, blur_prob=1.0))
    for fused, ref in zip(batches(make, "fused"), batches(make, "tf")):
        np.testing.assert_allclose(fused, ref, atol=1e-5, rtol=0)
    print(f"{argv[0]}: the views of the TF ops")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
