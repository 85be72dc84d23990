"""The stages' view of the data: `simclrv2.data` for real datasets, plus a `synthetic` source.

`synthetic` is a deterministic random dataset (class-coloured noise) for smoke tests and speed
benchmarks: it needs no files and its batches are a pure function of (seed, element index), like
the real pipelines, so resumed runs see exactly the batches they would have seen.

Real datasets are the data package's own `Source` objects (see docs/CONTRACTS.md, simclrv2.data),
wrapped so that the stages handle both kinds alike: `len()`, `labels`, `num_classes`, and `index`
(positions in the full split) for a subset.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np
import tensorflow as tf

SYNTHETIC = "synthetic"
SYNTHETIC_CLASSES = 10
SYNTHETIC_SIZES = {"train": 2048, "test": 512}


@dataclasses.dataclass
class StageData:
    """One split as the stages read it: synthetic images in `images`, or the data package's
    `Source` in `native` (a different class: this one adds the synthetic case and subsets)."""

    labels: Optional[np.ndarray]
    num_classes: int
    images: Optional[np.ndarray] = None
    native: object = None
    index: Optional[np.ndarray] = None  # positions in the full split, for a subset

    @property
    def synthetic(self) -> bool:
        return self.native is None

    def __len__(self):
        if self.native is not None:
            return int(self.native.num_examples)
        return len(self.labels)


def _data():
    import simclrv2.data as data
    return data


def _synthetic_split(split: str, seed: int = 1234) -> StageData:
    if split not in SYNTHETIC_SIZES:
        raise ValueError(f"synthetic dataset has splits {list(SYNTHETIC_SIZES)}, not {split!r}")
    rng = np.random.default_rng(seed + (0 if split == "train" else 1))
    n = SYNTHETIC_SIZES[split]
    labels = np.arange(n) % SYNTHETIC_CLASSES
    # A fixed colour per class plus noise: separable, so the kNN monitor has something to find.
    colours = np.random.default_rng(seed).uniform(0.2, 0.8, size=(SYNTHETIC_CLASSES, 1, 1, 3))
    images = np.clip(colours[labels] + rng.normal(0, 0.15, size=(n, 8, 8, 3)), 0, 1)
    return StageData(labels.astype(np.int32), SYNTHETIC_CLASSES,
                     images=(images * 255).astype(np.uint8))


def _wrap(native) -> StageData:
    labels = None if native.labels is None else np.asarray(native.labels)
    return StageData(labels, int(native.num_classes or 0), native=native)


def load_labeled(name: str, split: str, data_dir=None) -> StageData:
    if name == SYNTHETIC:
        return _synthetic_split(split)
    return _wrap(_data().load_labeled(name, split, data_dir))


def load_unlabeled(name: str, split: str = None, data_dir=None) -> StageData:
    """Images with label -1 (the data package's rule); synthetic: its train split, unlabeled."""
    if name == SYNTHETIC:
        source = _synthetic_split(split or "train")
        return dataclasses.replace(source, labels=np.full_like(source.labels, -1))
    return _wrap(_data().load_unlabeled(name, split, data_dir))


# Fixed, so that every run evaluating on "validation" holds out the very same training images.
VALIDATION_SEED = 20_060_010


def validation_indices(labels, examples: int) -> np.ndarray:
    """Sorted positions of the validation images: a class-balanced draw of `examples` training
    images (examples // classes from each class) with the fixed VALIDATION_SEED."""
    labels = np.asarray(labels)
    classes = len(np.unique(labels))
    per_class = examples // max(classes, 1)
    if per_class < 1:
        raise ValueError(f"validation_examples={examples} is fewer than the {classes} classes")
    return _data().label_subset(labels, per_class=per_class, seed=VALIDATION_SEED)


def _validation_of(train: StageData, name, examples) -> np.ndarray:
    """Positions of the validation images in `train`, the labeled training split."""
    labels = train.labels
    if labels is None or np.any(labels < 0):
        raise ValueError(f"{name}: a validation split is carved from the labeled training "
                         f"images, and this dataset's training split has no labels")
    return validation_indices(labels, examples)


def training_source(config, labeled: bool = True) -> StageData:
    """The images a stage may train on: the training split, less the validation images when
    the stage is evaluated on them (config.eval_split == "validation"), so that a validation
    figure never scores an image the run trained on. A dataset without the test split the
    stage will be evaluated on (an image folder without test/) is refused here, before any
    training."""
    if config.eval_split == "test" and config.dataset != SYNTHETIC:
        _data().check_split(config.dataset, "test")
    if labeled:
        source = load_labeled(config.dataset, "train", config.data_dir)
    else:
        source = load_unlabeled(config.dataset, "train", config.data_dir)
    if config.eval_split != "validation":
        return source
    # The labels that place the held-out images: the source's own when it is labeled (each
    # load of an image folder decodes every file, so it is not read twice).
    labeled_train = source if labeled else load_labeled(config.dataset, "train", config.data_dir)
    held = _validation_of(labeled_train, config.dataset, config.validation_examples)
    return take(source, np.setdiff1d(np.arange(len(source)), held))


def evaluation_source(config) -> StageData:
    """What a stage's top-1 is measured on: the test split, or the validation images carved
    from the training split (never the test images: hyperparameters are chosen there)."""
    if config.eval_split == "test":
        return load_labeled(config.dataset, "test", config.data_dir)
    train = load_labeled(config.dataset, "train", config.data_dir)
    return take(train, _validation_of(train, config.dataset, config.validation_examples))


def _balanced(labels, fraction, seed):
    """Class-balanced indices: the data package's rule, so both kinds of source draw alike."""
    return _data().label_subset(labels, fraction=fraction, seed=seed)


def subset_indices(source: StageData, fraction: float, seed: int, path: Optional[str] = None):
    """Class-balanced indices of `fraction` of the source; with `path`, the list is read from
    there when it exists (a resumed or repeated run then trains on the very same examples), else
    drawn and saved there (`subset_for_run`)."""
    if source.labels is None or np.any(source.labels < 0):
        raise ValueError("a label subset needs a labeled source")
    if path is not None:
        return _data().subset_for_run(source.labels, path, fraction=fraction, seed=seed)
    return _balanced(source.labels, fraction, seed)


def take(source: StageData, index) -> StageData:
    """The examples at `index` (positions in `source`), as a new source that remembers them."""
    index = np.asarray(index, dtype=np.int64)
    full = index if source.index is None else source.index[index]
    labels = None if source.labels is None else source.labels[index]
    if source.native is not None:
        return StageData(labels, source.num_classes, native=source.native.subset(index),
                         index=full)
    return StageData(labels, source.num_classes, images=source.images[index], index=full)


def subset(source: StageData, fraction: float, seed: int, path: Optional[str] = None) -> StageData:
    """A class-balanced labeled subset; the whole source when fraction >= 1."""
    if fraction >= 1.0:
        return source
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return take(source, subset_indices(source, fraction, seed, path))


def relabel(source: StageData, labels) -> StageData:
    """The same images with other labels (e.g. -1 for the examples outside a label subset)."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(source):
        raise ValueError(f"{len(labels)} labels for {len(source)} examples")
    if source.native is not None:
        # _tensor (the cached image variable) stays: the images are unchanged.
        return dataclasses.replace(source, labels=labels,
                                   native=dataclasses.replace(source.native, labels=labels))
    return dataclasses.replace(source, labels=labels.astype(np.int32))


def _indexed(source: StageData, batch_size: int, start_batch: int, seed: int, make_element):
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


def pretrain_dataset(source: StageData, batch_size, image_size, seed, start_batch=0,
                     color_jitter_strength=None, defer_blur=False, crop_area_min=None):
    """Endless ((view1, view2), labels), or ((view1, view2), labels, (sigma1, sigma2)) with
    `defer_blur` (see `apply_deferred_blur`). color_jitter_strength None: the data package's
    rule (0.5 at <= 32 px, 1.0 above); crop_area_min None: its crop area range (0.08, 1)."""
    if source.synthetic:
        def element(x, y, k):
            views = (_synthetic_view(x, k * 2, image_size), _synthetic_view(x, k * 2 + 7, image_size))
            return (views, y, (tf.zeros([]), tf.zeros([]))) if defer_blur else (views, y)
        return _indexed(source, batch_size, start_batch, seed, element)
    data = _data()
    options = {} if crop_area_min is None else {"area_range": (crop_area_min, 1.0)}
    config = data.AugmentConfig.pretrain(strength=color_jitter_strength, **options)
    return data.pretrain_dataset(source.native, batch_size, image_size=image_size, seed=seed,
                                 start_batch=start_batch, config=config, defer_blur=defer_blur)


def apply_deferred_blur(images, sigma):
    """Finishes a view of a `defer_blur` batch inside the training step."""
    from simclrv2.data.augment import apply_deferred_blur as apply

    return apply(images, sigma)


def finetune_dataset(source: StageData, batch_size, image_size, seed, start_batch=0):
    if source.synthetic:
        return _indexed(source, batch_size, start_batch, seed,
                        lambda x, y, k: (_synthetic_view(x, k, image_size), y))
    return _data().finetune_dataset(source.native, batch_size, image_size=image_size, seed=seed,
                                    start_batch=start_batch)


def finetune_batches(config, source: StageData):
    """start_batch -> the fine-tuning stream of `source` (fine-tuning's and distillation's
    batches), so that a resumed run starts at its next batch."""
    def dataset_fn(start_batch):
        return finetune_dataset(source, config.global_batch_size, config.image_size, config.seed,
                                start_batch=start_batch)
    return dataset_fn


def eval_dataset(source: StageData, batch_size, image_size):
    if source.synthetic:
        images = tf.image.resize(tf.image.convert_image_dtype(source.images, tf.float32),
                                 (image_size, image_size))
        return tf.data.Dataset.from_tensor_slices((images, source.labels)).batch(batch_size)
    return _data().eval_dataset(source.native, batch_size, image_size=image_size)
