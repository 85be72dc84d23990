"""Pretraining step throughput in float32 and in bfloat16 mixed precision, with peak memory and
where the step's time goes.

    python benchmarks/train_step.py            # configs A, B, C (minutes on 2 CPU cores)
    python benchmarks/train_step.py --quick    # small stand-ins of A and B, about a minute
    python benchmarks/train_step.py --configs A --precisions float32
    python benchmarks/train_step.py --batch-norm both   # and Keras's batch norm, with the ratio
    python benchmarks/train_step.py --micro-batch      # gradient caching: memory and time

Configs (issue 15's table): A r18_1x_sk0, CIFAR stem, 32 px, 128 pairs; B r50_1x_sk1, 224 px,
8 pairs; C r50_1x_sk0, 224 px, 8 pairs. The step is the recipe's: model forward in training
mode (batch norm through the fused kernel, simclrv2/recipes/fused_batch_norm.py, unless
`--batch-norm keras`), NT-Xent (float32), LARS. Each (config, precision, batch norm) runs in a fresh process, so its peak RSS
is its own. Per run it prints pairs/s, the supervised step for comparison, and a breakdown by
phase (forward, backward, LARS update; the contrastive loss timed alone) measured by timing each
phase's own tf.function, and the shares of kernel time from a TF profiler trace of 3 steps
(convolutions, batch norm, the SK branch's other ops, casts, the contrastive loss, LARS). At the
end: bfloat16 / float32 per config, and what `auto` picks here.

`--micro-batch` measures gradient caching (simclrv2/recipes/gradient_cache.py) on the main job's
network (r18_0.5x_sk0, CIFAR stem, 28 px, LARS, no linear head) in the precision `auto` picks
here (or the first of --precisions): an unchunked 128-pair step, a 1024-pair step in
micro-batches of 128, and an unchunked 1024-pair step (peak RSS only; reported as not fitting
when its process dies), each in its own process. It prints the chunked step's peak RSS and
time per image against the 128-pair step's, with their targets (MICRO_TARGETS).
"""

import argparse
import collections
import glob
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

CONFIGS = {"A": ("r18_1x_sk0", 32, 128), "B": ("r50_1x_sk1", 224, 8),
           "C": ("r50_1x_sk0", 224, 8)}
QUICK = {"A": ("r18_0.25x_sk0", 32, 32), "B": ("r50_0.25x_sk1", 64, 4),
         "C": ("r50_0.25x_sk0", 64, 4)}
PRECISIONS = ("float32", "mixed_bfloat16")
# --micro-batch: (model, image size, micro-batch pairs, big batch pairs); the main job's network.
MICRO = ("r18_0.5x_sk0", 28, 128, 1024)
MICRO_QUICK = ("r18_0.25x_sk0", 16, 8, 32)
# The chunked big batch against the unchunked micro-batch: peak RSS, time per image.
MICRO_TARGETS = {"peak_rss": 1.3, "time_per_image": 1.45}
# A TensorFlow kernel's trace event is named "op_name:OpType" (then "#key=value#" annotations).
KERNEL_EVENT = re.compile(r"^(?P<name>[^#:]+):(?P<type>[A-Za-z0-9_]+)(#|$)")


# The zoo's batch-norm layers (bn, bn1, reduce_bn, shortcut_bn, ...; TF appends _1, _2 to scopes).
BN_SCOPE = re.compile(r"\w*bn\d*(_\d+)?")
# Events that wrap others (a tf.function call, control flow): counting them would count their
# kernels twice, so only the kernels inside are counted.
WRAPPER_TYPES = ("StatefulPartitionedCall", "PartitionedCall", "While", "StatelessWhile", "If",
                 "StatelessIf", "Case", "StatelessCase")


def _category(name, op_type):
    """Which part of the step a kernel belongs to (None: a wrapper, not counted); name scopes
    first, then the op's type, with oneDNN's prefixes (_MklNative..., _Mkl..., _Fused...)
    stripped."""
    if op_type in WRAPPER_TYPES or name.startswith(("__inference", "__forward", "__backward")):
        return None
    if "nt_xent" in name:
        return "contrastive loss (fwd+bwd)"
    if "lars_update" in name:
        return "LARS update"
    kind = re.sub(r"^_(MklNative|Mkl|OneDnn)?", "", op_type)
    if kind == "Cast":
        return "casts"
    if "Conv2D" in kind or "DepthwiseConv" in kind:
        return "convolutions (fwd+bwd)"
    # Keras 3 batch norm is built from small ops (moments, scale, shift) in its layer's scope.
    if "BatchNorm" in kind or any(part in ("moments", "batchnorm") or BN_SCOPE.fullmatch(part)
                                  for part in name.split("/")):
        return "batch norm (fwd+bwd)"
    if "sk_conv" in name:
        return "SK branch, its other ops"
    return "other ops"


def _op_breakdown(logdir):
    """Shares of the summed kernel time per category, from a TF profiler trace (the host plane
    of its xplane.pb); kernels on the 2 threads overlap, so these are shares, not seconds."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals = collections.Counter()
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU"):
                continue
            for line in plane.lines:
                for event in line.events:
                    match = KERNEL_EVENT.match(plane.event_metadata[event.metadata_id].name)
                    category = match and _category(match["name"], match["type"])
                    if category:
                        totals[category] += event.duration_ps
    whole = sum(totals.values())
    if not whole:
        return {"unavailable": "the profiler trace held no kernel events"}
    return {k: round(v / whole, 3) for k, v in totals.most_common()}


def _one(model_name, image_size, batch, policy, steps, warmup, threads, batch_norm="fused"):
    """Measures one (model, precision) in this process; returns its figures."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.mixed_precision.set_global_policy(policy)
    import simclrv2.zoo as zoo
    from simclrv2.recipes import objectives, optim

    model = zoo.build(model_name, num_classes=10, input_shape=(image_size, image_size, 3),
                      ft_proj_selector=0)
    if batch_norm == "fused":  # what the recipes train with (fused_batch_norm=true)
        from simclrv2.recipes import fused_batch_norm

        fused_batch_norm.fuse(model)
    opt = optim.LARS(0.1, weight_decay_rate=1e-6)
    variables = model.trainable_variables
    opt.build(variables)
    views = tf.random.uniform((2 * batch, image_size, image_size, 3))
    labels = tf.random.uniform((2 * batch,), 0, 10, tf.int32)
    hidden = tf.random.normal((2 * batch, 128))

    @tf.function
    def pretrain_step():
        with tf.GradientTape() as tape:
            out = model(views, training=True)
            with tf.name_scope("nt_xent"):
                loss, _, _ = objectives.nt_xent_loss(out["proj_head_output"], 0.1)
        grads = tape.gradient(loss, variables)
        with tf.name_scope("lars_update"):
            opt.apply_gradients(zip(grads, variables))
        return loss

    @tf.function
    def forward():
        out = model(views, training=True)
        return objectives.nt_xent_loss(out["proj_head_output"], 0.1)[0]

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            out = model(views, training=True)
            loss, _, _ = objectives.nt_xent_loss(out["proj_head_output"], 0.1)
        return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, variables)
                         if g is not None])  # the supervised head has none here

    @tf.function
    def contrastive():
        return objectives.nt_xent_loss(hidden, 0.1)[0]

    @tf.function
    def supervised_step():
        with tf.GradientTape() as tape:
            out = model(views, training=True)
            loss = objectives.supervised_loss(labels, out["logits_sup"], 10)
        grads = tape.gradient(loss, variables)
        opt.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return loss

    def timed(fn, n=steps):
        for _ in range(warmup):
            fn().numpy()
        start = time.perf_counter()
        for _ in range(n):
            fn().numpy()
        return (time.perf_counter() - start) / n

    t_step = timed(pretrain_step)
    t_fwd, t_fb = timed(forward), timed(forward_backward)
    t_nce = timed(contrastive, max(steps, 20))
    t_sup = timed(supervised_step)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # before profiling
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(min(steps, 3)):
            pretrain_step().numpy()
        tf.profiler.experimental.stop()
        ops = _op_breakdown(logdir)
    return {
        "model": model_name, "image_size": image_size, "pairs": batch, "precision": policy,
        "batch_norm": batch_norm,
        "pairs_per_s": round(batch / t_step, 2), "step_s": round(t_step, 4),
        "supervised_step_s": round(t_sup, 4), "pretrain_over_supervised": round(t_step / t_sup, 3),
        "breakdown_s": {"forward (incl. loss)": round(t_fwd, 4),
                        "backward": round(max(t_fb - t_fwd, 0.0), 4),
                        "LARS update and the rest": round(max(t_step - t_fb, 0.0), 4),
                        "contrastive loss alone": round(t_nce, 5)},
        "kernel_time_shares": ops,
        "peak_rss_gib": round(peak_rss, 2),
    }


def _micro_one(model_name, image_size, pairs, micro, policy, steps, warmup, threads):
    """One pretraining step of `pairs` pairs, in micro-batches of `micro` (0: unchunked), timed
    in this process; returns its time per step and per image and the process's peak RSS."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.mixed_precision.set_global_policy(policy)
    import simclrv2.zoo as zoo
    from simclrv2.recipes import fused_batch_norm, gradient_cache, objectives, optim

    # The main job's pretraining network: no supervised head (lineareval_while_pretraining off).
    model = zoo.build(model_name, num_classes=None, input_shape=(image_size, image_size, 3),
                      ft_proj_selector=0)
    fused_batch_norm.fuse(model)
    opt = optim.LARS(0.1, weight_decay_rate=1e-6)
    variables = model.trainable_variables
    opt.build(variables)
    view1, view2 = (tf.random.uniform((pairs, image_size, image_size, 3)) for _ in range(2))
    labels = tf.zeros((pairs,), tf.int32)

    def contrastive(hidden):
        return objectives.nt_xent_loss(hidden, 0.1)

    @tf.function(autograph=False)
    def unchunked_step():
        with tf.GradientTape() as tape:
            out = model(tf.concat([view1, view2], 0), training=True)
            loss, _, _ = contrastive(out["proj_head_output"])
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    @tf.function(autograph=False)
    def chunked_step():
        grads, out = gradient_cache.gradients(
            model, gradient_cache.micro_batches(view1, view2, labels, micro),
            contrastive=contrastive, scale=lambda loss: loss, encoder_vars=variables,
            encoder_penalty=lambda: tf.constant(0.0))
        opt.apply_gradients(grads)
        return out.contrastive_loss

    step = chunked_step if micro else unchunked_step
    for _ in range(warmup):
        step().numpy()
    start = time.perf_counter()
    for _ in range(steps):
        step().numpy()
    seconds = (time.perf_counter() - start) / max(steps, 1)
    return {"model": model_name, "image_size": image_size, "pairs": pairs, "micro_batch": micro,
            "precision": policy, "step_s": round(seconds, 4) if steps else None,
            "s_per_image": round(seconds / (2 * pairs), 6) if steps else None,
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 3)}


def _micro_main(args, steps, warmup):
    """--micro-batch: each of the three steps in its own process, then the ratios."""
    from simclrv2 import precision

    name, size, micro, big = MICRO_QUICK if args.quick else MICRO
    policy = (args.precisions.split(",")[0] if args.precisions
              else precision.resolve("auto").policy)
    runs = {"unchunked": (micro, 0, steps, warmup), "chunked": (big, micro, steps, warmup),
            # Its memory is the point: one step after the traced one, not timed.
            "unchunked_big": (big, 0, 0, 2)}
    results = {}
    for label, (pairs, chunk, n, w) in runs.items():
        child = json.dumps([name, size, pairs, chunk, policy])
        proc = subprocess.run(
            [sys.executable, __file__, "--micro-child", child, "--steps", str(n),
             "--warmup", str(w), "--threads", str(args.threads)], capture_output=True, text=True)
        if proc.returncode:
            if label != "unchunked_big":
                print(proc.stderr[-3000:], file=sys.stderr)
                return proc.returncode
            # Killed by the kernel's out-of-memory killer, or TensorFlow failing to allocate.
            results[label] = {"pairs": pairs, "fits": False, "returncode": proc.returncode}
        else:
            results[label] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{label} {json.dumps(results[label])}", flush=True)
    small, chunked, whole = results["unchunked"], results["chunked"], results["unchunked_big"]
    rss = chunked["peak_rss_gib"] / small["peak_rss_gib"]
    per_image = chunked["s_per_image"] / small["s_per_image"]

    def verdict(value, target):
        return f"{value:.2f}x (target <= {target}x: {'MET' if value <= target else 'MISSED'})"

    print(f"{name} {size} px {policy}: {big} pairs in micro-batches of {micro} against "
          f"{micro} pairs unchunked: peak RSS {chunked['peak_rss_gib']} / "
          f"{small['peak_rss_gib']} GiB = {verdict(rss, MICRO_TARGETS['peak_rss'])}; "
          f"time per image {verdict(per_image, MICRO_TARGETS['time_per_image'])}")
    print(f"{big} pairs unchunked: " + (f"peak RSS {whole['peak_rss_gib']} GiB"
                                        if whole.get("fits", True) else
                                        f"did not fit (exit status {whole['returncode']})"))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small stand-ins, few steps")
    parser.add_argument("--configs", default="A,B,C")
    parser.add_argument("--precisions", default=None,
                        help=f"default {','.join(PRECISIONS)}; --micro-batch: what `auto` picks")
    parser.add_argument("--steps", type=int, default=0, help="timed steps (default 10, quick 3)")
    parser.add_argument("--warmup", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2,
                        help="intra-op threads (0 = TF's choice; 2 measured best on 2 cores)")
    parser.add_argument("--batch-norm", default="fused", choices=("fused", "keras", "both"),
                        help="the recipes' fused batch norm, Keras's own call, or both (and "
                             "their ratio)")
    parser.add_argument("--micro-batch", action="store_true",
                        help="gradient caching: a big batch in micro-batches against a small "
                             "batch, peak RSS and time per image")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--micro-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    steps = args.steps or (3 if args.quick else 10)
    warmup = args.warmup or (1 if args.quick else 3)
    if args.micro_child:
        name, size, pairs, micro, policy = json.loads(args.micro_child)
        print(json.dumps(_micro_one(name, size, pairs, micro, policy, args.steps, warmup,
                                    args.threads)))
        return 0
    if args.micro_batch:
        return _micro_main(args, steps, warmup)
    args.precisions = args.precisions or ",".join(PRECISIONS)
    if args.child:
        name, size, batch, policy, batch_norm = json.loads(args.child)
        print(json.dumps(_one(name, size, batch, policy, steps, warmup, args.threads,
                              batch_norm)))
        return 0

    from simclrv2 import precision

    table = QUICK if args.quick else CONFIGS
    results = {}
    norms = ("keras", "fused") if args.batch_norm == "both" else (args.batch_norm,)
    for key in args.configs.split(","):
        name, size, batch = table[key]
        for policy in args.precisions.split(","):
            for norm in norms:
                child = json.dumps([name, size, batch, policy, norm])
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", child, "--steps", str(steps),
                     "--threads", str(args.threads)] + (["--quick"] if args.quick else []),
                    capture_output=True, text=True)
                if proc.returncode:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    return proc.returncode
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                results[key, policy, norm] = result
                print(f"{key} {json.dumps(result)}", flush=True)
    for key in args.configs.split(","):
        for norm in norms:
            if (key, "float32", norm) in results and (key, "mixed_bfloat16", norm) in results:
                f32, bf16 = results[key, "float32", norm], results[key, "mixed_bfloat16", norm]
                print(f"{key} {f32['model']} {f32['image_size']} px x{f32['pairs']}, {norm} "
                      f"batch norm: float32 {f32['pairs_per_s']} pairs/s "
                      f"({f32['peak_rss_gib']} GiB), mixed_bfloat16 {bf16['pairs_per_s']} "
                      f"pairs/s ({bf16['peak_rss_gib']} GiB): bfloat16 / float32 = "
                      f"{bf16['pairs_per_s'] / f32['pairs_per_s']:.2f}x")
        for policy in args.precisions.split(","):
            if (key, policy, "keras") in results and (key, policy, "fused") in results:
                keras_bn, fused = results[key, policy, "keras"], results[key, policy, "fused"]
                print(f"{key} {policy}: fused / Keras batch norm = "
                      f"{fused['pairs_per_s'] / keras_bn['pairs_per_s']:.2f}x "
                      f"({fused['pairs_per_s']} against {keras_bn['pairs_per_s']} pairs/s)")
    print(precision.resolve("auto").describe() + " <- what `auto` trains in on this machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
