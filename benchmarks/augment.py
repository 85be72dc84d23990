"""Two-view pretraining input speed: this package's pipeline against an upstream-style one.

The baseline, measured in the same run on the same in-memory uint8 images, is a straightforward
per-image pipeline in the official TF2 order: per-image map of sample_distorted_bounding_box crop,
bicubic resize, flip, colour jitter (random order) with p=0.8, grayscale p=0.2, twice per image,
then batch. Upstream blurs later, in the training step (one sigma per batch), so its input
function is compared with ours at `defer_blur=True` (the blur's draws made, the blur left to the
training step, which the recipes do on accelerators). The "+ blur" rows put that same batch blur
into the baseline's pipeline, against our default pipeline that blurs in the map. Ours runs
with the fused view op (simclrv2/data/fused_view.py) when it builds here, as by default; the
"TF ops" row is ours without it (`AugmentConfig(kernel="tf")`), the fallback's speed.

Every pipeline is timed `--reps` times, interleaved with the others, on a fresh iterator each
time; medians are printed, with the CPU time per image (steadier than images/s on a shared host).

    .venv/bin/python benchmarks/augment.py [--batch 64] [--batches 6] [--reps 3] [--no-model]
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np
import tensorflow as tf

from simclrv2.data import AugmentConfig, Source, fused_view, pretrain_dataset


def synthetic_source(n: int, side: int, seed: int = 0) -> Source:
    # Smooth random images rather than noise, so that JPEG-free arithmetic sees realistic values;
    # the speed of these ops does not depend on content.
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    images = tf.cast(tf.image.resize(small, [side, side]), tf.uint8).numpy()
    return Source(name=f"synthetic{side}", split="bench", kind="array", num_examples=n,
                  num_classes=10, image_size=side, images=images,
                  labels=rng.integers(0, 10, n).astype(np.int64))


# ---------------------------------------------------------------------------------------------
# The baseline: written here from the paper's description in upstream's order, per image,
# stateful random ops, tf.cond for every random application.

def _maybe(p, fn, x):
    return tf.cond(tf.random.uniform([]) < p, lambda: fn(x), lambda: x)


def _baseline_jitter(x, s):
    b, c, sat, h = 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s
    ops = [lambda y: y * tf.random.uniform([], max(0.0, 1 - b), 1 + b),
           lambda y: tf.image.random_contrast(y, 1 - c, 1 + c),
           lambda y: tf.image.random_saturation(y, 1 - sat, 1 + sat),
           lambda y: tf.image.random_hue(y, h)]
    perm = tf.random.shuffle(tf.range(4))
    for i in range(4):
        x = tf.switch_case(perm[i], [lambda op=op, y=x: op(y) for op in ops])
        x = tf.clip_by_value(x, 0.0, 1.0)
    return x


def _baseline_view(image, size, strength):
    image = tf.image.convert_image_dtype(image, tf.float32)
    begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([1, 0, 4]), min_object_covered=0.1,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=100,
        use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, crop_size)
    image = tf.image.resize(image, [size, size], method="bicubic")
    image = tf.image.random_flip_left_right(image)
    image = _maybe(0.8, lambda y: _baseline_jitter(y, strength), image)
    image = _maybe(0.2, lambda y: tf.tile(tf.image.rgb_to_grayscale(y), [1, 1, 3]), image)
    return tf.clip_by_value(tf.reshape(image, [size, size, 3]), 0.0, 1.0)


def _baseline_batch_blur(images, size):
    sigma = tf.random.uniform([], 0.1, 2.0)
    radius = (size // 10) // 2
    taps = tf.cast(tf.range(-radius, radius + 1), tf.float32)
    k = tf.exp(-tf.square(taps) / (2 * sigma * sigma))
    k = k / tf.reduce_sum(k)
    blurred = tf.nn.depthwise_conv2d(images, tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, 3, 1]),
                                     [1, 1, 1, 1], "SAME")
    blurred = tf.nn.depthwise_conv2d(blurred, tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, 3, 1]),
                                     [1, 1, 1, 1], "SAME")
    chosen = tf.cast(tf.random.uniform([tf.shape(images)[0], 1, 1, 1]) < 0.5, tf.float32)
    return tf.clip_by_value(blurred * chosen + images * (1 - chosen), 0.0, 1.0)


def baseline_dataset(source: Source, batch: int, size: int, blur: bool) -> tf.data.Dataset:
    images = tf.constant(source.images)
    labels = tf.constant(source.labels)
    strength = 1.0 if size > 32 else 0.5

    def per_image(i):
        image = images[i]
        return (_baseline_view(image, size, strength), _baseline_view(image, size, strength)), labels[i]

    ds = tf.data.Dataset.range(source.num_examples).shuffle(source.num_examples).repeat()
    ds = ds.map(per_image, num_parallel_calls=tf.data.AUTOTUNE).batch(batch, drop_remainder=True)
    if blur:
        ds = ds.map(lambda v, y: ((_baseline_batch_blur(v[0], size), _baseline_batch_blur(v[1], size)), y))
    return ds.prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------------

def measure(ds: tf.data.Dataset, batch: int, batches: int):
    """(two-view images per second, CPU ms per two-view image) over `batches` batches of a fresh
    iterator, after two warm-up batches (graph building, first fill of the buffers). CPU time is
    the whole process's, so it also counts work other pipelines' threads do meanwhile (none:
    each iterator is dropped before the next is made); on a shared host it moves less than the
    wall-clock rate."""
    it = iter(ds)
    next(it)
    next(it)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(it)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    del it
    gc.collect()
    return batch * batches / wall, 1e3 * cpu / (batch * batches)


def model_step_images_per_second(batch: int, steps: int):
    try:
        from simclrv2.zoo import build  # the zoo is another package; it may not exist yet
    except ImportError as err:
        print(f"  model step: skipped, simclrv2.zoo is not importable ({err})")
        return None
    import keras

    model = build("r50_1x_sk0", include_projection_head=True, input_shape=(224, 224, 3))
    optimizer = keras.optimizers.SGD(0.1)
    x = tf.random.uniform([2 * batch, 224, 224, 3])

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            z = model(x, training=True)["proj_head_output"]
            z = tf.math.l2_normalize(z, -1)
            loss = tf.reduce_mean(tf.matmul(z, z, transpose_b=True))  # stand-in for NT-Xent
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    step(x)
    start = time.perf_counter()
    for _ in range(steps):
        step(x)
    return batch * steps / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=6, help="timed batches per pipeline at 224 px")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions; medians are printed")
    parser.add_argument("--model-batch", type=int, default=8, help="two-view images per model step")
    parser.add_argument("--no-model", action="store_true")
    args = parser.parse_args(argv)
    print(f"TensorFlow {tf.__version__}, {len(tf.config.list_physical_devices('CPU'))} CPU device, "
          f"batch {args.batch}; figures are two-view images per second")
    fused = fused_view.load("auto")
    print("simclrv2.data views: " + ("fused view op (default)" if fused is not None
                                     else "TF ops (the fused op did not build: see the log)"))

    results = {}
    for side, size, batches in ((256, 224, args.batches), (32, 32, args.batches * 8)):
        source = synthetic_source(4 * args.batch if side > 32 else 50 * args.batch, side)
        print(f"\n{size} px from {side} px uint8 sources ({args.reps} interleaved repetitions of "
              f"{batches} batches; median images/s, median CPU ms per two-view image):")
        if size > 32:
            # Upstream's input function does not blur (its model does, on the accelerator):
            # the like-for-like row is ours with the blur deferred to the training step too.
            rows = [("baseline per-image (upstream input fn, no blur)", baseline_dataset(source, args.batch, size, False)),
                    ("simclrv2.data, blur deferred (defer_blur=True)",
                     pretrain_dataset(source, args.batch, size, seed=0, defer_blur=True)),
                    ("simclrv2.data, blur deferred, TF ops (kernel='tf')",
                     pretrain_dataset(source, args.batch, size, seed=0, defer_blur=True,
                                      config=AugmentConfig(kernel="tf"))),
                    ("baseline per-image + upstream batch blur", baseline_dataset(source, args.batch, size, True)),
                    ("simclrv2.data, default (blur p=0.5 in the map)", pretrain_dataset(source, args.batch, size, seed=0))]
        else:  # no blur at 32 px, upstream's rule and ours
            rows = [("baseline per-image (upstream input fn)", baseline_dataset(source, args.batch, size, False)),
                    ("simclrv2.data, default", pretrain_dataset(source, args.batch, size, seed=0))]
        runs = {name: [] for name, _ in rows}
        for _ in range(args.reps):  # interleaved, so that a load change on the host hits every row
            for name, ds in rows:
                runs[name].append(measure(ds, args.batch, batches))
        measured, cpu = {}, {}
        for name, _ in rows:
            measured[name] = float(np.median([r[0] for r in runs[name]]))
            cpu[name] = float(np.median([r[1] for r in runs[name]]))
            print(f"  {name:<50s} {measured[name]:8.1f} img/s {cpu[name]:7.2f} CPU ms/img   "
                  f"(runs: {', '.join(f'{r[0]:.0f}' for r in runs[name])})")
        names = [n for n, _ in rows]
        pairs = [("input fn only", names[0], names[1])]
        if size > 32:
            pairs += [("fn, TF ops", names[0], names[2]), ("with blur", names[3], names[4])]
        for label, base, ours in pairs:
            print(f"  ours / baseline {label + ':':<13s} {measured[ours] / measured[base]:.2f}x images/s, "
                  f"{cpu[base] / cpu[ours]:.2f}x less CPU per image")
        results[size] = measured

    if not args.no_model:
        print("\nr50_1x_sk0 + projection head training step at 224 px (forward + backward + SGD):")
        model_ips = model_step_images_per_second(args.model_batch, steps=2)
        if model_ips is not None:
            ours = results[224]["simclrv2.data, default (blur p=0.5 in the map)"]
            print(f"  model: {model_ips:.2f} two-view images/s; input pipeline / model = {ours / model_ips:.1f}x "
                  "(> 1 means the input pipeline is not the bottleneck)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
