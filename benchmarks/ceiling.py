"""How close the pretraining step runs to this host's limit: the largest multiply-accumulate rate
TensorFlow (oneDNN) reaches here in float32 and in bfloat16, and each pretraining
configuration's achieved rate as a fraction of it.

    python benchmarks/ceiling.py                 # the main job's network and configs A-C
    python benchmarks/ceiling.py --configs M     # the main job's network only
    python benchmarks/ceiling.py --quick         # small sizes, seconds (the test runs this)

The ceiling of a precision is the best of large matrix products and large 3x3 convolutions (the
shapes at which oneDNN is at its fastest) timed through TensorFlow with the threads the
recipes use. A configuration's step is the recipe's (benchmarks/train_step.py: the model in
training mode with fused batch norm, NT-Xent, LARS) on fixed inputs, so the input pipeline is
left out; its work is the convolutions and matrix products of the forward pass as TensorFlow's
graph profiler counts them, times 3 (the backward pass computes a gradient for the input and
one for the weights of each, each as much work as the forward product). Each (config,
precision) and each ceiling runs in a fresh process.

Configs: M is the main job's network (r18_0.5x_sk0, CIFAR stem, 28 px, 128 pairs); A, B, C are
benchmarks/train_step.py's.

`--levers` times the main job's step (config M, bfloat16) as the recipes run it and with one
thing changed at a time, each in its own process, interleaved over `--rounds`, and prints each
variant's median step and its ratio to the recipe's: TensorFlow's default threads (the recipes')
against one inter-op thread, XLA (`jit_compile`), Keras's own batch norm, float32.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step  # noqa: E402  (benchmarks/ is not a package)

CONFIGS = dict(train_step.CONFIGS, M=("r18_0.5x_sk0", 28, 128))
QUICK_CONFIGS = dict(train_step.QUICK, M=("r18_0.25x_sk0", 16, 16))
PRECISIONS = ("float32", "mixed_bfloat16")
# (matrix side), (batch, side, channels) of the 3x3 convolution: large enough that the kernels
# run at their best, small enough for seconds per timing.
CEILING_SHAPES = {"matmul": 2048, "conv": (32, 28, 256)}
QUICK_SHAPES = {"matmul": 512, "conv": (8, 14, 64)}


# --levers: variant -> what it changes in measure_step (the recipe's step: TensorFlow's default
# threads, fused batch norm, no XLA, the precision `auto` picks on a bfloat16 host).
LEVERS = {"recipe": {}, "inter-op 1 thread": {"inter_op": 1}, "XLA": {"xla": True},
          "Keras batch norm": {"fused": False}, "float32": {"policy": "float32"}}


def _configure(threads, policy, inter_op=1):
    """TensorFlow's threads (0: its default) and the dtype policy."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    keras.mixed_precision.set_global_policy(policy)
    return tf


def _median_seconds(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn().numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn().numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_ceiling(policy, shapes, threads, repeats):
    """{kernel: GMAC/s} of the large products in `policy`'s compute dtype."""
    tf = _configure(threads, policy)
    dtype = tf.bfloat16 if policy == "mixed_bfloat16" else tf.float32
    n = shapes["matmul"]
    a = tf.cast(tf.random.normal((n, n)), dtype)
    b = tf.cast(tf.random.normal((n, n)), dtype)
    matmul = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b)[:1, :1], tf.float32)))
    batch, side, channels = shapes["conv"]
    x = tf.cast(tf.random.normal((batch, side, side, channels)), dtype)
    w = tf.cast(tf.random.normal((3, 3, channels, channels)), dtype)
    conv = tf.function(lambda: tf.reduce_sum(tf.cast(
        tf.nn.conv2d(x, w, 1, "SAME")[:1, :1, :1, :1], tf.float32)))
    macs = {"matmul": n ** 3, "conv": batch * side * side * channels * channels * 9}
    return {name: round(macs[name] / _median_seconds(fn, repeats) / 1e9, 1)
            for name, fn in (("matmul", matmul), ("conv", conv))}


def forward_macs(model, batch, image_size):
    """Multiply-accumulates of the convolutions and matrix products of one forward pass in
    training mode, as TensorFlow's graph profiler counts them (2 float ops each)."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    graph = tf.function(lambda x: model(x, training=True)["proj_head_output"]) \
        .get_concrete_function(tf.TensorSpec([batch, image_size, image_size, 3])).graph
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    options["account_type_regexes"] = ["Conv2D", "MatMul", "DepthwiseConv2dNative"]
    return model_analyzer.profile(graph, options=options).total_float_ops // 2


def measure_step(name, image_size, pairs, policy, threads, repeats, inter_op=1, xla=False,
                 fused=True):
    """The recipe's pretraining step on fixed inputs: seconds (median) and MACs per step."""
    tf = _configure(threads, policy, inter_op)
    import simclrv2.zoo as zoo
    from simclrv2.recipes import fused_batch_norm, objectives, optim

    model = zoo.build(name, num_classes=None, input_shape=(image_size, image_size, 3),
                      ft_proj_selector=0)
    if fused:
        fused_batch_norm.fuse(model)
    optimizer = optim.LARS(0.1, weight_decay_rate=1e-6)
    variables = model.trainable_variables
    optimizer.build(variables)
    views = tf.random.uniform((2 * pairs, image_size, image_size, 3))

    @tf.function(autograph=False, jit_compile=xla)
    def step():
        with tf.GradientTape() as tape:
            out = model(views, training=True)
            loss, _, _ = objectives.nt_xent_loss(out["proj_head_output"], 0.1)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    seconds = _median_seconds(step, repeats, warmup=3)
    macs = 3 * forward_macs(model, 2 * pairs, image_size)
    return {"model": name, "image_size": image_size, "pairs": pairs, "precision": policy,
            "step_s": round(seconds, 4), "gmac_per_step": round(macs / 1e9, 2),
            "gmac_per_s": round(macs / seconds / 1e9, 1)}


def levers(configs, threads, repeats, rounds):
    """The main job's step with one thing changed at a time; returns the rows printed."""
    from simclrv2 import precision

    name, size, pairs = configs["M"]
    policy = precision.resolve("auto").policy
    seconds = {variant: [] for variant in LEVERS}
    for _ in range(rounds):
        for variant, change in LEVERS.items():
            options = {"policy": policy, "inter_op": 0, **change}
            row = _child(["step", name, size, pairs, options.pop("policy"), options],
                         threads, repeats)
            seconds[variant].append(row["step_s"])
    base = statistics.median(seconds["recipe"])
    rows = []
    for variant, values in seconds.items():
        step = statistics.median(values)
        rows.append({"variant": variant, "step_s": round(step, 4),
                     "speed_vs_recipe": round(base / step, 3), "rounds": values})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _child(spec, threads, repeats):
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec),
                           "--threads", str(threads), "--repeats", str(repeats)],
                          capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(proc.returncode)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="M,A,B,C")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--quick", action="store_true", help="small sizes, a few repeats")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=0, help="timed repeats (default 10, quick 2)")
    parser.add_argument("--levers", action="store_true",
                        help="the main job's step with one thing changed at a time")
    parser.add_argument("--rounds", type=int, default=2, help="--levers: interleaved rounds")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 10)
    if args.child:
        spec = json.loads(args.child)
        if spec[0] == "ceiling":
            result = measure_ceiling(spec[1], spec[2], args.threads, repeats)
        else:
            name, size, pairs, policy, *options = spec[1:]
            result = measure_step(name, size, pairs, policy, args.threads, repeats,
                                  **(options[0] if options else {}))
        print(json.dumps(result))
        return 0

    from simclrv2 import precision

    configs = QUICK_CONFIGS if args.quick else CONFIGS
    if args.levers:
        print(f"# {precision.cpu_model()}; {os.cpu_count()} CPUs; main job's step, "
              f"{configs['M']}", flush=True)
        levers(configs, 0, repeats, args.rounds)
        return 0
    shapes = QUICK_SHAPES if args.quick else CEILING_SHAPES
    policies = args.precisions.split(",")
    print(f"# {precision.cpu_model()}; {os.cpu_count()} CPUs; "
          f"{precision.resolve('auto').describe()}", flush=True)
    ceilings = {}
    for policy in policies:
        rates = _child(["ceiling", policy, shapes], args.threads, repeats)
        ceilings[policy] = max(rates.values())
        print(json.dumps({"ceiling": policy, "gmac_per_s": rates,
                          "best": ceilings[policy]}), flush=True)
    rows = []
    for key in args.configs.split(","):
        name, size, pairs = configs[key]
        for policy in policies:
            row = dict(_child(["step", name, size, pairs, policy], args.threads, repeats),
                       config=key)
            row["fraction_of_ceiling"] = round(row["gmac_per_s"] / ceilings[policy], 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    for row in rows:
        print(f"{row['config']} {row['model']} {row['image_size']} px x{row['pairs']} "
              f"{row['precision']:<14} {row['step_s']:.3f} s/step, {row['gmac_per_step']:g} GMAC"
              f" -> {row['gmac_per_s']:g} GMAC/s = {100 * row['fraction_of_ceiling']:.0f}% of "
              f"the {ceilings[row['precision']]:g} GMAC/s ceiling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
