"""tf.data pipelines for the three stages: two-view pretraining, fine-tuning, evaluation.

Order and randomness are both functions of (seed, position in the stream), never of state, so
`start_batch=k` yields exactly the batches k, k+1, ... of a run that started at 0:
- epoch e visits the examples in the order argsort(stateless_uniform([N], seed=(seed, -1 - e)));
- the element at stream position p is augmented with draws keyed by (seed, p) (see augment.py);
- batches are cut from the endless stream of epochs, so batch k holds positions [kB, (k+1)B).
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from simclrv2.data import augment as aug
from simclrv2.data.sources import Source, decode_image

_FOREVER = 2 ** 62
STREAM_SHUFFLE_BUFFER = 10_000


def _check_common(source: Source, batch_size: int, start_batch: int = 0) -> None:
    if not isinstance(source, Source):
        raise ValueError(f"expected a Source from load_labeled/load_unlabeled, got {type(source).__name__}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if int(start_batch) < 0:
        raise ValueError(f"start_batch must be >= 0, got {start_batch}")
    if source.num_examples < 1:
        raise ValueError(f"{source.name}:{source.split} has no examples")


def _image_size(source: Source, image_size: Optional[int]) -> int:
    size = image_size or source.image_size or 224
    if int(size) < 2:
        raise ValueError(f"image_size must be >= 2 pixels, got {size}")
    return int(size)


def _index_stream(source: Source, batch_size: int, seed: int, start_batch: int,
                  shuffle: bool) -> tf.data.Dataset:
    """(position, example index) for every element from batch `start_batch` on, forever."""
    n = source.num_examples
    start = int(start_batch) * int(batch_size)
    first_epoch, offset = divmod(start, n)

    def epoch(e):
        if shuffle:
            keys = tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64), -1 - e]))
            order = tf.argsort(keys, stable=True)
        else:
            order = tf.range(n)
        begin = tf.where(e == first_epoch, tf.constant(offset, tf.int64), tf.constant(0, tf.int64))
        positions = e * n + tf.range(begin, n, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices((positions, tf.cast(order[begin:], tf.int64)))

    return tf.data.Dataset.range(first_epoch, _FOREVER).flat_map(epoch)


def _stream_epochs(source: Source, batch_size: int, seed: int, start_batch: int,
                   shuffle: bool) -> tf.data.Dataset:
    """(position, encoded image, label) for a source without random access: each epoch is the
    file order through a shuffle buffer seeded by (seed, epoch); resuming skips the records
    of the current epoch that were already used (read, not decoded)."""
    n = source.num_examples
    first_epoch, offset = divmod(int(start_batch) * int(batch_size), n)

    def epoch(e):
        ds = source.stream()
        if shuffle:
            ds = ds.shuffle(min(n, STREAM_SHUFFLE_BUFFER), seed=seed * 1_000_003 + e,
                            reshuffle_each_iteration=False)
        ds = ds.enumerate().map(lambda i, x: (e * n + i, x[0], x[1]))
        return ds.skip(tf.where(e == first_epoch, tf.constant(offset, tf.int64), tf.constant(0, tf.int64)))

    return tf.data.Dataset.range(first_epoch, _FOREVER).flat_map(epoch)


def _options(ds: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True  # parallel maps keep order: part of the resume guarantee
    return ds.with_options(options)


def _augmented(source: Source, batch_size: int, image_size: int, seed: int, start_batch: int,
               cfg: aug.AugmentConfig, num_views: int, shuffle: bool = True,
               defer_blur: bool = False) -> tf.data.Dataset:
    """Batches of (views, labels [B]): views a V-tuple of float32 [B, S, S, 3] (one tensor when
    V = 1). With `defer_blur`, (views, labels, sigmas): the views unblurred and a V-tuple of
    float32 [B] blur sigmas (0: not blurred) for `augment.apply_deferred_blur`.

    Each element is augmented on its own inside one parallel map (see color_jitter_image for why
    per image beats per batch on CPU); each view is made from the uint8 source by
    `augment.augment_view` (one fused op where it builds).
    """
    seed = int(seed)
    size = image_size

    # Not converted by AutoGraph: the augmentation's only data-dependent branches are explicit
    # tf.cond / tf.switch_case, and converting its functions cost seconds for every pipeline
    # built (most of a short stage run's start-up).
    @tf.autograph.experimental.do_not_convert
    def views_of(pos, image, label):  # image: uint8 [H, W, C]
        params = aug.draw_params(aug.element_key(seed, pos), cfg, num_views)
        shape = tf.shape(image)
        windows = aug.crop_windows(params, shape[0], shape[1], cfg)
        views, sigmas = [], []
        for v in range(num_views):
            mine = {k: t[v] for k, t in params.items()}
            views.append(aug.augment_view(image, windows[v], mine, cfg, size, blur=not defer_blur))
            if defer_blur:
                sigmas.append(aug.blur_sigma(mine, cfg, size))
        # separate tensors, not a stack: no [V, S, S, 3] copy per element nor a strided
        # v[:, i] copy of every batch afterwards
        views = tuple(views) if num_views > 1 else views[0]
        if defer_blur:
            return views, label, (tuple(sigmas) if num_views > 1 else sigmas[0])
        return views, label

    if source.kind == "array":
        images = source.image_tensor()
        labels_all = tf.constant(source.labels)
        ds = _index_stream(source, batch_size, seed, start_batch, shuffle)
        ds = ds.map(tf.autograph.experimental.do_not_convert(
            lambda pos, idx: views_of(pos, tf.gather(images, idx), tf.gather(labels_all, idx))),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        if source.kind == "files":
            paths = tf.constant(source.paths)
            labels_all = tf.constant(source.labels)
            ds = _index_stream(source, batch_size, seed, start_batch, shuffle).map(
                lambda pos, idx: (pos, tf.io.read_file(tf.gather(paths, idx)), tf.gather(labels_all, idx)))
        else:
            ds = _stream_epochs(source, batch_size, seed, start_batch, shuffle)
        ds = ds.map(tf.autograph.experimental.do_not_convert(
            lambda pos, encoded, label: views_of(pos, decode_image(encoded), label)),
            num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True)


def pretrain_dataset(source: Source, batch_size: int, image_size: Optional[int] = None, seed: int = 0,
                     start_batch: int = 0, config: Optional[aug.AugmentConfig] = None,
                     shuffle: bool = True, defer_blur: bool = False) -> tf.data.Dataset:
    """Endless `((view1, view2), labels)`: float32 [B, S, S, 3] in [0, 1], int64 [B].

    Two independent SimCLR views per image (`AugmentConfig.pretrain()` unless `config`), epochs
    reshuffled from `seed`, incomplete batches never produced (batches span epoch ends).

    `defer_blur=True` leaves the Gaussian blur (the dearest op on CPU) to the training step, as
    upstream does on the accelerator: batches are `((view1, view2), labels, (sigma1, sigma2))`
    and `augment.apply_deferred_blur(view, sigma)` finishes each view (the same random draws, so
    the same images to float rounding).
    """
    _check_common(source, batch_size, start_batch)
    size = _image_size(source, image_size)
    cfg = (config or aug.AugmentConfig.pretrain()).resolve(size)
    ds = _augmented(source, batch_size, size, seed, start_batch, cfg, num_views=2, shuffle=shuffle,
                    defer_blur=defer_blur)
    return _options(ds.prefetch(tf.data.AUTOTUNE))


def finetune_dataset(source: Source, batch_size: int, image_size: Optional[int] = None, seed: int = 0,
                     start_batch: int = 0, config: Optional[aug.AugmentConfig] = None,
                     shuffle: bool = True) -> tf.data.Dataset:
    """Endless `(images, labels)` with random resized crop and flip only (upstream fine-tuning)."""
    _check_common(source, batch_size, start_batch)
    size = _image_size(source, image_size)
    cfg = (config or aug.AugmentConfig.finetune()).resolve(size)
    ds = _augmented(source, batch_size, size, seed, start_batch, cfg, num_views=1, shuffle=shuffle)
    return _options(ds.prefetch(tf.data.AUTOTUNE))


def eval_crop_proportion(image_size: int) -> float:
    """The evaluation centre crop's share of the shorter side: 0.875, none at 32 px or less
    (upstream)."""
    return 1.0 if image_size <= aug.SMALL_IMAGE else aug.CROP_PROPORTION


def preprocess_for_eval(image: tf.Tensor, image_size: int,
                        crop_proportion: Optional[float] = None) -> tf.Tensor:
    """One decoded image, uint8 [H, W, 3] -> float32 [S, S, 3] in [0, 1]: centre crop of
    `crop_proportion` (default eval_crop_proportion) of the shorter side, bicubic resize, clip.
    eval_dataset and the export's serving_bytes signature both preprocess with this."""
    if crop_proportion is None:
        crop_proportion = eval_crop_proportion(image_size)
    shape = tf.shape(image)
    y, x, h, w = tf.unstack(aug.center_crop_window(shape[0], shape[1], image_size,
                                                   crop_proportion))
    image = tf.image.convert_image_dtype(image[y:y + h, x:x + w], tf.float32)
    image = tf.image.resize(image, [image_size, image_size], method="bicubic")
    return tf.clip_by_value(image, 0.0, 1.0)  # bicubic overshoots


def eval_dataset(source: Source, batch_size: int, image_size: Optional[int] = None,
                 crop_proportion: Optional[float] = None) -> tf.data.Dataset:
    """One pass in order, the last batch kept: `(images, labels)`.

    Centre crop of `crop_proportion` (default 0.875) of the shorter side and bicubic resize; at
    32 px or less no crop (upstream), only a resize when the source size differs.
    """
    _check_common(source, batch_size)
    size = _image_size(source, image_size)
    if crop_proportion is None:
        crop_proportion = eval_crop_proportion(size)
    if not 0.0 < crop_proportion <= 1.0:
        raise ValueError(f"crop_proportion must be in (0, 1], got {crop_proportion}")

    def finish(images, labels):
        if images.shape[-1] == 1:
            images = tf.image.grayscale_to_rgb(images)
        return tf.clip_by_value(images, 0.0, 1.0), labels  # bicubic overshoots

    if source.kind == "array":
        images_all = source.image_tensor()
        labels_all = tf.constant(source.labels)
        h, w = source.images.shape[1], source.images.shape[2]
        y, x, ch, cw = [int(v) for v in aug.center_crop_window(h, w, size, crop_proportion)]
        same = (ch, cw) == (size, size)

        def per_batch(idx):
            batch = tf.gather(images_all, idx)[:, y:y + ch, x:x + cw]
            batch = tf.image.convert_image_dtype(batch, tf.float32)
            if not same:
                batch = tf.image.resize(batch, [size, size], method="bicubic")
            return finish(batch, tf.gather(labels_all, idx))

        ds = tf.data.Dataset.range(source.num_examples).batch(batch_size)
        ds = ds.map(per_batch, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        if source.kind == "files":
            ds = tf.data.Dataset.from_tensor_slices((source.paths, source.labels))
            ds = ds.map(lambda p, y: (tf.io.read_file(p), y))
        else:
            ds = source.stream()
        ds = ds.map(lambda b, y: (preprocess_for_eval(decode_image(b), size, crop_proportion), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size)
    return _options(ds.prefetch(tf.data.AUTOTUNE))
