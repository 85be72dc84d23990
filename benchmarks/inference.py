"""Inference speed of one exported model: Keras vs the SavedModel vs onnxruntime, same process.

    python benchmarks/inference.py            # r50_1x_sk1, 224 px, batch 8 (minutes on 2 cores)
    python benchmarks/inference.py --quick    # r50_0.25x_sk1, 128 px: a smoke run
    python benchmarks/inference.py --model r50_1x_sk0 --batch 8,1   # batch 8 and latency

Prints the export wall time, images/s of Keras `predict_on_batch`, the SavedModel's
`serving_default` signature, onnxruntime on `model.onnx` and on `model.int8.onnx` (the export's
int8 quantization; `--no-int8` skips it), and the ratios ORT / SavedModel and int8 / float ORT.
Weights are random (the speed does not depend on them; the int8 model is calibrated on random
images and its accuracy gate is off, since random weights have no accuracy to keep). Each runtime gets `--warmup` untimed
calls; then `--repeats` rounds, each timing `--iters` calls of every runtime in turn (after one
untimed call), and the median round per runtime is printed.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _rates(fns, batch, warmup, iters, repeats):
    """{name: images/s}, the median over `repeats` rounds; each round times every runtime once,
    one after another, so a slower or busier stretch of the host falls on all of them alike
    instead of on whichever runtime was being timed then."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    rates = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            fn()  # one untimed call: what the runtime before it left (threads, caches) settles
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            rates[name].append(batch * iters / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="r50_0.25x_sk1 at 128 px")
    p.add_argument("--model", default=None, help="zoo architecture (default r50_1x_sk1)")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch", default="8",
                   help="batch size, or several (8,1): each is timed on the same export")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads for TF and ORT (0: all cores)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=None,
                   help="calls per round (default: 32 images' worth, at least 4 calls)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None, help="export directory (default: a temporary one)")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 ONNX model")
    args = p.parse_args(argv)
    name = args.model or ("r50_0.25x_sk1" if args.quick else "r50_1x_sk1")
    size = args.image_size or (128 if args.quick else 224)
    try:
        batches = [int(b) for b in str(args.batch).split(",")]
    except ValueError:
        p.error(f"--batch {args.batch!r}: expected N or N,N,...")
    if min(batches) < 1:
        p.error("--batch sizes must be >= 1")

    import numpy as np
    import tensorflow as tf

    threads = args.threads or os.cpu_count()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import onnxruntime as ort

    import simclrv2.zoo as zoo
    from simclrv2.export import export_model

    model = zoo.build(name, num_classes=1000, input_shape=(size, size, 3))
    tmp = tempfile.TemporaryDirectory() if args.out is None else None
    out = args.out or os.path.join(tmp.name, "export")
    start = time.perf_counter()
    report = export_model(model, out, formats=("savedmodel", "onnx"), stage="benchmark",
                          overwrite=True)
    export_s = time.perf_counter() - start
    int8_s = None
    if not args.no_int8:
        from simclrv2.export.int8 import calibration_set, quantize_int8

        probe = np.random.default_rng(1).uniform(0, 1, (100, size, size, 3)).astype(np.float32)
        start = time.perf_counter()
        quantize_int8(os.path.join(out, "model.onnx"), os.path.join(out, "model.int8.onnx"),
                      calibration_set(probe, size, 1000, calibration_examples=50,
                                      check_examples=50), max_drop_points=100.0)
        int8_s = time.perf_counter() - start

    classifier = zoo.classifier_model(model)
    serving = tf.saved_model.load(os.path.join(out, "saved_model")).signatures["serving_default"]
    from simclrv2.export.onnx import onnx_session_options

    options = onnx_session_options(threads)
    session = ort.InferenceSession(os.path.join(out, "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    int8 = None if int8_s is None else ort.InferenceSession(
        os.path.join(out, "model.int8.onnx"), options, providers=["CPUExecutionProvider"])

    print(f"model {name} at {size} px, {threads} threads, tensorflow {tf.__version__}, "
          f"onnxruntime {ort.__version__}")
    print(f"export (SavedModel + ONNX, verified): {export_s:.1f} s; max relative difference "
          f"{report['verification']['max_relative_difference']:.2g}")
    if int8_s is not None:
        print(f"int8 quantization (50 calibration images): {int8_s:.1f} s")
    for batch in batches:
        x = np.random.default_rng(0).uniform(0, 1, (batch, size, size, 3)).astype(np.float32)
        xt = tf.constant(x)

        fns = {"keras": lambda: classifier.predict_on_batch(x),
               "saved_model": lambda: serving(images=xt)["logits"].numpy(),
               "ort": lambda: session.run(["logits"], {"images": x})}
        if int8 is not None:
            fns["int8"] = lambda: int8.run(["logits"], {"images": x})
        iters = args.iters or max(4, 32 // batch)  # batch 1's 50 ms calls: 4 were too few
        rates = _rates(fns, batch, args.warmup, iters, args.repeats)
        sm_rate, ort_rate = rates["saved_model"], rates["ort"]
        print(f"batch {batch}:")
        print(f"  keras predict_on_batch : {rates['keras']:8.1f} images/s")
        print(f"  SavedModel serving     : {sm_rate:8.1f} images/s "
              f"({1000 * batch / sm_rate:.0f} ms per batch)")
        print(f"  onnxruntime            : {ort_rate:8.1f} images/s "
              f"({1000 * batch / ort_rate:.0f} ms per batch)")
        print(f"  ratio ORT / SavedModel : {ort_rate / sm_rate:.2f}x")
        if int8 is not None:
            print(f"  onnxruntime int8       : {rates['int8']:8.1f} images/s")
            print(f"  ratio int8 / float ORT : {rates['int8'] / ort_rate:.2f}x")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
