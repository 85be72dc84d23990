"""Memory and time of the flagship checkpoint's life on one machine: an r152_3x_sk1 SavedModel in
the official layout (random weights, written by tests/official_format_writer.py: no download),
then `simclrv2 convert`, `zoo.load` converting it and then from its local cache, `simclrv2 export`
once per format (savedmodel, onnx, keras) and onnxruntime at batch 1 on the exported model.onnx.

    nice -n 10 python benchmarks/large_models.py                    # r152_3x_sk1, 64 px
    python benchmarks/large_models.py --arch r50_1x_sk1 --quick     # a smoke run
    python benchmarks/large_models.py --skip export_onnx            # steps left out, by name

Each step runs in a process of its own and reports its own peak resident memory (VmHWM, its
high-water mark since exec; ru_maxrss would carry the parent's over), its resident memory once
TensorFlow, Keras and simclrv2 are imported (the runtime, before any weight), and its wall time.
Each peak is printed as a ratio to the model's float32 weights (simclrv2.zoo.param_count), the
bounds of docs/pretrained_models.md beside them: convert and zoo.load 2x, export 2.5x. The log
and a JSON of the figures go to benchmarks/results/large_models-<UTC stamp>.{log,json}.
"""

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # official_format_writer
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

BOUNDS = {"convert": 2.0, "zoo_load_convert": 2.0, "zoo_load_cached": 2.0,
          "export_savedmodel": 2.5, "export_onnx": 2.5, "export_keras": 2.5}
EXPORT_FORMATS = ("savedmodel", "onnx", "keras")
INFERENCE_CALLS = 5


def _runtime():
    """Imports what every step needs; returns the resident memory then (the runtime's)."""
    import keras  # noqa: F401
    import tensorflow  # noqa: F401

    import simclrv2.zoo  # noqa: F401
    from simclrv2 import process_memory

    return process_memory.rss_bytes()


def _build(args, work):
    from official_format_writer import write_official_saved_model

    from simclrv2.zoo.config import parse_name

    config = parse_name(args.arch)
    # Only the call the importer makes (trainable=False) is traced: half the writing time.
    write_official_saved_model(work / "saved_model", config.depth, config.width, config.sk,
                               False, 1000, traced=(False,))


def _exit_on_failure(code):
    """The commands return their exit status (their one-line error already on stderr): a step
    that failed must not report a peak as if it had done its work."""
    if code:
        raise SystemExit(code)


def _step(name, args, work):
    size = str(args.image_size)
    keras_file = work / "converted.keras"
    if name == "build":
        _build(args, work)
    elif name == "convert":
        from simclrv2.convert import convert_main

        _exit_on_failure(convert_main(["--saved-model", str(work / "saved_model"), "--out",
                                       str(keras_file), "--input-size", size, "--overwrite"]))
    elif name.startswith("zoo_load"):
        import shutil

        from simclrv2.zoo.pretrained import load

        if name == "zoo_load_convert":  # a cache left by an earlier run would be read instead
            shutil.rmtree(work / "cache", ignore_errors=True)
        load(weights=str(work / "saved_model"), cache_dir=str(work / "cache"),
             input_shape=(args.image_size, args.image_size, 3))
    elif name.startswith("export_"):
        from simclrv2.export.cli import export_main

        fmt = name[len("export_"):]
        _exit_on_failure(export_main(["--model", str(keras_file), "--out",
                                      str(work / f"export_{fmt}"), "--formats", fmt,
                                      "--overwrite"]))
    elif name == "onnxruntime_batch1":
        import numpy as np
        import onnxruntime as ort

        from simclrv2.export.onnx import onnx_session_options

        session = ort.InferenceSession(str(work / "export_onnx" / "model.onnx"),
                                       onnx_session_options(), providers=["CPUExecutionProvider"])
        image = np.random.default_rng(0).uniform(
            0, 1, (1, args.image_size, args.image_size, 3)).astype(np.float32)
        session.run(None, {"images": image})  # first call: allocations
        started = time.monotonic()
        for _ in range(INFERENCE_CALLS):
            session.run(None, {"images": image})
        return {"latency_s": round((time.monotonic() - started) / INFERENCE_CALLS, 3)}
    else:
        raise SystemExit(f"unknown step {name}")
    return {}


def _child(args):
    """One step in this process; prints its figures as the last line (JSON)."""
    started = time.monotonic()
    from simclrv2 import process_memory

    # What `simclrv2 convert` and `simclrv2 export` do before TensorFlow is imported; here
    # before the runtime is measured, and for zoo.load as docs/pretrained_models.md advises.
    process_memory.use_releasing_allocator()
    runtime = _runtime()
    extra = _step(args.step, args, pathlib.Path(args.work))
    from simclrv2 import process_memory

    print(json.dumps({"step": args.step, "peak_rss": process_memory.peak_rss_bytes(),
                      "runtime_rss": runtime, "wall_s": round(time.monotonic() - started, 1),
                      **extra}), flush=True)


def _steps(args):
    steps = [] if args.reuse else ["build"]
    steps += ["convert", "zoo_load_convert", "zoo_load_cached"]
    steps += [f"export_{fmt}" for fmt in EXPORT_FORMATS] + ["onnxruntime_batch1"]
    return steps


def _run_watched(command, max_rss):
    """(CompletedProcess, resident bytes it was killed at or None): the step runs with its
    resident memory polled, and is killed past `max_rss` (others share the machine)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        killed_at = None
        while child.poll() is None:
            try:
                status = pathlib.Path(f"/proc/{child.pid}/status").read_text()
                rss = int(next(line.split()[1] for line in status.splitlines()
                               if line.startswith("VmRSS:"))) * 1024
            except (OSError, StopIteration, ValueError):
                rss = 0
            if rss > max_rss:
                killed_at = rss
                child.kill()
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(command, child.returncode, out.read(),
                                           err.read()), killed_at


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="r152_3x_sk1")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--work", help="working directory (default: a new one under /tmp)")
    parser.add_argument("--reuse", action="store_true", help="the SavedModel in --work exists")
    parser.add_argument("--quick", action="store_true", help="results not written")
    parser.add_argument("--max-rss-gb", type=float, default=11.0,
                        help="kill a step whose resident memory passes this (default 11)")
    parser.add_argument("--skip", default="",
                        help="steps not to run, comma-separated (e.g. export_onnx; "
                             "onnxruntime_batch1 needs it)")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        return _child(args)
    skip = {name for name in args.skip.split(",") if name}
    unknown = skip - set(_steps(argparse.Namespace(reuse=False)))
    if unknown:
        parser.error(f"--skip: no step named {', '.join(sorted(unknown))}; the steps are "
                     f"{', '.join(_steps(argparse.Namespace(reuse=False)))}")

    from simclrv2.zoo.param_count import weight_bytes

    weights = weight_bytes(args.arch, num_classes=1000)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = pathlib.Path(args.work or f"/tmp/large_models-{stamp}")
    work.mkdir(parents=True, exist_ok=True)
    lines = []

    def say(text):
        print(text, flush=True)
        lines.append(text)

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "unknown CPU")
    say(f"# large_models {args.arch} at {args.image_size} px, {stamp}; {cpu}, "
        f"{os.cpu_count()} cores; float32 weights {weights / 1e9:.2f} GB (param_count)")
    say(f"{'step':<20} {'peak RSS':>9} {'x weights':>9} {'above runtime':>13} {'bound':>6} "
        f"{'wall s':>7}  extra")
    results = []
    failed = set()
    for step in _steps(args):
        if step == "onnxruntime_batch1" and "export_onnx" in failed:
            continue
        if step in skip:
            say(f"{step:<20} skipped (--skip)")
            results.append({"step": step, "skipped": True})
            failed.add(step)
            continue
        done, killed_at = _run_watched(
            [sys.executable, __file__, "--step", step, "--arch", args.arch, "--image-size",
             str(args.image_size), "--work", str(work)], args.max_rss_gb * 1e9)
        if done.returncode != 0:
            why = (f"killed by this benchmark at {killed_at / 1e9:.2f} GB resident "
                   f"(--max-rss-gb {args.max_rss_gb:g})" if killed_at else
                   (done.stderr.strip().splitlines() or ["?"])[-1])
            say(f"{step:<20} FAILED (exit {done.returncode}): {why}")
            results.append({"step": step, "failed": why, "stderr": done.stderr[-4000:]})
            failed.add(step)
            if step in ("build", "convert"):
                break
            continue
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        peak, runtime = figures["peak_rss"], figures["runtime_rss"]
        figures.update(weight_ratio=round(peak / weights, 2),
                       above_runtime_ratio=round((peak - runtime) / weights, 2),
                       bound=BOUNDS.get(step))
        results.append(figures)
        extra = {k: v for k, v in figures.items() if k not in (
            "step", "peak_rss", "runtime_rss", "wall_s", "weight_ratio", "above_runtime_ratio",
            "bound")}
        bound = f"{figures['bound']:.1f}x" if figures["bound"] else "-"
        say(f"{step:<20} {peak / 1e9:>7.2f}GB {figures['weight_ratio']:>8.2f}x "
            f"{figures['above_runtime_ratio']:>12.2f}x {bound:>6} {figures['wall_s']:>7.1f}  "
            f"{extra or ''}")
    if not args.quick:
        out = ROOT / "benchmarks" / "results" / f"large_models-{stamp}"
        out.with_suffix(".log").write_text("\n".join(lines) + "\n")
        out.with_suffix(".json").write_text(json.dumps(
            {"arch": args.arch, "image_size": args.image_size, "weight_bytes": weights,
             "cpu": cpu, "cores": os.cpu_count(), "steps": results}, indent=2) + "\n")
        print(f"wrote {out}.log and .json")


if __name__ == "__main__":
    sys.exit(main())
