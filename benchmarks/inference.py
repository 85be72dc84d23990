"""Inference speed of one exported model in every runtime the export writes for, same process.

    python benchmarks/inference.py            # r50_1x_sk1, 224 px, batch 8 (minutes on 2 cores)
    python benchmarks/inference.py --quick    # r50_0.25x_sk1, 128 px: a smoke run
    python benchmarks/inference.py --model r50_1x_sk0 --batch 8,1   # batch 8 and latency

Prints each export's wall time (SavedModel + ONNX verified by export_model; the OpenVINO and
TFLite conversions; the onnxruntime, OpenVINO (NNCF) and LiteRT int8 quantizations), then
images/s of Keras `predict_on_batch`, the SavedModel's `serving_default` signature, onnxruntime
on `model.onnx` and `model.int8.onnx`, OpenVINO at float32, at its default precision on this CPU
(bfloat16 where the CPU has it) and int8, and LiteRT on `model.tflite` and `model.int8.tflite`,
each with its ratio to the SavedModel, and the int8 / float ratio of each runtime.
`--no-int8`, `--no-openvino`, `--no-tflite` leave runtimes out.

Weights are random (the speed does not depend on them; the int8 models are calibrated on random
images and their accuracy gates are off, since random weights have no accuracy to keep; the
OpenVINO and TFLite models are converted by the export's own functions, without the export's
checks, for the same reason). Each runtime gets `--warmup` untimed calls; then `--repeats`
rounds, each timing `--iters` calls of every runtime in turn (after one untimed call), and the
median round per runtime is printed.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

CALIBRATION_EXAMPLES = 50
CHECK_EXAMPLES = 50
LABELS = {"keras": "keras predict_on_batch", "saved_model": "SavedModel serving",
          "ort": "onnxruntime", "ort_int8": "onnxruntime int8", "ov_f32": "OpenVINO f32",
          "ov_default": "OpenVINO default", "ov_int8": "OpenVINO int8",
          "litert": "LiteRT float32", "litert_int8": "LiteRT int8"}
INT8_OF = {"ort_int8": "ort", "ov_int8": "ov_f32", "litert_int8": "litert"}


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


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _exports(model, out, size, args):
    """Writes every artifact into `out`; returns {what: wall seconds} and the export report."""
    import numpy as np

    from simclrv2.export import export_model, openvino, tflite
    from simclrv2.export.int8 import calibration_set
    from simclrv2.export.verification import reference_outputs

    report, seconds = _timed(lambda: export_model(
        model, out, formats=("savedmodel", "onnx"), stage="benchmark", overwrite=True))
    walls = {"SavedModel + ONNX (export_model, verified)": seconds}
    graph = None
    if not args.no_openvino:
        _, walls["OpenVINO conversion (from model.onnx)"] = _timed(lambda: openvino.write_openvino(
            os.path.join(out, "model.onnx"), os.path.join(out, openvino.DIRECTORY)))
    if not args.no_tflite:
        from simclrv2.export.signatures import ExportGraph

        graph = ExportGraph(model, size, 1.0)
        _, walls["TFLite conversion"] = _timed(lambda: tflite.write_tflite(
            graph, os.path.join(out, tflite.FILE)))
    if args.no_int8:
        return walls, report
    probe = np.random.default_rng(1).uniform(
        0, 1, (CALIBRATION_EXAMPLES + CHECK_EXAMPLES, size, size, 3)).astype(np.float32)
    images = calibration_set(probe, size, 1000, calibration_examples=CALIBRATION_EXAMPLES,
                             check_examples=CHECK_EXAMPLES)
    reference = reference_outputs(model, images.check)["logits"]
    label = f"({CALIBRATION_EXAMPLES} calibration images)"
    from simclrv2.export.int8 import quantize_int8

    _, walls[f"onnxruntime int8 {label}"] = _timed(lambda: quantize_int8(
        os.path.join(out, "model.onnx"), os.path.join(out, "model.int8.onnx"), images,
        max_drop_points=100.0))
    if not args.no_openvino:
        from simclrv2.export.openvino_int8 import quantize_openvino_int8

        folder = os.path.join(out, openvino.DIRECTORY)
        _, walls[f"OpenVINO int8, NNCF {label}"] = _timed(lambda: quantize_openvino_int8(
            os.path.join(folder, openvino.FILE), os.path.join(folder, openvino.INT8_FILE), images,
            reference, max_drop_points=100.0))
    if not args.no_tflite:
        from simclrv2.export.tflite_int8 import quantize_tflite_int8

        _, walls[f"LiteRT int8, full-integer {label}"] = _timed(lambda: quantize_tflite_int8(
            graph, os.path.join(out, tflite.INT8_FILE), images, reference, max_drop_points=100.0))
    return walls, report


def _runtimes(model, out, threads, args):
    """{name: fn(images) -> logits} of every runtime benchmarked, and a line on their versions."""
    import onnxruntime as ort
    import tensorflow as tf

    import simclrv2.zoo as zoo
    from simclrv2.export.onnx import onnx_session_options

    classifier = zoo.classifier_model(model)
    serving = tf.saved_model.load(os.path.join(out, "saved_model")).signatures["serving_default"]
    options = onnx_session_options(threads)

    def session(name):
        return ort.InferenceSession(os.path.join(out, name), options,
                                    providers=["CPUExecutionProvider"])

    onnx_float = session("model.onnx")
    runs = {"keras": classifier.predict_on_batch,
            "saved_model": lambda x: serving(images=tf.constant(x))["logits"].numpy(),
            "ort": lambda x: onnx_float.run(["logits"], {"images": x})}
    versions = [f"tensorflow {tf.__version__}", f"onnxruntime {ort.__version__}"]
    if not args.no_int8:
        onnx_int8 = session("model.int8.onnx")
        runs["ort_int8"] = lambda x: onnx_int8.run(["logits"], {"images": x})
    if not args.no_openvino:
        from simclrv2.export import openvino

        folder = os.path.join(out, openvino.DIRECTORY)
        compiled = {"ov_f32": openvino.compile_model(os.path.join(folder, openvino.FILE),
                                                     openvino.F32, threads),
                    "ov_default": openvino.compile_model(os.path.join(folder, openvino.FILE),
                                                         None, threads)}
        if not args.no_int8:
            compiled["ov_int8"] = openvino.compile_model(
                os.path.join(folder, openvino.INT8_FILE), None, threads)
        for name, model_ in compiled.items():
            runs[name] = lambda x, m=model_: m(x)
        import openvino as ov

        versions.append(f"OpenVINO {ov.__version__.split('-')[0]} (default precision here: "
                        f"{openvino.inference_precision(compiled['ov_default'])})")
    if not args.no_tflite:
        from simclrv2.export import tflite

        files = {"litert": tflite.FILE} | ({} if args.no_int8 else {"litert_int8": tflite.INT8_FILE})
        for name, file in files.items():
            runner = tflite.interpreter(os.path.join(out, file), threads).get_signature_runner(
                tflite.SIGNATURE)
            runs[name] = lambda x, r=runner: r(images=x)
        import ai_edge_litert

        versions.append(f"LiteRT {ai_edge_litert.__version__}")
    return runs, ", ".join(versions)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="r50_0.25x_sk1 at 128 px")
    p.add_argument("--model", default=None, help="zoo architecture (default r50_1x_sk1)")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch", default="8",
                   help="batch size, or several (8,1): each is timed on the same export")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads of every runtime (0: all cores)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=None,
                   help="calls per round (default: 32 images' worth, at least 4 calls)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None, help="export directory (default: a temporary one)")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 models")
    p.add_argument("--no-openvino", action="store_true", help="skip OpenVINO")
    p.add_argument("--no-tflite", action="store_true", help="skip LiteRT")
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

    import simclrv2.zoo as zoo

    model = zoo.build(name, num_classes=1000, input_shape=(size, size, 3))
    tmp = tempfile.TemporaryDirectory() if args.out is None else None
    out = args.out or os.path.join(tmp.name, "export")
    walls, report = _exports(model, out, size, args)
    runs, versions = _runtimes(model, out, threads, args)

    print(f"model {name} at {size} px, {threads} threads; {versions}")
    print(f"export wall times (max relative difference of the verified export "
          f"{report['verification']['max_relative_difference']:.2g}):")
    for what, seconds in walls.items():
        print(f"  {what:<50}: {seconds:7.1f} s")
    for batch in batches:
        x = np.random.default_rng(0).uniform(0, 1, (batch, size, size, 3)).astype(np.float32)
        fns = {key: (lambda run=run: run(x)) for key, run in runs.items()}
        iters = args.iters or max(4, 32 // batch)  # batch 1's 50 ms calls: 4 were too few
        rates = _rates(fns, batch, args.warmup, iters, args.repeats)
        base = rates["saved_model"]
        print(f"batch {batch}:  images/s  ms/batch  / SavedModel")
        for key, rate in rates.items():
            print(f"  {LABELS[key]:<24}: {rate:8.1f} {1000 * batch / rate:8.1f} "
                  f"{rate / base:8.2f}x")
        for int8, float_ in INT8_OF.items():
            if int8 in rates:
                print(f"  ratio {LABELS[int8]} / {LABELS[float_]}: "
                      f"{rates[int8] / rates[float_]:.2f}x")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
