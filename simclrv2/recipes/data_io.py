"""The stages' view of the data: `simclrv2.data` for real datasets, plus a `synthetic` source.

`synthetic` is a deterministic random dataset (class-coloured noise) for smoke tests and speed
benchmarks: it needs no files and its batches are a pure function of (seed, element index), like
the real pipelines, so resumed runs see exactly the batches they would have seen.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import tensorflow as tf

SYNTHETIC = "synthetic"
SYNTHETIC_CLASSES = 10
SYNTHETIC_SIZES = {"train": 2048, "test": 512}


@dataclasses.dataclass
class Source:
    """Images (uint8 or float NHWC) and integer labels of one split, or the data package's own
    source object in `native`."""

    images: np.ndarray = None
    labels: np.ndarray = None
    num_classes: int = 0
    native: object = None
    synthetic: bool = False
    index: np.ndarray = None  # positions in the full split, for a subset

    def __len__(self):
        if self.labels is not None:
            return len(self.labels)
        return len(self.native)


def _data():
    try:
        import simclrv2.data as data
    except ImportError as error:  # pragma: no cover - the package is part of the repo
        raise RuntimeError(f"simclrv2.data is unavailable ({error}); use dataset=synthetic") from None
    for name in ("load_labeled", "pretrain_dataset", "finetune_dataset", "eval_dataset"):
        if not hasattr(data, name):
            raise RuntimeError(f"simclrv2.data has no {name}() yet; use dataset=synthetic until it "
                               f"lands")
    return data


def _synthetic_split(split: str, seed: int = 1234) -> Source:
    if split not in SYNTHETIC_SIZES:
        raise ValueError(f"synthetic dataset has splits {list(SYNTHETIC_SIZES)}, not {split!r}")
    rng = np.random.default_rng(seed + (0 if split == "train" else 1))
    n = SYNTHETIC_SIZES[split]
    labels = np.arange(n) % SYNTHETIC_CLASSES
    # A fixed colour per class plus noise: separable, so the kNN monitor has something to find.
    colours = np.random.default_rng(seed).uniform(0.2, 0.8, size=(SYNTHETIC_CLASSES, 1, 1, 3))
    images = np.clip(colours[labels] + rng.normal(0, 0.15, size=(n, 8, 8, 3)), 0, 1)
    return Source((images * 255).astype(np.uint8), labels.astype(np.int32), SYNTHETIC_CLASSES,
                  synthetic=True)


def load_labeled(name: str, split: str, data_dir=None) -> Source:
    if name == SYNTHETIC:
        return _synthetic_split(split)
    data = _data()
    native = data.load_labeled(name, split, data_dir)
    labels = getattr(native, "labels", None)
    images = getattr(native, "images", None)
    if isinstance(native, tuple) and len(native) == 2:
        images, labels = native
        native = None
    num_classes = int(getattr(native, "num_classes", 0) or (int(np.max(labels)) + 1))
    return Source(images, None if labels is None else np.asarray(labels), num_classes, native)


def subset(source: Source, fraction: float, seed: int) -> Source:
    """A class-balanced labeled subset (the data package's label_subset when it is there)."""
    if fraction >= 1.0:
        return source
    if source.native is not None and hasattr(_data(), "label_subset"):
        index = np.asarray(_data().label_subset(source.labels, fraction=fraction, seed=seed))
    else:
        rng = np.random.default_rng(seed)
        index = np.sort(np.concatenate([
            rng.permutation(np.flatnonzero(source.labels == c))[
                :max(1, int(round(fraction * np.sum(source.labels == c))))]
            for c in np.unique(source.labels)]))
    native = source.native
    if native is not None and hasattr(native, "take"):
        native = native.take(index)
    return Source(source.images[index] if source.images is not None else None,
                  source.labels[index], source.num_classes, native, source.synthetic, index)


def _as_data_arg(source: Source):
    if source.native is not None:
        return source.native
    return source.images, source.labels


def _call(fn, source, **kwargs):
    """Calls a data-package builder with only the keyword arguments it declares."""
    params = inspect.signature(fn).parameters
    accepted = {k: v for k, v in kwargs.items() if k in params or any(
        p.kind == p.VAR_KEYWORD for p in params.values())}
    return fn(_as_data_arg(source), **accepted)


def _indexed(source: Source, batch_size: int, start_batch: int, seed: int, make_element):
    """Infinite batches whose element i (global index over epochs) is make_element(image, label,
    key) with key a function of (seed, i) only."""
    images = tf.constant(source.images)
    labels = tf.constant(source.labels, tf.int32)
    n = len(source)
    ds = tf.data.Dataset.range(start_batch * batch_size, 2 ** 62)

    def element(i):
        j = tf.cast(i % n, tf.int32)
        key = tf.stack([tf.cast(seed, tf.int64), i])
        return make_element(tf.image.convert_image_dtype(images[j], tf.float32), labels[j], key)

    return ds.map(element, num_parallel_calls=1, deterministic=True).batch(
        batch_size, drop_remainder=True).prefetch(2)


def _synthetic_view(image, key, image_size):
    image = tf.image.resize(image, (image_size, image_size))
    image = tf.image.stateless_random_flip_left_right(image, key)
    image = tf.image.stateless_random_brightness(image, 0.3, key + 1)
    noise = tf.random.stateless_normal(tf.shape(image), key + 2, stddev=0.05)
    return tf.clip_by_value(image + noise, 0.0, 1.0)


def pretrain_dataset(source: Source, batch_size, image_size, seed, start_batch=0, **aug):
    if source.synthetic:
        return _indexed(source, batch_size, start_batch, seed, lambda x, y, k: (
            (_synthetic_view(x, k * 2, image_size), _synthetic_view(x, k * 2 + 7, image_size)), y))
    return _call(_data().pretrain_dataset, source, batch_size=batch_size, image_size=image_size,
                 seed=seed, start_batch=start_batch, **aug)


def finetune_dataset(source: Source, batch_size, image_size, seed, start_batch=0):
    if source.synthetic:
        return _indexed(source, batch_size, start_batch, seed,
                        lambda x, y, k: (_synthetic_view(x, k, image_size), y))
    return _call(_data().finetune_dataset, source, batch_size=batch_size, image_size=image_size,
                 seed=seed, start_batch=start_batch)


def eval_dataset(source: Source, batch_size, image_size):
    if source.synthetic:
        images = tf.image.resize(tf.image.convert_image_dtype(source.images, tf.float32),
                                 (image_size, image_size))
        return tf.data.Dataset.from_tensor_slices((images, source.labels)).batch(batch_size)
    return _call(_data().eval_dataset, source, batch_size=batch_size, image_size=image_size)
