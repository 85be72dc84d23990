"""Pretraining throughput (images/s) and the cost of a pretraining step relative to a supervised
step on the same 2B images (target <= 1.15: the contrastive loss should be cheap next to the net).

    python benchmarks/train_step.py            # r18 CIFAR stem 32 px B=128, r50_1x_sk1 224 px B=8
    python benchmarks/train_step.py --quick    # smaller cases, a minute on 2 CPU cores
"""

import argparse
import json
import time

import tensorflow as tf

from simclrv2.recipes import objectives, optim


def _bench(model_name, image_size, batch, steps, warmup):
    import simclrv2.zoo as zoo

    model = zoo.build(model_name, num_classes=10, input_shape=(image_size, image_size, 3),
                      ft_proj_selector=0)
    opt = optim.LARS(0.1, weight_decay_rate=1e-6)
    opt.build(model.trainable_variables)
    variables = model.trainable_variables
    views = tf.random.uniform((2 * batch, image_size, image_size, 3))
    labels = tf.random.uniform((2 * batch,), 0, 10, tf.int32)

    @tf.function
    def pretrain_step():
        with tf.GradientTape() as tape:
            out = model(views, training=True)
            loss, _, _ = objectives.nt_xent_loss(out["proj_head_output"], 0.1)
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    @tf.function
    def supervised_step():
        with tf.GradientTape() as tape:
            out = model(views, training=True)
            loss = objectives.supervised_loss(labels, out["logits_sup"], 10)
        grads = tape.gradient(loss, variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        opt.apply_gradients(pairs)
        return loss

    def timed(fn):
        for _ in range(warmup):
            fn().numpy()
        start = time.perf_counter()
        for _ in range(steps):
            fn().numpy()
        return (time.perf_counter() - start) / steps

    t_pre, t_sup = timed(pretrain_step), timed(supervised_step)
    return {"model": model_name, "image_size": image_size, "batch": batch,
            "pretrain_images_per_s": round(2 * batch / t_pre, 2),
            "pretrain_step_s": round(t_pre, 4), "supervised_step_s": round(t_sup, 4),
            "pretrain_over_supervised": round(t_pre / t_sup, 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small cases, few steps")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = TF's choice)")
    args = parser.parse_args()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    if args.quick:
        cases = [("r18_0.25x_sk0", 32, 32, 5, 2), ("r50_0.25x_sk1", 64, 4, 3, 1)]
    else:
        cases = [("r18_1x_sk0", 32, 128, 10, 3), ("r50_1x_sk1", 224, 8, 10, 3)]
    for case in cases:
        print(json.dumps(_bench(*case)), flush=True)


if __name__ == "__main__":
    main()
