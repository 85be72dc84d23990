"""`simclrv2 run` (what `make run` runs): the whole SimCLRv2 pipeline on Fashion-MNIST.

pretrain (unlabeled, kNN monitor) -> linear eval and fine-tuning on 1% / 10% of the labels ->
distillation of the 10% teacher into a narrower student on the unlabeled images -> verified export
of the student -> results.json, results.png (top-1 against label fraction) in the run directory.

Every stage runs in its own sub-directory of the run directory and writes result.json when it is
done; a second `simclrv2 run` reuses those and resumes an unfinished stage from its checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

from simclrv2.atomic_files import write_json
from simclrv2.plotting import label_fraction_axes, save_label_fraction_plot

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = ("Fashion-MNIST is not installed. It is Debian's dataset-fashion-mnist package:\n"
                "  sudo apt-get install dataset-fashion-mnist\n"
                f"(files land in {FMNIST_DIR}), or pass --data-dir a folder holding the four idx "
                ".gz files (train-images-idx3-ubyte.gz, ...).")
EXPORT_FORMATS = ("savedmodel", "onnx", "keras")
TRAIN_SIZE = 60000


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="simclrv2 run",
        description="SimCLRv2 end to end on Fashion-MNIST: pretrain, linear eval, fine-tune on "
                    "1%% and 10%% of the labels, distill, export. About 10 minutes on 2 CPU cores "
                    "(--quick: a 1-2 minute smoke run with the same stages and outputs). Run it "
                    "again to resume; finished stages are reused.")
    parser.add_argument("--run-dir", default="runs/main", help="where everything goes (default "
                        "runs/main)")
    parser.add_argument("--quick", action="store_true", help="a one-to-two-minute smoke version: "
                        "few steps, small batches, evaluation on 1000 test images")
    parser.add_argument("--width", type=float, default=0.25,
                        help="ResNet-18 width multiplier of the teacher (default 0.25)")
    parser.add_argument("--student-width", type=float, default=None,
                        help="the distilled student's width (default: half of --width)")
    parser.add_argument("--steps", type=int, default=None,
                        help="contrastive pretraining steps (default 200, --quick 6)")
    parser.add_argument("--finetune-steps", type=int, default=None,
                        help="fine-tuning steps for each label fraction (default 150, --quick 4)")
    parser.add_argument("--distill-steps", type=int, default=None,
                        help="distillation steps (default 150, --quick 4)")
    parser.add_argument("--image-size", type=int, default=16,
                        help="side the 32 px (padded) images are read at; 16 keeps the run "
                             "near 10 minutes on 2 cores, 32 costs about 4x (default 16)")
    parser.add_argument("--data-dir", default=None,
                        help=f"folder with the Fashion-MNIST idx .gz files (default {FMNIST_DIR})")
    parser.add_argument("--no-export", action="store_true", help="skip the export stage")
    args = parser.parse_args(argv)
    quick = args.quick
    args.steps = args.steps if args.steps is not None else (6 if quick else 200)
    args.finetune_steps = args.finetune_steps if args.finetune_steps is not None else (
        4 if quick else 150)
    args.distill_steps = args.distill_steps if args.distill_steps is not None else (
        4 if quick else 150)
    args.student_width = args.student_width or args.width / 2
    for name in ("steps", "finetune_steps", "distill_steps", "image_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.image_size < 8:
        parser.error("--image-size must be >= 8 (the exported model needs 8 px or more)")
    return args


def _arch(width):
    return f"r18_{width:g}x_sk0"


def plan(args):
    """[(stage name, kind, overrides)], in running order. Every value that shapes a result is
    here, so job.json (which records args) identifies what a run directory holds."""
    run = pathlib.Path(args.run_dir)
    quick = args.quick
    common = dict(dataset="fashion_mnist", image_size=args.image_size, log_steps=10,
                  eval_batch_size=500, num_eval_examples=1000 if quick else 0, seed=0,
                  progress_bar=True)
    if args.data_dir:
        common["data_dir"] = args.data_dir
    pre_dir = run / "pretrain"
    stages = [("pretrain", "pretrain", dict(
        common, model=_arch(args.width), model_dir=str(pre_dir),
        global_batch_size=32 if quick else 128, train_steps=args.steps,
        optimizer="lars", learning_rate=0.2, learning_rate_scaling="sqrt",
        warmup_epochs=0.0 if quick else 0.05, weight_decay=1e-6, temperature=0.2,
        lineareval_while_pretraining=False, knn_steps=max(1, args.steps // 2),
        knn_bank_size=500 if quick else 5000, checkpoint_steps=max(1, min(50, args.steps // 2))))]
    # Linear eval on all 60k labels costs a forward pass over the training set: left out of
    # --quick, which must stay near a minute.
    for pct in ((1, 10) if quick else (1, 10, 100)):
        stages.append((f"lineareval_{pct}pct", "lineareval", dict(
            common, checkpoint=str(pre_dir / "model.keras"), model_dir=str(run / f"lineareval_{pct}pct"),
            label_fraction=pct / 100, global_batch_size=256, train_steps=20 if quick else 500,
            optimizer="momentum", learning_rate=0.1, learning_rate_scaling="linear")))
    for pct in (1, 10):
        stages.append((f"finetune_{pct}pct", "finetune", dict(
            common, checkpoint=str(pre_dir), model_dir=str(run / f"finetune_{pct}pct"),
            label_fraction=pct / 100, global_batch_size=32 if quick else 64,
            # Momentum SGD rather than the paper's LARS: LARS moves each layer by lr x 0.001 of
            # its norm per step, which suits 60 epochs, not a 150-step budget.
            train_steps=args.finetune_steps, optimizer="momentum", learning_rate=0.05,
            learning_rate_scaling="none", ft_proj_selector=1,
            checkpoint_steps=max(1, min(50, args.finetune_steps)))))
    stages.append(("distill", "distill", dict(
        common, teacher=str(run / "finetune_10pct"), student=_arch(args.student_width),
        model_dir=str(run / "distill"), temperature=1.0, labeled_weight=0.0,
        global_batch_size=32 if quick else 64, train_steps=args.distill_steps,
        optimizer="momentum", learning_rate=0.1, learning_rate_scaling="none",
        warmup_epochs=0.0, weight_decay=1e-5,
        checkpoint_steps=max(1, min(50, args.distill_steps)))))
    return stages


def _read_json(path):
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None


def _job_identity(args):
    return {k: v for k, v in sorted(vars(args).items()) if k not in ("run_dir",)}


def check_run_dir(args):
    """Refuses a run directory that holds a run with other settings (reusing its stages would
    mix results); writes job.json for a new one."""
    run = pathlib.Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    identity = _job_identity(args)
    previous = _read_json(run / "job.json")
    if previous is not None and previous.get("options") != identity:
        changed = sorted(k for k in set(identity) | set(previous.get("options", {}))
                         if identity.get(k) != previous.get("options", {}).get(k))
        raise SystemExit(f"simclrv2 run: {run} holds a run with other options ({', '.join(changed)}"
                         f" differ); use another --run-dir or delete {run}")
    if previous is None:
        write_json(run / "job.json", {"options": identity, "stage_wall_s": {}})


def _add_wall(run, stage, seconds):
    job = _read_json(run / "job.json")
    job["stage_wall_s"][stage] = round(job["stage_wall_s"].get(stage, 0.0) + seconds, 2)
    write_json(run / "job.json", job)


def check_data(args):
    import simclrv2.data as data

    try:
        data.load_labeled("fashion_mnist", "test", args.data_dir)
    except data.DataNotFoundError as error:
        raise SystemExit(f"simclrv2 run: {error}\n\n{INSTALL_HINT}") from None


def _export_module():
    """simclrv2.export.export_model when the export package provides it, else None."""
    try:
        import simclrv2.export as export
    except ImportError:
        return None
    return export if hasattr(export, "export_model") else None


def run_stage(kind, overrides):
    from simclrv2.recipes import config as config_lib
    from simclrv2.recipes import stages

    config = config_lib.from_dict(kind, {k: v for k, v in overrides.items()})
    result = stages.STAGE_FUNCTIONS[kind](config)
    result.pop("model", None)
    return result


def run_export(run, args):
    export = _export_module()
    out = run / "export"
    if export is None:
        print("export: skipped - simclrv2.export.export_model is not available in this checkout")
        return {"status": "unavailable"}
    if (out / "config.json").is_file():  # export_model places the directory atomically
        return {**_read_json(out / "config.json"), "status": "done", "reused": True,
                "out_dir": str(out)}
    report = export.export_model(
        str(run / "distill" / "model.keras"), str(out), formats=EXPORT_FORMATS, stage="distilled",
        provenance={"job": "simclrv2 run", "teacher": str(run / "finetune_10pct"),
                    "dataset": "fashion_mnist",
                    "class_names": ["t-shirt/top", "trouser", "pullover", "dress", "coat",
                                    "sandal", "shirt", "sneaker", "bag", "ankle boot"]},
        overwrite=True)
    return {**report, "status": "done", "reused": False}


def _top1_of(result):
    """A stage's headline figure: test top-1, or the kNN monitor's for pretraining."""
    top1 = result.get("test_top1")
    return result.get("knn_top1") if top1 is None else top1


def _labels_used(fraction):
    return f"{int(round(fraction * TRAIN_SIZE))} ({fraction * 100:g}%)"


def collect(run, stages, args):
    """The results table: one row per evaluated model."""
    job = _read_json(run / "job.json")
    walls = job.get("stage_wall_s", {})
    rows = []
    for name, kind, overrides in stages:
        result = _read_json(pathlib.Path(overrides["model_dir"]) / "result.json") or {}
        if kind == "pretrain":
            rows.append(dict(method=f"kNN monitor (k=200) on SimCLR features, {overrides['model']}",
                             stage=name, label_fraction=0.0,
                             labels_used=f"{overrides['knn_bank_size']} (kNN bank only)",
                             top1=result.get("knn_top1"), wall_s=walls.get(name)))
        elif kind == "lineareval":
            rows.append(dict(method=f"SimCLR linear eval, {args.width:g}x", stage=name,
                             label_fraction=overrides["label_fraction"],
                             labels_used=_labels_used(overrides["label_fraction"]),
                             top1=result.get("test_top1"), wall_s=walls.get(name)))
        elif kind == "finetune":
            rows.append(dict(method=f"SimCLRv2 fine-tuned (teacher), {args.width:g}x", stage=name,
                             label_fraction=overrides["label_fraction"],
                             labels_used=_labels_used(overrides["label_fraction"]),
                             top1=result.get("test_top1"), wall_s=walls.get(name)))
        elif kind == "distill":
            rows.append(dict(method=f"distilled student {args.student_width:g}x (10% teacher)",
                             stage=name, label_fraction=0.1,
                             labels_used=_labels_used(0.1) + " via teacher",
                             top1=result.get("test_top1"), wall_s=walls.get(name)))
    return rows


def print_table(rows, test_examples):
    print(f"\nFashion-MNIST test top-1 ({test_examples} test images)")
    header = f"{'method':<52} {'labels used':<24} {'top-1':>7} {'wall':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        top1 = "-" if r["top1"] is None else f"{100 * r['top1']:.2f}%"
        wall = "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}s"
        print(f"{r['method']:<52} {r['labels_used']:<24} {top1:>7} {wall:>8}")


def plot(rows, path, title):
    fig, ax, _ = label_fraction_axes(figsize=(6, 4.2))
    series = {"lineareval": ("SimCLR linear eval", "o--"), "finetune": ("SimCLRv2 fine-tuned", "s-")}
    for prefix, (label, style) in series.items():
        points = sorted((r["label_fraction"] * 100, r["top1"] * 100) for r in rows
                        if r["stage"].startswith(prefix) and r["top1"] is not None)
        if points:
            ax.plot(*zip(*points), style, label=label)
    for r in rows:
        if r["stage"] == "distill" and r["top1"] is not None:
            ax.plot([r["label_fraction"] * 100], [r["top1"] * 100], "r*", markersize=12,
                    label=r["method"])
        if r["stage"] == "pretrain" and r["top1"] is not None:
            ax.axhline(r["top1"] * 100, color="gray", linestyle=":", label="kNN monitor")
    save_label_fraction_plot(fig, ax, path, xlabel="fraction of labels used", title=title,
                             title_size=9, legend_size=8)


def _versions():
    import keras
    import numpy as np
    import tensorflow as tf

    import simclrv2
    return {"simclrv2": getattr(simclrv2, "__version__", "?"), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "python": platform.python_version()}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.time()
    run = pathlib.Path(args.run_dir)
    check_run_dir(args)

    import tensorflow as tf
    try:
        # Measured on 2 cores: TF's default pools cost ~35% on these small models.
        tf.config.threading.set_intra_op_parallelism_threads(min(os.cpu_count() or 2, 16))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    check_data(args)

    stages = plan(args)
    total = len(stages) + (0 if args.no_export else 1)
    print(f"simclrv2 run: {total} stages into {run}/ (ResNet-18 {args.width:g}x teacher, "
          f"{args.student_width:g}x student, {args.image_size} px{', quick' if args.quick else ''})")
    import keras

    try:
        for number, (name, kind, overrides) in enumerate(stages, start=1):
            done = _read_json(pathlib.Path(overrides["model_dir"]) / "result.json") or {}
            if done.get("status") == "done":
                top1 = _top1_of(done)
                print(f"[{number}/{total}] {name}: done before, reused (top-1 "
                      f"{'-' if top1 is None else f'{100 * top1:.2f}%'})")
                continue
            print(f"[{number}/{total}] {name}", flush=True)
            stage_start = time.time()
            try:
                result = run_stage(kind, overrides)
            finally:
                _add_wall(run, name, time.time() - stage_start)
                keras.backend.clear_session()  # each stage builds its own models
            if result.get("status") != "done":
                print(f"\nsimclrv2 run: stopped during {name} (checkpoint saved); run the same "
                      f"command again to resume.", file=sys.stderr)
                return 130
            top1 = _top1_of(result)
            print(f"[{number}/{total}] {name}: top-1 {100 * top1:.2f}%, "
                  f"{result['wall_time_s']:.0f}s", flush=True)
        export_report = {"status": "skipped (--no-export)"}
        if not args.no_export:
            print(f"[{total}/{total}] export of the distilled student "
                  f"({', '.join(EXPORT_FORMATS)}, verified)", flush=True)
            t = time.time()
            export_report = run_export(run, args)
            if export_report["status"] == "done" and not export_report["reused"]:
                _add_wall(run, "export", time.time() - t)
    except KeyboardInterrupt:
        print("\nsimclrv2 run: interrupted; finished stages are kept and the current one resumes "
              "from its last checkpoint when you run the same command again.", file=sys.stderr)
        return 130

    rows = collect(run, stages, args)
    test_examples = 1000 if args.quick else 10000
    print_table(rows, test_examples)
    job = _read_json(run / "job.json")
    export_summary = {"status": export_report.get("status")}
    if export_report.get("status") == "done":
        verification = export_report.get("verification", {})
        export_summary.update(out_dir=str(run / "export"), formats=export_report.get("formats"),
                              max_relative_difference=verification.get("max_relative_difference"),
                              tolerance=verification.get("tolerance"))
    results = {"rows": rows, "options": job["options"], "stage_wall_s": job["stage_wall_s"],
               "total_stage_wall_s": round(sum(job["stage_wall_s"].values()), 1),
               "this_invocation_wall_s": round(time.time() - started, 1),
               "test_examples": test_examples, "export": export_summary,
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
               "versions": _versions()}
    write_json(run / "results.json", results)
    plot(rows, run / "results.png",
         f"SimCLRv2 on Fashion-MNIST, ResNet-18 {args.width:g}x, {args.image_size} px"
         f"{' (quick)' if args.quick else ''}")
    print(f"\nwall time: {results['this_invocation_wall_s']:.0f}s this invocation, "
          f"{results['total_stage_wall_s']:.0f}s of stage time in all")
    print(f"results:  {run / 'results.json'}\nplot:     {run / 'results.png'}")
    for name, kind, overrides in stages:
        files = "result.json, metrics.jsonl" + ("" if kind == "lineareval" else ", model.keras")
        print(f"{name + ':':<20}{overrides['model_dir']}  ({files})")
    if export_summary["status"] == "done":
        print(f"{'export:':<20}{run / 'export'}  (saved_model/, model.onnx, model.keras, "
              f"config.json; max relative difference "
              f"{export_summary['max_relative_difference']:.2g} <= {export_summary['tolerance']:g})")
    else:
        print(f"{'export:':<20}{export_summary['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
